"""The demo's two speed settings, each against its baseline in the same run.

- **SFT batches** (recipes/sft/demo.yaml): trl's default random batches against batches of traces
  of like length (`train_sampling_strategy: group_by_length`). The curated traces run from about 50
  to 300 tokens, and a random batch pads every row to its longest. Each run is `python -m sft` on
  the demo's recipe from the base model for `--epochs` epochs; the figure is the wall time of the
  process, its start-up (about 8 s) included.
- **The evaluation stage** (demo/__main__.py): the three evaluations one after another, each with
  torch's default threads (one per core), against two at a time with one thread each. Each of the
  demo's three recipes runs on the first `--questions` held-out questions, every method kept.

Settings alternate within a repeat; medians over `--repeats`, and the ratio of the medians. It needs
the demo's models: `make rl` (base, fine-tuned and LCPO models) first.

    python bench/bench_demo.py [--repeats 3] [--epochs 2] [--questions 40] [--json bench/results/demo.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo.__main__ import run_commands  # noqa: E402

NEEDED = ("runs/demo/base/model", "runs/demo/sft/model", "runs/demo/rl/final", "runs/demo/curate/curated")
EVALS = ("recipes/eval/demo.yaml", "recipes/eval/demo-base.yaml", "recipes/eval/demo-rl.yaml")


def sft_run(folder: Path, strategy: str, epochs: int) -> float:
    recipe = yaml.safe_load((ROOT / "recipes/sft/demo.yaml").read_text())
    recipe["output_dir"] = str(folder / strategy)
    recipe["resume"] = False
    recipe["training"].update(num_train_epochs=epochs, save_steps=10**6, train_sampling_strategy=strategy)
    path = folder / f"sft-{strategy}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sft", str(path)], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def eval_recipes(folder: Path, questions: int) -> tuple[tuple[str, ...], ...]:
    heldout = (ROOT / "data/demo/heldout.jsonl").read_text().splitlines()[:questions]
    subset = folder / "heldout.jsonl"
    subset.write_text("\n".join(heldout) + "\n")
    commands = []
    for name in EVALS:
        recipe = yaml.safe_load((ROOT / name).read_text())
        recipe["benchmarks"][0]["path"] = str(subset)
        recipe["model"] = str(ROOT / recipe["model"])
        path = folder / Path(name).name
        path.write_text(yaml.safe_dump(recipe))
        commands.append(("evals", str(path), "--no-progress"))
    return tuple(commands)


def eval_run(commands: tuple[tuple[str, ...], ...], folder: Path, jobs: int) -> float:
    runs = tuple((*command, "--output-dir", str(folder / f"{jobs}-{i}")) for i, command in enumerate(commands))
    seconds, _ = run_commands(runs, jobs)
    for i in range(len(runs)):
        subprocess.run(["rm", "-rf", str(folder / f"{jobs}-{i}")], check=True)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.chdir(ROOT)
    missing = [path for path in NEEDED if not Path(path).exists()]
    if missing:
        print(f"bench_demo: {', '.join(missing)} missing: run `make rl` first", file=sys.stderr)
        return 2
    sft: dict[str, list[float]] = {"random": [], "group_by_length": []}
    evals: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        commands = eval_recipes(folder, args.questions)
        for repeat in range(args.repeats):
            for strategy in sft:
                sft[strategy].append(sft_run(folder, strategy, args.epochs))
            for jobs in evals:
                evals[jobs].append(eval_run(commands, folder, jobs))
            print(f"repeat {repeat + 1}: sft {sft['random'][-1]:.1f} / {sft['group_by_length'][-1]:.1f} s; "
                  f"evals {evals[1][-1]:.1f} / {evals[2][-1]:.1f} s", flush=True)  # fmt: skip

    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "settings": vars(args) | {"json": str(args.json) if args.json else None},
        "sft_wall_s": {strategy: {"median": statistics.median(runs), "runs": runs} for strategy, runs in sft.items()},
        "evals_wall_s": {
            f"{jobs}_at_a_time": {"median": statistics.median(runs), "runs": runs} for jobs, runs in evals.items()
        },
    }
    result["sft_ratio"] = statistics.median(sft["random"]) / statistics.median(sft["group_by_length"])
    result["evals_ratio"] = statistics.median(evals[1]) / statistics.median(evals[2])
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
