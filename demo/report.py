"""The demo's report: the base and fine-tuned models side by side, from the evaluation summaries.

It reads what `evals` wrote for each model (summary.json), and the timings `python -m demo` kept,
and writes report.md (the headline table, what the run shows, and the time and memory per stage),
demo.png (accuracy against the thinking budget for both models) and, when the LCPO model was
evaluated, demo-l1.png (s1's budget forcing against L1's length prompt; demo.compare).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import compare
from .compare import pct, standard_error

BENCHMARK = "demo"
MAX_METHOD = "budget_forcing"  # the recipe's label of the maximum-budget sweep
WAIT_METHOD = "wait"  # and of the "Wait" (minimum budget) sweep


def load(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "summary.json").read_text())["benchmarks"][BENCHMARK]


def findings(base: dict[str, Any], tuned: dict[str, Any]) -> list[str]:
    """What the run shows, stated from its numbers: the claims the demo is there to check."""
    out = []
    sweep, base_sweep = tuned[MAX_METHOD]["points"], base[MAX_METHOD]["points"]
    top, base_top = sweep[-1], base_sweep[-1]
    gain = top["accuracy"] - base_top["accuracy"]
    # The standard error of a difference of two accuracies, each over its own runs; "clearly"
    # means three of them, well beyond what resampling the held-out questions could do.
    error = standard_error(top, base_top)
    verdict = "clearly above" if gain >= 3 * error else "not clearly above"
    out.append(
        f"After SFT, accuracy at the largest budget ({top['budget']} thinking tokens) is {pct(top['accuracy'])}%, "
        f"against {pct(base_top['accuracy'])}% for the base model ({100 * gain:+.1f} points, "
        f"standard error {100 * error:.1f}: {verdict})."
    )
    accuracies = [p["accuracy"] for p in sweep]
    # "Rises" means a real gain from the smallest to the largest budget (5 points or more) with no
    # step down of more than 2 points on the way; 200 questions put about 3 points of noise on each.
    steady = all(b >= a - 0.02 for a, b in zip(accuracies, accuracies[1:], strict=False))
    rises = steady and accuracies[-1] - accuracies[0] >= 0.05
    out.append(
        "Accuracy against the forced maximum budget: "
        + ", ".join(f"{p['budget']}: {pct(p['accuracy'])}%" for p in sweep)
        + (" (it rises with the budget)." if rises else " (it does not rise with the budget).")
    )
    out.append(
        f"Control of budget forcing: {pct(tuned[MAX_METHOD]['control'])}% (s1's Control: the share of its budgets "
        "whose mean thinking stayed within them)."
    )
    if WAIT_METHOD in tuned:
        waits = tuned[WAIT_METHOD]["points"]
        first, best = waits[0], max(waits[1:] or waits, key=lambda p: p["accuracy"])
        verdict = (
            f"helped: {pct(first['accuracy'])}% -> {pct(best['accuracy'])}% at {best['point']}"
            if best["accuracy"] - first["accuracy"] >= 0.03  # beyond the noise of 200 questions
            else f"did not help: {pct(first['accuracy'])}% without it, at most {pct(best['accuracy'])}% with it"
        )
        out.append(f'Forcing "Wait" (ignoring the end of thinking) {verdict}.')
    return out


def table(models: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| model | method | point | accuracy % | mean thinking tokens | runs within budget % |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, methods in models.items():
        for label, method in methods.items():
            for p in method["points"]:
                lines.append(
                    f"| {name} | {label} | {p['point']} | {pct(p['accuracy'])} | "
                    f"{p['thinking_tokens']['mean']:.0f} | {pct(p['within_budget'])} |"
                )
    return lines


def plot(base: dict[str, Any], tuned: dict[str, Any], path: Path) -> None:
    lines = [("after SFT", tuned[MAX_METHOD], "o-"), ("base model", base[MAX_METHOD], "s--")]
    compare.accuracy_plot(lines, "forced maximum thinking budget (tokens)", "Budget forcing on the demo task", path)


def write_report(
    out_dir: Path, base_dir: Path, tuned_dir: Path, timings: dict[str, Any], lcpo_dir: Path | None = None
) -> tuple[Path, str]:
    """report.md and demo.png in `out_dir` (and demo-l1.png with the LCPO model's evaluation in
    `lcpo_dir`); returns the report's path and its headline tables."""
    base, tuned = load(base_dir), load(tuned_dir)
    lcpo = load(lcpo_dir) if lcpo_dir is not None and (lcpo_dir / "summary.json").is_file() else None
    headline = table({"base": {MAX_METHOD: base[MAX_METHOD]}, "SFT": {MAX_METHOD: tuned[MAX_METHOD]}})
    plot(base, tuned, out_dir / "demo.png")
    shown = findings(base, tuned)
    lines = ["# Demo report", "", *[f"- {line}" for line in shown], "", "![accuracy](demo.png)", ""]
    lines += ["## Budget forcing, base and fine-tuned", "", *headline, ""]
    if lcpo is not None:
        compare.plot(tuned, lcpo, out_dir / "demo-l1.png")
        l1_shown, l1_table = compare.findings(tuned, lcpo), compare.table(tuned, lcpo)
        lines += ["## s1 against L1: budget forcing and LCPO", "", *[f"- {line}" for line in l1_shown], ""]
        lines += ["![s1 against L1](demo-l1.png)", "", *l1_table, ""]
        lines += ["## Every method, LCPO model", "", *table({"LCPO": lcpo}), ""]
        shown, headline = shown + l1_shown, headline + [""] + l1_table
    lines += ["## Every method, fine-tuned model", "", *table({"SFT": tuned}), ""]
    lines += ["## Time and memory per stage", "", "| stage | seconds | peak RSS MiB |", "|---|---|---|"]
    for stage, t in timings.items():
        lines.append(f"| {stage} | {t['seconds']:.0f} | {t['peak_rss_mb']:.0f} |")
    total = sum(t["seconds"] for t in timings.values())
    lines += [f"| total | {total:.0f} | |", ""]
    lines += [f"Evaluation folders: `{tuned_dir}` (fine-tuned), `{base_dir}` (base)"
              + (f", `{lcpo_dir}` (LCPO)." if lcpo is not None else ".")]  # fmt: skip
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path, "\n".join(shown + [""] + headline)
