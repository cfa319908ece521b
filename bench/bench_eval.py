"""Cost of grading and of everything in an evaluation run that is not generation.

1. Grading throughput over the real MATH500 gold answers, each written in several equivalent forms
   (the rewritings of tests/test_grading.py): this project's `Grader` (math-verify in 2 isolated
   worker processes, per-answer deadline and memory bound) against the baseline, math-verify called
   in-process one answer at a time with no isolation (what a main-thread loop would do).
2. The default `make eval` recipe, run fresh: its wall time and the share spent outside generation
   (loading, grading, writing samples, summary and plots).

    python bench/bench_eval.py [--repeats 3] [--json bench/results/eval.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evals import Answer, Grader, load_recipe, run  # noqa: E402
from evals import runner as runner_module  # noqa: E402
from evals.extract import extract_math  # noqa: E402
from evals.grading import verify_math  # noqa: E402
from tests.test_grading import equivalents  # noqa: E402


def grading_cases() -> list[Answer]:
    rows = (ROOT.parent / "shared" / "data" / "eval" / "math500.jsonl").read_text().splitlines()
    golds = [json.loads(line)["answer"] for line in rows]
    return [Answer("math", gold, text) for gold in golds for text in equivalents(gold)]


def in_process(answers: list[Answer]) -> int:
    correct = 0
    for a in answers:
        candidate, _ = extract_math(a.text)
        correct += bool(candidate) and verify_math(a.gold, candidate, 5)[0]
    return correct


def pooled(grader: Grader, answers: list[Answer]) -> int:
    grader._cache.clear()  # measure the work, not the memo of the previous repeat
    return sum(v.correct for v in grader.grade(answers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    answers = grading_cases()
    figures: dict[str, object] = {"answers": len(answers)}

    start = time.perf_counter()
    grader = Grader(workers=2)
    pooled(grader, answers[:2])
    figures["worker_start_s"] = time.perf_counter() - start
    base, pool = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        n_base = in_process(answers)
        base.append(time.perf_counter() - t)
        t = time.perf_counter()
        n_pool = pooled(grader, answers)
        pool.append(time.perf_counter() - t)
        assert n_base == n_pool, f"the pool and the in-process loop disagree ({n_pool} vs {n_base} correct)"
    grader.close()
    figures.update(
        in_process_answers_per_s=len(answers) / statistics.median(base),
        pool_answers_per_s=len(answers) / statistics.median(pool),
        pool_speedup=statistics.median(b / p for b, p in zip(base, pool, strict=True)),
    )
    print(f"grading {len(answers)} answers (MATH500 golds rewritten), medians of {args.repeats}:")
    print(f"  in-process, 1 at a time : {figures['in_process_answers_per_s']:8.1f} answers/s")
    print(f"  Grader, 2 workers       : {figures['pool_answers_per_s']:8.1f} answers/s "
          f"({figures['pool_speedup']:.2f}x; workers start once in {figures['worker_start_s']:.1f} s)")  # fmt: skip

    generation: list[float] = []
    real_generate = runner_module.generate

    def timed_generate(*a, **k):
        t = time.perf_counter()
        try:
            return real_generate(*a, **k)
        finally:
            generation[-1] += time.perf_counter() - t

    runner_module.generate = timed_generate
    tiny = ROOT / "runs/models/tiny-s1"
    if not (tiny / "config.json").exists():  # what `make eval` builds on first use
        from tests.tiny_model import QWEN_EOS, save_tiny_model

        save_tiny_model(tiny, ROOT.parent / "shared/tokenizers/qwen2.5", {151644: 3.3, QWEN_EOS: 3.5}, 1, 0.3)
    walls, shares = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            recipe = load_recipe(ROOT / "recipes/eval/default.yaml", {"output_dir": str(Path(tmp) / "run")})
            generation.append(0.0)
            t = time.perf_counter()
            run(recipe, progress=False)
            walls.append(time.perf_counter() - t)
            shares.append(1 - generation[-1] / walls[-1])
    figures.update(default_recipe_wall_s=statistics.median(walls), outside_generation_share=statistics.median(shares))
    print(f"default eval recipe: {figures['default_recipe_wall_s']:.1f} s wall, "
          f"{100 * figures['outside_generation_share']:.1f}% of it outside generation")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
