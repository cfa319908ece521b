"""Benchmarks: where the questions come from and how their rows are read.

A benchmark is data, not code: a preset names its hub copy and field names, and a recipe may point
it at a local file (JSONL, JSON list, parquet) or describe a new benchmark the same way. GPQA-style
multiple choice is turned into a question with lettered options, shuffled with a fixed seed per
question so every run asks the same thing.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from decode.prepare.preflight import DuplicateKeyError, loads_unique

from .inputs import decode_line, prepare_hub_datasets, read_utf8, type_problem

LETTERS = "ABCDEFGHIJ"
# An option's letter in a question: "(C)" anywhere, or "C)" / "C." / "C:" at the start of a line.
OPTION_MARK = re.compile(r"\(([A-J])\)|^[ \t]*([A-J])[).:]", re.MULTILINE)


class BenchmarkError(ValueError):
    """A benchmark that cannot be found or read, or a row without the fields the recipe names."""


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark's rows are and what their fields are called.

    Attributes:
        name: the name used in reports.
        path: a local JSONL / JSON (a list of objects) / parquet file; preferred over `hub`.
        hub: a `datasets` hub id, with `config` and `split`.
        question, answer, id: field names. For `kind: gpqa`, `answer` is the correct option and
            `options` the incorrect ones.
        kind: "math" (graded with math-verify), "choice" (`answer` holds the letter) or "gpqa"
            (options shuffled into the question, seeded).
        options: for `gpqa`, the incorrect-option fields. For `choice`, optionally one field holding
            the item's list of options (AGIEval's `options`): they are written below the question, one
            a line, and the letters are as many as the options (A-E for LSAT). Without it the options
            are already in the question, and the letters are those it marks ("(E)", or "E)" / "E."
            at a line start), from A on; ABCD when it marks fewer than two.
        passage: a field whose text goes before the question (AGIEval's `passage`; may be empty).
        limit: use only the first `limit` rows.
        seed: the seed of the option shuffle.
    """

    name: str
    path: str | None = None
    hub: str | None = None
    config: str | None = None
    split: str = "test"
    question: str = "problem"
    answer: str = "answer"
    id: str | None = "id"
    kind: str = "math"
    options: tuple[str, ...] = ()
    limit: int | None = None
    seed: int = 0
    passage: str | None = None


PRESETS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec("aime24", hub="HuggingFaceH4/aime_2024", split="train"),
        BenchmarkSpec("aime25", hub="math-ai/aime25", split="test"),
        BenchmarkSpec("math500", hub="HuggingFaceH4/MATH-500", split="test", id="unique_id"),
        BenchmarkSpec("amc23", hub="math-ai/amc23", split="test", question="question"),
        BenchmarkSpec(
            "gpqa_diamond",
            hub="Idavidrein/gpqa",
            config="gpqa_diamond",
            split="train",
            question="Question",
            answer="Correct Answer",
            id="Record ID",
            kind="gpqa",
            options=("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"),
        ),
    )
}


@dataclass(frozen=True)
class Problem:
    """One question, ready to ask: `question` holds the options of a multiple-choice problem."""

    benchmark: str
    id: str
    question: str
    gold: str
    kind: str  # "math" or "choice"
    letters: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def resolve_spec(entry: str | dict[str, Any]) -> BenchmarkSpec:
    """A recipe entry: a preset name, or a mapping (a preset's `name` with overrides, or a new one)."""
    if isinstance(entry, str):
        if entry not in PRESETS:
            raise BenchmarkError(f"unknown benchmark {entry!r}: presets are {', '.join(PRESETS)}, or give a mapping")
        return PRESETS[entry]
    if not isinstance(entry, dict) or "name" not in entry:
        raise BenchmarkError(f"a benchmark must be a preset name or a mapping with a 'name', got {entry!r}")
    known = set(BenchmarkSpec.__dataclass_fields__)
    unknown = set(entry) - known
    if unknown:
        raise BenchmarkError(f"benchmark {entry['name']!r}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
    wrong = type_problem(BenchmarkSpec, entry)
    if wrong:
        raise BenchmarkError(f"benchmark {entry['name']!r}: {wrong}")
    values = dict(entry)
    if "options" in values:
        values["options"] = tuple(values["options"])
    base = PRESETS.get(entry["name"])
    spec = replace(base, **values) if base else BenchmarkSpec(**values)
    check_spec(spec)
    return spec


def check_spec(spec: BenchmarkSpec) -> None:
    """Settings that a benchmark's rows cannot be read with are refused before any file is opened."""
    if spec.kind not in ("math", "choice", "gpqa"):
        raise BenchmarkError(f"benchmark {spec.name!r}: kind must be math, choice or gpqa, got {spec.kind!r}")
    if spec.path is None and spec.hub is None:
        raise BenchmarkError(f"benchmark {spec.name!r}: give a local 'path' or a 'hub' id")
    if spec.kind == "gpqa" and not spec.options:
        raise BenchmarkError(f"benchmark {spec.name!r}: kind gpqa needs 'options', the fields of the incorrect options")
    limit = spec.limit
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise BenchmarkError(f"benchmark {spec.name!r}: limit expects an integer >= 1 (the first rows) or null, "
                             f"got {limit!r}")  # fmt: skip


def read_rows(spec: BenchmarkSpec, root: Path | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(where, row) pairs: `where` names the file and line (or index) for error messages."""
    if spec.path is None:
        return _hub_rows(spec)
    path = Path(spec.path)
    if root is not None and not path.is_absolute():
        path = root / path
    if not path.is_file():
        raise BenchmarkError(f"benchmark {spec.name!r}: file {path} does not exist")
    return read_file_rows(path)


def read_file_rows(
    path: Path, error: type[Exception] = BenchmarkError, keep_bad_lines: bool = False
) -> list[tuple[str, Any]]:
    """(where, row) pairs of a .parquet, a .json list, or JSON lines (any other name).

    A file that cannot be read raises `error` naming it; a JSON line that does not parse raises
    `error` naming the line, or with `keep_bad_lines` stands in the list as that error, for a caller
    that skips and counts bad rows (curation's `on_error: skip`).
    """
    if path.suffix == ".parquet":
        import datasets

        try:
            rows = datasets.Dataset.from_parquet(str(path)).to_list()
        except Exception as err:  # pyarrow raises several kinds for a file that is not parquet
            raise error(f"{path}: not a readable parquet file ({type(err).__name__}: {err})") from None
        return [(f"{path}: row {i + 1}", row) for i, row in enumerate(rows)]
    if path.suffix == ".json":
        try:
            data = loads_unique(read_utf8(path, error))
        except json.JSONDecodeError as err:  # a key given twice is named, not left to the last one
            raise error(f"{path}: not valid JSON ({err.msg if isinstance(err, DuplicateKeyError) else err})") from None
        if not isinstance(data, list):
            raise error(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
        return [(f"{path}: item {i + 1}", row) for i, row in enumerate(data)]
    return read_json_lines(path, error, keep_bad_lines)


def read_json_lines(path: Path, error: type[Exception] = BenchmarkError, keep_bad_lines: bool = False) -> list:
    """(where, row) pairs of a JSON lines file, blank lines skipped; see `read_file_rows`."""
    rows: list[tuple[str, Any]] = []
    # Lines are split on bytes: a JSON string may hold U+2028, which str.splitlines would break on.
    for number, raw in enumerate(path.read_bytes().removeprefix(b"\xef\xbb\xbf").splitlines(), start=1):
        where = f"{path}: line {number}"
        try:
            line = decode_line(raw, where, error)
            if not line.strip():
                continue
            try:
                rows.append((where, loads_unique(line)))
            except json.JSONDecodeError as err:
                raise error(f"{where}: not valid JSON ({err.msg})") from None
        except error as bad:
            if not keep_bad_lines:
                raise
            rows.append((where, bad))
    return rows


def _hub_rows(spec: BenchmarkSpec) -> list[tuple[str, dict[str, Any]]]:
    import datasets

    prepare_hub_datasets()
    try:
        data = datasets.load_dataset(spec.hub, spec.config, split=spec.split)
    except Exception as err:  # offline, gated, or missing: say which, and the way around it
        raise BenchmarkError(
            f"benchmark {spec.name!r}: could not load {spec.hub} ({type(err).__name__}: {err}); "
            "offline or gated? give a local 'path' in the recipe"
        ) from None
    return [(f"{spec.hub} row {i + 1}", row) for i, row in enumerate(data)]


def _text(value: Any) -> str:
    """A gold answer as text: 27.0 -> "27", a list of answers -> joined."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    return str(value).strip()


def _is_text(value: Any, nested: bool = False) -> bool:
    """A field read as text: a string or a number; an answer (`nested` False) may also be a list of those."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return True
    return not nested and isinstance(value, list) and bool(value) and all(_is_text(v, True) for v in value)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def load_problems(spec: BenchmarkSpec, root: Path | None = None) -> list[Problem]:
    """The benchmark's problems, checked: every row must have the fields the spec names."""
    check_spec(spec)
    rows = read_rows(spec, root)
    if not rows:
        raise BenchmarkError(f"benchmark {spec.name!r}: {spec.path or spec.hub} has no rows")
    if spec.limit is not None:
        rows = rows[: spec.limit]
    problems = []
    seen: set[str] = set()
    for index, (where, row) in enumerate(rows):
        if not isinstance(row, dict):
            raise BenchmarkError(f"{where}: expected an object, got {type(row).__name__}")
        needed = [spec.question, spec.answer, *(spec.options[:1] if spec.kind == "choice" else spec.options)]
        missing = [name for name in needed if row.get(name) in (None, "")]
        if missing:
            raise BenchmarkError(
                f"{where}: missing field(s) {missing} (benchmark {spec.name!r} reads question={spec.question!r}, "
                f"answer={spec.answer!r}); the row has {sorted(row)}"
            )
        pid = _text(row[spec.id]) if spec.id and row.get(spec.id) not in (None, "") else str(index)
        if pid in seen:
            raise BenchmarkError(f"{where}: duplicate id {pid!r} in benchmark {spec.name!r}")
        seen.add(pid)
        listed = spec.options[:1] if spec.kind == "choice" else ()  # a list of options, checked with its letters
        for name in (n for n in needed if n not in listed):
            if not _is_text(row[name], nested=name != spec.answer):
                what = "text, a number or a list of them" if name == spec.answer else "text or a number"
                raise BenchmarkError(f"{where}: field {name!r} expects {what}, got {_short(row[name])}")
        question, gold = str(row[spec.question]).strip(), _text(row[spec.answer])
        if spec.passage and str(row.get(spec.passage) or "").strip():
            question = str(row[spec.passage]).strip() + "\n\n" + question
        if spec.kind == "math":
            problems.append(Problem(spec.name, pid, question, gold, "math"))
        elif spec.kind == "choice":
            problems.append(_lettered_choice(spec, where, row, pid, question, gold.upper()))
        else:
            problems.append(_shuffled_choice(spec, pid, question, gold, [_text(row[o]) for o in spec.options]))
    return problems


def _lettered_choice(spec: BenchmarkSpec, where: str, row: dict[str, Any], pid: str, question: str,
                     gold: str) -> Problem:  # fmt: skip
    """A multiple-choice problem whose letters are the item's own: one per listed option, or those
    the question marks."""
    if len(spec.options) > 1:
        raise BenchmarkError(
            f"benchmark {spec.name!r}: kind 'choice' takes one 'options' field holding a list, got "
            f"{list(spec.options)}; for one field per option use kind 'gpqa'"
        )
    if spec.options:
        options = row[spec.options[0]]
        if not isinstance(options, list) or not 2 <= len(options) <= len(LETTERS):
            raise BenchmarkError(
                f"{where}: field {spec.options[0]!r} must hold a list of 2 to {len(LETTERS)} options, got {options!r}"
            )
        letters = LETTERS[: len(options)]
        lines = [_option_line(letter, str(text)) for letter, text in zip(letters, options, strict=True)]
        question += "\n\n" + "\n".join(lines)
    else:
        marked = {a or b for a, b in OPTION_MARK.findall(question)}
        count = next((k for k, letter in enumerate(LETTERS) if letter not in marked), len(LETTERS))
        letters = LETTERS[:count] if count >= 2 else LETTERS[:4]
    if gold not in letters:
        raise BenchmarkError(
            f"{where}: answer {gold!r} is not one of the options' letters {', '.join(letters)} (benchmark "
            f"{spec.name!r}, answer={spec.answer!r})"
        )
    return Problem(spec.name, pid, question, gold, "choice", letters)


def _option_line(letter: str, text: str) -> str:
    """An option as "(A) text"; an option that already starts with its letter ("(A)...", "A)") is kept."""
    text = text.strip()
    if re.match(rf"\(?{letter}[).:]", text):
        return text
    return f"({letter}) {text}"


def _shuffled_choice(spec: BenchmarkSpec, pid: str, question: str, correct: str, wrong: list[str]) -> Problem:
    """GPQA's options in a fixed per-question order (seeded by the spec's seed and the id)."""
    options = [correct, *wrong]
    order = list(range(len(options)))
    random.Random(f"{spec.seed}:{spec.name}:{pid}").shuffle(order)
    letters = LETTERS[: len(options)]
    lines = [f"{letters[k]}) {options[i]}" for k, i in enumerate(order)]
    gold = letters[order.index(0)]
    return Problem(spec.name, pid, question + "\n\n" + "\n".join(lines), gold, "choice", letters)
