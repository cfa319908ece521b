"""The numbers a report gives for each benchmark, method and point.

- accuracy: pass@1, the mean over problems and samples.
- Control (s1 §3.2): the share of runs whose thinking stayed within the budget asked (and above a
  minimum, if one was set); a run rejection sampling could not fit counts as outside.
- Scaling (s1 §3.2): the average slope of accuracy against thinking over all pairs of a method's
  points, in accuracy points (%) per doubling of mean thinking tokens (s1 plots thinking on a log
  axis; the unit is written into every report).
- Performance (s1 §3.2): the best accuracy of the method.
- Length deviation (L1): the signed (E[n] - N) / N, and the mean of |n - N| / N over runs.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from itertools import combinations
from typing import Any

SCALING_UNIT = "accuracy points (%) per doubling of mean thinking tokens"


def quantiles(values: Sequence[float]) -> dict[str, float]:
    """Mean and the usual quantiles of a distribution (empty dict for no values)."""
    if not values:
        return {}
    ordered = sorted(values)

    def q(p: float) -> float:
        position = p * (len(ordered) - 1)
        low, high = math.floor(position), math.ceil(position)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return {"mean": statistics.fmean(ordered), "min": ordered[0], "p10": q(0.1), "p25": q(0.25),
            "median": q(0.5), "p75": q(0.75), "p90": q(0.9), "max": ordered[-1]}  # fmt: skip


def control(
    thinking: Sequence[int], budget: int | None, minimum: int = 0, fits: Sequence[bool] | None = None
) -> float | None:
    """Share of runs with minimum <= thinking <= budget (None when no budget was asked)."""
    if budget is None or not thinking:
        return None
    inside = [minimum <= n <= budget for n in thinking]
    if fits is not None:
        inside = [a and b for a, b in zip(inside, fits, strict=True)]
    return sum(inside) / len(inside)


def length_deviation(lengths: Sequence[int], budget: int | None) -> tuple[float | None, float | None]:
    """L1's (signed (E[n] - N) / N, mean |n - N| / N); None without a budget N > 0."""
    if not budget or not lengths:
        return None, None
    signed = (statistics.fmean(lengths) - budget) / budget
    absolute = statistics.fmean(abs(n - budget) for n in lengths) / budget
    return signed, absolute


def scaling(points: Sequence[tuple[float, float]]) -> float | None:
    """Average slope over all pairs of (mean thinking tokens, accuracy in [0, 1]) points, in SCALING_UNIT.

    Pairs at the same thinking length carry no slope and are left out; None with fewer than two.
    """
    usable = [(math.log2(x), 100 * y) for x, y in points if x > 0]
    slopes = [(yb - ya) / (xb - xa) for (xa, ya), (xb, yb) in combinations(sorted(usable), 2) if xb != xa]
    return statistics.fmean(slopes) if slopes else None


def performance(accuracies: Sequence[float]) -> float | None:
    return max(accuracies) if accuracies else None


def majority(answers: Sequence[tuple[str | None, bool]]) -> tuple[str | None, bool]:
    """The most common extracted answer (first seen wins a tie) and whether it was graded correct.

    Answers are compared after removing spaces; runs with no extracted answer do not vote.
    """
    votes = [(a.replace(" ", ""), a, ok) for a, ok in answers if a]
    if not votes:
        return None, False
    counts = Counter(key for key, _, _ in votes)
    best = max(counts.values())
    for key, answer, ok in votes:
        if counts[key] == best:
            return answer, ok
    raise AssertionError("unreachable")


def point_metrics(records: Sequence[dict[str, Any]], budget: int | None, minimum: int = 0) -> dict[str, Any]:
    """Accuracy, thinking and answer token distributions, Control and length deviation of one point."""
    thinking = [r["thinking_tokens"] for r in records]
    completion = [r["thinking_tokens"] + r["answer_tokens"] for r in records]
    fits = [r.get("fits", True) for r in records]
    signed, absolute = length_deviation(thinking, budget)
    return {
        "runs": len(records),
        "accuracy": statistics.fmean(r["correct"] for r in records) if records else None,
        "thinking_tokens": quantiles(thinking),
        "answer_tokens": quantiles([r["answer_tokens"] for r in records]),
        "control": control(thinking, budget, minimum, fits),
        "length_deviation": signed,
        "length_abs_error": absolute,
        "completion_length_deviation": length_deviation(completion, budget)[0],
        "waits": statistics.fmean(r["waits"] for r in records) if records else None,
        "forced": statistics.fmean(r["forced_end"] for r in records) if records else None,
    }
