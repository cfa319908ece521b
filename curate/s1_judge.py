"""s1's curation grader: an LLM compares an attempt with the row's full reference solution.

s1 graded every reference model's answer, and the teacher's attempt, this way
(simplescaling/s1@77272c6:data/featurization.py:50-84, prompt in data/grading.txt): the system
message is s1's grading prompt, the user message holds the problem, the attempt and the solution as
written, and the verdict is the reply's last line, "Yes" or "No". A row without a solution gets no
grade, and s1's notebook then drops it with every other row missing a feature
(simplescaling/s1@77272c6:data/filter.ipynb, "Drop NAs"). s1 asked again until the reply ended in
Yes or No; here a reply that does not is a failed call (the row drops out as an API error, and a
rerun asks again: failures are not cached).
"""

from __future__ import annotations

from typing import Any

from .api import ApiSettings, chat_all
from .cache import CallCache

# simplescaling/s1@77272c6:data/grading.txt:1-18, the file's text exactly (line 3 ends in a space,
# the file in no newline).
GRADING_PROMPT = (
    "You are an AI assistant for grading a science problem.\n"
    "The user will provide you with the question itself, an attempt made by a student and the correct answer "
    "to the problem.\n"
    "Your job is to judge whether the attempt is correct by comparing it with the correct answer. \n"
    "If the expected solution concludes with a number or choice, there should be no ambiguity.\n"
    "If the expected solution involves going through the entire reasoning process, you should judge the attempt "
    "based on whether the reasoning process is correct with correct answer if helpful.\n"
    "\n"
    "The user will provide the attempt and the correct answer in the following format:\n"
    "\n"
    "# Problem\n"
    "{problem}\n"
    "\n"
    "## Attempt\n"
    "{attempt}\n"
    "\n"
    "## Correct answer\n"
    "{solution}\n"
    "\n"
    'Explain your reasoning, and end your response on a new line with only "Yes" or "No" (without quotes).'
)


def judge_messages(question: str, attempt: str, solution: str) -> list[dict[str, str]]:
    """The conversation s1 sent for one row (simplescaling/s1@77272c6:data/featurization.py:65, an
    f-string: the texts go in as they are, braces included)."""
    user = "\n\n".join(
        f"{head}\n{text}" for head, text in (("## Problem", question), ("## Attempt", attempt),
                                              ("## Correct answer", solution))
    )  # fmt: skip
    return [{"role": "system", "content": GRADING_PROMPT}, {"role": "user", "content": user}]


def verdict(reply: str) -> bool | None:
    """True for a last line "Yes", False for "No", None for anything else (s1 asked again)."""
    last = reply.split("\n")[-1]
    return {"Yes": True, "No": False}.get(last)


def judge_against_solutions(
    rows: list[dict[str, Any]], attempts: list[str], api: ApiSettings, cache: CallCache
) -> tuple[list[bool | None], dict[int, str]]:
    """Per row, s1's verdict on `attempts[i]` (None where the row has no solution or the call failed),
    and the failed calls by row index with their reason."""
    asked = [i for i, row in enumerate(rows) if row["solution"]]
    conversations = [judge_messages(rows[i]["question"], attempts[i], rows[i]["solution"]) for i in asked]
    marks: list[bool | None] = [None] * len(rows)
    errors: dict[int, str] = {}
    for i, reply in zip(asked, chat_all(api, conversations, cache), strict=True):
        mark = None if reply.error else verdict(reply.content)
        if mark is None:
            errors[i] = reply.error or f"the reply's last line is not Yes or No: {reply.content[-40:]!r}"
        marks[i] = mark
    return marks, errors
