"""Decontamination writes the same reasons in every run: the evaluation question a contaminated pool
question is charged to is the first matching one in file order, whatever Python's string hashing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECOND = "a train leaves the station at noon and travels east at sixty miles per hour while another follows"
# Shares one 8-gram with e1 and a dozen with e2: set order would name e2 in most runs.
QUESTION = "alpha beta gamma delta epsilon zeta eta theta then " + SECOND
SCRIPT = """
import json, sys
import datasets
from curate.decontaminate import DecontaminateSettings, decontaminate
from curate.schema import POOL_FEATURES
row = {"id": "p:0", "question": sys.argv[2], "solution": "", "answer": "", "kind": "math", "letters": "",
       "source": "t", "cot_type": "math", "metadata": "{}"}
data = datasets.Dataset.from_list([row], features=POOL_FEATURES)
settings = DecontaminateSettings(eval_sets=[{"name": "bench", "path": sys.argv[1]}], near_dedup=False)
print(json.dumps(decontaminate(data, settings)[0]["drop_reason"][0]))
"""


@pytest.mark.slow  # three fresh interpreters, each importing datasets
def test_contamination_reason_names_the_first_matching_question_in_file_order(tmp_path):
    eval_file = tmp_path / "bench.jsonl"
    problems = [
        {"id": "e0", "problem": "an unrelated question about the area of a circle of radius three", "answer": "1"},
        {"id": "e1", "problem": "alpha beta gamma delta epsilon zeta eta theta", "answer": "2"},
        {"id": "e2", "problem": SECOND, "answer": "3"},
    ]
    eval_file.write_text("".join(json.dumps(p) + "\n" for p in problems))
    reasons = set()
    for hash_seed in ("0", "1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(eval_file), QUESTION],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        reasons.add(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert reasons == {"contaminated: shares a 8-gram with bench:e1"}
