"""Finding the answer a model gave, in the text after its thinking.

Only the answer part is ever searched (the decoder splits it from the thinking), so an "Answer: B"
written while reasoning never counts. Model output is untrusted text, and nothing in it is evaluated
here. Every pattern runs in time linear in the text, whatever it holds: runs of whitespace are matched
possessively (`\\s*+`), so a failed match never backtracks through them (a greedy `\\s*(?:is)?\\s*`
is quadratic on "Answer" followed by a long run of spaces, a common degenerate output). The grader
also runs extraction under its per-answer deadline.
"""

from __future__ import annotations

import re

BOXED = ("\\boxed", "\\fbox")
ANSWER_LINE = re.compile(r"(?:final\s++answer|answer)\s*+(?:is\s*+)?[:：]\s*+(.*)", re.IGNORECASE)
LEAD_WORDS = re.compile(r"^(?:the\s++)?(?:final\s++)?(?:answer\s++)?(?:is\s++)?", re.IGNORECASE)
TEXT_WRAPPER = re.compile(r"^\\(?:text|textbf|mathrm|mathbf)\{(.*)\}$", re.DOTALL)


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`, or `\\boxed 5`), braces balanced."""
    start = max(text.rfind(name) for name in BOXED)
    if start < 0:
        return None
    rest = text[start:]
    rest = rest[len(BOXED[0]) :] if rest.startswith(BOXED[0]) else rest[len(BOXED[1]) :]
    if rest.startswith(" ") and not rest.lstrip().startswith("{"):  # "\boxed 5"
        token = rest.split()[0] if rest.split() else ""
        return token.rstrip("$.") or None
    rest = rest.lstrip()
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, char in enumerate(rest):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i].strip()
    return None  # unbalanced: the answer was cut off


def answer_line(text: str) -> str | None:
    """The rest of the last line holding "Final Answer:" or "Answer:" (or the next line, if empty)."""
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        match = ANSWER_LINE.search(lines[i])
        if match:
            value = match.group(1).strip().strip("*_ ")  # "**Answer:** 42" in markdown
            if not value and i + 1 < len(lines):
                value = lines[i + 1].strip().strip("*_ ")
            return value or None
    return None


def extract_math(answer: str) -> tuple[str | None, str]:
    """(candidate, where it was found): the last boxed expression, else the last answer line."""
    boxed = last_boxed(answer)
    if boxed:
        return boxed, "boxed"
    line = answer_line(answer)
    if line:
        return line, "answer line"
    return None, "no boxed answer and no 'Answer:' line"


def extract_choice(answer: str, letters: str = "ABCD") -> tuple[str | None, str]:
    """(letter, where it was found) for a multiple-choice answer."""
    choices = re.escape(letters)
    one_letter = re.compile(rf"^\(?([{choices}])\)?(?:[.:)\s]|$)")
    anywhere = re.compile(rf"(?<![A-Za-z])\(?([{choices}])\)?(?![A-Za-z])")
    boxed = last_boxed(answer)
    if boxed:
        inner = TEXT_WRAPPER.sub(r"\1", boxed).strip()
        match = one_letter.match(inner)
        if match:
            return match.group(1), "boxed"
    line = answer_line(answer)
    if line:
        line = LEAD_WORDS.sub("", line.strip("$* ")).strip()
        inner = TEXT_WRAPPER.sub(r"\1", last_boxed(line) or line)
        match = one_letter.match(inner) or anywhere.search(inner)
        if match:
            return match.group(1), "answer line"
    match = one_letter.match(answer.strip().strip("*$ "))
    if match:
        return match.group(1), "bare letter"
    return None, f"no choice among {', '.join(letters)} found"
