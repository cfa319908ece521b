"""An LCPO run, fully described by one YAML recipe (recipes/rl/*.yaml).

    model: agentica-org/DeepScaleR-1.5B-Preview
    output_dir: runs/rl/l1-exact
    data:
      - {name: math_train, path: ../shared/data/pool/math_train_answers.json, id: null}
    prompts: {mode: exact, min_budget: 100, max_budget: 4000}
    reward: {alpha: 0.0003, length: completion}
    trainer: {learning_rate: 1.0e-6, num_generations: 16, beta: 0.001, ...}

`prompts` are `rl.prompts.PromptSettings`, `reward` are `rl.rewards.RewardSettings`, `data` entries
are the evaluation harness's `BenchmarkSpec` fields (any local file of questions and final answers),
and `trainer` is passed to trl's `GRPOConfig` as it is (its field names, checked here).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals import BenchmarkError, BenchmarkSpec
from evals.benchmarks import check_spec
from evals.inputs import (
    check_argument,
    dtype_problem,
    grading_problem,
    output_dir_problem,
    trainer_numbers_problem,
    type_problem,
)
from evals.recipe import read_settings

from .prompts import PromptError, PromptSettings
from .rewards import RewardError, RewardSettings


class RecipeError(ValueError):
    """A recipe that cannot be read or has an invalid setting; the message names the file and setting."""


@dataclass
class LCPORecipe:
    """Settings of one LCPO run.

    Attributes:
        model: the policy to start from: a local folder or a hub id.
        output_dir: where checkpoints, logs and the final model (`final/`) go.
        data: where the questions and their final answers are (`BenchmarkSpec` mappings).
        tokenizer: the tokenizer (default: the model's).
        dtype: how the model is loaded ("auto", "bfloat16", "float32").
        seed: seeds the prompts (unless `prompts.seed` is given) and the trainer (unless `trainer.seed` is).
        prompts: how questions become "Think for N tokens." prompts (`PromptSettings`).
        reward: LCPO's reward settings (`RewardSettings`).
        grading: `evals.Grader` settings: workers, timeout_s, memory_mb.
        trainer: trl `GRPOConfig` settings (learning_rate, num_generations, beta, use_vllm, ...);
            `sampling: model` there sets temperature, top_p, top_k, min_p and repetition_penalty from the
            checkpoint's generation_config.json.
        resume: continue from the last checkpoint in output_dir when there is one.
    """

    model: str
    output_dir: str
    data: list[BenchmarkSpec]
    tokenizer: str | None = None
    dtype: str = "auto"
    seed: int = 0
    prompts: PromptSettings = field(default_factory=PromptSettings)
    reward: RewardSettings = field(default_factory=RewardSettings)
    grading: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    resume: bool = True
    source: str = ""

    def grpo_config(self) -> Any:
        """trl's GRPOConfig for this run (output_dir and seed filled in unless the trainer section sets them)."""
        from trl import GRPOConfig

        values = {"output_dir": self.output_dir, "seed": self.seed, **self.trainer}
        if "sampling" in values:  # "model": the checkpoint's generation_config.json, in trl's fields
            if values.pop("sampling") != "model":
                raise RecipeError(f"{self.source}: trainer: sampling must be 'model' (or set temperature, top_p, ...)")
            recommended = model_sampling(self.model, self.source)
            if set(recommended) & set(values):
                raise RecipeError(f"{self.source}: trainer: sampling: model sets {', '.join(sorted(recommended))}")
            values.update(recommended)
        values.setdefault("model_init_kwargs", {"dtype": self.dtype})
        try:
            return GRPOConfig(**values)
        except (TypeError, ValueError) as err:
            raise RecipeError(f"{self.source}: trainer: {err}") from None


def model_sampling(model: str, source: str) -> dict[str, Any]:
    """GRPOConfig's sampling fields from the checkpoint's recommendation (GRPO samples: greedy is refused)."""
    from decode import Sampling

    try:
        sampling = Sampling.from_generation_config(model)
    except ValueError as err:
        raise RecipeError(f"{source}: trainer: sampling: {err}") from None
    if sampling.greedy:
        raise RecipeError(f"{source}: trainer: sampling: model: {model}'s generation config is greedy; GRPO samples")
    return {
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "min_p": sampling.min_p,
        "repetition_penalty": sampling.repetition_penalty,
    }


def _section(source: str, name: str, values: Any, cls: type) -> Any:
    """Build a settings dataclass from a mapping, naming unknown keys and bad values."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise RecipeError(f"{source}: {name}: expected a mapping, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise RecipeError(f"{source}: {name}: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    wrong = type_problem(cls, values, f"{name}.")
    if wrong:
        raise RecipeError(f"{source}: {wrong}")
    try:
        return cls(**values)
    except (PromptError, RewardError, TypeError, ValueError) as err:
        raise RecipeError(f"{source}: {name}: {err}") from None


def _data_spec(source: str, index: int, entry: Any) -> BenchmarkSpec:
    where = f"{source}: data[{index}]"
    if not isinstance(entry, dict) or "name" not in entry:
        raise RecipeError(f"{where}: expected a mapping with a 'name' and a 'path', got {entry!r}")
    spec = _section(source, f"data[{index}]", entry, BenchmarkSpec)
    if spec.path is None and spec.hub is None:
        raise RecipeError(f"{where}: give a local 'path' (or a 'hub' id)")
    if spec.kind not in ("math", "choice", "gpqa"):
        raise RecipeError(f"{where}: kind must be math, choice or gpqa, got {spec.kind!r}")
    if spec.options:
        spec = dataclasses.replace(spec, options=tuple(spec.options))
    try:
        check_spec(spec)
    except BenchmarkError as err:
        raise RecipeError(f"{where}: {err}") from None
    return spec


def recipe_from_dict(data: dict[str, Any], source: str = "<recipe>") -> LCPORecipe:
    known = {f.name for f in dataclasses.fields(LCPORecipe)} - {"source"}
    unknown = set(data) - known
    if unknown:
        raise RecipeError(f"{source}: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    for name in ("model", "output_dir", "data"):
        if not data.get(name):
            raise RecipeError(f"{source}: '{name}' is required")
    if not isinstance(data["data"], list):
        raise RecipeError(f"{source}: data: expected a list of datasets, got {type(data['data']).__name__}")
    values = dict(data)
    seed = values.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise RecipeError(f"{source}: seed must be an integer, got {seed!r}")
    top = {k: v for k, v in data.items() if k not in ("data", "prompts", "reward", "grading", "trainer")}
    problem = type_problem(LCPORecipe, top) or dtype_problem(values.get("dtype", "auto"))
    problem = problem or output_dir_problem(str(data["output_dir"])) or grading_problem(data.get("grading"))
    if problem:
        raise RecipeError(f"{source}: {problem}")
    values["data"] = [_data_spec(source, i, entry) for i, entry in enumerate(data["data"])]
    prompts = dict(data.get("prompts") or {})
    prompts.setdefault("seed", seed)
    values["prompts"] = _section(source, "prompts", prompts, PromptSettings)
    values["reward"] = _section(source, "reward", data.get("reward"), RewardSettings)
    trainer = data.get("trainer") or {}
    if not isinstance(trainer, dict):
        raise RecipeError(f"{source}: trainer: expected a mapping of GRPOConfig settings, got {trainer!r}")
    _check_trainer_keys(source, trainer)
    problem = trainer_numbers_problem(trainer, "trainer")
    if problem:
        raise RecipeError(f"{source}: {problem}")
    if not 0 <= values["reward"].delta <= 1:
        raise RecipeError(
            f"{source}: reward.delta expects a number in [0, 1] (the reward of a correct answer of exactly N "
            f"tokens; L1: 0.5), got {values['reward'].delta!r}"
        )
    rate = trainer.get("learning_rate")
    if "learning_rate" in trainer and (isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0):
        raise RecipeError(f"{source}: trainer.learning_rate expects a number > 0 (YAML: write 1.0e-6), got {rate!r}")
    recipe = LCPORecipe(**values)
    recipe.source = source
    return recipe


def _check_trainer_keys(source: str, trainer: dict[str, Any]) -> None:
    from trl import GRPOConfig

    known = {f.name for f in dataclasses.fields(GRPOConfig)}
    unknown = sorted(set(trainer) - known)
    if unknown:
        raise RecipeError(f"{source}: trainer: unknown GRPOConfig setting(s) {unknown} (trl's GRPOConfig field names)")


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> LCPORecipe:
    """Read and check a recipe; `overrides` replace top-level settings (e.g. from the command line)."""
    check_argument("rl.load_recipe", "overrides", overrides, (dict, type(None)), "a dict of settings or None")
    data = read_settings(path, RecipeError)
    for key, value in (overrides or {}).items():
        if key == "max_steps":
            data["trainer"] = {**(data.get("trainer") or {}), "max_steps": value}
        else:
            data[key] = value
    return recipe_from_dict(data, str(path))
