"""Steps of a step-conditional run, counted as s1 counted them.

s1's step-conditional model writes a marker before each step (`<|im_start|>{k} steps left\\n`), and
s1 counted a run's steps as the occurrences of the marker's text after the number, `' steps left\\n'`,
in the whole response, and a run as over its budget when that count exceeds N
(simplescaling/s1@77272c6:eval/compute_sample_stats.py:64-66). Control for this method takes a
point's a as its mean steps over runs, against the N asked in steps.
"""

from __future__ import annotations

from typing import Any

from decode import get_format


def step_mark(format_name: str) -> str:
    """The marker's text after the number (" steps left\\n" for `s1_steps`); "" for a format without steps."""
    steps = get_format(format_name).steps
    return steps.split("{k}", 1)[1] if steps else ""


def steps_of(record: dict[str, Any], mark: str) -> int:
    """The steps of one run: markers in its thinking and its answer (s1 counted the whole response)."""
    return (record["thinking"] + record["answer"]).count(mark)


def step_metrics(records: list[dict[str, Any]], budget: int | None, mark: str) -> dict[str, Any]:
    """Steps per run and, against N steps, Control's test on their mean and the share of runs within N."""
    from .metrics import in_control, quantiles, within_budget

    steps = [steps_of(r, mark) for r in records]
    mean = sum(steps) / len(steps) if steps else 0.0
    return {
        "steps": quantiles(steps),
        "in_control": in_control(mean, budget),
        "within_budget": within_budget(steps, budget),
    }
