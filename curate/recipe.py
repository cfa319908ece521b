"""A curation run, fully described by one YAML recipe (recipes/curate/*.yaml).

    output_dir: runs/curate/default
    cache_dir: runs/curate/cache
    sources: [{name: aime, path: ../shared/data/pool/aime_1983_2023.json, question: problem}, ...]
    stages:
      - decontaminate: {eval_sets: [...]}
      - quality: {rules: [...]}
      - difficulty: {models: [...]}
      - traces: {local: {...}}
      - select: {size: 1000}

Ingest always runs first (its sources are the recipe's `sources`); the other stages run in the
recipe's order. A stage is a name or a one-key mapping from its kind to its settings; `name:` among
the settings labels a stage that occurs twice (e.g. a second quality stage after traces).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.inputs import check_argument, dtype_problem, grading_problem, positive_int_problem, type_problem
from evals.recipe import read_settings

from .api import ApiSettings
from .cap import CapSettings
from .decontaminate import DecontaminateSettings
from .difficulty import DifficultySettings, ReferenceModel
from .domains import DomainSettings
from .generation import NO_FORMAT, ModelSpec
from .ingest import SourceSpec
from .quality import QualityRule, QualitySettings
from .schema import CurateError
from .select import MixSource, PreselectRule, SelectSettings
from .teacher_grade import TeacherGradeSettings
from .traces import TracesSettings

SETTINGS = {
    "decontaminate": DecontaminateSettings,
    "quality": QualitySettings,
    "cap": CapSettings,
    "difficulty": DifficultySettings,
    "traces": TracesSettings,
    "teacher_grade": TeacherGradeSettings,
    "domains": DomainSettings,
    "select": SelectSettings,
}
NESTED = {
    "rules": QualityRule,
    "models": ReferenceModel,
    "local": ModelSpec,
    "judge": ApiSettings,
    "api": ApiSettings,
    "preselect": PreselectRule,
    "source_mix": MixSource,
    "domains": DomainSettings,
}


@dataclass
class StageSpec:
    """One stage of the recipe: its kind, its unique name, and its settings object."""

    kind: str
    name: str
    settings: Any


@dataclass
class CurateRecipe:
    """Settings of one curation run.

    Attributes:
        sources: where the questions come from (see `SourceSpec`).
        stages: the stages after ingest, in order (see `StageSpec` and each stage's settings).
        output_dir: where the curated set, the report and its plots go.
        cache_dir: stage outputs and cached calls (shared by runs: a second recipe reuses what the
            first computed for the same inputs and settings).
        source: the recipe file.
    """

    sources: list[SourceSpec]
    stages: list[StageSpec]
    output_dir: str
    cache_dir: str = "runs/curate/cache"
    source: str = ""


def build(cls: type, data: Any, where: str) -> Any:
    """A settings dataclass from a mapping, with nested settings built too; errors name the setting."""
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CurateError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise CurateError(f"{where}: unknown setting(s) {unknown}; known: {sorted(fields)}")
    wrong = type_problem(cls, data)
    if wrong:
        raise CurateError(f"{where}: {wrong}")
    values = dict(data)
    for key, nested in NESTED.items():
        if key in values and key in fields and values[key] is not None:
            hints = typing.get_type_hints(cls)
            if typing.get_origin(hints[key]) is list:
                if not isinstance(values[key], list):
                    raise CurateError(f"{where}: {key}: expected a list")
                values[key] = [build(nested, item, f"{where}: {key}[{i}]") for i, item in enumerate(values[key])]
            else:
                values[key] = build(nested, values[key], f"{where}: {key}")
    try:
        built = cls(**values)
    except CurateError as err:
        raise CurateError(f"{where}: {err}") from None
    except TypeError as err:
        raise CurateError(f"{where}: {err}") from None
    problem = CHECKS[cls](built) if cls in CHECKS else None
    if problem:
        raise CurateError(f"{where}: {problem}")
    return built


def model_problem(spec: ModelSpec) -> str | None:
    """What a model spec would fail on once its model is loaded, found before: budget, format, engine, sampling."""
    import decode
    from decode.generate import BACKENDS, FORCING

    if spec.max_answer_tokens is not None and spec.max_answer_tokens < 1:
        return f"model {spec.name!r}: max_answer_tokens expects an integer >= 1 or null, got {spec.max_answer_tokens}"
    try:
        decode.Budget(max_thinking_tokens=spec.max_thinking_tokens, max_answer_tokens=spec.max_answer_tokens)
        if spec.format != NO_FORMAT:
            decode.get_format(spec.format)
        decode.Sampling(temperature=spec.temperature, top_p=spec.top_p)
    except (decode.BudgetError, decode.FormatError, ValueError) as err:
        return f"model {spec.name!r}: {err}"
    if spec.backend not in BACKENDS:
        return f"model {spec.name!r}: backend must be one of {list(BACKENDS)}, got {spec.backend!r}"
    if spec.forcing not in FORCING:
        return f"model {spec.name!r}: forcing must be one of {list(FORCING)}, got {spec.forcing!r}"
    if spec.backend == "openai" and not spec.tokenizer:
        return f"model {spec.name!r}: backend openai needs 'tokenizer' (prompts go as token ids)"
    if spec.backend == "hf" and spec.backend_options:
        return f"model {spec.name!r}: backend_options apply to the 'vllm' and 'openai' backends, not 'hf'"
    for name in ("max_tokens", "batch_size", "chunk"):
        problem = positive_int_problem(getattr(spec, name), name, allow_none=name == "max_tokens")
        if problem:
            return f"model {spec.name!r}: {problem}"
    problem = dtype_problem(spec.dtype)
    return f"model {spec.name!r}: {problem}" if problem else None


def difficulty_problem(settings: DifficultySettings) -> str | None:
    """Settings the difficulty stage would otherwise read wrong without a word: a misspelt grade or
    prompt kind, or a prompt that leaves the question out."""
    if settings.grade_by not in ("rules", "s1_judge"):
        return f"grade_by must be 'rules' or 's1_judge', got {settings.grade_by!r}"
    if settings.grade_by == "s1_judge" and settings.judge is None:
        return "grade_by: s1_judge needs 'judge' (an OpenAI-compatible endpoint: base_url, model, ...)"
    if settings.grade not in ("full", "answer"):
        return f"grade must be 'full' (thinking and answer) or 'answer', got {settings.grade!r}"
    unknown = sorted(set(settings.prompts) - {"math", "choice"})
    if unknown:
        return f"prompts: unknown question kind(s) {unknown}; known: math, choice"
    for kind, prompt in settings.prompts.items():
        try:
            filled = prompt.format(question="\0")
        except (KeyError, IndexError, ValueError):
            return f"prompts.{kind}: braces other than {{question}} must be doubled ({{{{ and }}}}); got {prompt!r}"
        if "\0" not in filled:
            return f"prompts.{kind} must hold {{question}}, where the question goes; got {prompt!r}"
    return grading_problem(settings.grading)


# Checks run on a settings object once built (the classes check the rest themselves).
CHECKS: dict[type, Any] = {
    ModelSpec: model_problem,
    ReferenceModel: model_problem,
    DifficultySettings: difficulty_problem,
}


def parse_stages(entries: Any, where: str) -> list[StageSpec]:
    if not isinstance(entries, list):
        raise CurateError(f"{where}: 'stages' must be a list")
    stages: list[StageSpec] = []
    for index, entry in enumerate(entries):
        at = f"{where}: stages[{index}]"
        if isinstance(entry, str):
            kind, settings = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            kind, settings = next(iter(entry.items()))
            settings = dict(settings or {})
        else:
            raise CurateError(f"{at}: expected a stage name or a one-key mapping {{stage: settings}}, got {entry!r}")
        if kind not in SETTINGS:
            raise CurateError(f"{at}: unknown stage {kind!r}; known: {sorted(SETTINGS)}")
        name = str(settings.pop("name", kind))
        if name in {s.name for s in stages} or name == "ingest":
            raise CurateError(f"{at}: a second stage named {name!r}; give it a distinct 'name'")
        stages.append(StageSpec(kind, name, build(SETTINGS[kind], settings, f"{at} ({name})")))
    return stages


def recipe_from_dict(data: dict[str, Any], source: str = "<recipe>") -> CurateRecipe:
    known = {"sources", "stages", "output_dir", "cache_dir"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CurateError(f"{source}: unknown setting(s) {unknown}; known: {sorted(known)}")
    for name in ("sources", "output_dir"):
        if not data.get(name):
            raise CurateError(f"{source}: '{name}' is required")
    if not isinstance(data["sources"], list):
        raise CurateError(f"{source}: 'sources' must be a list")
    sources = [build(SourceSpec, s, f"{source}: sources[{i}]") for i, s in enumerate(data["sources"])]
    for i, spec in enumerate(sources):
        spec.check(f"{source}: sources[{i}]")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise CurateError(f"{source}: two sources share a name ({names})")
    return CurateRecipe(
        sources=sources,
        stages=parse_stages(data.get("stages") or [], source),
        output_dir=str(data["output_dir"]),
        cache_dir=str(data.get("cache_dir") or "runs/curate/cache"),
        source=source,
    )


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> CurateRecipe:
    """Read and check a recipe; `overrides` replace top-level settings (e.g. output_dir from the command line)."""
    check_argument("curate.load_recipe", "overrides", overrides, (dict, type(None)), "a dict of settings or None")
    data = read_settings(path, CurateError)
    data.update(overrides or {})
    return recipe_from_dict(data, str(path))
