"""Teacher grade: is the teacher's attempt right? s1 kept teacher-correct AIME and GPQA rows outright.

s1 graded the teacher's (Gemini's) attempt against each row's solution with the same judge as the
reference models' answers (simplescaling/s1@77272c6:data/featurization.py:114-115, column
`isgeminicorrect`), and its notebook preselected rows by that column
(simplescaling/s1@77272c6:data/filter.ipynb:432-440). A pool that does not carry such a column gets
it here, after the traces stage: `teacher_correct` is true, false, or null where nothing could grade
the attempt. `grade_by: s1_judge` asks s1's judge (curate/s1_judge.py); `rules` grades the attempt's
final answer with the evaluation harness's `Grader` against the row's answer (null without one).
No row drops out, except on a failed judge call (s1's "API error").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import datasets

from .api import ApiSettings
from .cache import CallCache
from .difficulty import gold_answer
from .s1_judge import judge_against_solutions
from .schema import CurateError


@dataclass
class TeacherGradeSettings:
    """Settings of the teacher_grade stage.

    Attributes:
        grade_by: "s1_judge" (s1: the judge against the full solution; needs `judge`) or "rules".
        judge: the OpenAI-compatible endpoint of the judge (see `ApiSettings`).
        grading: `evals.Grader` settings for "rules" (workers, timeout_s, memory_mb).
    """

    grade_by: str = "s1_judge"
    judge: ApiSettings | None = None
    grading: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.grade_by not in ("rules", "s1_judge"):
            raise CurateError(f"teacher_grade: grade_by must be 'rules' or 's1_judge', got {self.grade_by!r}")
        if self.grade_by == "s1_judge" and self.judge is None:
            raise CurateError("teacher_grade: grade_by: s1_judge needs 'judge' (base_url, model, ...)")


def teacher_grade(
    data: datasets.Dataset, settings: TeacherGradeSettings, cache: CallCache
) -> tuple[datasets.Dataset, dict[str, Any]]:
    """The input with `teacher_correct` (true / false / null) and `drop_reason`."""
    if "attempt" not in data.column_names:
        raise CurateError("teacher_grade: needs the 'attempt' column; run the traces stage first")
    rows = data.to_list()
    attempts = [row["attempt"] or "" for row in rows]
    errors: dict[int, str] = {}
    if settings.grade_by == "s1_judge":
        assert settings.judge is not None
        marks, errors = judge_against_solutions(rows, attempts, settings.judge, cache)
    else:
        from evals import Answer, Grader

        golds = [gold_answer(row) for row in rows]
        graded = [i for i, gold in enumerate(golds) if gold]
        marks = [None] * len(rows)
        with Grader(**settings.grading) as grader:
            grader.start()
            answers = [Answer(rows[i]["kind"], golds[i], attempts[i], rows[i]["letters"] or "ABCD") for i in graded]
            for i, result in zip(graded, grader.grade(answers), strict=True):
                marks[i] = result.correct
    reasons = [f"API error: teacher grade: {errors[i]}" if i in errors else "" for i in range(len(rows))]
    out = data.add_column("teacher_correct", marks, feature=datasets.Value("bool"))
    out = out.add_column("drop_reason", reasons)
    info = {"grade_by": settings.grade_by, "correct": sum(1 for m in marks if m is True),
            "wrong": sum(1 for m in marks if m is False), "ungraded": sum(1 for m in marks if m is None),
            "judge_failures": len(errors)}  # fmt: skip
    return out, info
