"""The funnel report: rows in and out of every stage with reasons, domains, trace lengths, timings.

Written to the output folder as report.json (everything, for scripts), report.md (for people) and
two plots: domains.png (the curated set's domain histogram) and trace_tokens.png (its trace length
distribution, in target-tokenizer tokens).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from .cache import CallCache
from .domains import msc_names


def save_figure(fig: Any, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def plot_domains(histogram: dict[str, int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = msc_names()
    items = sorted(histogram.items(), key=lambda kv: -kv[1])
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.28 * len(items) + 1)))
    labels = [f"{code} {names.get(code, '(none)')[:40]}" for code, _ in items]
    ax.barh(labels[::-1], [n for _, n in items][::-1], color="#4c72b0")
    ax.set_xlabel("questions")
    ax.set_title(f"Domains of the curated set ({sum(histogram.values())} questions, MSC top level)")
    save_figure(fig, path)
    plt.close(fig)


def plot_trace_tokens(lengths: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(lengths or [0], bins=min(40, max(5, len(set(lengths)))), color="#dd8452")
    ax.set_xlabel("trace length (target-tokenizer tokens)")
    ax.set_ylabel("questions")
    ax.set_title(f"Trace lengths of the curated set ({len(lengths)} questions)")
    save_figure(fig, path)
    plt.close(fig)


def distribution(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values)
    return {"min": int(array.min()), "median": float(np.median(array)), "mean": float(array.mean()),
            "p90": float(np.percentile(array, 90)), "max": int(array.max())}  # fmt: skip


def write_report(out_dir: Path, recipe: Any, funnel: list[dict[str, Any]], final: datasets.Dataset,
                 calls: CallCache) -> dict[str, Any]:  # fmt: skip
    histogram = dict(Counter(final["domain"]).most_common())
    lengths = [int(n) for n in final["trace_tokens"]]
    plot_domains(histogram, out_dir / "domains.png")
    plot_trace_tokens(lengths, out_dir / "trace_tokens.png")
    report = {
        "recipe": recipe.source,
        "rows": len(final),
        "funnel": funnel,
        "domain_histogram": histogram,
        "trace_tokens": distribution(lengths),
        "seconds_total": sum(step["seconds"] for step in funnel if not step["cached"]),
        "call_cache": {"hits": calls.hits, "misses": calls.misses, "path": str(calls.path)},
    }
    tmp = out_dir / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, out_dir / "report.json")
    tmp = out_dir / "report.md.tmp"
    tmp.write_text(markdown(report), encoding="utf-8")
    os.replace(tmp, out_dir / "report.md")
    return report


def markdown(report: dict[str, Any]) -> str:
    names = msc_names()
    lines = [f"# Curation report ({report['recipe']})", "", f"Curated set: **{report['rows']}** rows.", ""]
    lines += ["## Funnel", "", "| stage | rows in | rows out | dropped (by reason) | seconds | cached | peak RSS MiB |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for step in report["funnel"]:
        dropped = ", ".join(f"{k}: {v}" for k, v in step["dropped"].items() if v) or "-"
        cached = "yes" if step["cached"] else "no"
        lines.append(f"| {step['stage']} | {step['rows_in']} | {step['rows_out']} | {dropped} | "
                     f"{step['seconds']:.1f} | {cached} | {step['peak_rss_mb']:.0f} |")  # fmt: skip
    lines += ["", "Seconds and peak memory (of the whole process, so far) of a cached stage are those of the run that "
              "computed it.", ""]  # fmt: skip
    for step in report["funnel"]:
        info = step["info"]
        kind = step["kind"]
        if kind == "ingest":
            lines += ["## Sources", "", "| source | read | kept | skipped |", "|---|---|---|---|"]
            lines += [f"| {name} | {s['read']} | {s['kept']} | {s['skipped']} |" for name, s in info["sources"].items()]
            lines.append("")
        elif kind == "decontaminate":
            sets = ", ".join(f"{k} ({v.get('questions', 'skipped: ' + str(v.get('skipped')))})"
                             for k, v in info["eval_sets"].items())  # fmt: skip
            lines += [f"## {step['stage']}", "", f"Evaluation sets: {sets or 'none'}.", ""]
        elif kind == "quality":
            counts = ", ".join(f"{k}: {v}" for k, v in info["rule_counts"].items()) or "no rules"
            lines += [f"## {step['stage']}", "", f"Removed per rule (first rule broken): {counts}.", ""]
        elif kind == "cap":
            lines += [f"## {step['stage']}", "", f"At most **{info['cap']}** questions went on to the stages after "
                      "this one (a recipe setting that keeps generation small).", ""]  # fmt: skip
        elif kind == "difficulty":
            lines += [f"## {step['stage']}", "", "| reference model | solved | answers generated | from cache |",
                      "|---|---|---|---|"]  # fmt: skip
            lines += [f"| {name} | {m['solved']} | {m['answers_generated']} | {m['answers_cached']} |"
                      for name, m in info["models"].items()]  # fmt: skip
            lines += ["", f"Questions without a gold answer a rule can grade: {info['ungraded_rows']}; "
                      f"judge failures: {info['judge_failures']}.", ""]  # fmt: skip
        elif kind == "traces":
            lines += [f"## {step['stage']}", "", f"Teacher: {info['teacher']}. Traces requested: {info['called']}; "
                      f"from cache: {info['cached']}; **failures: {info['failures']}**.", ""]  # fmt: skip
            lines += [f"- {e}" for e in info["failure_examples"]]
            lines.append("")
        elif kind == "domains":
            agree = info["agreement"]
            lines += [f"## {step['stage']} ({info['method']})", ""]
            if agree["rows"]:
                lines += [f"Agreement with human subject labels (mapped to MSC with curate/msc.json's label_map): "
                          f"**{agree['agreement']:.1%}** of {agree['rows']} labelled rows.", "",
                          "| human label | rows | agreement | most predicted |", "|---|---|---|---|"]  # fmt: skip
                for label, row in agree["per_label"].items():
                    top = ", ".join(f"{c} {names.get(c, '')}" for c in row["top_predictions"])
                    lines.append(f"| {label} | {row['rows']} | {row['agreement']:.1%} | {top} |")
            else:
                lines.append("No rows with human subject labels reached this stage.")
            lines.append("")
        elif kind == "select":
            lines += [f"## {step['stage']}", "", f"Method {info['method']}: {info['preselected']} preselected, "
                      f"{info['selected']} selected in all.", ""]  # fmt: skip
    lines += ["## Curated set", "", "![domains](domains.png)", "", "| MSC | name | questions |", "|---|---|---|"]
    lines += [f"| {code} | {names.get(code, '')} | {n} |" for code, n in report["domain_histogram"].items()]
    dist = report["trace_tokens"]
    if dist:
        lines += ["", "Trace length (target-tokenizer tokens): " + ", ".join(f"{k} {v:g}" for k, v in dist.items()),
                  "", "![trace lengths](trace_tokens.png)"]  # fmt: skip
    cache = report["call_cache"]
    lines += ["", f"Call cache: {cache['hits']} hits, {cache['misses']} misses ({cache['path']}).", ""]
    return "\n".join(lines)
