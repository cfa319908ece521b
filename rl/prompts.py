"""Budget-conditioned prompts: each question asks for its own thinking length, as L1 trains.

L1 (arXiv 2503.04697) appends its instruction and a length sentence to every question:

    "{question} Let's think step by step and output the final answer within \\boxed{}. Think for {N} tokens."

with "Think for maximum {N} tokens." for LCPO-Max, and N drawn uniformly from [100, 4000]. L1-Max
was trained on a 50/50 mix of both kinds of prompt. Draws are seeded, so a recipe always builds the
same prompts. The user message then goes through the model's chat template and the thinking
format's opener, exactly as the decoder and the evaluation harness render it (`decode.prompt_text`).

trl's GRPOTrainer tokenizes a string prompt with the tokenizer's special tokens on
(`processing_class(text=prompts)`), so a template that writes the BOS itself (DeepSeek-R1-Distill's,
the base of DeepScaleR) would train on two. Each row's `prompt` is therefore the text whose
tokenization by trl gives exactly the decoder's ids (`decode.prompt_ids`): the BOS the tokenizer adds
is left out of the text. `build_dataset` checks this row by row.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset

from decode import get_format, prompt_ids, prompt_text
from decode.prepare.preflight import template_kwargs_problem
from evals import BenchmarkSpec, Problem, load_problems

INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."
EXACT, MAX, MIX = "exact", "max", "mix"
MODES = (EXACT, MAX)


class PromptError(ValueError):
    """Prompt settings that cannot be honoured (an empty range, an unknown mode)."""


def length_sentence(budget: int, mode: str) -> str:
    """L1's sentence: "Think for N tokens." (exact) or "Think for maximum N tokens." (max)."""
    if mode == EXACT:
        return f"Think for {budget} tokens."
    if mode == MAX:
        return f"Think for maximum {budget} tokens."
    raise PromptError(f"mode must be {EXACT!r} or {MAX!r}, got {mode!r}")


def user_message(question: str, budget: int, mode: str, instruction: str = INSTRUCTION, separator: str = " ") -> str:
    """The question, the instruction, then the length sentence. L1 joins them with single spaces;
    the evaluation harness puts a blank line (`separator="\\n\\n"`) after the question. With no
    instruction the separator goes before the length sentence, as the harness lays it out then."""
    if not instruction:
        return f"{question}{separator}{length_sentence(budget, mode)}"
    return f"{question}{separator}{instruction} {length_sentence(budget, mode)}"


def draw_budgets(count: int, low: int, high: int, seed: int) -> list[int]:
    """`count` budgets drawn uniformly from the integers low..high (both included), seeded."""
    if not 1 <= low <= high:
        raise PromptError(f"budget range must satisfy 1 <= low <= high, got [{low}, {high}]")
    rng = random.Random(f"budgets:{seed}")
    return [rng.randint(low, high) for _ in range(count)]


def draw_modes(count: int, mode: str, max_fraction: float, seed: int) -> list[str]:
    """The mode of each prompt: all `exact`, all `max`, or (`mix`) exactly round(max_fraction * count)
    `max` prompts at seeded random places, the rest `exact` (L1-Max: max_fraction 0.5)."""
    if mode in MODES:
        return [mode] * count
    if mode != MIX:
        raise PromptError(f"mode must be one of {EXACT!r}, {MAX!r}, {MIX!r}, got {mode!r}")
    if not 0.0 <= max_fraction <= 1.0:
        raise PromptError(f"max_fraction must be in [0, 1], got {max_fraction}")
    n_max = round(max_fraction * count)
    modes = [MAX] * n_max + [EXACT] * (count - n_max)
    random.Random(f"modes:{seed}").shuffle(modes)
    return modes


@dataclass(frozen=True)
class PromptSettings:
    """How questions become budget-conditioned prompts.

    Attributes:
        mode: "exact", "max", or "mix" (each prompt exact or max, `max_fraction` of them max).
        min_budget, max_budget: N is drawn uniformly from these integers, both included.
        max_fraction: for `mix`, the share of "Think for maximum N tokens." prompts.
        seed: seeds the draws of N and of the modes.
        instruction: appended to the question before the length sentence ("" for none).
        separator: between the question and the instruction, or the length sentence when there is no
            instruction (L1: a space; the evaluation harness: a blank line).
        format: the thinking format whose opener ends every prompt ("think" for R1-style models).
        chat_template_kwargs: passed to the chat template (e.g. `{enable_thinking: true}` for Qwen3).
    """

    mode: str = EXACT
    min_budget: int = 100
    max_budget: int = 4000
    max_fraction: float = 0.5
    seed: int = 0
    instruction: str = INSTRUCTION
    separator: str = " "
    format: str = "think"
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        draw_modes(0, self.mode, self.max_fraction, self.seed)  # validates mode and max_fraction
        draw_budgets(0, self.min_budget, self.max_budget, self.seed)  # validates the range
        get_format(self.format)
        if not isinstance(self.chat_template_kwargs, dict):
            raise PromptError(f"chat_template_kwargs must be a mapping, got {self.chat_template_kwargs!r}")


def load_questions(specs: Sequence[BenchmarkSpec]) -> list[Problem]:
    """Questions with final answers from local files (or the hub), read by the evaluation harness's
    reader: any JSON list / JSONL / parquet with named fields, checked row by row."""
    return [problem for spec in specs for problem in load_problems(spec)]


def trl_prompt(tokenizer: Any, text: str, ids: list[int]) -> str:
    """The string that trl's GRPOTrainer tokenizes (special tokens on) into exactly `ids`: `text`
    itself, or `text` without the BOS it starts with when the tokenizer adds that BOS anyway."""
    if tokenizer(text=text)["input_ids"] == ids:
        return text
    bos = tokenizer.bos_token
    if bos and text.startswith(bos):
        rest = text[len(bos) :]
        if tokenizer(text=rest)["input_ids"] == ids:
            return rest
    raise PromptError(
        "this tokenizer adds special tokens to a prompt that the trainer cannot leave out: trl would train on "
        f"other token ids than the decoder uses (prompt starts {text[:60]!r})"
    )


def build_dataset(problems: Sequence[Problem], tokenizer: Any, settings: PromptSettings) -> Dataset:
    """A `datasets.Dataset` for trl's GRPOTrainer, one row per question.

    Columns: `prompt` (the rendered text the model continues: chat template, then the format's
    opener, less a BOS that trl's tokenizer adds itself; see `trl_prompt`), `budget` (N), `mode`,
    `answer` (gold), `kind` ("math" or "choice"), `letters`, `source` (benchmark/id) and `message` (the
    user message before the chat template). trl passes every column but `prompt` to the reward
    functions, repeated for each generation.
    """
    if not problems:
        raise PromptError("no questions to build prompts from")
    fmt = get_format(settings.format)
    problem = template_kwargs_problem(tokenizer, settings.chat_template_kwargs)  # a misspelt key is dropped silently
    if problem:
        raise PromptError(problem)
    budgets = draw_budgets(len(problems), settings.min_budget, settings.max_budget, settings.seed)
    modes = draw_modes(len(problems), settings.mode, settings.max_fraction, settings.seed)
    rows: dict[str, list[Any]] = {k: [] for k in ("prompt", "budget", "mode", "answer", "kind", "letters", "source",
                                                  "message")}  # fmt: skip
    for problem, budget, mode in zip(problems, budgets, modes, strict=True):
        message = user_message(problem.question, budget, mode, settings.instruction, settings.separator)
        chat = [{"role": "user", "content": message}]
        try:
            text = prompt_text(tokenizer, chat, fmt, settings.chat_template_kwargs)
        except ValueError as err:
            raise PromptError(f"{problem.benchmark}/{problem.id}: {err}") from None
        ids = prompt_ids(tokenizer, chat, fmt, settings.chat_template_kwargs)
        rows["prompt"].append(trl_prompt(tokenizer, text, ids))
        rows["budget"].append(budget)
        rows["mode"].append(mode)
        rows["answer"].append(problem.gold)
        rows["kind"].append(problem.kind)
        rows["letters"].append(problem.letters or "ABCD")
        rows["source"].append(f"{problem.benchmark}/{problem.id}")
        rows["message"].append(message)
    return Dataset.from_dict(rows)
