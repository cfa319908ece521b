"""An evaluation run, fully described by one YAML recipe (recipes/eval/*.yaml)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from decode import FormatError, Sampling, get_format
from decode.generate import BACKENDS, FORCING
from decode.prepare.preflight import device_problem

from .benchmarks import BenchmarkError, BenchmarkSpec, resolve_spec
from .inputs import (
    check_argument,
    dtype_problem,
    grading_problem,
    output_dir_problem,
    read_utf8,
    type_problem,
)
from .methods import MethodError, MethodSpec

INSTRUCTIONS = {
    "math": "Please reason step by step, and put your final answer within \\boxed{}.",
    "choice": "Please reason step by step, and give the letter of the correct option within \\boxed{}.",
}


class RecipeError(ValueError):
    """A recipe that cannot be read or has an invalid setting; the message names the file and setting."""


@dataclass
class EvalRecipe:
    """Settings of one evaluation run.

    Attributes:
        model: a local model folder or a hub id.
        tokenizer: its tokenizer (default: the model's).
        backend: the decoder backend: "hf" (transformers), "vllm" (an offline vLLM engine) or "openai"
            (a server's /v1/completions; `model` is then its base URL and `tokenizer` is required).
        forcing: "processor" (budget forcing inside the engine's decoding loop) or "reprompt" (s1's
            re-prompt loop on token ids, for engines where no logits processor can run).
        engine_args: keyword arguments for the vLLM engine or the HTTP client (see `decode.generate`).
        dtype, device: how the model is loaded ("auto" dtype; device default: cuda if present).
        format: thinking format: "s1", "think", or a format JSON file.
        chat_template_kwargs: passed to the chat template when prompts are rendered (e.g.
            `{enable_thinking: true}` for Qwen3); part of the run's fingerprint when set.
        benchmarks: preset names or mappings (see `BenchmarkSpec`).
        methods: control methods (see `MethodSpec`).
        samples: runs per problem and point (pass@1 is their mean).
        sampling: temperature, top_p, top_k, min_p, repetition_penalty for the methods that do not set
            their own; or "model": the checkpoint's generation_config.json (`Sampling.from_generation_config`).
        max_tokens: hard cap on each completion (thinking and answer).
        max_answer_tokens: tokens allowed after the end of thinking. Default none: the answer runs to
            end-of-sequence or the end of the generation window (`max_tokens`), as in s1's harness.
            An answer cut short is reported as truncated.
        answer_reserve: room kept for the answer when a method sets no thinking maximum ("Wait" x k,
            prompts without forcing, class-conditional): thinking is forced to end, with the format's
            force string ("Final Answer:"), at `max_tokens` minus this many tokens minus that string,
            as s1's harness does with `max_tokens_thinking=auto`; such runs count as forced. "auto":
            `max_answer_tokens` if set, else an eighth of `max_tokens` (at least 100, at most half).
            null: no cap; thinking may then spend the window, and the report counts the empty
            answers left at it (`unanswered`).
        batch_size: prompts per decoder call.
        seed: seeds sampling.
        instruction: text appended to the question, per problem kind ("math", "choice").
        grading: `Grader` settings: workers, timeout_s, memory_mb.
        judge: None (default: math-verify grades), or `evals.judge.JudgeSettings` (base_url, model, ...):
            grade as s1 did, its extraction then an LLM judge over an OpenAI-compatible endpoint; every
            sample then records the judge and its reply beside math-verify's verdict.
        output_dir: where samples, summary, table and plots go.
    """

    model: str
    output_dir: str
    benchmarks: list[BenchmarkSpec]
    methods: list[MethodSpec]
    tokenizer: str | None = None
    backend: str = "hf"
    forcing: str = "processor"
    engine_args: dict[str, Any] = field(default_factory=dict)
    dtype: str = "auto"
    device: str | None = None
    format: str = "s1"
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    samples: int = 1
    sampling: Sampling = field(default_factory=Sampling)
    max_tokens: int = 32768
    max_answer_tokens: int | None = None
    answer_reserve: int | str | None = "auto"
    batch_size: int = 8
    seed: int = 0
    instruction: dict[str, str] = field(default_factory=lambda: dict(INSTRUCTIONS))
    grading: dict[str, Any] = field(default_factory=dict)
    judge: dict[str, Any] | None = None
    source: str = ""

    def fingerprint(self) -> str:
        """What decides a completion: a resumed run must match it (benchmarks and methods may grow)."""
        keys = ("model", "tokenizer", "backend", "forcing", "dtype", "format", "sampling", "max_tokens",
                "max_answer_tokens", "answer_reserve", "seed", "instruction")  # fmt: skip
        settings = {k: v for k, v in asdict(self).items() if k in keys}
        if self.chat_template_kwargs:  # only when set, so runs made before the setting existed still resume
            settings["chat_template_kwargs"] = self.chat_template_kwargs
        return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def answer_room(self) -> int | None:
        """Tokens kept for the answer when a method sets no thinking maximum (None: no cap)."""
        if self.answer_reserve is None:
            return None
        if self.answer_reserve != "auto":
            return int(self.answer_reserve)
        if self.max_answer_tokens is not None:
            return self.max_answer_tokens
        return min(self.max_tokens // 2, max(100, self.max_tokens // 8))

    def thinking_cap(self, force_tokens: int) -> int | None:
        """The thinking maximum for methods that set none: the window less the answer room and the
        `force_tokens` of the format's force string (None when `answer_reserve` is null)."""
        room = self.answer_room()
        if room is None:
            return None
        cap = self.max_tokens - room - force_tokens
        if cap < 1:
            raise RecipeError(
                f"{self.source}: answer_reserve: keeping {room} tokens for the answer and {force_tokens} for the "
                f"force string leaves no thinking within max_tokens {self.max_tokens}; lower answer_reserve or "
                "raise max_tokens"
            )
        return cap


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that names a key twice (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                if key in first:
                    raise DuplicateKeyError(f"line {line}: key {key!r} given twice (first on line {first[key]})")
                first[key] = line
            except TypeError:  # an unhashable key: the base class names it
                break
        return super().construct_mapping(node, deep=deep)


class DuplicateKeyError(yaml.YAMLError):
    """A YAML mapping with a key given twice."""


def read_settings(path: str | Path, error: type[Exception] = RecipeError) -> dict[str, Any]:
    """A recipe file's top-level settings; a missing file, bad YAML, a key given twice or a non-mapping
    raise `error` naming the file. Every stage's recipe loader reads its file through this."""
    check_argument("load_recipe", "path", path, (str, Path), "the path of a YAML recipe")
    path = Path(path)
    if not path.is_file():
        raise error(f"recipe {path} does not exist")
    try:
        data = yaml.load(read_utf8(path, error), Loader=UniqueKeyLoader)
    except DuplicateKeyError as err:
        raise error(f"{path}: {err}; the last would silently win") from None
    except yaml.YAMLError as err:
        raise error(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> EvalRecipe:
    """Read and check a recipe; `overrides` replace top-level settings (e.g. from the command line)."""
    check_argument("evals.load_recipe", "overrides", overrides, (dict, type(None)), "a dict of settings or None")
    data = read_settings(path)
    data.update(overrides or {})
    return recipe_from_dict(data, str(path))


def recipe_from_dict(data: dict[str, Any], source: str = "<recipe>") -> EvalRecipe:
    known = set(EvalRecipe.__dataclass_fields__) - {"source"}
    unknown = set(data) - known
    if unknown:
        raise RecipeError(f"{source}: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    for name in ("model", "output_dir", "benchmarks", "methods"):
        if not data.get(name):
            raise RecipeError(f"{source}: '{name}' is required")
    _check_types(data, source)
    values = dict(data)
    try:
        values["benchmarks"] = [resolve_spec(b) for b in data["benchmarks"]]
    except BenchmarkError as err:
        raise RecipeError(f"{source}: benchmarks: {err}") from None
    try:
        values["methods"] = [MethodSpec.from_dict(m) for m in data["methods"]]
    except (MethodError, TypeError) as err:
        raise RecipeError(f"{source}: methods: {err}") from None
    no_string = [m.label for m in values["methods"] if not m.wait]
    if no_string and (data.get("backend", "hf"), data.get("forcing", "processor")) != ("hf", "processor"):
        raise RecipeError(
            f"{source}: methods {no_string}: an empty wait string (s1's \"without string\") needs backend 'hf' with "
            "forcing 'processor': the model must propose again without the end of thinking, which the other "
            "engines here cannot do"
        )
    labels = [m.label for m in values["methods"]]
    if len(set(labels)) != len(labels):
        raise RecipeError(f"{source}: methods: two methods share a label {labels}; give them distinct 'label's")
    try:
        if data.get("sampling") == "model":  # the checkpoint's generation_config.json, on every backend
            folder = data.get("tokenizer") if data.get("backend") == "openai" else None
            values["sampling"] = Sampling.from_generation_config(folder or data["model"])
        else:
            values["sampling"] = Sampling(**(data.get("sampling") or {}))
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{source}: sampling: {err}") from None
    if "instruction" in data:
        values["instruction"] = {**INSTRUCTIONS, **(data["instruction"] or {})}
    for name in ("samples", "batch_size", "max_tokens"):
        if name in data and (not isinstance(data[name], int) or data[name] < 1):
            raise RecipeError(f"{source}: {name} must be a positive integer, got {data[name]!r}")
    _check_values(values, source)
    reserve = data.get("answer_reserve", "auto")
    if reserve not in ("auto", None) and (isinstance(reserve, bool) or not isinstance(reserve, int) or reserve < 1):
        raise RecipeError(f"{source}: answer_reserve must be 'auto', a positive integer or null, got {reserve!r}")
    backend = values.get("backend", "hf")
    if backend not in BACKENDS:
        raise RecipeError(f"{source}: backend must be one of {list(BACKENDS)}, got {backend!r}")
    if values.get("forcing", "processor") not in FORCING:
        raise RecipeError(f"{source}: forcing must be one of {list(FORCING)}, got {values['forcing']!r}")
    if not isinstance(values.get("engine_args") or {}, dict):
        raise RecipeError(f"{source}: engine_args must be a mapping of keyword arguments")
    values["engine_args"] = dict(values.get("engine_args") or {})
    if not isinstance(values.get("chat_template_kwargs") or {}, dict):
        raise RecipeError(f"{source}: chat_template_kwargs must be a mapping of chat template arguments")
    values["chat_template_kwargs"] = dict(values.get("chat_template_kwargs") or {})
    if backend == "hf" and values["engine_args"]:
        raise RecipeError(f"{source}: engine_args apply to the 'vllm' and 'openai' backends, not 'hf'")
    if backend == "openai" and not values.get("tokenizer"):
        raise RecipeError(f"{source}: backend 'openai' needs 'tokenizer' (a local folder): prompts go as token ids")
    if values.get("judge") is not None:
        from .judge import JudgeError, JudgeSettings

        try:
            JudgeSettings(**values["judge"])
        except (JudgeError, TypeError) as err:
            raise RecipeError(f"{source}: judge: {err}") from None
    recipe = EvalRecipe(**values)
    recipe.source = source
    return recipe


def _check_types(data: dict[str, Any], source: str) -> None:
    """Each setting's type against its annotation (methods and sampling by their own classes)."""
    skip = ("benchmarks", "methods", "sampling")
    empty = ("instruction", "engine_args", "grading")  # left empty in YAML: the defaults
    wrong = type_problem(EvalRecipe, {k: v for k, v in data.items() if k not in skip and (k not in empty or v)})
    for name in ("benchmarks", "methods"):
        if not isinstance(data[name], list):
            wrong = wrong or f"{name} expects a list, got {data[name]!r}"
    for index, entry in enumerate(data["methods"] if isinstance(data["methods"], list) else []):
        if isinstance(entry, dict):
            wrong = wrong or type_problem(MethodSpec, entry, f"methods[{index}].")
    if isinstance(data.get("sampling"), dict):
        wrong = wrong or type_problem(Sampling, data["sampling"], "sampling.")
    elif data.get("sampling") not in (None, "model"):
        wrong = wrong or (f"sampling expects a mapping (temperature, top_p, top_k, min_p, repetition_penalty) or "
                          f"'model' (the checkpoint's generation_config.json), got {data['sampling']!r}")  # fmt: skip
    if wrong:
        raise RecipeError(f"{source}: {wrong}")


def _check_values(values: dict[str, Any], source: str) -> None:
    """Values of the right type that a run would still fail on, or quietly read otherwise."""
    names = [spec.name for spec in values["benchmarks"]]
    if len(set(names)) != len(names):
        raise RecipeError(f"{source}: benchmarks: two benchmarks share a name {names}; their samples would mix")
    unknown = sorted(set(values.get("instruction") or {}) - set(INSTRUCTIONS))
    if unknown:
        raise RecipeError(f"{source}: instruction: unknown problem kind(s) {unknown}; known: {', '.join(INSTRUCTIONS)}")
    answer = values.get("max_answer_tokens")
    if answer is not None and answer < 1:
        raise RecipeError(f"{source}: max_answer_tokens expects an integer >= 1 (tokens after the end of thinking) "
                          f"or null (no limit), got {answer!r}")  # fmt: skip
    try:
        fmt = get_format(values.get("format", "s1"))
    except FormatError as err:
        raise RecipeError(f"{source}: format: {err}") from None
    window = values.get("max_tokens", EvalRecipe.max_tokens)
    for method in values["methods"]:
        if method.method == "step_conditional" and not fmt.steps:
            raise RecipeError(
                f"{source}: methods: method {method.label!r} counts steps, so the format must be one with step "
                f"markers (format: s1_steps); format {fmt.name!r} has none"
            )
        if method.method == "step_conditional":
            continue  # its budgets are steps, not tokens: the window check below does not apply
        asked = [p.budget for p in method.points() if p.budget is not None] + [method.min_thinking or 0]
        if max(asked) >= window:
            raise RecipeError(
                f"{source}: methods: method {method.label!r} asks {max(asked)} thinking tokens, but max_tokens "
                f"{window} ends every completion first: that budget can never bind (Control would read 100%); "
                f"raise max_tokens above {max(asked)} with room for the answer, or lower the budget"
            )
    problem = grading_problem(values.get("grading")) or dtype_problem(values.get("dtype", "auto"))
    problem = (
        problem or device_problem(values.get("device"), here=False) or output_dir_problem(str(values["output_dir"]))
    )
    if problem:
        raise RecipeError(f"{source}: {problem}")
