"""SFT batches of the demo (recipes/sft/demo.yaml): trl's default random batches against batches of
traces of like length (`train_sampling_strategy: group_by_length`), in the same run.

The curated traces run from about 50 to 300 tokens, and a random batch pads every row to its
longest. Each run is `python -m sft` on the demo's recipe, from the base model, for `--epochs`
epochs; the figure is the wall time of the process, its start-up (about 8 s) included. The two
settings alternate within a repeat; medians over `--repeats`, and their ratio. It needs the demo's
base model and curated set: `make curate` first.

    python bench/bench_demo.py [--repeats 3] [--epochs 2] [--json bench/results/demo.json]
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
NEEDED = ("runs/demo/base/model", "runs/demo/curate/curated")


def sft_run(folder: Path, strategy: str, epochs: int, repeat: int) -> float:
    recipe = yaml.safe_load((ROOT / "recipes/sft/demo.yaml").read_text())
    recipe["output_dir"] = str(folder / f"{strategy}-{repeat}")
    recipe["resume"] = "never"
    recipe["training"].update(num_train_epochs=epochs, save_steps=10**6, train_sampling_strategy=strategy)
    path = folder / f"sft-{strategy}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sft", str(path)], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.chdir(ROOT)
    missing = [path for path in NEEDED if not Path(path).exists()]
    if missing:
        print(f"bench_demo: {', '.join(missing)} missing: run `make curate` first", file=sys.stderr)
        return 2
    runs: dict[str, list[float]] = {"random": [], "group_by_length": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for strategy in runs:
                runs[strategy].append(sft_run(Path(tmp), strategy, args.epochs, repeat))
            print(f"repeat {repeat + 1}: random {runs['random'][-1]:.1f} s, "
                  f"grouped {runs['group_by_length'][-1]:.1f} s", flush=True)  # fmt: skip
    medians = {strategy: statistics.median(seconds) for strategy, seconds in runs.items()}
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "settings": {"repeats": args.repeats, "epochs": args.epochs},
        "wall_s": {strategy: {"median": medians[strategy], "runs": seconds} for strategy, seconds in runs.items()},
        "ratio": medians["random"] / medians["group_by_length"],
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
