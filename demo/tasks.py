"""A reasoning task family small enough for a tiny model, where thinking longer genuinely helps.

Four domains, each a short computation repeated k times (k = the question's level, 1 to 6):

- arithmetic: start at x, add d k times; the last digit of the result;
- counting: how many multiples of d lie between 1 and n;
- modular arithmetic: x * a^k mod 10, by repeated multiplication;
- base conversion: n in base 2 or 3, by repeated division.

The trace does one step per line, and each line needs only the line before it and a number or two
of the question, which ends with the number the first step needs (`Start at 70.`, `write 24.`), close to where
the trace begins: copying and a few hundred small facts. A model that stops thinking early has only
a partial result, so accuracy can rise with the thinking budget; a model answering at once, without a
trace, gets the one-step questions right and the long ones wrong, which is what curation's
difficulty filter looks for.

Some traces end with a check (`Wait, let me check.` and the steps again). In some of those the
first pass has a slip, which the check finds and corrects, so the data teaches what a "Wait" is for.
The check makes those traces the longest, and s1's selection favours long traces.

Generation is seeded and deterministic: the same settings give the same questions in the same order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DOMAINS = ("arithmetic", "counting", "modular arithmetic", "base conversion")
LEVELS = range(1, 7)  # the number of steps


@dataclass(frozen=True)
class Task:
    """One generated question with its answer and a teacher's reasoning trace.

    Attributes:
        domain: one of DOMAINS.
        level: difficulty, the number of steps (1 to 6).
        question: the question text.
        answer: the correct answer, as text.
        trace: the step-by-step reasoning (the teacher's thinking).
        short: the one-line answer a model without reasoning gives (the base model's training).
        checked: whether the trace ends with a check after "Wait".
        slip: whether the trace's first pass has a mistake that the check corrects.
    """

    domain: str
    level: int
    question: str
    answer: str
    trace: str
    short: str
    checked: bool
    slip: bool


def _problem(domain: str, level: int, rng: random.Random):
    """(question, start value, step function, finish function) for one question.

    `step(i, value)` returns (new value, the line's text); `finish(value)` is the answer. Every
    step is one small fact (a last digit of a one-digit sum or product, a sum below 60, dividing a
    number below 81 by 2 or 3), so the whole family rests on a few hundred facts.
    """
    if domain == "arithmetic":
        x, d = rng.randint(0, 99), rng.randint(1, 9)
        question = f"Arithmetic: add {d}, {level} times, and give the last digit. Start at {x}."

        def step(i, v):
            return (v + d) % 10, f"{i}) {v}+{d} ends in {(v + d) % 10}"

        return question, x, step, str
    if domain == "counting":
        d = rng.randint(2, 9)
        n = d * level + rng.randint(0, d - 1)
        question = f"Counting: how many multiples of {d} are there up to {n}?"

        def step(i, v):
            return v + d, f"{i}) {v}+{d}={v + d}"

        return question, 0, step, lambda v: str(v // d)
    if domain == "modular arithmetic":
        # A start ending in 0 or 5 would be a fixed point (0, or 5 for an odd factor): answerable
        # without a single step, so such starts are left out.
        x, a = rng.choice([v for v in range(1, 100) if v % 5]), rng.choice((2, 3, 4, 6, 7, 8, 9))
        question = f"Modular arithmetic: multiply by {a}, {level} times, modulo 10. Start at {x}."

        def step(i, v):
            return (v * a) % 10, f"{i}) {v}*{a} ends in {(v * a) % 10}"

        return question, x, step, str
    if domain == "base conversion":
        base = 2 if level > 4 else rng.choice((2, 3))
        n = rng.randint(base ** (level - 1), base**level - 1)
        question = f"Base conversion: in base {base}, write {n}."

        def step(i, v):
            rest, digits = v
            part, digit = divmod(rest, base)
            return (part, f"{digit}{digits}"), f"{i}) {rest}={base}*{part}+{digit}, digits {digit}{digits}"

        return question, (n, ""), step, lambda v: v[1]
    raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")


def _slipped(value, rng: random.Random):
    """A wrong value in place of `value` (the same kind of value)."""
    if isinstance(value, tuple):
        rest, digits = value
        return rest, ("0" if digits[0] == "1" else "1") + digits[1:]
    wrong = value + rng.choice((-2, -1, 1, 2))
    return wrong % 10 if value < 10 else wrong  # a last digit stays a digit


def _steps(level: int, start, step, slip_at: int | None, rng: random.Random) -> tuple[list[str], object]:
    lines, value = [], start
    for i in range(1, level + 1):
        value, line = step(i, value)
        if i == slip_at:
            value = _slipped(value, rng)
            shown = value[1] if isinstance(value, tuple) else value
            line = line[: max(line.rfind("="), line.rfind(" ")) + 1] + str(shown)
        lines.append(line)
    return lines, value


def make_task(domain: str, level: int, rng: random.Random, check_rate: float = 0.35, slip_rate: float = 0.5) -> Task:
    """One question of `domain` at `level`, with its trace."""
    question, start, step, finish = _problem(domain, level, rng)
    checked = rng.random() < check_rate
    slip = checked and rng.random() < slip_rate
    slip_at = rng.randint(1, level) if slip else None
    first, first_value = _steps(level, start, step, slip_at, rng)
    answer, first_answer = finish(_steps(level, start, step, None, rng)[1]), finish(first_value)
    lines = [*first, f"So the answer is {first_answer}."]
    if checked:
        second, _ = _steps(level, start, step, None, rng)
        verdict = "It matches." if answer == first_answer else f"I made a mistake: the answer is {answer}."
        lines += ["Wait, let me check.", *second, verdict]
    return Task(domain, level, question, answer, "\n".join(lines), f"The answer is {answer}.", checked, slip)


def generate_tasks(count: int, seed: int, levels: range = LEVELS, check_rate: float = 0.35) -> list[Task]:
    """`count` tasks, cycling through the domains, each at a uniformly drawn level."""
    rng = random.Random(seed)
    return [
        make_task(DOMAINS[i % len(DOMAINS)], rng.choice(list(levels)), rng, check_rate=check_rate) for i in range(count)
    ]


def make_drill(rng: random.Random) -> tuple[str, str, str]:
    """(question, short answer, answer): one step of some domain, asked on its own.

    A base model knows facts like these (as an instruct model knows its arithmetic); what it lacks
    is chaining them, which is what the traces teach. The short answer is the step's own working.
    """
    domain = DOMAINS[rng.randrange(len(DOMAINS))]
    question, _, step, _ = _problem(domain, 1, rng)
    value: object = rng.randint(0, 9) if rng.random() < 0.7 else rng.randint(10, 99)  # a first step's start
    if domain == "counting":
        value = rng.randint(0, 5) * int(question.split("multiples of ")[1].split()[0])
    elif domain == "base conversion":
        value = (rng.randint(1, 63 if "base 2" in question else 80), "")
    new, line = step(1, value)
    working = line.split(") ", 1)[1]
    if domain == "base conversion":
        asked = f"{value[0]} divided by {question.split('base ')[1].split(',')[0]}"
    else:
        asked = working.split(" ends in ")[0].split("=")[0]
        asked = f"the last digit of {asked}" if " ends in " in working else asked
    return f"What is {asked}?", working, str(new[0] if isinstance(new, tuple) else new)
