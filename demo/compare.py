"""s1 against L1 in the demo's report: the two papers' controls on the same held-out questions and budgets.

s1's control is budget forcing on the fine-tuned model (the decoder caps thinking at N); L1's is the
model trained with LCPO, asked "Think for N tokens." and left to stop on its own. The numbers are
the evaluation harness's (evals.metrics): accuracy, mean thinking tokens, and L1's length deviation
with n the whole completion. The same prompt on the fine-tuned model before LCPO gives the length
deviation LCPO starts from.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FORCING = "budget_forcing"  # s1, fine-tuned model (recipes/eval/demo.yaml)
PROMPTED = "length_prompt_exact"  # L1's prompt: the fine-tuned model (before LCPO) and the LCPO model
PROMPTED_FORCED = "length_prompt_exact+budget_forcing"  # the LCPO model, prompted and forced
DEVIATION_TARGET = 0.10  # mean |n - N| / N after LCPO
SMALLEST = 2  # LCPO is to be at least as accurate as budget forcing at this many smallest budgets


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def by_budget(method: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {p["budget"]: p for p in method["points"]}


def mean_abs_deviation(method: dict[str, Any]) -> float:
    """Mean |n - N| / N over every run of the method's points (L1's length deviation, absolute)."""
    points = method["points"]
    return sum(p["length_abs_error"] * p["runs"] for p in points) / sum(p["runs"] for p in points)


def standard_error(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Of the difference of two points' accuracies, each over its own runs."""
    return math.sqrt(sum(p["accuracy"] * (1 - p["accuracy"]) / p["runs"] for p in (a, b)))


def findings(tuned: dict[str, Any], lcpo: dict[str, Any]) -> list[str]:
    """The two targets of the LCPO stage, stated from the numbers, met or not."""
    out = []
    after = mean_abs_deviation(lcpo[PROMPTED])
    verdict = "meets" if after <= DEVIATION_TARGET else "misses"
    before = ""
    if PROMPTED in tuned:
        before = f" (the fine-tuned model before LCPO: {mean_abs_deviation(tuned[PROMPTED]):.2f})"
    out.append(
        f'L1\'s length deviation, mean |n - N| / N over every held-out prompt "Think for N tokens." after LCPO: '
        f"{after:.2f}{before}; it {verdict} the target of {DEVIATION_TARGET:.2f}."
    )
    forced, prompted = by_budget(tuned[FORCING]), by_budget(lcpo[PROMPTED])
    shared = sorted(set(forced) & set(prompted))[:SMALLEST]
    parts, ahead = [], True
    for n in shared:
        gap = prompted[n]["accuracy"] - forced[n]["accuracy"]
        ahead = ahead and gap >= 0
        parts.append(
            f"N={n}: {pct(prompted[n]['accuracy'])}% against {pct(forced[n]['accuracy'])}% "
            f"({100 * gap:+.1f} points, standard error {100 * standard_error(prompted[n], forced[n]):.1f})"
        )
    verdict = "at least as accurate as" if ahead else "less accurate than"
    out.append(f"At the {len(shared)} smallest budgets LCPO is {verdict} budget forcing: " + "; ".join(parts) + ".")
    return out


def table(tuned: dict[str, Any], lcpo: dict[str, Any]) -> list[str]:
    """Per budget: s1's budget forcing, L1's prompt after LCPO (and forced), and before LCPO."""
    forced, prompted = by_budget(tuned[FORCING]), by_budget(lcpo[PROMPTED])
    both = by_budget(lcpo[PROMPTED_FORCED]) if PROMPTED_FORCED in lcpo else {}
    before = by_budget(tuned[PROMPTED]) if PROMPTED in tuned else {}
    head = ("| N | s1 forcing: accuracy % | thinking | L1 (LCPO): accuracy % | thinking | completion | "
            "deviation signed / abs | before LCPO: accuracy % | deviation abs |")  # fmt: skip
    lines = [head + (" L1 + forcing: accuracy % |" if both else ""), "|---" * (10 if both else 9) + "|"]
    for n in sorted(set(forced) & set(prompted)):
        s, p, b = forced[n], prompted[n], before.get(n)
        row = (
            f"| {n} | {pct(s['accuracy'])} | {s['thinking_tokens']['mean']:.0f} | {pct(p['accuracy'])} | "
            f"{p['thinking_tokens']['mean']:.0f} | {p['completion_tokens']['mean']:.0f} | "
            f"{p['length_deviation']:+.2f} / {p['length_abs_error']:.2f} | {pct(b['accuracy'] if b else None)} | "
            f"{'–' if b is None else format(b['length_abs_error'], '.2f')} |"
        )
        lines.append(row + (f" {pct(both[n]['accuracy'] if n in both else None)} |" if both else ""))
    return lines


def accuracy_plot(lines: list[tuple[str, dict[str, Any] | None, str]], xlabel: str, title: str, path: Path,
                  legend_size: float | None = None) -> None:  # fmt: skip
    """Accuracy against the budget, one line per (label, method summary, matplotlib style); a method
    the run did not evaluate (None) is left out. The demo's two figures are drawn by it."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, method, style in lines:
        if method:
            points = method["points"]
            axis.plot([p["budget"] for p in points], [100 * p["accuracy"] for p in points], style, label=name)
    axis.set_xscale("log", base=2)
    axis.set_xlabel(xlabel)
    axis.set_ylabel("accuracy on the held-out set (%)")
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=legend_size)
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot(tuned: dict[str, Any], lcpo: dict[str, Any], path: Path) -> None:
    """Accuracy against the budget, one line per control (L1's Figure 1 at the demo's scale)."""
    lines = [
        ("s1: budget forcing (fine-tuned)", tuned.get(FORCING), "o-"),
        ('L1: "Think for N tokens." (LCPO)', lcpo.get(PROMPTED), "s-"),
        ("L1 + budget forcing (LCPO)", lcpo.get(PROMPTED_FORCED), "^:"),
        ('"Think for N tokens." before LCPO', tuned.get(PROMPTED), "x--"),
    ]
    accuracy_plot(lines, "thinking budget N (tokens)", "s1's budget forcing against L1's LCPO, demo task", path, 8)
