"""Majority vote groups answers by math-verify equivalence (as L1's majority@k), each check bounded in
time in the grader's worker processes."""

import pytest

from evals import Grader
from evals.recipe import recipe_from_dict
from evals.report import summarize, vote_equivalence, vote_pairs


def vote_recipe():
    return recipe_from_dict(
        {
            "model": "unused",
            "output_dir": "unused",
            "benchmarks": [{"name": "b", "path": "unused.jsonl"}],
            "methods": [{"method": "majority_vote", "votes": [1, 5]}],
        }
    )


def draws(answers: list[tuple[str | None, bool]], problem: str = "p") -> list[dict]:
    return [
        {"benchmark": "b", "problem_id": problem, "method": "majority_vote", "point": "no budget", "sample": k,
         "kind": "math", "extracted": answer, "correct": ok, "thinking_tokens": 10, "answer_tokens": 2,
         "completion_tokens": 14, "waits": 0, "forced_end": False}
        for k, (answer, ok) in enumerate(answers)
    ]  # fmt: skip


@pytest.mark.slow
def test_equal_values_in_other_forms_vote_together():
    # Gold 1/2: two runs say 3, three say 1/2 in three forms. By text, 3 wins; by equivalence, 1/2 does.
    records = draws([("3", False), ("1/2", True), ("3", False), ("\\frac{1}{2}", True), ("0.5", True)])
    records += draws([("7", True), ("7.0", True), ("8", False)], problem="q")
    recipe = vote_recipe()
    by_text = summarize(recipe, records)["benchmarks"]["b"]["majority_vote"]["points"]
    assert [p["point"] for p in by_text] == ["k=1", "k=5"]
    assert by_text[1]["accuracy"] == 0.5  # p voted 3 (wrong), q voted 7
    pairs = vote_pairs(recipe, records)
    assert ("1/2", "\\frac{1}{2}") in pairs and ("7", "7.0") in pairs and ("3", "3") not in pairs
    with Grader(workers=1, timeout_s=5) as grader:
        same = grader.equivalent(pairs)
    assert dict(zip(pairs, same, strict=True))[("1/2", "0.5")] is True
    assert dict(zip(pairs, same, strict=True))[("3", "1/2")] is False
    by_value = summarize(recipe, records, vote_equivalence(pairs, same))["benchmarks"]["b"]["majority_vote"]
    assert by_value["points"][1]["accuracy"] == 1.0  # p now votes 1/2
    assert by_value["points"][0]["accuracy"] == 0.5  # k=1: the first sample alone (3 for p, 7 for q)


def hanging_verifier(gold: str, candidate: str, timeout_s: float) -> tuple[bool, str]:
    """Stands in for a parser that never returns on one answer."""
    if "hang" in (gold, candidate):
        import time

        time.sleep(3600)
    return gold == candidate.replace(".0", ""), "compared"


@pytest.mark.slow
def test_a_comparison_that_hangs_counts_as_different_and_never_stalls():
    with Grader(workers=1, timeout_s=1, verifier=hanging_verifier) as grader:
        assert grader.equivalent([("7", "hang"), ("7", "7.0")]) == [False, True]
