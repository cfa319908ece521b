"""An SFT run, fully described by one YAML recipe (recipes/sft/*.yaml).

The recipe has three parts: what to train (`model`, ...), what to train on (`data:`, a `DataConfig`)
and how (`training:`, passed as they are to trl's `SFTConfig`, so every trl/transformers training
argument is available under its own name and checked by trl itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from decode import FormatError, get_format
from evals.inputs import check_argument, dtype_problem, output_dir_problem, trainer_numbers_problem, type_problem
from evals.recipe import read_settings

OVERLONG_POLICIES = ("error", "drop", "truncate")
RESUME_MODES = ("auto", "never")
# Attention implementations whose packed (padding-free) forward keeps examples apart: flash attention
# reads the per-example boundaries (cu_seq_lens), and sdpa / eager / flex build a block-diagonal
# causal mask from position ids that restart at 0 (transformers' masking_utils). Anything else is refused.
PACKING_SAFE_ATTENTION = ("sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3")


# Training arguments that trl and transformers take without a check, although a wrong value trains
# nonsense (a negative learning rate climbs the loss): name -> (bound, strictly above?, what is expected).
TRAINING_NUMBERS = {
    "learning_rate": (0, True, "a number > 0 (YAML: write 1.0e-5, not 1e-5)"),
    "num_train_epochs": (0, True, "a number of epochs > 0"),
    "per_device_train_batch_size": (1, False, "an integer >= 1"),
    "gradient_accumulation_steps": (1, False, "an integer >= 1"),
    "warmup_ratio": (0, False, "a number in [0, 1)"),
    "weight_decay": (0, False, "a number >= 0"),
    "max_grad_norm": (0, False, "a number >= 0"),
}


class RecipeError(ValueError):
    """A recipe that cannot be read or has an invalid setting; the message names the file and setting."""


@dataclass
class DataConfig:
    """What to train on and how it is turned into token ids.

    Attributes:
        source: a hub dataset id, a folder written by `datasets.save_to_disk`, or a .parquet /
            .jsonl / .json / .csv file.
        split: the split to read from a hub id or a `DatasetDict` folder.
        question: the field holding the question (the user turn).
        trace: the field holding the reasoning trace; a list of strings (s1K's
            `thinking_trajectories`) is joined with newlines.
        answer: the field holding the final answer (the text after the end of thinking).
        format: the thinking format the traces are written in: "s1", "think", "s1_steps" (steps-left
            markers before each line of the trace, sft/steps.py), or a format JSON
            (decode.get_format); its strings are the only delimiters used.
        answer_prefix: text put before the answer after the end of thinking. Default: "Answer: "
            for the s1 format (as s1 trained), nothing otherwise.
        system_prompt: a system turn; None keeps the chat template's default (Qwen2.5: "You are
            Qwen, created by Alibaba Cloud..."), which is what decoding uses too.
        chat_template_kwargs: passed to the chat template (e.g. `{enable_thinking: true}` for
            Qwen3); decode and evaluate with the same ones.
        block_size: the longest training sequence in tokens (s1: 32,768, so nothing is cut).
        overlong: what to do with a longer example: "error" (stop before training, listing them),
            "drop" (leave them out) or "truncate" (keep the first `block_size` tokens). The count is
            reported whatever the choice.
        limit: use only the first `limit` rows (smoke tests).
    """

    source: str
    question: str = "question"
    trace: str = "thinking_trajectories"
    answer: str = "attempt"
    split: str = "train"
    format: str = "s1"
    answer_prefix: str | None = None
    system_prompt: str | None = None
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    block_size: int = 32768
    overlong: str = "error"
    limit: int | None = None

    def check(self, where: str) -> None:
        if self.overlong not in OVERLONG_POLICIES:
            raise RecipeError(f"{where}: data.overlong must be one of {OVERLONG_POLICIES}, got {self.overlong!r}")
        if not isinstance(self.block_size, int) or self.block_size < 2:
            raise RecipeError(f"{where}: data.block_size must be an integer >= 2, got {self.block_size!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise RecipeError(f"{where}: data.limit must be a positive integer, got {self.limit!r}")
        if not isinstance(self.chat_template_kwargs, dict):
            raise RecipeError(f"{where}: data.chat_template_kwargs must be a mapping of chat template arguments")
        for name in ("source", "question", "trace", "answer", "format"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise RecipeError(f"{where}: data.{name} must be a non-empty string")
        try:
            get_format(self.format)
        except FormatError as err:
            raise RecipeError(f"{where}: data.format: {err}") from None


@dataclass
class SFTRecipe:
    """Settings of one SFT run.

    Attributes:
        model: the model to fine-tune: a local folder or a hub id.
        output_dir: checkpoints go to `output_dir/checkpoint-N`, the final model to `output_dir/model`.
        data: see `DataConfig`.
        tokenizer: its tokenizer (default: the model's); it must have a chat template.
        dtype: the dtype the weights are loaded in ("float32", "bfloat16", "auto"). With `bf16: true`
            in `training`, keep float32 weights (mixed precision) unless memory forces bfloat16.
        attn_implementation: "sdpa", "eager", "flash_attention_2", ...; None: transformers' default.
        packing: padding-free packing (trl's best-fit-decreasing packing into `block_size` rows,
            position ids restarting at 0 per example, no padding). Refused for attention
            implementations that cannot keep the packed examples apart.
        resume: "auto" continues from the newest checkpoint in `output_dir` if there is one,
            "never" starts afresh (an existing checkpoint folder is then refused), or a path to a
            checkpoint folder.
        seed: seeds the model's data order and initialisation of anything random.
        training: arguments for trl's `SFTConfig` (learning_rate, num_train_epochs,
            per_device_train_batch_size, gradient_accumulation_steps, lr_scheduler_type,
            warmup_ratio, adam_beta2, weight_decay, bf16, gradient_checkpointing, save_steps,
            report_to, ...). `output_dir`, `max_length`, `packing` and `seed` come from the settings
            above and may not be repeated here.
    """

    model: str
    output_dir: str
    data: DataConfig
    tokenizer: str | None = None
    dtype: str = "float32"
    attn_implementation: str | None = "sdpa"
    packing: bool = False
    resume: str = "auto"
    seed: int = 42
    training: dict[str, Any] = field(default_factory=dict)
    recipe_path: str = ""

    def check(self) -> None:
        where = self.recipe_path or "recipe"
        self.data.check(where)
        if self.packing and self.attn_implementation not in PACKING_SAFE_ATTENTION:
            raise RecipeError(
                f"{where}: packing needs an attention implementation that keeps packed examples apart "
                f"({', '.join(PACKING_SAFE_ATTENTION)}); got attn_implementation={self.attn_implementation!r}"
            )
        owned = {"output_dir", "max_length", "packing", "seed", "max_seq_length", "padding_free"}
        repeated = sorted(owned & set(self.training))
        if repeated:
            raise RecipeError(
                f"{where}: training.{repeated[0]} is set from the recipe's top level "
                "(output_dir, data.block_size, packing, seed); remove it from 'training'"
            )
        for name, (low, strict, words) in TRAINING_NUMBERS.items():
            value = self.training.get(name)
            fits = _number_above(value, low, strict) and (isinstance(value, int) or not words.startswith("an integer"))
            if name in self.training and not fits:
                raise RecipeError(f"{where}: training.{name} expects {words}, got {value!r}")
        problem = trainer_numbers_problem(self.training, "training")
        if problem:
            raise RecipeError(f"{where}: {problem}")
        problem = dtype_problem(self.dtype) or output_dir_problem(self.output_dir)
        if problem:
            raise RecipeError(f"{where}: {problem}")
        if self.resume not in RESUME_MODES and not Path(self.resume).is_dir():
            raise RecipeError(
                f"{where}: resume must be one of {RESUME_MODES} or an existing checkpoint folder, got {self.resume!r}"
            )


def _number_above(value: Any, low: float, strict: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return value > low if strict else value >= low


def _build(cls: type, values: Any, where: str, section: str) -> Any:
    if not isinstance(values, dict):
        raise RecipeError(f"{where}: '{section}' must be a mapping, got {type(values).__name__}")
    known = {f.name for f in fields(cls)} - {"recipe_path"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise RecipeError(f"{where}: unknown setting {section}{unknown[0]!r} (known: {', '.join(sorted(known))})")
    wrong = type_problem(cls, {k: v for k, v in values.items() if k != "data"}, section)
    if wrong:
        raise RecipeError(f"{where}: {wrong}")
    return values


def recipe_from_dict(values: dict[str, Any], source: str = "recipe") -> SFTRecipe:
    """Check and build an `SFTRecipe` from plain values (as read from YAML)."""
    values = dict(_build(SFTRecipe, values, source, ""))
    data = _build(DataConfig, values.pop("data", None), source, "data.")
    for required in ("model", "output_dir"):
        if required not in values:
            raise RecipeError(f"{source}: missing required setting {required!r}")
    if "source" not in data:
        raise RecipeError(f"{source}: missing required setting 'data.source'")
    if not isinstance(values.get("training", {}), dict):
        raise RecipeError(f"{source}: 'training' must be a mapping of SFTConfig arguments")
    recipe = SFTRecipe(**values, data=DataConfig(**data), recipe_path=source)
    recipe.check()
    return recipe


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> SFTRecipe:
    """Read and check a recipe; `overrides` replace top-level settings (e.g. from the command line)."""
    check_argument("sft.load_recipe", "overrides", overrides, (dict, type(None)), "a dict of settings or None")
    values = read_settings(path, RecipeError)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = value
    return recipe_from_dict(values, str(path))
