"""The numbers a report gives for each benchmark, method and point, under the papers' definitions.

- accuracy: pass@1, the mean over problems and samples.
- Control (s1 §3.2): `(1/|A|) * sum over a in A of 1(a_min <= a <= a_max)`, with A a method's
  evaluated points that ask a budget and a a point's thinking tokens, taken as the mean over its
  runs (what s1 plots). a_max is the budget asked, a_min the minimum (0 unless one was set). So a
  method with five points of which two land within their budgets has Control 40% (s1's Table 3:
  token-conditional 40%, step-conditional 60%, class-conditional 50%).
- Class-conditional Control (s1's Table 3): a class prompt is in control when its mean thinking moves
  the way it asks from the unprompted run's: "short" below it, "long" above it (s1: 8033 > 6109 and
  9651 > 6109 gives 50%, since its short prompt thought longer than no prompt).
- within_budget (ours): the share of runs whose thinking stayed within a_min..a_max, a run rejection
  sampling could not fit counting as outside; per method, the mean over points. Not s1's Control.
- Scaling (s1 §3.2): the average slope of accuracy against thinking over all pairs of a method's
  points, in accuracy points (%) per doubling of mean thinking tokens (s1 plots thinking on a log
  axis; the unit is written into every report).
- Performance (s1 §3.2): the best accuracy of the method.
- Length deviation (L1): with n the tokens of the whole completion (thinking, the strings the
  decoder inserts and the answer; not the end-of-sequence), the signed (E[n] - N) / N and the mean
  of |n - N| / N over runs. `thinking_length_deviation` / `thinking_length_abs_error` are the same
  with n the thinking tokens only (ours).
- Majority vote: answers are grouped by equivalence (math-verify for math, the letter for multiple
  choice), as L1's majority@k, so `1/2`, `\\frac{1}{2}` and `0.5` vote together.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Any

SCALING_UNIT = "accuracy points (%) per doubling of mean thinking tokens"
CONTROL = (
    "s1's Control (§3.2), the share of a method's points that ask a budget whose thinking a lies within "
    "a_min <= a <= a_max"
)
WITHIN_BUDGET = "share of runs whose thinking stayed within the budget asked (per method: mean over points)"
LENGTH_DEVIATION = (
    "L1's length deviation, n = tokens of the whole completion: signed (mean n - N) / N; "
    "length_abs_error: mean |n - N| / N; thinking_length_*: the same with n = thinking tokens"
)


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


def in_control(thinking: float, budget: int | None, minimum: int = 0) -> bool | None:
    """Whether one point's thinking a satisfies a_min <= a <= a_max (None when no budget was asked)."""
    if budget is None:
        return None
    return minimum <= thinking <= budget


def control(points: Sequence[tuple[float, int | None, int]]) -> float | None:
    """s1's Control over a method's points, each (a, a_max, a_min); points without a_max are not in A.

    None when no point asks a budget.
    """
    inside = [in_control(a, a_max, a_min) for a, a_max, a_min in points]
    counted = [ok for ok in inside if ok is not None]
    return sum(counted) / len(counted) if counted else None


def class_in_control(thinking: float, unprompted: float, direction: int) -> bool:
    """Whether a class prompt moved the mean thinking the way it asks: below the unprompted run's for
    direction -1 ("short"), above it for +1 ("long")."""
    return thinking < unprompted if direction < 0 else thinking > unprompted


def within_budget(
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


Equivalent = Callable[[str, str], bool]


def _same_text(a: str, b: str) -> bool:
    return a.replace(" ", "") == b.replace(" ", "")


def majority(
    answers: Sequence[tuple[str | None, bool]], equivalent: Equivalent = _same_text
) -> tuple[str | None, bool]:
    """The answer most runs agree on, and whether it was graded correct.

    Each answer joins the first earlier group whose first answer it is `equivalent` to (default:
    the same text once spaces are removed; the report passes math-verify). The largest group wins,
    the group seen first on a tie; its first answer and verdict stand for it. Runs with no
    extracted answer do not vote.
    """
    groups: list[list[tuple[str, bool]]] = []
    for answer, ok in answers:
        if not answer:
            continue
        for group in groups:
            if _same_text(group[0][0], answer) or equivalent(group[0][0], answer):
                group.append((answer, ok))
                break
        else:
            groups.append([(answer, ok)])
    if not groups:
        return None, False
    best = max(groups, key=len)  # max keeps the first of equal sizes
    return best[0]


def point_metrics(records: Sequence[dict[str, Any]], budget: int | None, minimum: int = 0) -> dict[str, Any]:
    """Accuracy, token distributions, Control's test, within_budget, length deviations and run ends of one point."""
    thinking = [r["thinking_tokens"] for r in records]
    completion = [r["completion_tokens"] for r in records]
    fits = [r.get("fits", True) for r in records]
    signed, absolute = length_deviation(completion, budget)
    thinking_signed, thinking_absolute = length_deviation(thinking, budget)
    mean_thinking = statistics.fmean(thinking) if thinking else 0.0

    def share(flag: str) -> float | None:
        return statistics.fmean(bool(r.get(flag)) for r in records) if records else None

    return {
        "runs": len(records),
        "accuracy": statistics.fmean(r["correct"] for r in records) if records else None,
        "thinking_tokens": quantiles(thinking),
        "answer_tokens": quantiles([r["answer_tokens"] for r in records]),
        "completion_tokens": quantiles(completion),
        "in_control": in_control(mean_thinking, budget, minimum),
        "within_budget": within_budget(thinking, budget, minimum, fits),
        "length_deviation": signed,
        "length_abs_error": absolute,
        "thinking_length_deviation": thinking_signed,
        "thinking_length_abs_error": thinking_absolute,
        "waits": statistics.fmean(r["waits"] for r in records) if records else None,
        "forced": share("forced_end"),
        "forced_for_answer": share("forced_for_answer"),
        "truncated": share("truncated"),
        "unanswered": share("unanswered"),
    }
