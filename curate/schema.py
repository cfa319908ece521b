"""The one row schema every source is mapped into, and the curated set's output schema (s1K's).

Every stage reads and writes `datasets.Dataset`s whose rows have at least the pool columns. Stages
add their own columns (domain, trace, ...); the final set is written in s1K's column layout plus
ours, so it loads with `datasets.load_from_disk` and pushes to the hub as it is.
"""

from __future__ import annotations

import json
from typing import Any

import datasets

# The pool schema: what ingest produces from any source.
POOL_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),  # "<source name>:<the source's id or row number>"
        "question": datasets.Value("string"),  # multiple choice: the options are in the question, lettered
        "solution": datasets.Value("string"),  # reference solution, may be empty
        "answer": datasets.Value("string"),  # short gold answer (a letter for multiple choice), may be empty
        "kind": datasets.Value("string"),  # "math" (graded by math-verify) or "choice" (a letter)
        "letters": datasets.Value("string"),  # option letters of a multiple-choice question, else ""
        "source": datasets.Value("string"),  # the source's name in the recipe
        "cot_type": datasets.Value("string"),  # s1K's cot_type: "math", "science", ...
        "metadata": datasets.Value("string"),  # the source's other fields, as JSON
    }
)

# Columns of s1K (simplescaling/s1K), in its order.
S1K_COLUMNS = ("question", "solution", "cot_type", "source_type", "metadata", "thinking_trajectories", "attempt")

# What the curated set adds to s1K's columns.
OUR_COLUMNS = ("id", "answer", "kind", "domain", "domain_name", "trace_tokens", "decisions")


class CurateError(ValueError):
    """Bad input or a bad setting: the message names the file, line or row, and the field."""


def metadata_of(row: dict[str, Any]) -> dict[str, Any]:
    """A row's metadata as a dict (it is stored as JSON text so every source fits one schema)."""
    try:
        value = json.loads(row.get("metadata") or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def empty_pool() -> datasets.Dataset:
    return datasets.Dataset.from_dict({name: [] for name in POOL_FEATURES}, features=POOL_FEATURES)
