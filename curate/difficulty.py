"""Difficulty: a question that any reference model solves is too easy and drops out (s1 §2).

s1 asked Qwen2.5-7B-Instruct and Qwen2.5-32B-Instruct every question and dropped those either
answered correctly. Here every reference model answers through `generate_cached` (the decoder, any
backend, every answer cached). s1's references were instruct models asked the plain chat prompt, so
a reference has no thinking format unless the recipe gives it one (`format: none` is the default
here: no opener, nothing forced, its own end-of-sequence ends the answer, and the whole answer is
graded). A reference that thinks keeps its format (`format: s1` or `think`) and its thinking budget.
Answers are graded by the evaluation harness's `Grader` (math-verify in isolated workers; letter
choice). The gold answer is the row's `answer`, else the answer its solution states (last `\\boxed{}`
or "Answer:" line). A question with no gold a rule can use (a proof, a free-form solution) is sent to
an LLM judge through an OpenAI-compatible API when one is configured, comparing the answer to the
reference solution; without a judge it is kept ("ungraded"), since nothing shows a model solved it.
A failed judge call is s1's "API error": the row drops out with that reason.

`grade_by: s1_judge` grades as s1 did instead: every answer goes to the judge with s1's grading
prompt and the row's full solution (curate/s1_judge.py), and a row without a solution drops out
("no solution"), as s1's notebook dropped rows with a missing grade.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import datasets

from .api import ApiSettings, chat_all
from .cache import CallCache
from .generation import NO_FORMAT, ModelSpec, generate_cached
from .s1_judge import judge_against_solutions

PROMPTS = {
    "math": "{question}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}.",
    "choice": "{question}\n\nPlease reason step by step, and give the letter of the correct option within \\boxed{{}}.",
}


@dataclass
class ReferenceModel(ModelSpec):
    """A difficulty reference (see `ModelSpec`); unlike a teacher, by default it has no thinking format,
    as s1's Qwen2.5-Instruct references had none."""

    format: str = NO_FORMAT


JUDGE_PROMPT = (
    "You are grading a student's answer against a reference solution.\n\n"
    "Question:\n{question}\n\nReference solution:\n{solution}\n\nStudent's answer:\n{answer}\n\n"
    "Is the student's final answer correct and complete? Reply with exactly one word: YES or NO."
)


@dataclass
class DifficultySettings:
    """Settings of the difficulty stage.

    Attributes:
        models: the reference models (see `ReferenceModel`: no thinking format unless one is given).
        prompts: the user message per question kind ("math", "choice"); `{question}` is replaced.
        grade: "full" grades the whole completion (thinking and answer: reference models are not
            reasoning models) or "answer" only the text after the end of thinking. With no thinking
            format the whole completion is the answer, so both grade all of it.
        grading: `evals.Grader` settings (workers, timeout_s, memory_mb).
        judge: an OpenAI-compatible endpoint (see `ApiSettings`) to grade answers no rule can; None: none.
        grade_by: "rules" (math-verify or the letter, the judge only where no rule applies) or
            "s1_judge" (s1: the judge grades every answer against the full solution with s1's prompt;
            rows without a solution drop out; needs `judge`).
    """

    models: list[ModelSpec] = field(default_factory=list)
    prompts: dict[str, str] = field(default_factory=lambda: dict(PROMPTS))
    grade: str = "full"
    grading: dict[str, Any] = field(default_factory=dict)
    judge: ApiSettings | None = None
    grade_by: str = "rules"


def gold_answer(row: dict[str, Any]) -> str:
    """The short answer to check against: the row's answer, else what its solution gives as the answer
    (its last boxed expression or "Answer:" line); "" when there is none."""
    from evals import extract_math

    if row["answer"]:
        return row["answer"]
    if row["kind"] == "math" and row["solution"]:
        candidate, _ = extract_math(row["solution"])
        return candidate or ""
    return ""


def user_prompt(row: dict[str, Any], prompts: dict[str, str]) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompts[row["kind"]].format(question=row["question"])}]


def difficulty(
    data: datasets.Dataset, settings: DifficultySettings, cache: CallCache
) -> tuple[datasets.Dataset, dict[str, Any]]:
    """The input with `reference_correct` (JSON: model -> true/false/null), `solved_by` and `drop_reason`."""
    from evals import Answer, Grader

    rows = data.to_list()
    golds = [gold_answer(row) for row in rows]
    prompts = [user_prompt(row, settings.prompts) for row in rows]
    verdicts: dict[str, list[bool | None]] = {}
    judge_errors: dict[int, str] = {}
    if settings.grade_by == "s1_judge":
        golds = [row["solution"] or "" for row in rows]  # what s1's judge compares with
    info: dict[str, Any] = {"models": {}, "ungraded_rows": sum(1 for g in golds if not g)}
    with Grader(**settings.grading) as grader:
        grader.start()
        for spec in settings.models:
            before = (cache.hits, cache.misses)
            completions = generate_cached(spec, prompts, cache)
            from_cache, generated = cache.hits - before[0], cache.misses - before[1]
            if settings.grade == "answer":
                texts = [c["answer"] for c in completions]
            else:
                texts = [f"{c['thinking']}\n{c['answer']}" if c["thinking"] else c["answer"] for c in completions]
            if settings.grade_by == "s1_judge":
                assert settings.judge is not None
                marks, failed = judge_against_solutions(rows, texts, settings.judge, cache)
                for i, reason in failed.items():
                    judge_errors[i] = f"judge failed for {spec.name}: {reason}"
                verdicts[spec.name] = marks
                info["models"][spec.name] = {"answers_cached": from_cache, "answers_generated": generated,
                                             "solved": sum(1 for m in marks if m)}  # fmt: skip
                continue
            graded = [i for i, gold in enumerate(golds) if gold]
            results = grader.grade(
                [Answer(rows[i]["kind"], golds[i], texts[i], rows[i]["letters"] or "ABCD") for i in graded]
            )
            marks: list[bool | None] = [None] * len(rows)
            for i, verdict in zip(graded, results, strict=True):
                marks[i] = verdict.correct
            if settings.judge is not None:
                ungraded = [i for i, gold in enumerate(golds) if not gold and rows[i]["solution"]]
                conversations = [
                    [
                        {
                            "role": "user",
                            "content": JUDGE_PROMPT.format(
                                question=rows[i]["question"], solution=rows[i]["solution"], answer=texts[i]
                            ),
                        }
                    ]  # fmt: skip
                    for i in ungraded
                ]
                for i, reply in zip(ungraded, chat_all(settings.judge, conversations, cache), strict=True):
                    word = reply.content.strip().strip(".*").upper()
                    if reply.error or word not in ("YES", "NO"):
                        judge_errors[i] = f"judge failed for {spec.name}: {reply.error or 'reply not YES/NO'}"
                    else:
                        marks[i] = word == "YES"
            verdicts[spec.name] = marks
            info["models"][spec.name] = {
                "answers_cached": from_cache,
                "answers_generated": generated,
                "solved": sum(1 for m in marks if m),
            }

    def columns(row: dict[str, Any], index: int) -> dict[str, Any]:
        solved = [name for name, marks in verdicts.items() if marks[index]]
        marks = {name: verdicts[name][index] for name in verdicts}
        if settings.grade_by == "s1_judge" and not row["solution"]:
            reason = "no solution: s1 grades against the solution"
        elif index in judge_errors:
            reason = f"API error: {judge_errors[index]}"
        elif solved:
            reason = f"solved: by {', '.join(solved)}"
        else:
            reason = ""
        return {"reference_correct": json.dumps(marks), "solved_by": solved, "drop_reason": reason}

    features = data.features.copy()
    features["reference_correct"] = datasets.Value("string")
    features["solved_by"] = datasets.Sequence(datasets.Value("string"))
    features["drop_reason"] = datasets.Value("string")
    out = data.map(columns, with_indices=True, features=features, desc="difficulty", load_from_cache_file=False)
    info["judge_failures"] = len(judge_errors)
    return out, info
