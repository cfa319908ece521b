"""Grading on real MATH500 gold answers: equivalent rewritings verify, near misses do not, and an
answer that hangs or breaks the parser is marked wrong with a reason instead of stalling the run."""

import json
import re
from fractions import Fraction

import pytest

from evals import Answer, Grader, extract_choice, extract_math
from tests.conftest import SHARED

DEGREES = "^\\circ"
MATH500 = SHARED / "data" / "eval" / "math500.jsonl"


def math500_golds() -> list[str]:
    if not MATH500.exists():
        pytest.skip(f"real data not found at {MATH500} (../shared is absent)")
    return [json.loads(line)["answer"] for line in MATH500.read_text().splitlines()]


def equivalents(gold: str) -> list[str]:
    """The same answer written as a model might: other notation, delimiters, surrounding text."""
    if re.fullmatch(r"-?\d+", gold):
        return [f"Final Answer: The answer is ${gold}$.", f"so we get \\boxed{{{gold}.0}}", f"Answer: {gold}"]
    match = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", gold)
    if match:
        sign, a, b = match.groups()
        forms = [f"\\boxed{{{sign}\\dfrac{{{a}}}{{{b}}}}}", f"Final Answer: ${sign}{a}/{b}$"]
        value = Fraction(int(a), int(b)) * (-1 if sign else 1)
        if 10**6 % value.denominator == 0:  # a terminating decimal
            forms.append(f"The answer is \\boxed{{{float(value)}}}.")
        return forms
    if re.fullmatch(r"[\[(][^,\[\]()]+,[^,\[\]()]+[\])]", gold):
        left, right = gold[0], gold[-1]
        lo, hi = gold[1:-1].split(",")
        return [f"\\boxed{{\\left{left} {lo}, {hi} \\right{right}}}", f"Answer: ${left}{lo} , {hi}{right}$"]
    if gold.endswith(DEGREES):
        number = gold[: -len(DEGREES)]
        return [f"\\boxed{{{number}}}", f"Final Answer: ${number}^{{\\circ}}$", f"\\boxed{{{number}^\\circ}}"]
    return []


def near_misses(gold: str) -> list[str]:
    if re.fullmatch(r"-?\d+", gold):
        return [f"\\boxed{{{int(gold) + 1}}}", f"Final Answer: {int(gold) - 7}"]
    match = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", gold)
    if match:
        sign, a, b = match.groups()
        return [
            f"\\boxed{{{sign}\\frac{{{int(a) + 1}}}{{{b}}}}}",
            f"\\boxed{{{'' if sign else '-'}\\frac{{{a}}}{{{b}}}}}",
        ]
    if re.fullmatch(r"[\[(]-?\d+,-?\d+[\])]", gold) and int(gold[1:-1].split(",")[0]) < int(gold[1:-1].split(",")[1]):
        flipped = {"(": "[", "[": "(", ")": "]", "]": ")"}
        return [f"\\boxed{{{flipped[gold[0]]}{gold[1:-1]}{flipped[gold[-1]]}}}"]
    if gold.endswith(DEGREES):
        return [f"\\boxed{{{int(gold[: -len(DEGREES)]) + 10}^\\circ}}"]
    return []


@pytest.fixture(scope="module")
def grader():
    with Grader(workers=2, timeout_s=5) as g:
        yield g


def test_equivalent_forms_of_real_gold_answers_verify(grader):
    golds = math500_golds()
    cases = [(gold, text) for gold in golds for text in equivalents(gold)]
    kinds = {"integer", "fraction", "interval", "degrees"}
    assert len(cases) > 900, "the rewritings should cover hundreds of real answers"
    verdicts = grader.grade([Answer("math", gold, text) for gold, text in cases])
    wrong = [(gold, text, v.reason) for (gold, text), v in zip(cases, verdicts, strict=True) if not v.correct]
    assert not wrong, f"{len(wrong)} equivalent answers rejected ({kinds}), e.g. {wrong[:5]}"


def test_near_misses_of_real_gold_answers_fail(grader):
    golds = math500_golds()
    cases = [(gold, text) for gold in golds for text in near_misses(gold)]
    assert len(cases) > 600
    verdicts = grader.grade([Answer("math", gold, text) for gold, text in cases])
    accepted = [(gold, text) for (gold, text), v in zip(cases, verdicts, strict=True) if v.correct]
    assert not accepted, f"{len(accepted)} near misses accepted, e.g. {accepted[:5]}"


def test_only_the_answer_after_thinking_is_graded(grader):
    # The decoder hands over the answer part only; extraction takes its last boxed value.
    verdicts = grader.grade(
        [
            Answer("math", "42", "First I thought \\boxed{41}, but the answer is \\boxed{42}."),
            Answer("math", "42", "I am not sure."),
            Answer("choice", "B", "Final Answer: (B) because ..."),
            Answer("choice", "B", "The answer is \\boxed{\\text{C}}"),
            Answer("choice", "B", "no letter here"),
        ]
    )
    assert [v.correct for v in verdicts] == [True, False, True, False, False]
    assert verdicts[1].reason.startswith("no boxed answer")
    assert verdicts[3].extracted == "C"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{\\frac{1}{2}} and more", "\\frac{1}{2}"),
        ("\\boxed{a} then \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("Final Answer:\n$7$", "$7$"),
        ("answer is: 12", "12"),
        ("**Final Answer:** 42", "42"),
        ("The final answer is $\\boxed{42}$.", "42"),
        ("\\boxed{unclosed", None),
    ],
)
def test_extract_math(text, expected):
    assert extract_math(text)[0] == expected


def test_extract_choice_ignores_words_with_capitals():
    assert extract_choice("Answer: D) 42")[0] == "D"
    assert extract_choice("Answer: Because A is larger, the option is C")[0] == "A"  # first letter on the line
    assert extract_choice("Final Answer: I think so")[0] is None


def test_a_huge_power_tower_is_graded_within_the_time_limit(grader):
    bomb = "\\boxed{" + "9^{" * 40 + "9" + "}" * 40 + "}"
    verdicts = grader.grade([Answer("math", "3", bomb), Answer("math", "3", "\\boxed{3}")])
    assert verdicts[0].correct is False and verdicts[0].reason
    assert verdicts[1].correct


def hostile_verifier(gold: str, candidate: str, timeout_s: float) -> tuple[bool, str]:
    """Stands in for a parser that hangs past its own timeout, or eats all memory, on some answers."""
    if candidate == "hang":
        import time

        time.sleep(3600)
    if candidate == "explode":
        # 6 GiB in one block: over the worker's limit, so it fails at once instead of filling memory
        # page by page (without the limit it would succeed, slowly, and the test would fail).
        hoard = bytearray(6 * 2**30)
        return False, f"allocated {len(hoard)}"
    return candidate == gold, "compared"


def test_hanging_or_exploding_answers_are_wrong_with_a_reason_and_never_stall():
    answers = [Answer("math", "1", f"\\boxed{{{text}}}") for text in ("hang", "1", "explode", "1", "2")]
    # The limit is on address space, and a worker that imports transformers (as unpickling this module's
    # verifier does) already maps well over 1 GiB of it: the limit must leave room for that.
    with Grader(workers=2, timeout_s=1, memory_mb=4096, verifier=hostile_verifier) as grader:
        verdicts = grader.grade(answers)
        again = grader.grade([Answer("math", "1", "\\boxed{1}")])  # replaced workers still serve
    assert [v.correct for v in verdicts] == [False, True, False, True, False]
    assert "timed out" in verdicts[0].reason
    assert "memory" in verdicts[2].reason
    assert again[0].correct
