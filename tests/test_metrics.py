"""Metric formulas on hand-computed cases."""

import math

import pytest

from evals import control, length_deviation, performance, scaling
from evals.metrics import majority, quantiles


def test_scaling_is_the_mean_slope_over_all_pairs_per_doubling():
    # (512, 40%), (1024, 50%), (2048, 45%): slopes per doubling 10, 2.5 (over two doublings), -5.
    assert scaling([(512, 0.40), (1024, 0.50), (2048, 0.45)]) == pytest.approx((10 + 2.5 - 5) / 3)
    assert scaling([(2048, 0.45), (512, 0.40), (1024, 0.50)]) == pytest.approx(2.5)  # order does not matter
    assert scaling([(100, 0.5), (100, 0.7)]) is None  # no spread in thinking: no slope
    assert scaling([(100, 0.5)]) is None


def test_control_counts_runs_within_the_budget_and_minimum():
    assert control([3, 4, 5, 6], budget=5) == 0.75
    assert control([3, 4, 5, 6], budget=5, minimum=4) == 0.5
    assert control([3, 4], budget=5, fits=[True, False]) == 0.5  # a rejection-sampling failure is outside
    assert control([3, 4], budget=None) is None


def test_length_deviation_is_signed_mean_and_mean_absolute_error():
    signed, absolute = length_deviation([80, 120, 130], budget=100)
    assert signed == pytest.approx(0.1)  # mean 110
    assert absolute == pytest.approx((20 + 20 + 30) / 3 / 100)
    assert length_deviation([5], budget=None) == (None, None)


def test_performance_majority_and_quantiles():
    assert performance([0.2, 0.6, 0.4]) == 0.6
    assert majority([("1/2", False), ("0.5", True), ("0.5", True), (None, False)]) == ("0.5", True)
    assert majority([("a", True), ("b", False)]) == ("a", True)  # a tie goes to the first seen
    assert majority([(None, False)]) == (None, False)
    q = quantiles([1, 2, 3, 4, 5])
    assert q["mean"] == 3 and q["median"] == 3 and q["p25"] == 2 and q["max"] == 5
    assert math.isclose(quantiles([0, 10])["p10"], 1.0)
