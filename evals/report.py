"""The report of a run: summary.json, results.md, and plots in the run folder.

Plots follow the papers: accuracy against mean thinking tokens on a log axis, one line per method
(s1 Figure 1, L1 Figure 2), and thinking tokens used against the budget asked, with the diagonal.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from .metrics import SCALING_UNIT, majority, performance, point_metrics, scaling

SUMMARY = "summary.json"
TABLE = "results.md"


def summarize(recipe: Any, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Metrics per benchmark, method and point, in the recipe's order."""
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
                    runs = _votes(by_key[(spec.name, method.label, method.draw_label(point))], point.votes)
                else:
                    runs = by_key[(spec.name, method.label, point.label)]
                if not runs:
                    continue
                minimum = point.min_thinking if method.method == "budget_forcing" else 0
                budget = point.budget
                if method.method == "majority_vote" and budget is not None:
                    budget *= point.votes  # a vote's thinking is the total of its k samples
                points.append({"point": point.label, "budget": budget, **point_metrics(runs, budget, minimum)})
            curve = [(p["thinking_tokens"]["mean"], p["accuracy"]) for p in points]
            controls = [p["control"] for p in points if p["control"] is not None]
            methods[method.label] = {
                "method": method.method,
                "points": points,
                "scaling": scaling(curve),
                "performance": performance([p["accuracy"] for p in points]),
                "control": sum(controls) / len(controls) if controls else None,
            }
        benchmarks[spec.name] = methods
    return {
        "recipe": recipe.source,
        "model": recipe.model,
        "format": recipe.format,
        "samples": recipe.samples,
        "scaling_unit": SCALING_UNIT,
        "control": "share of runs whose thinking stayed within the budget asked (mean over points)",
        "length_deviation": "signed (mean thinking tokens - N) / N; length_abs_error: mean |n - N| / N",
        "benchmarks": benchmarks,
    }


def _votes(runs: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """One run per problem: the majority answer of its first k samples; tokens are their total."""
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        if run["sample"] < k:
            by_problem[run["problem_id"]].append(run)
    voted = []
    for samples in by_problem.values():
        samples.sort(key=lambda r: r["sample"])
        answer, correct = majority([(r["extracted"], r["correct"]) for r in samples])
        voted.append(
            {
                "extracted": answer,
                "correct": correct,
                "thinking_tokens": sum(r["thinking_tokens"] for r in samples),
                "answer_tokens": sum(r["answer_tokens"] for r in samples),
                "waits": sum(r["waits"] for r in samples),
                "forced_end": any(r["forced_end"] for r in samples),
            }
        )
    return voted


def _fmt(value: float | None, percent: bool = False, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.{digits}f}" if percent else f"{value:.{digits}f}"


def headline(summary: dict[str, Any]) -> str:
    """Control, Scaling and Performance per benchmark and method: the table printed after a run."""
    lines = [f"{'benchmark':<14} {'method':<34} {'Control %':>9} {'Scaling':>8} {'Perf. %':>8}"]
    for bench, methods in summary["benchmarks"].items():
        for label, m in methods.items():
            lines.append(
                f"{bench:<14} {label:<34} {_fmt(m['control'], True):>9} {_fmt(m['scaling']):>8} "
                f"{_fmt(m['performance'], True):>8}"
            )
    return "\n".join(lines + [f"(Scaling: {summary['scaling_unit']})"])


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# Evaluation of `{summary['model']}`",
        "",
        f"Recipe: `{summary['recipe']}`, format `{summary['format']}`.",
    ]
    lines += ["", f"Scaling is in {summary['scaling_unit']}; Control is the {summary['control']}.", ""]
    for bench, methods in summary["benchmarks"].items():
        lines += [f"## {bench}", "", "| method | Control % | Scaling | Performance % |", "|---|---|---|---|"]
        for label, m in methods.items():
            lines.append(
                f"| {label} | {_fmt(m['control'], True)} | {_fmt(m['scaling'])} | {_fmt(m['performance'], True)} |"
            )
        lines += ["", "| method | point | accuracy % | thinking tokens (mean / median / max) | answer tokens | "
                  "Control % | length dev. % | waits |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for label, m in methods.items():
            for p in m["points"]:
                t = p["thinking_tokens"]
                lines.append(
                    f"| {label} | {p['point']} | {_fmt(p['accuracy'], True)} | {t['mean']:.0f} / {t['median']:.0f} / "
                    f"{t['max']:.0f} | {p['answer_tokens']['mean']:.0f} | {_fmt(p['control'], True)} | "
                    f"{_fmt(p['length_deviation'], True)} | {_fmt(p['waits'], digits=2)} |"
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


def write_report(recipe: Any, folder: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
    summary = summarize(recipe, records)
    _write(folder / SUMMARY, json.dumps(summary, indent=2))
    _write(folder / TABLE, markdown(summary))
    plot(summary, folder)
    return summary
