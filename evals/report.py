"""The report of a run: summary.json, results.md, and plots in the run folder.

A point's thinking a, for s1's Control and the plots, is the mean thinking tokens over its runs (the
total over the k samples of a majority vote). Majority vote groups answers by math-verify
equivalence, checked in the grader's worker processes, so each check is bounded in time.

Plots follow the papers: accuracy against mean thinking tokens on a log axis, one line per method
(s1 Figure 1, L1 Figure 2), and thinking tokens used against the budget asked, with the diagonal.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from .methods import CLASS_DIRECTIONS, UNPROMPTED
from .metrics import (
    CONTROL,
    LENGTH_DEVIATION,
    SCALING_UNIT,
    WITHIN_BUDGET,
    Equivalent,
    class_in_control,
    control,
    majority,
    performance,
    point_metrics,
    scaling,
)
from .steps import step_mark, step_metrics

SUMMARY = "summary.json"
TABLE = "results.md"


def summarize(recipe: Any, records: list[dict[str, Any]], equivalent: Equivalent | None = None) -> dict[str, Any]:
    """Metrics per benchmark, method and point, in the recipe's order.

    `equivalent(earlier, later)` says whether two math answers are the same for majority vote
    (default: the same text once spaces are removed)."""
    by_key: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_key[(record["benchmark"], record["method"], record["point"])].append(record)
    benchmarks: dict[str, Any] = {}
    for spec in recipe.benchmarks:
        methods: dict[str, Any] = {}
        for method in recipe.methods:
            points = []
            for point in method.points():
                if method.method == "majority_vote":
                    draws = by_key[(spec.name, method.label, method.draw_label(point))]
                    runs = _votes(draws, point.votes, equivalent)
                else:
                    runs = by_key[(spec.name, method.label, point.label)]
                if not runs:
                    continue
                minimum = point.min_thinking if method.method == "budget_forcing" else 0
                budget = point.budget
                if method.method == "majority_vote" and budget is not None:
                    budget *= point.votes  # a vote's thinking is the total of its k samples
                entry = {"point": point.label, "budget": budget, "min_thinking": minimum,
                         **point_metrics(runs, budget, minimum)}  # fmt: skip
                if method.method == "step_conditional":  # a and its budget in steps (s1's count)
                    entry.update(step_metrics(runs, budget, step_mark(recipe.format)))
                points.append(entry)
            used = "steps" if method.method == "step_conditional" else "thinking_tokens"
            control_value = control([(p[used]["mean"], p["budget"], p["min_thinking"]) for p in points])
            control_points = sum(p["budget"] is not None for p in points)
            if method.method == "class_conditional":
                control_value, control_points = _class_control(points)
            curve = [(p["thinking_tokens"]["mean"], p["accuracy"]) for p in points]
            shares = [p["within_budget"] for p in points if p["within_budget"] is not None]
            methods[method.label] = {
                "method": method.method,
                "points": points,
                "scaling": scaling(curve),
                "performance": performance([p["accuracy"] for p in points]),
                "control": control_value,
                "control_points": control_points,
                "within_budget": sum(shares) / len(shares) if shares else None,
            }
        benchmarks[spec.name] = methods
    return {
        "recipe": recipe.source,
        "model": recipe.model,
        "format": recipe.format,
        "samples": recipe.samples,
        "scaling_unit": SCALING_UNIT,
        "control": CONTROL,
        "within_budget": WITHIN_BUDGET,
        "length_deviation": LENGTH_DEVIATION,
        "point_thinking": "a point's thinking a is the mean thinking tokens over its runs (step_conditional: "
        "the mean steps, N in steps)",
        "benchmarks": benchmarks,
    }


def _class_control(points: list[dict[str, Any]]) -> tuple[float | None, int]:
    """s1's class-conditional Control: each "short" / "long" point against the unprompted point (its
    `in_control` is set here); None when the unprompted point or every class point is missing."""
    reference = next((p for p in points if p["point"] == UNPROMPTED), None)
    flags = []
    for p in points:
        direction = CLASS_DIRECTIONS.get(p["point"])
        if reference is not None and direction is not None:
            p["in_control"] = class_in_control(p["thinking_tokens"]["mean"], reference["thinking_tokens"]["mean"],
                                               direction)  # fmt: skip
            flags.append(p["in_control"])
    return (sum(flags) / len(flags) if flags else None), len(flags)


def _votes(runs: list[dict[str, Any]], k: int, equivalent: Equivalent | None) -> list[dict[str, Any]]:
    """One run per problem: the majority answer of its first k samples; tokens are their total."""
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        if run["sample"] < k:
            by_problem[run["problem_id"]].append(run)
    voted = []
    for samples in by_problem.values():
        samples.sort(key=lambda r: r["sample"])
        answers = [(r["extracted"], r["correct"]) for r in samples]
        if equivalent is not None and samples[0].get("kind") == "math":
            answer, correct = majority(answers, equivalent)
        else:
            answer, correct = majority(answers)
        voted.append(
            {
                "extracted": answer,
                "correct": correct,
                **{name: sum(r[name] for r in samples) for name in ("thinking_tokens", "answer_tokens",
                                                                    "completion_tokens", "waits")},
                **{flag: any(r.get(flag) for r in samples) for flag in ("forced_end", "forced_for_answer",
                                                                        "truncated", "unanswered")},
            }
        )  # fmt: skip
    return voted


def vote_pairs(recipe: Any, records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The (earlier, later) pairs of distinct math answers that majority vote may compare, per problem."""
    voting = {m.label for m in recipe.methods if m.method == "majority_vote"}
    by_draws: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["method"] in voting and record.get("kind") == "math" and record.get("extracted"):
            by_draws[(record["benchmark"], record["problem_id"], record["method"], record["point"])].append(record)
    pairs: set[tuple[str, str]] = set()
    for samples in by_draws.values():
        samples.sort(key=lambda r: r["sample"])
        distinct: list[str] = []
        for r in samples:
            if all(r["extracted"].replace(" ", "") != d.replace(" ", "") for d in distinct):
                distinct.append(r["extracted"])
        pairs.update((a, b) for i, a in enumerate(distinct) for b in distinct[i + 1 :])
    return sorted(pairs)


def vote_equivalence(pairs: list[tuple[str, str]], same: list[bool]) -> Equivalent:
    """`equivalent` for `summarize` from the verdicts on `vote_pairs` (looked up either way round)."""

    def key(a: str, b: str) -> tuple[str, str]:
        return a.replace(" ", ""), b.replace(" ", "")

    table = {key(a, b): ok for (a, b), ok in zip(pairs, same, strict=True)}
    return lambda a, b: table.get(key(a, b), table.get(key(b, a), False))


def _fmt(value: float | None, percent: bool = False, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.{digits}f}" if percent else f"{value:.{digits}f}"


def headline(summary: dict[str, Any]) -> str:
    """Control, within-budget share, Scaling and Performance per benchmark and method: the table printed after a run."""
    lines = [f"{'benchmark':<14} {'method':<34} {'Control %':>9} {'within %':>8} {'Scaling':>8} {'Perf. %':>8}"]
    for bench, methods in summary["benchmarks"].items():
        for label, m in methods.items():
            lines.append(
                f"{bench:<14} {label:<34} {_fmt(m['control'], True):>9} {_fmt(m['within_budget'], True):>8} "
                f"{_fmt(m['scaling']):>8} {_fmt(m['performance'], True):>8}"
            )
    return "\n".join(
        lines + [f"(Control: s1's, over points; within: share of runs; Scaling: {summary['scaling_unit']})"]
    )


def _pair(signed: float | None, absolute: float | None) -> str:
    return f"{_fmt(signed, True)} / {_fmt(absolute, True)}"


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# Evaluation of `{summary['model']}`",
        "",
        f"Recipe: `{summary['recipe']}`, format `{summary['format']}`.",
        "",
        f"- Control: {summary['control']} ({summary['point_thinking']}); points without a budget are not in it.",
        f"- within budget: {summary['within_budget']}.",
        f"- Scaling: in {summary['scaling_unit']}.",
        f"- Length deviation: {summary['length_deviation']}.",
        "- forced: runs whose thinking the decoder ended (at the budget, or at the room kept for the answer when a "
        "method sets no maximum: 'for answer'); truncated: answers cut by max_answer_tokens or the generation "
        "window; unanswered: runs that reached the window with no answer.",
        "",
    ]
    for bench, methods in summary["benchmarks"].items():
        lines += [f"## {bench}", "", "| method | Control % (points) | within budget % | Scaling | Performance % |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for label, m in methods.items():
            lines.append(
                f"| {label} | {_fmt(m['control'], True)} ({m['control_points']}) | {_fmt(m['within_budget'], True)} | "
                f"{_fmt(m['scaling'])} | {_fmt(m['performance'], True)} |"
            )
        lines += ["", "| method | point | accuracy % | thinking tokens (mean / median / max) | answer tokens | "
                  "a within budget | within budget % | L1 length dev. %, completion (signed / abs) | "
                  "thinking length dev. % (signed / abs) | forced % (for answer %) | truncated % | unanswered % | "
                  "waits |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for label, m in methods.items():
            for p in m["points"]:
                t = p["thinking_tokens"]
                inside = "–" if p["in_control"] is None else ("yes" if p["in_control"] else "no")
                lines.append(
                    f"| {label} | {p['point']} | {_fmt(p['accuracy'], True)} | {t['mean']:.0f} / {t['median']:.0f} / "
                    f"{t['max']:.0f} | {p['answer_tokens']['mean']:.0f} | {inside} | "
                    f"{_fmt(p['within_budget'], True)} | "
                    f"{_pair(p['length_deviation'], p['length_abs_error'])} | "
                    f"{_pair(p['thinking_length_deviation'], p['thinking_length_abs_error'])} | "
                    f"{_fmt(p['forced'], True)} ({_fmt(p['forced_for_answer'], True)}) | "
                    f"{_fmt(p['truncated'], True)} | {_fmt(p['unanswered'], True)} | {_fmt(p['waits'], digits=2)} |"
                )
        lines.append("")
    return "\n".join(lines)


def plot(summary: dict[str, Any], folder: Path) -> list[Path]:
    """Two PNGs per benchmark; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for bench, methods in summary["benchmarks"].items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, m in methods.items():
            pts = [(p["thinking_tokens"]["mean"], 100 * p["accuracy"]) for p in m["points"]]
            pts = sorted((x, y) for x, y in pts if x > 0)
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="mean thinking tokens (log scale)", ylabel="accuracy (%)", title=f"{bench}: accuracy vs thinking")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        written.append(_save(fig, folder / f"accuracy_vs_thinking_{bench}.png"))
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(5, 5))
        top = 1.0
        for label, m in methods.items():
            if m["method"] == "step_conditional":  # its budgets are steps, not tokens
                continue
            pts = [(p["budget"], p["thinking_tokens"]["mean"]) for p in m["points"] if p["budget"]]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=label)
                top = max(top, *(max(x, y) for x, y in pts))
        ax.plot([0, top], [0, top], color="grey", linestyle="--", label="used = asked")
        ax.set(xlabel="thinking budget asked (tokens)", ylabel="mean thinking tokens used", title=f"{bench}: budget")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        written.append(_save(fig, folder / f"thinking_vs_budget_{bench}.png"))
        plt.close(fig)
    return written


def _save(fig: Any, path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(
    recipe: Any, folder: Path, records: list[dict[str, Any]], equivalent: Equivalent | None = None
) -> dict[str, Any]:
    summary = summarize(recipe, records, equivalent)
    _write(folder / SUMMARY, json.dumps(summary, indent=2))
    _write(folder / TABLE, markdown(summary))
    plot(summary, folder)
    return summary
