"""Running a recipe: ingest, then each stage in order, each cached on disk by its input and settings.

Every stage maps a `datasets.Dataset` to the same rows plus its own columns and a `drop_reason`
("" = kept, else "category: detail"). The pipeline stores that output under a key hashed from the
stage's kind, settings and its input's key, passes the kept rows on, and counts the dropped ones by
category for the funnel. A rerun loads finished stages from the cache; a run killed inside a stage
reruns that stage, whose expensive calls (generations, API replies, embeddings) come from the call
cache, so the final output is the same as an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import datasets

from evals.inputs import check_argument

from .cache import CallCache, StageCache, content_hash, file_hash
from .cap import cap
from .decontaminate import decontaminate, eval_set_paths
from .difficulty import difficulty
from .domains import domains
from .ingest import ingest
from .quality import quality
from .recipe import CurateRecipe, StageSpec
from .report import write_report
from .schema import OUR_COLUMNS, S1K_COLUMNS
from .select import select
from .teacher_grade import teacher_grade
from .traces import traces

VERSION = 3  # bump when a stage's behaviour changes, so old cached outputs are not reused
NOTE_COLUMN = {"difficulty": "reference_correct", "select": "selected_by", "domains": "domain",
               "teacher_grade": "teacher_correct"}  # fmt: skip

StageFunction = Callable[[datasets.Dataset], tuple[datasets.Dataset, dict[str, Any]]]


def stage_function(stage: StageSpec, calls: CallCache) -> StageFunction:
    """The stage as a function of its input alone (settings and the call cache bound in)."""
    settings = stage.settings
    table: dict[str, StageFunction] = {
        "decontaminate": lambda data: decontaminate(data, settings),
        "quality": lambda data: quality(data, settings),
        "cap": lambda data: cap(data, settings),
        "difficulty": lambda data: difficulty(data, settings, calls),
        "traces": lambda data: traces(data, settings, calls),
        "teacher_grade": lambda data: teacher_grade(data, settings, calls),
        "domains": lambda data: domains(data, settings, calls),
        "select": lambda data: select(data, settings, calls),
    }
    return table[stage.kind]


def stage_key(stage: StageSpec, input_key: str) -> str:
    extra: dict[str, str] = {}
    if stage.kind == "decontaminate":  # an edited evaluation file must rerun decontamination
        extra = {p: file_hash(Path(p)) for p in eval_set_paths(stage.settings.eval_sets) if Path(p).is_file()}
    return content_hash(VERSION, stage.kind, asdict(stage.settings), input_key, extra)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def category(reason: str) -> str:
    return reason.split(":", 1)[0]


def decisions_of(row: dict[str, Any], stages: list[StageSpec]) -> str:
    """Every stage's decision about a row of the final set, as JSON: its note column, else "passed"."""
    notes = {}
    for stage in stages:
        column = NOTE_COLUMN.get(stage.kind)
        notes[stage.name] = str(row[column]) if column and column in row else "passed"
    return json.dumps(notes, ensure_ascii=False)


def run(recipe: CurateRecipe, stop_after: str | None = None, log: Callable[[str], None] = print) -> Path:
    """Run the recipe; returns the output folder (curated set, report, plots).

    `stop_after`: run ingest and the stages up to and including this one, and stop (no final output).
    """
    check_argument("curate.run", "recipe", recipe, CurateRecipe, "a CurateRecipe (curate.load_recipe('recipe.yaml'))")
    check_argument("curate.run", "stop_after", stop_after, (str, type(None)), "a stage name or None")
    out_dir = Path(recipe.output_dir)
    cache_root = Path(recipe.cache_dir)
    stages = StageCache(cache_root)
    calls = CallCache(cache_root / "calls.sqlite")
    funnel: list[dict[str, Any]] = []
    dropped_rows: list[dict[str, str]] = []
    try:
        key = content_hash(VERSION, "ingest", [s.fingerprint() for s in recipe.sources])
        start = time.perf_counter()
        loaded = stages.load("ingest", key)
        if loaded is None:
            pool, info = ingest(recipe.sources)
            info["seconds"] = time.perf_counter() - start
            info["peak_rss_mb"] = peak_rss_mb()
            data = stages.save("ingest", key, pool, info)
            cached = False
        else:
            data, info = loaded
            cached = True
        funnel.append({"stage": "ingest", "kind": "ingest", "rows_in": sum(s["read"] for s in info["sources"].values()),
                       "rows_out": len(data), "dropped": {"skipped (bad row)": sum(s["skipped"] for s in
                       info["sources"].values())}, "seconds": info["seconds"], "cached": cached,
                       "peak_rss_mb": info.get("peak_rss_mb", 0.0), "info": info})  # fmt: skip
        log(f"ingest: {len(data)} rows{' (cached)' if cached else ''}")
        for stage in recipe.stages:
            if stop_after == funnel[-1]["stage"]:
                break
            key = stage_key(stage, key)
            loaded = stages.load(stage.name, key)
            start = time.perf_counter()
            if loaded is None:
                log(f"{stage.name}: running on {len(data)} rows")
                output, info = stage_function(stage, calls)(data)
                info["seconds"] = time.perf_counter() - start
                info["peak_rss_mb"] = peak_rss_mb()
                output = stages.save(stage.name, key, output, info)
                cached = False
            else:
                output, info = loaded
                cached = True
            reasons = output["drop_reason"]
            kept = output.filter(lambda r: r == "", input_columns="drop_reason", load_from_cache_file=False)
            kept = kept.remove_columns("drop_reason")
            counts = Counter(category(r) for r in reasons if r)
            ids, sources = output["id"], output["source"]
            for i, reason in enumerate(reasons):
                if reason:
                    dropped_rows.append({"id": ids[i], "source": sources[i], "stage": stage.name, "reason": reason})
            funnel.append({"stage": stage.name, "kind": stage.kind, "rows_in": len(output), "rows_out": len(kept),
                           "dropped": dict(counts.most_common()), "seconds": info["seconds"], "cached": cached,
                           "peak_rss_mb": info.get("peak_rss_mb", 0.0), "info": info})  # fmt: skip
            log(f"{stage.name}: {len(output)} -> {len(kept)} rows{' (cached)' if cached else ''} {dict(counts)}")
            data = kept
        if stop_after is not None:
            return out_dir
        data = data.add_column("decisions", [decisions_of(row, recipe.stages) for row in data])
        final = to_s1k_schema(data)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_atomically(final, out_dir / "curated")
        write_jsonl_atomically(out_dir / "dropped.jsonl", dropped_rows)
        write_report(out_dir, recipe, funnel, final, calls)
        log(f"curated set: {len(final)} rows in {out_dir / 'curated'}; report: {out_dir / 'report.md'}")
        return out_dir
    finally:
        calls.close()


def to_s1k_schema(data: datasets.Dataset) -> datasets.Dataset:
    """s1K's columns in its order, then ours; columns a skipped stage would have added are left empty."""
    n = len(data)
    defaults: dict[str, Any] = {
        "thinking_trajectories": [[] for _ in range(n)],
        "attempt": [""] * n,
        "domain": [""] * n,
        "domain_name": [""] * n,
        "trace_tokens": [0] * n,
    }
    columns: dict[str, Any] = {}
    for name in (*S1K_COLUMNS, *OUR_COLUMNS):
        if name == "source_type":
            columns[name] = data["source"]
        elif name in data.column_names:
            columns[name] = data[name]
        else:
            columns[name] = defaults[name]
    features = datasets.Features(
        {
            **{name: datasets.Value("string") for name in (*S1K_COLUMNS, *OUR_COLUMNS)},
            "thinking_trajectories": datasets.Sequence(datasets.Value("string")),
            "trace_tokens": datasets.Value("int64"),
        }
    )
    return datasets.Dataset.from_dict(columns, features=features)


def save_atomically(data: datasets.Dataset, folder: Path) -> None:
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    data.save_to_disk(str(tmp))
    old = folder.with_name(f"{folder.name}.old-{os.getpid()}")
    if folder.exists():
        os.rename(folder, old)
    os.rename(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def write_jsonl_atomically(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
