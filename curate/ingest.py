"""Ingest: any number of sources (local JSON / JSONL / parquet, or hub datasets) into the pool schema.

Sources differ in format and field names; the recipe maps each source's fields, so a new source is
a few lines of YAML, not code. A field may be a dotted path into a nested object ("other.solution").
Multiple-choice sources (AGIEval) name an `options` field and a `label` field: the options are
written into the question as lettered lines ("A) ...") and the label becomes the gold letter; a
`passage` field, when given, is put before the question.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from evals.benchmarks import read_file_rows
from evals.inputs import positive_int_problem, prepare_hub_datasets

from .cache import file_hash
from .schema import POOL_FEATURES, CurateError

LETTERS = "ABCDEFGHIJ"
OPTION_PREFIX = re.compile(r"^\s*\(?([A-Ja-j])\s*[)\].:]\s*")


@dataclass
class SourceSpec:
    """One source of questions and how its fields map onto the pool schema.

    Attributes:
        name: the source's name (the `source` column and the id prefix).
        path: a local .jsonl / .json (a list of objects) / .parquet file.
        hub: a `datasets` hub id instead of a path, with `config` and `split`.
        question: the field holding the question (required in every row).
        solution: the field holding a reference solution (optional).
        answer: the field holding a short gold answer (optional; for choice sources, `label`).
        id: the field holding the row's id (default: its row number).
        passage: a field whose text goes before the question (reading comprehension).
        options: a field holding a list of options: the row becomes a lettered multiple-choice question.
        label: the field holding the correct option's letter.
        metadata: fields copied into `metadata` (default: every field not mapped above).
        cot_type: s1K's `cot_type` for this source ("math", "science", ...).
        cot_type_field: a field holding each row's cot_type instead (e.g. "cot_type" in s1's pool).
        source_field: a field naming each row's own origin (e.g. "source_type" in s1's pool): the
            row's `source` becomes "<name>/<value>", so quality rules can exempt origins.
        on_error: "raise" (default): a bad row stops the run, naming file, line and field;
            "skip": bad rows are skipped and counted in the report.
        limit: read only the first `limit` rows.
    """

    name: str
    path: str | None = None
    hub: str | None = None
    config: str | None = None
    split: str = "train"
    question: str = "question"
    solution: str | None = "solution"
    answer: str | None = "answer"
    id: str | None = None
    passage: str | None = None
    options: str | None = None
    label: str | None = None
    metadata: list[str] | None = None
    cot_type: str = "math"
    cot_type_field: str | None = None
    source_field: str | None = None
    on_error: str = "raise"
    limit: int | None = None

    def check(self, where: str) -> None:
        if (self.path is None) == (self.hub is None):
            raise CurateError(f"{where}: source {self.name!r}: give exactly one of 'path' or 'hub'")
        if self.on_error not in ("raise", "skip"):
            raise CurateError(f"{where}: source {self.name!r}: on_error must be raise or skip, not {self.on_error!r}")
        if self.options and not self.label:
            raise CurateError(f"{where}: source {self.name!r}: 'options' needs 'label' (the field with the letter)")
        problem = positive_int_problem(self.limit, "limit")
        if problem:
            raise CurateError(f"{where}: source {self.name!r}: {problem} (the first rows to read)")

    def fingerprint(self) -> dict[str, Any]:
        """The spec plus the content hash of its file, so an edited file is ingested again."""
        values = {k: v for k, v in self.__dict__.items()}
        if self.path is not None and Path(self.path).is_file():
            values["file_sha256"] = file_hash(Path(self.path))
        return values


def read_source_rows(spec: SourceSpec) -> list[tuple[str, Any]]:
    """(where, row) pairs: `where` names the file and line or item, for error messages."""
    if spec.hub is not None:
        prepare_hub_datasets()
        try:
            data = datasets.load_dataset(spec.hub, spec.config, split=spec.split)
        except Exception as err:
            raise CurateError(
                f"source {spec.name!r}: could not load {spec.hub} ({type(err).__name__}: {err}); offline? "
                "give a local 'path'"
            ) from None
        return [(f"{spec.hub} row {i + 1}", row) for i, row in enumerate(data)]
    path = Path(spec.path or "")
    if not path.is_file():
        raise CurateError(f"source {spec.name!r}: file {path} does not exist")
    if path.suffix not in (".parquet", ".json", ".jsonl", ".ndjson"):
        raise CurateError(f"source {spec.name!r}: {path}: expected .jsonl, .json or .parquet")
    rows = read_file_rows(path, CurateError, keep_bad_lines=True)  # bad lines: raised or skipped per on_error
    if not rows:
        raise CurateError(f"source {spec.name!r}: {path} has no rows")
    return rows


def lookup(row: dict[str, Any], name: str) -> Any:
    """A field by dotted path; None when any step is missing."""
    value: Any = row
    for part in name.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def as_text(value: Any, where: str, field_name: str, required: bool) -> str:
    """A text field: numbers become text (27.0 -> "27"); lists, objects and empty required values are errors."""
    if value is None or value == "":
        if required:
            raise CurateError(f"{where}: field {field_name!r} is missing or empty")
        return ""
    if isinstance(value, bool):
        raise CurateError(f"{where}: field {field_name!r}: expected text, got a boolean")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    if not isinstance(value, str):
        raise CurateError(f"{where}: field {field_name!r}: expected text, got {type(value).__name__}")
    if required and not value.strip():
        raise CurateError(f"{where}: field {field_name!r} is blank")
    return value.strip()


def lettered_question(question: str, options: Any, where: str, spec: SourceSpec) -> tuple[str, str]:
    """The question with its options as "A) ..." lines; and the letters used."""
    if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
        raise CurateError(f"{where}: field {spec.options!r}: expected a non-empty list of option strings")
    if len(options) > len(LETTERS):
        raise CurateError(f"{where}: field {spec.options!r}: {len(options)} options, at most {len(LETTERS)}")
    letters = LETTERS[: len(options)]
    lines = []
    for letter, option in zip(letters, options, strict=True):
        match = OPTION_PREFIX.match(option)
        text = option[match.end() :] if match and match.group(1).upper() == letter else option
        lines.append(f"{letter}) {text.strip()}")
    return question + "\n\n" + "\n".join(lines), letters


def convert_row(spec: SourceSpec, where: str, row: Any, index: int) -> dict[str, Any]:
    """One source row in the pool schema, or a `CurateError` naming where and which field."""
    if isinstance(row, Exception):
        raise row
    if not isinstance(row, dict):
        raise CurateError(f"{where}: expected an object, got {type(row).__name__}")
    question = as_text(lookup(row, spec.question), where, spec.question, required=True)
    if spec.passage:
        passage = as_text(lookup(row, spec.passage), where, spec.passage, required=False)
        question = f"{passage}\n\n{question}" if passage else question
    solution = as_text(lookup(row, spec.solution), where, spec.solution, False) if spec.solution else ""
    answer = as_text(lookup(row, spec.answer), where, spec.answer, False) if spec.answer else ""
    kind, letters = "math", ""
    if spec.options and lookup(row, spec.options) is not None:
        question, letters = lettered_question(question, lookup(row, spec.options), where, spec)
        label = as_text(lookup(row, spec.label or ""), where, spec.label or "", required=True).strip("() ").upper()
        if len(label) != 1 or label not in letters:
            raise CurateError(f"{where}: field {spec.label!r}: expected one of the letters {letters}, got {label!r}")
        kind, answer = "choice", label
    raw_id = lookup(row, spec.id) if spec.id else None
    row_id = as_text(raw_id, where, spec.id or "id", required=False) if raw_id is not None else str(index)
    source, cot_type = spec.name, spec.cot_type
    if spec.source_field:
        source = f"{spec.name}/{as_text(lookup(row, spec.source_field), where, spec.source_field, required=True)}"
    if spec.cot_type_field:
        cot_type = as_text(lookup(row, spec.cot_type_field), where, spec.cot_type_field, False) or spec.cot_type
    mapped = {spec.question, spec.solution, spec.answer, spec.id, spec.passage, spec.options, spec.label}
    keep = spec.metadata if spec.metadata is not None else [k for k in row if k not in mapped]
    metadata = {k: row.get(k) for k in keep if k in row}
    return {
        "id": f"{spec.name}:{row_id}",
        "question": question,
        "solution": solution,
        "answer": answer,
        "kind": kind,
        "letters": letters,
        "source": source,
        "cot_type": cot_type,
        "metadata": json.dumps(metadata, ensure_ascii=False, default=str),
    }


def ingest(sources: list[SourceSpec]) -> tuple[datasets.Dataset, dict[str, Any]]:
    """All sources in one pool dataset, and per source: rows read, rows kept, rows skipped (with why)."""
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {"sources": {}}
    seen: dict[str, str] = {}
    for spec in sources:
        pairs = read_source_rows(spec)
        if spec.limit is not None:
            pairs = pairs[: spec.limit]
        skipped: list[str] = []
        kept = 0
        for index, (where, row) in enumerate(pairs):
            try:
                converted = convert_row(spec, where, row, index)
                if converted["id"] in seen:
                    raise CurateError(f"{where}: duplicate id {converted['id']!r} (first at {seen[converted['id']]})")
            except CurateError as err:
                if spec.on_error == "raise":
                    raise
                skipped.append(str(err))
                continue
            seen[converted["id"]] = where
            rows.append(converted)
            kept += 1
        info["sources"][spec.name] = {"read": len(pairs), "kept": kept, "skipped": len(skipped), "errors": skipped[:20]}
    data = datasets.Dataset.from_list(rows, features=POOL_FEATURES) if rows else None
    if data is None:
        raise CurateError("ingest: no rows in any source")
    return data, info
