"""LCPO's rewards, as trl reward functions on the completion's token ids.

With n the length of a completion, N the length asked in its prompt and `correct` 1 or 0:

- LCPO-Exact: `correct - alpha * |N - n|`. L1's code, which trained the released L1 models, uses
  alpha = 1/3000 (`get_delta_score_exact`); its paper states 0.0003.
- LCPO-Max, as L1's code computes it (`max_formula: code`, the default):
  `correct * (clip(max_alpha * (N - n), -1, 1) + 1) / 2` with max_alpha = 1/500 (`get_delta_score_max`):
  half the reward at N, all of it from 500 tokens under N, nothing from 500 tokens over.
- LCPO-Max, as L1's paper writes it (`max_formula: paper`): `correct * clip(alpha * (N - n) + delta, 0, 1)`
  with alpha = 0.0003 and delta = 0.5: the same value at N but it reaches 0 only about 1,667 tokens over N.

Each prompt carries its own mode, so a 50/50 mix of Exact and Max prompts is scored row by row.
n counts the whole completion (what L1 does), or only the thinking (`length: thinking`): the tokens
before the thinking format's end token. The final end-of-sequence token counts only with
`count_eos: true`: L1's n is verl's response length, whose mask covers the first end-of-sequence token.
Correctness comes from the evaluation harness: the answer is the text after the end of thinking
(a completion whose thinking never ends has no answer and is wrong), graded by `evals.Grader`
(math-verify in worker processes, started once per training run).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from decode import ThinkingFormat, get_format
from evals import Answer, Grader

from .prompts import EXACT, MAX

PAPER, CODE = "paper", "code"
COMPLETION, THINKING = "completion", "thinking"


class RewardError(ValueError):
    """Reward settings or reward inputs that cannot be scored."""


def clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def exact_reward(correct: float, length: int, budget: int, alpha: float) -> float:
    """LCPO-Exact: correct - alpha * |N - n|."""
    return correct - alpha * abs(budget - length)


def max_reward(correct: float, length: int, budget: int, alpha: float, delta: float, formula: str = PAPER) -> float:
    """LCPO-Max: the paper's `correct * clip(alpha (N - n) + delta, 0, 1)`, or the released code's
    `correct * (clip(alpha (N - n), -1, 1) + 1) / 2` with `formula="code"` (delta unused; L1's code
    uses alpha = 1/500 there)."""
    if formula == PAPER:
        return correct * clip(alpha * (budget - length) + delta, 0.0, 1.0)
    if formula == CODE:
        return correct * (clip(alpha * (budget - length), -1.0, 1.0) + 1.0) / 2.0
    raise RewardError(f"max_formula must be {PAPER!r} or {CODE!r}, got {formula!r}")


@dataclass(frozen=True)
class RewardSettings:
    """How completions are scored.

    The defaults are L1's code (deepscaler/rewards/math_reward.py at cmu-l3/l1@294b0b1); the paper's
    values are `alpha: 0.0003, max_formula: paper` (see docs/parity.md).

    Attributes:
        alpha: weight of LCPO-Exact's length term, and of the paper's Max (L1's code: 1/3000; paper: 0.0003).
        delta: the paper's LCPO-Max offset: the reward a correct answer of exactly N tokens gets (0.5).
        max_formula: "code" (L1's released code) or "paper" (L1's paper); see the module docstring.
        max_alpha: slope of the code's Max formula (L1's code: 1/500).
        length: "completion" (every generated token, as L1) or "thinking" (only the thinking tokens).
        count_eos: count the end-of-sequence token that ends a completion in n (L1 does).
        length_penalty: False drops the length term: correctness alone, i.e. plain GRPO (a baseline).
    """

    alpha: float = 1 / 3000
    delta: float = 0.5
    max_formula: str = CODE
    max_alpha: float = 1 / 500
    length: str = COMPLETION
    count_eos: bool = False
    length_penalty: bool = True

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.max_alpha < 0:
            raise RewardError(f"alpha and max_alpha must be >= 0, got {self.alpha} and {self.max_alpha}")
        if self.max_formula not in (PAPER, CODE):
            raise RewardError(f"max_formula must be {PAPER!r} or {CODE!r}, got {self.max_formula!r}")
        if self.length not in (COMPLETION, THINKING):
            raise RewardError(f"length must be {COMPLETION!r} or {THINKING!r}, got {self.length!r}")

    def reward(self, correct: bool, length: int, budget: int, mode: str) -> float:
        """The reward of one completion of `length` tokens for a prompt asking `budget` in `mode`."""
        score = float(correct)
        if not self.length_penalty:
            return score
        if mode == EXACT:
            return exact_reward(score, length, budget, self.alpha)
        if mode == MAX:
            slope = self.max_alpha if self.max_formula == CODE else self.alpha
            return max_reward(score, length, budget, slope, self.delta, self.max_formula)
        raise RewardError(f"mode must be {EXACT!r} or {MAX!r}, got {mode!r}")


@dataclass(frozen=True)
class Scored:
    """One completion, taken apart and scored: `length` is the n the reward used."""

    completion_tokens: int
    thinking_tokens: int
    thinking_ended: bool
    answer: str
    correct: bool
    length: int
    reward: float


class CompletionReader:
    """Splits completion ids into thinking and answer with a thinking format's token ids.

    Thinking is everything before the first end-of-thinking token; the answer is what follows it,
    with the format's close header ("answer\\n", "\\n\\n") and end-of-sequence removed, as the
    decoder returns it. A completion that never ends its thinking is all thinking and has no answer.
    """

    def __init__(self, tokenizer: Any, format: str | ThinkingFormat = "think", eos_token_ids: Sequence[int] = ()):
        eos = {int(i) for i in eos_token_ids}
        if tokenizer.eos_token_id is not None:
            eos.add(int(tokenizer.eos_token_id))
        self.tokenizer = tokenizer
        self.tokens = get_format(format).tokens(tokenizer, sorted(eos))

    def read(self, ids: Sequence[int]) -> tuple[int, int, bool, str]:
        """(completion tokens, thinking tokens, whether thinking ended, answer text); the completion's
        closing end-of-sequence tokens are not counted (see `ends_with_eos`)."""
        ids = list(ids)
        while ids and ids[-1] in self.tokens.eos:  # the end-of-sequence is not a token the model "wrote"
            ids.pop()
        end = next((i for i, t in enumerate(ids) if t in self.tokens.end), None)
        if end is None:
            return len(ids), len(ids), False, ""
        answer_ids = [t for t in ids[end + 1 :] if t not in self.tokens.eos]
        answer = self.tokenizer.decode(answer_ids)
        suffix = self.tokens.close_suffix
        if suffix and answer.startswith(suffix):
            answer = answer[len(suffix) :]
        return len(ids), end, True, answer

    def ends_with_eos(self, ids: Sequence[int]) -> bool:
        """Whether the completion was closed by an end-of-sequence token (not cut at the length limit)."""
        return bool(ids) and ids[-1] in self.tokens.eos


class LCPOReward:
    """LCPO as one trl reward function: `reward_funcs=[LCPOReward(tokenizer, grader)]`.

    trl calls it with `completion_ids` and the dataset's other columns (`budget`, `mode`, `answer`,
    `kind`, `letters`, as `rl.prompts.build_dataset` makes them). Besides the reward (logged by trl as
    `rewards/lcpo/mean`), it logs through trl's `log_metric`: `lcpo/accuracy`, `lcpo/length` (mean n),
    `lcpo/length_error` (mean |n - N| / N), `lcpo/length_signed` (mean (n - N) / N),
    `lcpo/within_budget` (share with n <= N) and `lcpo/thinking_ended`; and per completion, through
    `log_extra`, the columns `n`, `N`, `mode` and `correct` of trl's completions table.

    Args:
        tokenizer: the policy's tokenizer.
        grader: a started `evals.Grader`; the caller owns it (start it once per run, close it after).
        settings: `RewardSettings`.
        format: the thinking format of the prompts ("think", "s1", a JSON file, a `ThinkingFormat`).
        eos_token_ids: end-of-sequence ids beyond the tokenizer's (e.g. the generation config's).
    """

    def __init__(
        self,
        tokenizer: Any,
        grader: Grader,
        settings: RewardSettings | None = None,
        format: str | ThinkingFormat = "think",
        eos_token_ids: Sequence[int] = (),
    ):
        self.settings = settings or RewardSettings()
        self.reader = CompletionReader(tokenizer, format, eos_token_ids)
        self.grader = grader
        # trl names a reward function by its __name__: the logged reward is rewards/<name>/mean.
        self.__name__ = "lcpo" if self.settings.length_penalty else "correctness"

    def score(
        self,
        completion_ids: Sequence[Sequence[int]],
        budget: Sequence[int],
        mode: Sequence[str],
        answer: Sequence[str],
        kind: Sequence[str] | None = None,
        letters: Sequence[str] | None = None,
    ) -> list[Scored]:
        """Take apart, grade and score a batch of completions (one entry per completion)."""
        count = len(completion_ids)
        for name, column in (("budget", budget), ("mode", mode), ("answer", answer)):
            if len(column) != count:
                raise RewardError(f"got {len(column)} values of {name!r} for {count} completions")
        kind = kind or ["math"] * count
        letters = letters or ["ABCD"] * count
        parts = [self.reader.read(ids) for ids in completion_ids]
        answers = [Answer(k, str(gold), text, lt) for (*_, text), gold, k, lt in zip(parts, answer, kind, letters,
                                                                                   strict=True)]  # fmt: skip
        verdicts = self.grader.grade(answers)
        scored = []
        for ids, (total, thinking, ended, text), verdict, n_asked, row_mode in zip(
            completion_ids, parts, verdicts, budget, mode, strict=True
        ):
            length = thinking if self.settings.length == THINKING else total
            if self.settings.count_eos and self.settings.length == COMPLETION and self.reader.ends_with_eos(ids):
                length += 1
            ok = ended and verdict.correct
            reward = self.settings.reward(ok, length, int(n_asked), row_mode)
            scored.append(Scored(total, thinking, ended, text, ok, length, reward))
        return scored

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]],
        budget: Sequence[int],
        mode: Sequence[str],
        answer: Sequence[str],
        kind: Sequence[str] | None = None,
        letters: Sequence[str] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
        log_extra: Callable[[str, list], None] | None = None,
        **_: Any,
    ) -> list[float]:
        scored = self.score(completion_ids, budget, mode, answer, kind, letters)
        if log_metric is not None:
            for name, value in batch_metrics(scored, budget).items():
                log_metric(f"lcpo/{name}", value)
        if log_extra is not None:
            log_extra("n", [s.length for s in scored])
            log_extra("N", [int(b) for b in budget])
            log_extra("mode", list(mode))
            log_extra("correct", [s.correct for s in scored])
        return [s.reward for s in scored]


def batch_metrics(scored: Sequence[Scored], budget: Sequence[int]) -> dict[str, float]:
    """Accuracy and how well the lengths met the budgets, over one batch."""
    if not scored:
        return {}
    ratios = [(s.length - n) / n for s, n in zip(scored, budget, strict=True)]
    return {
        "accuracy": statistics.fmean(s.correct for s in scored),
        "length": statistics.fmean(s.length for s in scored),
        "length_error": statistics.fmean(abs(r) for r in ratios),
        "length_signed": statistics.fmean(ratios),
        "within_budget": statistics.fmean(s.length <= n for s, n in zip(scored, budget, strict=True)),
        "thinking_ended": statistics.fmean(s.thinking_ended for s in scored),
    }
