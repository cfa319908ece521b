"""Generation kwargs of one lm-eval request, read as a budget-forcing request (or as a plain one).

lm-eval hands every generation request its task's `generation_kwargs` merged with `--gen_kwargs`, so
budgets given there apply to every task of a run. Two spellings are read:

- ours: `max_thinking_tokens`, `min_thinking_tokens`, `num_ignore`, `max_answer_tokens`, `wait`;
- s1's fork of lm-eval (simplescaling/s1, eval/lm-evaluation-harness/lm_eval/models/vllm_causallms.py):
  `max_tokens_thinking` (a number or `auto`), `thinking_n_ignore`, `thinking_n_ignore_str`,
  `min_tokens_thinking`, `thinking_start`, `thinking_end`, `until_thinking`.

A request with none of these keys is plain and goes to lm-eval's own code. Fork keys whose meaning
our decoder does not have, and any other key that looks like a budget setting, are refused by name:
dropping one would run a different experiment than the command says.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from decode import Budget, BudgetError, Sampling, ThinkingFormat

OURS = ("max_thinking_tokens", "min_thinking_tokens", "num_ignore", "max_answer_tokens", "wait")
FORK = (
    "max_tokens_thinking",
    "thinking_n_ignore",
    "thinking_n_ignore_str",
    "min_tokens_thinking",
    "thinking_start",
    "thinking_end",
    "until_thinking",
)
# Our name for each fork name that sets the same quantity (both given at once is refused).
SAME_AS = {
    "max_tokens_thinking": "max_thinking_tokens",
    "min_tokens_thinking": "min_thinking_tokens",
    "thinking_n_ignore": "num_ignore",
    "thinking_n_ignore_str": "wait",
}
REFUSED = {
    "rejection_sample": "s1's rejection sampling redraws whole traces until one fits the maximum; "
    "this decoder enforces the maximum on every trace instead and has no rejection sampling",
    "until_thinking_2": "a second end-of-thinking string: give a thinking format (format=path.json in "
    "--model_args) whose `end` lists both",
}
# Fork keys ending in `_thinking` set a sampling parameter for the thinking phase only (the fork
# passes `temperature_thinking` as the thinking call's `temperature`); one sampling applies here.
PHASE_SUFFIX = "_thinking"
# Words that mark a key as a budget setting, so that a misspelt one is refused, never ignored.
BUDGET_WORDS = ("think", "ignore", "wait", "budget", "forcing", "forced", "rejection", "answer_tokens")
SAMPLING_KEYS = ("do_sample", "temperature", "top_p", "top_k", "min_p", "repetition_penalty")
# What lm-eval itself reads from generation kwargs (`normalize_gen_kwargs`: the length aliases).
LMEVAL_KEYS = ("until", "max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens")
AUTO = "auto"
AUTO_ANSWER_RESERVE = 100  # the fork's `auto` leaves 100 tokens for the answer


class GenKwargsError(ValueError):
    """Generation kwargs that ask for budget forcing in a way that cannot be honoured."""


@dataclass(frozen=True)
class ForcedRequest:
    """What one request asks the decoder for: the format, its budget and how to sample.

    `max_thinking` is a number of tokens, None (no maximum) or "auto" (resolved per group of
    requests, as the fork does, by `resolve_auto`).
    """

    format: ThinkingFormat
    max_thinking: int | str | None
    min_thinking: int
    num_ignore: int
    max_answer: int | None
    sampling: Sampling

    def budget(self, auto_value: int | None = None) -> Budget:
        maximum = auto_value if self.max_thinking == AUTO else self.max_thinking
        try:
            return Budget(
                max_thinking_tokens=maximum,
                min_thinking_tokens=self.min_thinking,
                num_ignore=self.num_ignore,
                max_answer_tokens=self.max_answer,
            )
        except BudgetError as err:
            raise GenKwargsError(f"gen_kwargs: {err}") from None


def is_budget_key(key: str) -> bool:
    return key in OURS or key in FORK or key in REFUSED or any(word in key for word in BUDGET_WORDS)


def is_forced(gen_kwargs: dict[str, Any]) -> bool:
    """Whether a request asks for budget forcing (any budget key, known or not)."""
    return any(is_budget_key(key) for key in gen_kwargs)


def parse(gen_kwargs: dict[str, Any], fmt: ThinkingFormat) -> ForcedRequest:
    """The forced request that `gen_kwargs` (one request's, budget keys included) asks for.

    `fmt` is the model's thinking format (`format=` in --model_args); the fork's `thinking_start`,
    `thinking_end`, `until_thinking` replace its strings for this request.
    """
    keys = set(gen_kwargs)
    for key in sorted(keys):
        if key in REFUSED:
            raise GenKwargsError(f"gen_kwargs {key!r} is not supported: {REFUSED[key]}")
        if key.endswith(PHASE_SUFFIX) and key not in FORK:
            raise GenKwargsError(
                f"gen_kwargs {key!r}: s1's fork sets {key[: -len(PHASE_SUFFIX)]!r} for the thinking phase only; "
                "here one sampling setting applies to thinking and answer alike: give it without the suffix"
            )
        if is_budget_key(key) and key not in OURS and key not in FORK:
            raise GenKwargsError(
                f"unknown budget key {key!r} in gen_kwargs; known: {', '.join(OURS)} "
                f"(or s1's fork's: {', '.join(FORK)})"
            )
        if not is_budget_key(key) and key not in SAMPLING_KEYS and key not in LMEVAL_KEYS:
            raise GenKwargsError(
                f"gen_kwargs {key!r} cannot be applied to a budget-forced request (it takes "
                f"{', '.join(SAMPLING_KEYS)}, {', '.join(LMEVAL_KEYS)} besides the budget keys)"
            )
    for fork_key, our_key in SAME_AS.items():
        if fork_key in keys and our_key in keys:
            raise GenKwargsError(f"gen_kwargs gives both {fork_key!r} (s1's fork) and {our_key!r}: give one")
    if "thinking_n_ignore" in keys and "thinking_n_ignore_str" not in keys and "wait" not in keys:
        raise GenKwargsError(
            "gen_kwargs 'thinking_n_ignore' without 'thinking_n_ignore_str': s1's fork then continues with "
            "nothing in place of the ignored end of thinking, which this decoder does not do (it always "
            "inserts the wait string); add thinking_n_ignore_str=Wait (s1's setting) or wait=..."
        )

    def value(ours: str, fork: str | None = None) -> Any:
        return gen_kwargs.get(ours, gen_kwargs.get(fork) if fork else None)

    maximum = value("max_thinking_tokens", "max_tokens_thinking")
    if maximum != AUTO:
        maximum = _count(maximum, "max_thinking_tokens", optional=True)
    wait = value("wait", "thinking_n_ignore_str")
    if wait is not None and (not isinstance(wait, str) or not wait):
        raise GenKwargsError(f"gen_kwargs wait string must be a non-empty string, got {wait!r}")
    fmt = _fork_format(fmt, gen_kwargs)
    if wait is not None:
        fmt = fmt.with_wait(wait)
    request = ForcedRequest(
        format=fmt,
        max_thinking=maximum,
        min_thinking=_count(value("min_thinking_tokens", "min_tokens_thinking"), "min_thinking_tokens") or 0,
        num_ignore=_count(value("num_ignore", "thinking_n_ignore"), "num_ignore") or 0,
        max_answer=_count(gen_kwargs.get("max_answer_tokens"), "max_answer_tokens", optional=True),
        sampling=sampling_of(gen_kwargs),
    )
    request.budget(auto_value=10**9)  # checks the numbers now (minimum above maximum, ...)
    return request


def _count(value: Any, name: str, optional: bool = False) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        expected = "a whole number of tokens >= 0" + (" (or 'auto')" if name == "max_thinking_tokens" else "")
        raise GenKwargsError(f"gen_kwargs {name}: expected {expected}, got {value!r}")
    return value


def _fork_format(fmt: ThinkingFormat, gen_kwargs: dict[str, Any]) -> ThinkingFormat:
    """The model's format with the fork's strings put in: `thinking_start` opens thinking,
    `until_thinking` ends it, `thinking_end` follows an end of thinking (the fork appends it), and
    `thinking_end` + "\\nFinal Answer:" after a newline is forced at the maximum (the fork's
    `thinking_end_max`)."""
    fields: dict[str, Any] = {}
    for key in ("thinking_start", "thinking_end", "until_thinking"):
        if key in gen_kwargs and (not isinstance(gen_kwargs[key], str) or not gen_kwargs[key]):
            raise GenKwargsError(f"gen_kwargs {key} must be a non-empty string, got {gen_kwargs[key]!r}")
    if "thinking_start" in gen_kwargs:
        fields["open"] = gen_kwargs["thinking_start"]
    if "until_thinking" in gen_kwargs:
        fields["end"] = (gen_kwargs["until_thinking"],)
    if "thinking_end" in gen_kwargs:
        fields["close"] = gen_kwargs["thinking_end"]
        fields["force"] = "\n" + gen_kwargs["thinking_end"] + "\nFinal Answer:"
    if not fields:
        return fmt
    return replace(fmt, name=f"{fmt.name}+fork", **fields)


def sampling_of(gen_kwargs: dict[str, Any]) -> Sampling:
    """lm-eval's sampling kwargs as a `Sampling`: greedy when `do_sample` is false or the temperature
    is 0 (lm-eval's `normalize_gen_kwargs` reads them the same way)."""
    temperature = gen_kwargs.get("temperature", 0.0)
    if gen_kwargs.get("do_sample") is False or not temperature:
        temperature = 0.0
    try:
        return Sampling(
            temperature=float(temperature),
            top_p=float(gen_kwargs.get("top_p", 1.0)),
            top_k=int(gen_kwargs.get("top_k", 0) or 0),
            min_p=None if gen_kwargs.get("min_p") is None else float(gen_kwargs["min_p"]),
            repetition_penalty=float(gen_kwargs.get("repetition_penalty", 1.0)),
        )
    except (TypeError, ValueError) as err:
        raise GenKwargsError(f"gen_kwargs sampling: {err}") from None


def resolve_auto(max_gen_toks: int, longest_prompt: int, open_tokens: int, force_tokens: int) -> int:
    """The fork's `max_tokens_thinking=auto`: what `max_gen_toks` leaves after the longest prompt of the
    batch, the opener, the forced end and 100 answer tokens (at least 0)."""
    return max(0, max_gen_toks - longest_prompt - open_tokens - force_tokens - AUTO_ANSWER_RESERVE)
