"""Traces with steps-left markers, for a model that learns to think in a given number of steps.

s1's step-conditional model was trained on traces cut into steps, each opened by a marker that
counts the steps left (`<|im_start|>{k} steps left\\n`), with the question asking "Think for up to N
steps." (the eval prompt, simplescaling/s1@77272c6:eval/lm-evaluation-harness/lm_eval/tasks/aime/utils.py:12).
s1 did not release the script that made that data; what its evaluation code reads fixes the layout:
the markers' text (eval/compute_sample_stats.py:64, 132-137), the answer after `<|im_start|>answer`, and
thinking opened by the bare `<|im_start|>` (eval/commands.sh:70). What it does not fix is chosen
here and said so: a step is a non-empty line of the trace (s1's statistics count a line as a step
where no markers exist, compute_sample_stats.py:143), N is the trace's own number of steps, and the
markers count down from N to 1, so a model that goes on past its budget writes the marker of zero
steps left, where s1's budget forcing stops it.
"""

from __future__ import annotations

from decode import ThinkingFormat
from evals.methods import STEP_PROMPT


def split_steps(trace: str) -> list[str]:
    """The trace's steps: its non-empty lines, in order."""
    return [line for line in trace.strip().split("\n") if line.strip()]


def step_question(question: str, steps: int) -> str:
    """The question as the step-conditional model reads it (the evaluation's prompt, N = the trace's steps)."""
    return f"{question}\n\n{STEP_PROMPT.format(n=steps)}"


def step_assistant_text(fmt: ThinkingFormat, trace: str, answer: str) -> tuple[str, int]:
    """The assistant turn with a steps-left marker before each step, and the number of steps."""
    steps = split_steps(trace)
    marker = fmt.end[0]
    lines = [
        (fmt.open if i == 0 else marker) + fmt.steps.format(k=len(steps) - i) + step for i, step in enumerate(steps)
    ]
    return "\n".join(lines) + "\n" + fmt.close + answer.strip(), len(steps)
