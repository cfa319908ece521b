"""Curation benchmark: wall time and peak memory of the cheap stages on a 59K-question pool.

The pool is the real shared pool (every file, ingested with recipes/curate/default.yaml's mapping)
repeated with small edits until it holds `--size` questions (default 59,000, s1's pool size): copy k
of a question has its first number shifted by k and a short suffix, so copies are near, not exact,
duplicates. Stages ingest -> decontaminate -> quality -> domains -> select each run in their own
process (so peak memory is per stage), reading the previous stage's kept rows from disk, with a
cold call cache. Select uses the solution's length in characters in place of a trace length (there
are no traces at this point; the sampling cost is the same).

Baselines in the same run:
- domains again on a warm cache (what a rerun or a resumed run pays);
- near-duplicate search: MinHash LSH as the stage does it against exhaustive pairwise Jaccard on a
  sample (median of repeats), with the pairs each finds, so speed is not bought with missed pairs.

    .venv/bin/python bench/bench_curate.py --json bench/results/curate.json [--size 59000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("ingest", "decontaminate", "quality", "domains", "domains (warm cache)", "select")
NUMBER = re.compile(r"\d+")


def default_recipe():
    from curate import load_recipe

    return load_recipe(ROOT / "recipes" / "curate" / "default.yaml")


def stage_settings(name: str):
    recipe = default_recipe()
    for stage in recipe.stages:
        if stage.kind == name and stage.name == name:
            return stage.settings
    raise SystemExit(f"default recipe has no stage {name!r}")


def build_pool(size: int, path: Path) -> int:
    """The shared pool, repeated with small edits, as one JSONL of `size` rows."""
    from curate.ingest import ingest

    os.chdir(ROOT)
    base, _ = ingest(default_recipe().sources)
    rows = base.to_list()
    with open(path, "w", encoding="utf-8") as handle:
        written = 0
        copy = 0
        while written < size:
            for row in rows:
                if written >= size:
                    break
                question = row["question"]
                if copy:
                    question = NUMBER.sub(lambda m, k=copy: str(int(m.group()) + k), question, count=1)
                    question += f" (version {copy + 1})"
                record = {"id": f"{row['id']}#{copy}", "question": question, "solution": row["solution"],
                          "answer": row["answer"], "metadata": row["metadata"]}  # fmt: skip
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                written += 1
            copy += 1
    return written


def child(stage: str, source: Path, target: Path, cache_dir: Path) -> None:
    """Run one stage in this process and print its figures as JSON."""
    import datasets

    datasets.disable_progress_bars()
    os.chdir(ROOT)
    import evals  # noqa: F401  (decontamination reads eval sets through evals, which imports torch: not stage time)
    from curate.cache import CallCache
    from curate.decontaminate import decontaminate
    from curate.domains import domains
    from curate.ingest import SourceSpec, ingest
    from curate.quality import quality
    from curate.select import SelectSettings, select

    calls = CallCache(cache_dir / "calls.sqlite")
    start = time.perf_counter()
    if stage == "ingest":
        spec = SourceSpec(name="pool59k", path=str(source), id="id", metadata=["metadata"])
        out, _ = ingest([spec])
        rows_in = len(out)
    else:
        data = datasets.load_from_disk(str(source))
        rows_in = len(data)
        start = time.perf_counter()
        if stage == "decontaminate":
            out, _ = decontaminate(data, stage_settings("decontaminate"))
        elif stage == "quality":
            out, _ = quality(data, stage_settings("quality"))
        elif stage.startswith("domains"):
            limit = int(os.environ.get("BENCH_DOMAINS_LIMIT") or 0)
            if limit:
                data = data.select(range(min(limit, len(data))))
                rows_in = len(data)
                start = time.perf_counter()
            out, _ = domains(data, stage_settings("domains"), calls)
        else:
            if "domain" not in data.column_names:  # domains ran on a sample: its labels, cycled, stand in
                labels = datasets.load_from_disk(str(source.parent / "domains"))["domain"]
                data = data.add_column("domain", [labels[i % len(labels)] for i in range(len(data))])
            data = data.add_column("trace_tokens", [len(s) for s in data["solution"]])
            out, _ = select(data, SelectSettings(size=1000, method="s1", seed=0))
        out = out.filter(lambda r: r == "", input_columns="drop_reason").remove_columns("drop_reason")
    seconds = time.perf_counter() - start
    out.save_to_disk(str(target))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps({"stage": stage, "seconds": seconds, "rows_in": rows_in, "rows_out": len(out), "peak_rss_mb": peak})
    )


def near_duplicate_baseline(pool_path: Path, sample: int, repeats: int) -> dict:
    """LSH (as the stage does it) against exhaustive pairwise Jaccard on the first `sample` questions."""
    from curate.decontaminate import MinHashLSH, ShingleHasher, words

    settings = stage_settings("decontaminate")
    questions = []
    with open(pool_path, encoding="utf-8") as handle:
        for line in handle:
            questions.append(json.loads(line)["question"])
    step = max(1, len(questions) // sample)  # spread over the copies, so near duplicates are in the sample
    questions = questions[::step][:sample]
    hasher = ShingleHasher(settings.near_ngram)
    shingles = [hasher.shingles(words(q)) for q in questions]
    sets = [set(s.tolist()) for s in shingles]

    def exhaustive() -> set[tuple[int, int]]:
        pairs = set()
        for j in range(len(sets)):
            for i in range(j):
                union = len(sets[i] | sets[j])
                if union and len(sets[i] & sets[j]) / union >= settings.near_threshold:
                    pairs.add((i, j))
        return pairs

    def lsh() -> set[tuple[int, int]]:
        index = MinHashLSH(settings.num_perm, settings.bands)
        pairs = set()
        for j, s in enumerate(shingles):
            if not len(s):
                continue
            signature = index.signature(s)
            for i in index.candidates(signature):
                union = len(sets[i] | sets[j])
                if len(sets[i] & sets[j]) / union >= settings.near_threshold:
                    pairs.add((i, j))
            index.add(j, signature)
        return pairs

    timings: dict[str, list[float]] = {"exhaustive": [], "lsh": []}
    found = {}
    for _ in range(repeats):
        for name, fn in (("exhaustive", exhaustive), ("lsh", lsh)):
            start = time.perf_counter()
            found[name] = fn()
            timings[name].append(time.perf_counter() - start)
    medians = {k: statistics.median(v) for k, v in timings.items()}
    return {
        "sample": len(questions),
        "repeats": repeats,
        "exhaustive_s": medians["exhaustive"],
        "lsh_s": medians["lsh"],
        "speedup": medians["exhaustive"] / medians["lsh"],
        "pairs_exhaustive": len(found["exhaustive"]),
        "pairs_lsh": len(found["lsh"]),
        "pairs_missed_by_lsh": len(found["exhaustive"] - found["lsh"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=59000)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "curate.json")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds allowed per stage")
    parser.add_argument("--sample", type=int, default=2000, help="questions in the near-duplicate baseline")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--domains-limit", type=int, default=0,
                        help="classify only this many rows (0: all); select then cycles their labels")  # fmt: skip
    parser.add_argument("--child", nargs=4, metavar=("STAGE", "SOURCE", "TARGET", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        stage, source, target, cache = args.child
        child(stage, Path(source), Path(target), Path(cache))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["BENCH_DOMAINS_LIMIT"] = str(args.domains_limit)
    with tempfile.TemporaryDirectory(prefix="bench-curate-") as tmp:
        work = Path(tmp)
        pool = work / "pool.jsonl"
        start = time.perf_counter()
        rows = build_pool(args.size, pool)
        print(f"pool: {rows} questions ({time.perf_counter() - start:.1f} s to build)", flush=True)
        results = []
        source = pool
        for stage in STAGES:
            target = work / re.sub(r"\W+", "_", stage)
            command = [sys.executable, __file__, "--child", stage, str(source), str(target), str(work / "cache")]
            outcome = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
            if outcome.returncode:
                raise SystemExit(f"stage {stage} failed:\n{outcome.stderr[-3000:]}")
            figures = json.loads(outcome.stdout.strip().splitlines()[-1])
            results.append(figures)
            print(f"{stage:>22}: {figures['rows_in']:>6} -> {figures['rows_out']:>6} rows  "
                  f"{figures['seconds']:7.1f} s  peak RSS {figures['peak_rss_mb']:6.0f} MiB", flush=True)  # fmt: skip
            if not stage.startswith("domains"):  # both domains runs read quality's output; select too
                source = target
        baseline = near_duplicate_baseline(pool, args.sample, args.repeats)
    cold = [r for r in results if r["stage"] != "domains (warm cache)"]
    total = sum(r["seconds"] for r in cold)
    print(f"total (ingest + decontaminate + quality + domains + select): {total:.1f} s (target: under 300 s)")
    print(f"near duplicates on {baseline['sample']} questions: exhaustive {baseline['exhaustive_s']:.2f} s, "
          f"LSH {baseline['lsh_s']:.2f} s ({baseline['speedup']:.1f}x); pairs {baseline['pairs_exhaustive']} vs "
          f"{baseline['pairs_lsh']}, missed by LSH {baseline['pairs_missed_by_lsh']}")  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {"size": rows, "domains_limit": args.domains_limit, "stages": results, "total_s": total,
              "near_duplicates": baseline, "cpus": os.cpu_count(), "load_average": os.getloadavg()}  # fmt: skip
    args.json.write_text(json.dumps(report, indent=1))
    print(f"raw figures: {args.json}")


if __name__ == "__main__":
    main()
