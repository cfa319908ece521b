"""What lm-eval cannot carry: per-sample budget statistics, written beside its samples, and their summary.

lm-eval keeps one string per request. The decoder knows more about each completion: how many tokens it
thought, how many waits were inserted, whether the maximum forced the end, why it stopped. One JSON line
per forced request goes to the file named by `stats=` in --model_args, keyed like lm-eval's samples
(task, doc_id, repeat); a summary per task goes beside it (`<name>.summary.json`). Both are rewritten
whole, atomically, after every batch of requests, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from decode import Budget, BudgetResult


def stats_row(task: str | None, doc_id: int | None, repeat: int, budget: Budget, result: BudgetResult) -> dict:
    within = (budget.max_thinking_tokens is None or result.thinking_tokens <= budget.max_thinking_tokens) and (
        result.thinking_tokens >= budget.min_thinking_tokens
    )
    return {
        "task": task,
        "doc_id": doc_id,
        "repeat": repeat,
        "max_thinking_tokens": budget.max_thinking_tokens,
        "min_thinking_tokens": budget.min_thinking_tokens,
        "num_ignore": budget.num_ignore,
        "max_answer_tokens": budget.max_answer_tokens,
        "thinking_tokens": result.thinking_tokens,
        "answer_tokens": result.answer_tokens,
        "completion_tokens": len(result.completion_ids),
        "waits": result.waits,
        "forced_end": result.forced_end,
        "finish_reason": result.finish_reason,
        "within_budget": within,
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task: samples, mean thinking tokens, the share within the budget (at most the maximum and at
    least the minimum), mean waits and the share whose end of thinking was forced."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_task[str(row["task"])].append(row)
    summary = {}
    for task, task_rows in sorted(by_task.items()):
        n = len(task_rows)
        summary[task] = {
            "samples": n,
            "mean_thinking_tokens": sum(r["thinking_tokens"] for r in task_rows) / n,
            "within_budget": sum(bool(r["within_budget"]) for r in task_rows) / n,
            "mean_waits": sum(r["waits"] for r in task_rows) / n,
            "forced_end": sum(bool(r["forced_end"]) for r in task_rows) / n,
        }
    return summary


def summary_path(stats_path: str | Path) -> Path:
    path = Path(stats_path)
    return path.with_name(path.stem + ".summary.json")


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StatsLog:
    """The statistics of one model object: every forced request it has answered, in order."""

    def __init__(self, path: str | Path | None):
        self.path = None if path in (None, "") else Path(path)
        self.rows: list[dict[str, Any]] = []

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        if self.path is None:
            return
        write_atomic(self.path, "".join(json.dumps(row) + "\n" for row in self.rows))
        write_atomic(summary_path(self.path), json.dumps(summarize(self.rows), indent=2) + "\n")


def format_summary(summary: dict[str, dict[str, Any]]) -> str:
    lines = ["| task | samples | mean thinking tokens | within budget | mean waits | forced end |", "|---" * 6 + "|"]
    for task, s in summary.items():
        lines.append(
            f"| {task} | {s['samples']} | {s['mean_thinking_tokens']:.1f} | {s['within_budget']:.1%} "
            f"| {s['mean_waits']:.2f} | {s['forced_end']:.1%} |"
        )
    return "\n".join(lines)
