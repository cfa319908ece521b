"""Degenerate and hostile model outputs: every answer gets its real verdict, under the deadline.

Model outputs that loop on whitespace or on one phrase are common in long runs. Extraction must stay
linear on them, must run under the per-answer deadline like the rest of grading, and math-verify's
own timeouts must read as timeouts. The assertions are on verdicts only: a quadratic pattern shows
up as a "timed out" verdict (the deadline cuts it), not as a slow test.
"""

import pytest

import evals.grading
from evals import Answer, Grader

N = 1_000_000


@pytest.fixture(scope="module")
def grader():
    with Grader(workers=2, timeout_s=2) as g:
        yield g


def test_long_runs_of_whitespace_and_repeats_get_their_real_verdict(grader):
    spaces = " " * N
    cases = [
        (Answer("math", "42", "Answer" + spaces), False, "no boxed answer"),
        (Answer("math", "42", "Final" + spaces + "answer"), False, "no boxed answer"),
        (Answer("math", "42", "answer " * (N // 7)), False, "no boxed answer"),
        (Answer("math", "42", "Answer" + spaces + ": 42"), True, "equivalent"),
        (Answer("math", "42", "\\boxed{" * (N // 7)), False, "no boxed answer"),
        (Answer("math", "42", "\\boxed" + spaces), False, "no boxed answer"),
        (Answer("choice", "B", "Answer" + spaces), False, "no choice among"),
        (Answer("choice", "B", "Answer: the" + spaces + "final" + spaces), False, "no choice among"),
        (Answer("choice", "B", "Answer" + spaces + "is: (B)"), True, "matches gold"),
        (Answer("choice", "B", "Answer: " + "(" * N), False, "no choice among"),
    ]
    verdicts = grader.grade([answer for answer, _, _ in cases])
    for (answer, correct, reason), verdict in zip(cases, verdicts, strict=True):
        assert (verdict.correct, reason in verdict.reason) == (correct, True), (answer.text[:20], verdict.reason)


def test_extraction_runs_in_the_workers_under_the_deadline(grader, monkeypatch):
    # The parent process never reads an answer: the workers extract, under the deadline.
    def refuse(*args, **kwargs):
        raise AssertionError("extraction ran in the parent process, outside the deadline")

    monkeypatch.setattr(evals.grading, "extract_math", refuse)
    monkeypatch.setattr(evals.grading, "extract_choice", refuse)
    verdicts = grader.grade([Answer("math", "1/2", "so \\boxed{0.5}"), Answer("choice", "C", "Answer: C")])
    assert [v.correct for v in verdicts] == [True, True]
    assert verdicts[0].extracted == "0.5"


def test_math_verify_giving_up_reads_as_timed_out_not_as_wrong(grader):
    answers = [Answer("math", "3", "\\boxed{10^{10^{10}}}"), Answer("math", "3", "\\boxed{(10^9)!}")]
    verdicts = grader.grade(answers)
    for verdict in verdicts:
        assert verdict.correct is False
        assert "timed out" in verdict.reason and "not equivalent" not in verdict.reason, verdict.reason


def test_math_verify_does_not_print_a_long_answer_to_stderr(capfd):
    huge = "\\boxed{" + "x+" * 200_000 + "1}"  # 400 kB that math-verify's parser gives up on
    with Grader(workers=1, timeout_s=1) as grader:  # started here, so its workers write to the captured stderr
        verdict = grader.grade([Answer("math", "3", huge)])[0]
    assert verdict.correct is False and "timed out" in verdict.reason, verdict.reason
    err = capfd.readouterr().err
    assert "x+x+x+x+" not in err and len(err) < 2000, err[:300]
