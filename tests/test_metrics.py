"""Metric formulas on hand-computed cases."""

import math

import pytest

from evals import control, length_deviation, performance, scaling
from evals.metrics import majority, point_metrics, quantiles, within_budget


def test_scaling_is_the_mean_slope_over_all_pairs_per_doubling():
    # (512, 40%), (1024, 50%), (2048, 45%): slopes per doubling 10, 2.5 (over two doublings), -5.
    assert scaling([(512, 0.40), (1024, 0.50), (2048, 0.45)]) == pytest.approx((10 + 2.5 - 5) / 3)
    assert scaling([(2048, 0.45), (512, 0.40), (1024, 0.50)]) == pytest.approx(2.5)  # order does not matter
    assert scaling([(100, 0.5), (100, 0.7)]) is None  # no spread in thinking: no slope
    assert scaling([(100, 0.5)]) is None


def test_control_is_s1s_share_of_points_within_their_budget():
    """s1's Table 3 shapes: a is a point's mean thinking; Control, the share of points with a_min <= a <= a_max."""
    # Token-conditional, five budgets, the model overshoots three of them: 2 of 5 = 40%.
    token = [(900, 1024, 0), (1700, 2048, 0), (4500, 4096, 0), (9000, 8192, 0), (17000, 16384, 0)]
    assert control(token) == pytest.approx(0.4)
    # Step-conditional, five points, three within: 60%.
    step = [(300, 512, 0), (600, 1024, 0), (1900, 2048, 0), (4300, 4096, 0), (8500, 8192, 0)]
    assert control(step) == pytest.approx(0.6)
    # Class-conditional, two points with their bounds, one within: 50%.
    assert control([(2500, 2048, 0), (6000, 8192, 4096)]) == pytest.approx(0.5)
    # A point below its minimum is outside; points without a budget are not in A.
    assert control([(100, 512, 200), (400, 512, 200), (700, None, 0)]) == pytest.approx(0.5)
    assert control([(700, None, 0)]) is None


def test_control_takes_a_point_mean_not_its_runs():
    """Runs of 300 and 700 tokens at N = 512: the mean (500) is within, so the point counts for Control,
    while only half of the runs are (within_budget, ours)."""
    runs = [{"thinking_tokens": t, "answer_tokens": 5, "completion_tokens": t + 9, "correct": True, "waits": 0,
             "forced_end": False} for t in (300, 700)]  # fmt: skip
    p = point_metrics(runs, budget=512)
    assert p["in_control"] is True and p["within_budget"] == 0.5
    assert control([(p["thinking_tokens"]["mean"], 512, 0)]) == 1.0


def test_within_budget_counts_runs_within_the_budget_and_minimum():
    assert within_budget([3, 4, 5, 6], budget=5) == 0.75
    assert within_budget([3, 4, 5, 6], budget=5, minimum=4) == 0.5
    assert within_budget([3, 4], budget=5, fits=[True, False]) == 0.5  # a rejection-sampling failure is outside
    assert within_budget([3, 4], budget=None) is None


def test_length_deviation_counts_the_whole_completion_and_thinking_apart():
    """L1's n is the whole completion; the thinking-only figure is reported beside it under its own name."""
    runs = [{"thinking_tokens": t, "answer_tokens": a, "completion_tokens": t + a + 10, "correct": False,
             "waits": 0, "forced_end": False} for t, a in ((60, 10), (90, 40))]  # fmt: skip
    p = point_metrics(runs, budget=100)
    assert p["length_deviation"] == pytest.approx(0.1)  # completions 80 and 140: mean 110
    assert p["length_abs_error"] == pytest.approx((20 + 40) / 2 / 100)
    assert p["thinking_length_deviation"] == pytest.approx(-0.25)  # thinking 60 and 90: mean 75
    assert p["thinking_length_abs_error"] == pytest.approx(0.25)


def test_length_deviation_is_signed_mean_and_mean_absolute_error():
    signed, absolute = length_deviation([80, 120, 130], budget=100)
    assert signed == pytest.approx(0.1)  # mean 110
    assert absolute == pytest.approx((20 + 20 + 30) / 3 / 100)
    assert length_deviation([5], budget=None) == (None, None)


def test_performance_majority_and_quantiles():
    assert performance([0.2, 0.6, 0.4]) == 0.6
    assert majority([("1/2", False), ("0.5", True), ("0.5", True), (None, False)]) == ("0.5", True)
    # With an equivalence, 1/2, \frac{1}{2} and 0.5 vote together and outvote two 3s.
    same = {frozenset(("1/2", "0.5")), frozenset(("1/2", "\\frac{1}{2}")), frozenset(("0.5", "\\frac{1}{2}"))}
    votes = [("3", False), ("1/2", True), ("3", False), ("\\frac{1}{2}", True), ("0.5", True)]
    assert majority(votes) == ("3", False)
    assert majority(votes, lambda a, b: frozenset((a, b)) in same) == ("1/2", True)
    assert majority([("a", True), ("b", False)]) == ("a", True)  # a tie goes to the first seen
    assert majority([(None, False)]) == (None, False)
    q = quantiles([1, 2, 3, 4, 5])
    assert q["mean"] == 3 and q["median"] == 3 and q["p25"] == 2 and q["max"] == 5
    assert math.isclose(quantiles([0, 10])["p10"], 1.0)
