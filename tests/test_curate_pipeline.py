"""The whole pipeline on real pool files with tiny models: output schema, report, caching, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
import yaml

from curate import S1K_COLUMNS, CurateError, load_recipe, run

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
POOL, EVAL = SHARED / "data" / "pool", SHARED / "data" / "eval"

pytestmark = pytest.mark.slow
datasets.disable_progress_bars()


def small_recipe(model_dir: Path, out: Path, cache: Path, chunk: int = 4) -> dict:
    """Four real sources (15 rows each), real eval sets, tiny references and teacher."""
    if not POOL.is_dir():
        pytest.skip(f"real pool {POOL} is absent")
    ref = {"model": str(model_dir), "dtype": "float32", "max_answer_tokens": 8, "batch_size": 4, "chunk": chunk}
    return {
        "output_dir": str(out),
        "cache_dir": str(cache),
        "sources": [
            {"name": "aime", "path": str(POOL / "aime_1983_2023.json"), "question": "problem", "limit": 15},
            {
                "name": "math-train",
                "path": str(POOL / "math_train_answers.json"),
                "question": "problem",
                "solution": None,
                "limit": 15,
            },
            {"name": "omni", "path": str(POOL / "omni_math_rule.jsonl"), "question": "problem", "limit": 15},
            {
                "name": "lsat-ar",
                "path": str(POOL / "agieval" / "lsat-ar.jsonl"),
                "passage": "passage",
                "options": "options",
                "label": "label",
                "solution": "other.solution",
                "limit": 15,
            },
        ],  # fmt: skip
        "stages": [
            {
                "decontaminate": {
                    "eval_sets": [{"name": "math500", "path": str(EVAL / "math500.jsonl"), "id": "unique_id"}]
                }
            },  # fmt: skip
            {"quality": {"rules": [{"name": "asymptote figure", "pattern": r"\[asy\]", "except_sources": "aime"}]}},
            {"domains": {"method": "embedding"}},
            {"cap": {"size": 6, "seed": 1}},
            {
                "difficulty": {
                    "models": [
                        {"name": "tiny-a", **ref, "format": "s1", "max_thinking_tokens": 6, "max_tokens": 16},
                        {"name": "tiny-b", **ref, "format": "s1", "max_thinking_tokens": 10, "max_tokens": 20},
                    ],
                    "grading": {"workers": 1},
                }
            },  # fmt: skip
            {
                "traces": {
                    "local": {"name": "teacher", **ref, "max_thinking_tokens": 24, "max_tokens": 36},
                    "target_tokenizer": str(SHARED / "tokenizers" / "qwen2.5"),
                }
            },  # fmt: skip
            {"quality": {"name": "trace check", "required": ["thinking_trajectories"]}},
            {"select": {"size": 3, "seed": 0}},
        ],
    }


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def finished(s1_model_dir, tmp_path_factory):
    """One uninterrupted run, then a second run of the same recipe."""
    base = tmp_path_factory.mktemp("curate-run")
    recipe_path = write_recipe(base / "recipe.yaml", small_recipe(s1_model_dir, base / "out", base / "cache"))
    folder = run(load_recipe(recipe_path), log=lambda _: None)
    first = json.loads((folder / "report.json").read_text())
    run(load_recipe(recipe_path), log=lambda _: None)
    second = json.loads((folder / "report.json").read_text())
    return folder, first, second


def test_end_to_end_output_is_s1k_shaped_and_reported(finished):
    folder, report, _ = finished
    curated = datasets.load_from_disk(str(folder / "curated"))
    assert curated.column_names[: len(S1K_COLUMNS)] == list(S1K_COLUMNS)
    assert {"domain", "trace_tokens", "decisions", "id"} <= set(curated.column_names)
    assert len(curated) == 3 == report["rows"]
    for row in curated:
        assert len(row["thinking_trajectories"]) == 1 and row["trace_tokens"] > 0
        assert row["domain"] and row["source_type"] in {"aime", "math-train", "omni", "lsat-ar"}
        decisions = json.loads(row["decisions"])
        assert list(decisions) == ["decontaminate", "quality", "domains", "cap", "difficulty", "traces",
                                   "trace check", "select"]  # fmt: skip
        assert decisions["select"] == "sampled: s1"
    funnel = {step["stage"]: step for step in report["funnel"]}
    assert funnel["ingest"]["rows_out"] == 60
    for before, after in zip(report["funnel"], report["funnel"][1:], strict=False):
        assert after["rows_in"] == before["rows_out"]
        assert after["rows_in"] - after["rows_out"] == sum(after["dropped"].values())
    assert funnel["cap"]["rows_out"] == 6
    # The tiny references are random: they solve nothing, and the pipeline goes on all the same.
    assert funnel["difficulty"]["info"]["models"]["tiny-a"]["answers_generated"] == 6
    dropped = [json.loads(line) for line in (folder / "dropped.jsonl").read_text().splitlines()]
    assert len(dropped) == 60 - 3
    early = ("decontaminate", "quality")
    labelled_lost = [d for d in dropped if d["stage"] in early and d["source"] in ("math-train", "omni")]
    assert funnel["domains"]["info"]["agreement"]["rows"] == 30 - len(labelled_lost)  # MATH type, Omni domain
    assert (folder / "domains.png").stat().st_size > 1000 and (folder / "trace_tokens.png").stat().st_size > 1000
    text = (folder / "report.md").read_text()
    assert "At most **6** questions" in text and "Agreement with human subject labels" in text


def test_rerun_repeats_nothing(finished):
    folder, first, second = finished
    assert all(step["cached"] for step in second["funnel"])
    assert [s["rows_out"] for s in second["funnel"]] == [s["rows_out"] for s in first["funnel"]]
    assert second["call_cache"]["misses"] == 0


def count_generations(cache: Path) -> int:
    try:
        with sqlite3.connect(str(cache / "calls.sqlite"), timeout=5) as db:
            return db.execute("SELECT count(*) FROM calls WHERE kind = 'generate'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_killed_run_resumes_to_the_same_output(finished, s1_model_dir, tmp_path):
    """SIGKILL in the middle of the difficulty stage, then rerun: identical curated set and funnel."""
    folder, report, _ = finished
    cache = tmp_path / "cache"
    recipe = small_recipe(s1_model_dir, tmp_path / "out", cache, chunk=1)
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "curate", str(path)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 240
    try:
        while count_generations(cache) < 3:
            assert process.poll() is None, "the run ended before it could be interrupted"
            assert time.monotonic() < deadline, "the run never reached the difficulty stage"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "out" / "curated").exists()
    assert not list((cache / "stages").glob("difficulty-*"))  # nothing half-written looks finished
    done_before = count_generations(cache)
    assert 3 <= done_before < 12

    resumed = run(load_recipe(path), log=lambda _: None)
    again = json.loads((resumed / "report.json").read_text())
    difficulty = next(s for s in again["funnel"] if s["stage"] == "difficulty")
    generated = sum(m["answers_generated"] for m in difficulty["info"]["models"].values())
    assert generated == 12 - done_before  # what was done before the kill was not asked again
    expected = datasets.load_from_disk(str(folder / "curated")).to_list()
    assert datasets.load_from_disk(str(resumed / "curated")).to_list() == expected
    assert [s["dropped"] for s in again["funnel"]] == [s["dropped"] for s in report["funnel"]]


def test_recipe_errors_name_the_setting(tmp_path, s1_model_dir):
    recipe = small_recipe(s1_model_dir, tmp_path / "out", tmp_path / "cache")
    recipe["stages"][1] = {"quality": {"rules": [{"name": "x", "patern": "y"}]}}
    with pytest.raises(CurateError, match=r"stages\[1\] \(quality\): rules\[0\]: unknown setting\(s\) \['patern'\]"):
        load_recipe(write_recipe(tmp_path / "r.yaml", recipe))
    recipe["stages"] = [{"cap": {"size": 3}}, {"cap": {"size": 2}}]
    with pytest.raises(CurateError, match="a second stage named 'cap'"):
        load_recipe(write_recipe(tmp_path / "r.yaml", recipe))
    recipe["stages"] = [{"polish": {}}]
    with pytest.raises(CurateError, match="unknown stage 'polish'"):
        load_recipe(write_recipe(tmp_path / "r.yaml", recipe))
