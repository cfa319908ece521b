"""`python -m demo [STAGE]`: the s1 story end to end on a CPU, one stage after another.

Stages, in order, each the project's own command on its own recipe:

    data    python -m demo.data  recipes/data/demo.yaml       the task pool, held-out set, tokenizer, untrained model
    base    python -m sft        recipes/sft/demo-base.yaml   the base model: questions and one-line answers
    curate  python -m curate     recipes/curate/demo.yaml     the pool -> the curated set (base model as reference)
    sft     python -m sft        recipes/sft/demo.yaml        the base model fine-tuned on the curated traces
    rl      python -m demo.splits data/demo                   LCPO's training and validation questions (no held-out one)
            python -m rl         recipes/rl/demo.yaml         the fine-tuned model trained with LCPO (L1)
    eval    python -m evals      recipes/eval/demo.yaml       budget forcing and other methods, fine-tuned model
                                 recipes/eval/demo-base.yaml  the budget-forcing sweep, base model
                                 recipes/eval/demo-rl.yaml    "Think for N tokens.", the LCPO model
    report                                                    runs/demo/report.md, demo.png and demo-l1.png

Naming a stage runs the stages before it that have not run (or whose recipe changed), then it;
`eval` and the whole run end with the report.
Each stage runs in its own process; its wall time and peak memory go to runs/demo/timings.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .report import write_report

RUN_DIR = Path("runs/demo")
STATE = RUN_DIR / "stages.json"
TIMINGS = RUN_DIR / "timings.json"


@dataclass(frozen=True)
class Stage:
    """One stage: its recipe, the `python -m` commands that run it, and the files that show it is done."""

    name: str
    recipe: str
    commands: tuple[tuple[str, ...], ...]
    outputs: tuple[str, ...]  # present when the stage has finished
    clear: tuple[str, ...] = ()  # removed before a rerun (outputs that would otherwise be resumed)


EVAL = "recipes/eval/demo.yaml"
EVAL_RL = "recipes/eval/demo-rl.yaml"
STAGES = (
    Stage("data", "recipes/data/demo.yaml", (("demo.data", "recipes/data/demo.yaml"),),
          ("data/demo/manifest.json", "data/demo/pool.jsonl", "data/demo/heldout.jsonl", "data/demo/base_train.jsonl",
           "runs/demo/init/config.json")),
    Stage("base", "recipes/sft/demo-base.yaml", (("sft", "recipes/sft/demo-base.yaml"),),
          ("runs/demo/base/model/train_report.json",), ("runs/demo/base",)),
    Stage("curate", "recipes/curate/demo.yaml", (("curate", "recipes/curate/demo.yaml"),),
          ("runs/demo/curate/report.md",)),
    Stage("sft", "recipes/sft/demo.yaml", (("sft", "recipes/sft/demo.yaml"),),
          ("runs/demo/sft/model/train_report.json",), ("runs/demo/sft",)),
    Stage("rl", "recipes/rl/demo.yaml", (("demo.splits", "data/demo"), ("rl", "recipes/rl/demo.yaml")),
          ("runs/demo/rl/final/config.json", "data/demo/rl_train.jsonl"), ("runs/demo/rl",)),
    Stage("eval", EVAL, (("evals", EVAL), ("evals", "recipes/eval/demo-base.yaml"), ("evals", EVAL_RL)),
          ("runs/demo/eval/sft/summary.json", "runs/demo/eval/base/summary.json", "runs/demo/eval/rl/summary.json"),
          ("runs/demo/eval",)),
)  # fmt: skip


def fingerprint(stage: Stage, upstream: str) -> str:
    """Changes when the stage's recipes or anything before it changes."""
    recipes = [stage.recipe] + [arg for command in stage.commands for arg in command if arg.endswith(".yaml")]
    text = "\n".join(Path(r).read_text(encoding="utf-8") for r in dict.fromkeys(recipes))
    return hashlib.sha256(f"{upstream}\n{stage.commands}\n{text}".encode()).hexdigest()[:16]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def run_command(module_args: tuple[str, ...]) -> tuple[float, float]:
    """Run `python -m ...` in a child process; (wall seconds, the child's peak RSS in MiB)."""
    command = [sys.executable, "-m", *module_args]
    print(f"$ {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"demo: `python -m {' '.join(module_args)}` failed (exit {child.returncode})")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def run(target: str) -> None:
    names = [s.name for s in STAGES]
    wanted = names[: names.index(target) + 1] if target in names else names
    state, timings = read_json(STATE), read_json(TIMINGS)
    upstream = ""
    for stage in STAGES:
        if stage.name not in wanted:
            break
        key = fingerprint(stage, upstream)
        upstream = key
        done = state.get(stage.name) == key and all(Path(p).exists() for p in stage.outputs)
        if done:
            print(f"== {stage.name}: done (recipe unchanged); remove {stage.outputs[0]} to run it again", flush=True)
            continue
        print(f"== {stage.name}: {stage.recipe}", flush=True)
        for folder in stage.clear:
            shutil.rmtree(folder, ignore_errors=True)
        seconds, peak = 0.0, 0.0
        for command in stage.commands:
            s, p = run_command(command)
            seconds, peak = seconds + s, max(peak, p)
        state[stage.name] = key
        timings[stage.name] = {"seconds": seconds, "peak_rss_mb": peak}
        write_json(STATE, state)
        write_json(TIMINGS, timings)
    if target in ("eval", "report", "all"):
        evaluated = RUN_DIR / "eval"
        path, headline = write_report(RUN_DIR, evaluated / "base", evaluated / "sft", timings, evaluated / "rl")
        print(f"\n{headline}\n\nreport: {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("stage", nargs="?", default="all", choices=[*(s.name for s in STAGES), "report", "all"])
    args = parser.parse_args(argv)
    run(args.stage)
    return 0


if __name__ == "__main__":
    sys.exit(main())
