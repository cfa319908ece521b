"""Checks shared by every stage's recipe and data reader, so that bad input is named before any work.

A recipe is YAML, read into dataclasses of settings. YAML guesses types (`1e-6` is text, `yes` is
true), and a dataclass does not check its annotations, so a wrong type would otherwise surface deep
inside a run as "'<' not supported between 'str' and 'int'". `type_problem` compares a mapping of
settings with the annotations of the dataclass it is meant for and says which setting expected
what. Files are decoded here too, so a file that is not UTF-8 is refused with its name and line.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

GRADING_KEYS = ("workers", "timeout_s", "memory_mb")


def read_utf8(path: Path, error: type[Exception]) -> str:
    """A file's text (a byte-order mark at its start dropped); bytes that are not UTF-8 raise `error`
    naming the file, line and byte offset."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise error(
            f"{path}: line {line}: not UTF-8 (byte {data[err.start]:#04x} at offset {err.start}); save it as UTF-8"
        ) from None


def decode_line(raw: bytes, where: str, error: type[Exception]) -> str:
    """One line of a line-based file as text; bytes that are not UTF-8 raise `error` naming `where`."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{where}: not UTF-8 (byte {raw[err.start]:#04x} at column {err.start + 1})") from None


def prepare_hub_datasets() -> None:
    """Call before a hub dataset is loaded: when the hub cannot be reached, `datasets` is switched to its
    cache, so that a dataset it does not hold fails at once instead of after half a minute of retries."""
    from decode.prepare.loading import go_offline, hub_online

    if hub_online():
        return
    import datasets

    go_offline()
    datasets.config.HF_HUB_OFFLINE = True


def describe(hint: Any) -> str:
    """What an annotation asks for, in words a recipe writer knows."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return "anything"
    if hint is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin in (list, tuple):
        item = args[0] if args else Any
        return "a list" if item is Any else f"a list of {_plural(describe(item))}"
    if origin is dict or hint is dict:
        return "a mapping"
    names = {int: "an integer", float: "a number", str: "text", bool: "true or false", list: "a list"}
    if hint in names:
        return names[hint]
    return f"a mapping of {getattr(hint, '__name__', hint)} settings"


def _plural(words: str) -> str:
    plural = {"an integer": "integers", "a number": "numbers", "text": "texts", "true or false": "booleans"}
    return plural.get(words, words.removeprefix("a ").removeprefix("an ") + "s")


def matches(value: Any, hint: Any) -> bool:
    """Whether a value read from YAML fits an annotation (a list stands for a tuple; an int for a float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if origin in (list, tuple) or hint in (list, tuple):
        item = args[0] if args else Any
        return isinstance(value, list | tuple) and all(matches(v, item) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict) and (len(args) < 2 or all(matches(v, args[1]) for v in value.values()))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # nan and the infinities (YAML's .nan, .inf) are no setting's value
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type):  # nested settings: a mapping, built and checked by its own class
        return isinstance(value, dict | hint)
    return True


def type_problem(cls: type, values: dict[str, Any], prefix: str = "") -> str | None:
    """The first setting of `values` whose type does not fit `cls`'s annotation, in words; None if all fit."""
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation that cannot be resolved: leave it to the class
        return None
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set(hints)
    for name, value in values.items():
        if name in names and name in hints and not matches(value, hints[name]):
            shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
            hint = ""
            if isinstance(value, str) and _number(value):
                hint = " (YAML reads a number such as 1e-6 as text: write 1.0e-6)"
            elif isinstance(value, float) and not math.isfinite(value):
                hint = " (a finite one)"
            return f"{prefix}{name} expects {describe(hints[name])}, got {shown}{hint}"
    return None


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def grading_problem(grading: Any) -> str | None:
    """What is wrong with a recipe's `grading` settings (the `evals.Grader` arguments), or None."""
    if grading is None:
        return None
    if not isinstance(grading, dict):
        return f"grading expects a mapping of {', '.join(GRADING_KEYS)}, got {grading!r}"
    unknown = sorted(set(grading) - set(GRADING_KEYS))
    if unknown:
        return f"grading: unknown setting(s) {unknown}; known: {', '.join(GRADING_KEYS)}"
    workers, timeout_s, memory_mb = (grading.get(k) for k in GRADING_KEYS)
    if "workers" in grading and not (_integer(workers) and workers >= 1):
        return f"grading.workers expects an integer >= 1 (worker processes), got {workers!r}"
    if "timeout_s" in grading and not (_real(timeout_s) and timeout_s > 0):
        return f"grading.timeout_s expects a number of seconds > 0, got {timeout_s!r}"
    if memory_mb is not None and not (_integer(memory_mb) and memory_mb >= 1):
        return f"grading.memory_mb expects an integer >= 1 (MiB per worker) or null, got {memory_mb!r}"
    return None


def dtype_problem(dtype: Any, setting: str = "dtype") -> str | None:
    """A dtype must be "auto" or the name of a torch dtype ("float32", "bfloat16", "float16", ...)."""
    import torch

    if isinstance(dtype, str) and (dtype == "auto" or isinstance(getattr(torch, dtype, None), torch.dtype)):
        return None
    return f"{setting} expects 'auto' or a torch dtype name (float32, bfloat16, float16), got {dtype!r}"


def output_dir_problem(output_dir: str, setting: str = "output_dir") -> str | None:
    """An output folder must be a folder or not exist yet; a file in its place (or above it) is refused."""
    path = Path(output_dir).expanduser()
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                return f"{setting} {output_dir!r}: {folder} is a file, not a folder"
            return None
    return None


def positive_int_problem(value: Any, setting: str, allow_none: bool = True) -> str | None:
    if value is None and allow_none:
        return None
    if _integer(value) and value >= 1:
        return None
    return f"{setting} expects an integer >= 1{' or null' if allow_none else ''}, got {value!r}"


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def trainer_numbers_problem(values: dict[str, Any], section: str) -> str | None:
    """Trainer arguments the trainer would take and misread: a number that is nan or infinite, and a
    `max_steps` below 1 other than -1 (transformers reads any value <= 0 as "train for num_train_epochs")."""
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            return f"{section}.{name} expects a finite number, got {value!r}"
    steps = values.get("max_steps", -1)
    if "max_steps" in values and (isinstance(steps, bool) or not isinstance(steps, int) or (steps < 1 and steps != -1)):
        return f"{section}.max_steps expects an integer >= 1 (or -1: train for num_train_epochs), got {steps!r}"
    return None


def check_argument(call: str, name: str, value: Any, kind: type | tuple[type, ...], expected: str) -> None:
    """A public function's argument of the wrong kind, named with what was expected (Python checks no
    annotation, so it would otherwise fail far inside the run)."""
    if not isinstance(value, kind) or (
        isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
    ):
        raise TypeError(f"{call}(): {name} expects {expected}, got {type(value).__name__} {_shown(value)}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
