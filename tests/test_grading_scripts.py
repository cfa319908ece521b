"""The grader and the evaluation's Python example work from any kind of script: a file without a main
guard, `python -c`, a script read from stdin, and notebook-style cells (code executed in a `__main__`
module that has no file, as a notebook kernel runs it). The grading workers are fresh interpreters
running `evals.grade_worker`, so none of these re-imports the caller's code. A run that fails before
it saves a record leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evals import Grader, run
from evals.recipe import recipe_from_dict
from tests.conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]

GRADE = """\
import json
from evals import Answer, Grader

grader = Grader(workers=2, timeout_s=5)
verdicts = grader.grade([Answer("math", "1/2", "so \\\\boxed{0.5}"), Answer("math", "3", "\\\\boxed{4}"),
                         Answer("choice", "B", "Answer: (B)")])
print("VERDICTS", json.dumps([v.correct for v in verdicts]))
"""

# A notebook kernel runs each cell's code in the namespace of a `__main__` module with no `__file__`.
NOTEBOOK = """\
import sys, types
main = types.ModuleType("__main__")
sys.modules["__main__"] = main
exec(compile(sys.stdin.read(), "<cell 1>", "exec"), main.__dict__)
"""


def python(args: list[str], cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


@pytest.mark.slow  # four interpreters, each with its own grading workers
@pytest.mark.parametrize("way", ["script", "-c", "stdin", "notebook"])
def test_a_grader_works_from_any_kind_of_script(way, tmp_path):
    script = tmp_path / "grade.py"
    script.write_text(GRADE)
    args, stdin = {
        "script": (["grade.py"], None),
        "-c": (["-c", GRADE], None),
        "stdin": (["-"], GRADE),
        "notebook": (["-c", NOTEBOOK], GRADE),
    }[way]
    done = python(args, tmp_path, stdin)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "VERDICTS [true, false, true]" in done.stdout
    assert "Traceback" not in done.stderr and "bootstrapping" not in done.stderr, done.stderr[-3000:]


def tiny_recipe(model: Path, folder: Path, **grading: object) -> dict:
    eval_file = SHARED / "data" / "eval" / "math500.jsonl"
    if not eval_file.exists():
        pytest.skip(f"real benchmark file not found: {eval_file}")
    return {
        "model": str(model),
        "format": "s1",
        "dtype": "float32",
        "benchmarks": [{"name": "math500", "path": str(eval_file), "limit": 2}],
        "methods": [{"method": "budget_forcing", "budgets": [4]}],
        "max_tokens": 16,
        "max_answer_tokens": 8,
        "grading": {"workers": 1, **grading},
        "output_dir": str(folder),
    }


@pytest.mark.slow  # a whole evaluation in a fresh interpreter
def test_the_readmes_evaluation_example_runs_as_a_plain_script(s1_model_dir, tmp_path):
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(tiny_recipe(s1_model_dir, tmp_path / "run")))
    (tmp_path / "evaluate.py").write_text(
        'from evals import load_recipe, run\n\nfolder = run(load_recipe("recipe.yaml"))\nprint("FOLDER", folder)\n'
    )
    done = python(["evaluate.py"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"FOLDER {tmp_path / 'run'}" in done.stdout
    rows = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(isinstance(row["correct"], bool) and row["reason"] for row in rows)
    assert (tmp_path / "run" / "summary.json").stat().st_size > 0


def test_a_run_whose_grading_fails_leaves_nothing_behind(s1_model_dir, tmp_path):
    # 64 MiB of address space is too little for a worker to import math-verify: grading fails after
    # generation, before the first record is saved.
    recipe = recipe_from_dict(tiny_recipe(s1_model_dir, tmp_path / "out" / "run", memory_mb=64))
    with pytest.raises(RuntimeError, match="grading worker"):
        run(recipe, progress=False)
    assert not (tmp_path / "out" / "run").exists()
    assert (tmp_path / "out").exists()  # only what the run made is removed


def module_level_verifier(gold: str, candidate: str, timeout_s: float) -> tuple[bool, str]:
    return gold == candidate, "compared"


def test_a_verifier_the_workers_cannot_import_is_refused_by_name():
    with pytest.raises(ValueError, match=r"verifier \S*<lambda> cannot be sent to the grading workers"):
        Grader(verifier=lambda gold, candidate, timeout_s: (True, ""))
    in_main = module_level_verifier.__globals__.copy()
    exec("def mine(gold, candidate, timeout_s):\n    return True, ''\n", in_main)
    in_main["mine"].__module__ = "__main__"
    with pytest.raises(ValueError, match=r"verifier mine is defined in the script being run \(__main__\)"):
        Grader(verifier=in_main["mine"])
    Grader(verifier=module_level_verifier).close()  # importable: accepted (no worker starts until grading)
