"""Offline AIME24 and MATH500 for lm-eval: local JSON lines, s1's prompt and s1's answer extraction.

lm-eval's own `aime24` and `hendrycks_math500` download from the hub. These tasks read the same
questions from files: by default `../shared/data/eval/{aime24,math500}.jsonl` beside the project, or
any file given with `--metadata '{"aime24_path": "...", "math500_path": "..."}'` (JSON lines, or a
.json list, or .parquet; each row needs `problem` and `answer`).

The prompt is the bare question, as in s1's harness (its QUERY_TEMPLATE is "{Question}"). Answers
are read as s1's harness reads them (simplescaling/s1, eval/lm-evaluation-harness/lm_eval/tasks/
aime/utils.py): the text after the answer header, then the last \\boxed{...}, else what follows
"Answer:". AIME's `exact_match` is s1's: equal after turning digit strings into integers ("023" is
23). MATH500's `math_verify` is ours: s1 asks gpt-4o-mini whether the answer matches; here math-verify
decides, in worker processes under a deadline (evals.grading).
"""

from __future__ import annotations

import atexit
from pathlib import Path
from typing import Any

import datasets

from evals.benchmarks import read_file_rows
from evals.grading import Answer, Grader
from evals.judge import s1_extract as s1_reading

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "eval"
# s1's answer headers: the text after the last of these is the answer (the second drops its role line).
ANSWER_HEADERS = ("<|im_start|>answer\n", "<|im_start|>", "</think>")


class TaskDataError(ValueError):
    """A task file that is missing or has a row without a question or an answer."""


def load(name: str, metadata: dict[str, Any]) -> datasets.DatasetDict:
    key = f"{name}_path"
    path = Path(metadata.get(key) or DATA / f"{name}.jsonl")
    if not path.is_file():
        raise TaskDataError(
            f'task {name}_local: data file {path} does not exist; give one with --metadata \'{{"{key}": "FILE"}}\''
        )
    docs = []
    for where, row in read_file_rows(path, TaskDataError):
        if not isinstance(row, dict):
            raise TaskDataError(f"{where}: expected a JSON object with 'problem' and 'answer'")
        for field in ("problem", "answer"):
            if not isinstance(row.get(field), str | int) or isinstance(row.get(field), bool) or row[field] == "":
                raise TaskDataError(f"{where}: {field!r} must be a non-empty string or number, got {row.get(field)!r}")
        docs.append({"id": str(row.get("id", row.get("unique_id", len(docs)))), "problem": str(row["problem"]),
                     "answer": str(row["answer"])})  # fmt: skip
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(docs)})


def aime24(**metadata: Any) -> datasets.DatasetDict:
    return load("aime24", metadata)


def math500(**metadata: Any) -> datasets.DatasetDict:
    return load("math500", metadata)


def doc_to_text(doc: dict) -> str:
    return doc["problem"]


def answer_part(text: str) -> str:
    """The answer of a whole completion (`output=completion`); an answer alone is returned as it is."""
    if ANSWER_HEADERS[0] in text:
        return text.split(ANSWER_HEADERS[0])[-1]
    if ANSWER_HEADERS[1] in text:
        rest = text.split(ANSWER_HEADERS[1])[-1]
        return rest.split("\n", 1)[1] if "\n" in rest else rest
    return text.split(ANSWER_HEADERS[2])[-1]


def s1_extract(text: str) -> str:
    """s1's reading of an answer (the last boxed expression, else what follows "Answer:"), on the answer part."""
    return s1_reading(answer_part(text))


def _integer_form(value: str) -> str:
    value = value.strip()
    return str(int(value)) if value.isdigit() else value


def process_aime(doc: dict, results: list[str]) -> dict[str, int]:
    return {"exact_match": int(_integer_form(s1_extract(results[0])) == _integer_form(doc["answer"]))}


_grader: Grader | None = None


def _grading() -> Grader:
    global _grader
    if _grader is None:
        _grader = Grader(workers=1).start()
        atexit.register(_grader.close)
    return _grader


def process_math(doc: dict, results: list[str]) -> dict[str, int]:
    verdict = _grading().grade([Answer(kind="math", gold=doc["answer"], text=answer_part(results[0]))])[0]
    return {"math_verify": int(verdict.correct)}
