"""The demo, shortened: every stage's output feeds the next, and every report file is produced.

The real recipes (recipes/*/demo*.yaml) are copied into a temporary folder with their sizes cut
(fewer questions, a few training steps, two budgets) and run by `python -m demo` there, so this
checks the recipes themselves, the stage order and the hand-offs, not the demo's accuracy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import yaml

from demo.tasks import DOMAINS, LEVELS, generate_tasks, make_drill

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "data/demo.yaml": {"pool_size": 160, "heldout_size": 12, "drills": 200, "base_questions": 200,
                       "flaws": {"leaked": 3, "exact_duplicates": 3, "near_duplicates": 3, "asymptote": 2, "image": 2,
                                 "no_answer": 2, "no_trace": 2}},
    "sft/demo-base.yaml": {"training": {"max_steps": 3, "save_steps": 2}},
    "curate/demo.yaml": {},
    "sft/demo.yaml": {"training": {"max_steps": 3, "save_steps": 2}},
    "eval/demo.yaml": {"methods": [{"method": "budget_forcing", "budgets": [8, 32]},
                                   {"method": "budget_forcing", "label": "wait", "num_ignore": [0, 1]},
                                   {"method": "class_conditional"},
                                   {"method": "length_prompt", "mode": "exact", "budgets": [8, 32]}],
                       "max_tokens": 96},
    "eval/demo-base.yaml": {"methods": [{"method": "budget_forcing", "budgets": [8, 32]}], "max_tokens": 96},
    "rl/demo.yaml": {"prompts": {"min_budget": 8, "max_budget": 32},
                     "trainer": {"max_steps": 1, "per_device_train_batch_size": 4, "num_generations": 2,
                                 "max_completion_length": 24}},
    "eval/demo-rl.yaml": {"methods": [{"method": "length_prompt", "mode": "exact", "budgets": [8, 32]}],
                          "max_tokens": 96},
}  # fmt: skip


def merged(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def shortened(tmp: Path) -> None:
    for name, changes in RECIPES.items():
        recipe = yaml.safe_load((ROOT / "recipes" / name).read_text())
        recipe = merged(recipe, changes)
        if name == "curate/demo.yaml":
            recipe["stages"][-1]["select"]["size"] = 20
        target = tmp / "recipes" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(recipe, sort_keys=False))


def test_tasks_are_seeded_and_correct():
    first, again = generate_tasks(200, seed=3), generate_tasks(200, seed=3)
    assert first == again
    assert {t.domain for t in first} == set(DOMAINS) and {t.level for t in first} <= set(LEVELS)
    for task in first:
        lines = task.trace.splitlines()
        last = lines[-1]
        # One line per step, then the answer; after a check, its verdict names the answer if it changed.
        assert lines[task.level] == f"So the answer is {task.answer}." or task.slip, task.trace
        if last.startswith("I made a mistake"):
            assert task.slip and last == f"I made a mistake: the answer is {task.answer}."
        elif last == "It matches.":
            assert task.checked and f"So the answer is {task.answer}." in task.trace
        else:
            assert not task.checked and last == f"So the answer is {task.answer}." and len(lines) == task.level + 1
    with_check = [t for t in first if t.checked]
    assert with_check and all("Wait, let me check." in t.trace for t in with_check)
    question, short, answer = make_drill(__import__("random").Random(0))
    assert question.startswith("What is") and answer in short


@pytest.mark.slow
def test_demo_end_to_end_shortened(tmp_path: Path):
    shortened(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "demo"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1500)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    manifest = json.loads((tmp_path / "data/demo/manifest.json").read_text())
    flaws = manifest["pool"]["by_flaw"]
    assert flaws["clean"] == 156 and flaws["leaked"] == 3 and flaws["no trace"] == 2
    assert (tmp_path / "runs/demo/init/tokenizer.json").is_file()
    assert json.loads((tmp_path / "runs/demo/base/model/train_report.json").read_text())["global_step"] == 3

    # Curation used the base model and the pool's traces, and every filter caught its flawed rows.
    curate = tmp_path / "runs/demo/curate"
    dropped = [json.loads(line) for line in (curate / "dropped.jsonl").read_text().splitlines()]
    reasons = " ".join(d["reason"] for d in dropped)
    for expected in ("contaminated", "duplicate", "asymptote figure", "image reference", "missing"):
        assert expected in reasons, (expected, sorted({d["reason"].split(":")[0] for d in dropped}))
    assert any(d["stage"] == "trace check" for d in dropped)
    curated = datasets.load_from_disk(str(curate / "curated"))
    assert 0 < len(curated) <= 20 and all(t for t in curated["thinking_trajectories"])
    # The base model answered every question that reached the difficulty stage (3 training steps
    # solve nothing, so nothing is dropped as solved here; the full demo drops what it solves).
    decisions = [json.loads(d) for d in curated["decisions"]]
    assert all(json.loads(d["difficulty"]) == {"demo-base": False} for d in decisions), decisions[:2]
    assert "| demo-base |" in (curate / "report.md").read_text()

    assert json.loads((tmp_path / "runs/demo/sft/model/train_report.json").read_text())["data"]["rows"] == len(curated)
    # LCPO trained from the fine-tuned model on pool questions that are not held out.
    heldout = {json.loads(line)["question"] for line in (tmp_path / "data/demo/heldout.jsonl").read_text().splitlines()}
    for name in ("rl_train", "rl_val"):
        rows = [json.loads(line) for line in (tmp_path / f"data/demo/{name}.jsonl").read_text().splitlines()]
        assert rows and not {r["question"] for r in rows} & heldout
    history = json.loads((tmp_path / "runs/demo/rl/log_history.json").read_text())
    assert any("lcpo/length_error" in entry for entry in history)
    assert (tmp_path / "runs/demo/rl/final/config.json").is_file()
    for model in ("sft", "base"):
        summary = json.loads((tmp_path / f"runs/demo/eval/{model}/summary.json").read_text())
        sweep = summary["benchmarks"]["demo"]["budget_forcing"]
        assert [p["budget"] for p in sweep["points"]] == [8, 32] and sweep["control"] == 1.0
    lcpo = json.loads((tmp_path / "runs/demo/eval/rl/summary.json").read_text())["benchmarks"]["demo"]
    assert lcpo["length_prompt_exact"]["points"][0]["length_abs_error"] is not None
    report = (tmp_path / "runs/demo/report.md").read_text()
    assert "Control of budget forcing: 100.0%" in report and (tmp_path / "runs/demo/demo.png").stat().st_size > 0
    assert "## s1 against L1" in report and (tmp_path / "runs/demo/demo-l1.png").stat().st_size > 0
    timings = json.loads((tmp_path / "runs/demo/timings.json").read_text())
    assert list(timings) == ["data", "base", "curate", "sft", "rl", "eval"]
    assert "report: runs/demo/report.md" in done.stdout

    # A second run finds every stage done and only rewrites the report.
    again = subprocess.run([sys.executable, "-m", "demo"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert again.returncode == 0 and again.stdout.count(": done (recipe unchanged)") == 6, again.stdout[-2000:]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pool_size: -3\n", "pool_size must be a positive integer"),
        ("pool_sise: 3\n", "unexpected keyword argument 'pool_sise'"),
        ("heldout_size: 5\nflaws: {leaked: 9}\n", "flaws.leaked must be an integer from 0 to 5"),
        ("check_rate: 2\n", "check_rate must be between 0 and 1"),
    ],
)
def test_data_recipe_errors_name_the_file_and_setting(tmp_path: Path, text: str, message: str):
    from demo.data import load_settings

    recipe = tmp_path / "data.yaml"
    recipe.write_text(text)
    with pytest.raises(ValueError, match=message) as caught:
        load_settings(recipe)
    assert str(recipe) in str(caught.value)


def _summary(accuracies: list[float], runs: int = 200, label: str = "budget_forcing") -> dict:
    points = [{"budget": 16 * 2**i, "point": f"N={16 * 2**i}", "accuracy": a, "runs": runs, "control": 1.0}
              for i, a in enumerate(accuracies)]  # fmt: skip
    return {label: {"points": points, "control": 1.0}}


@pytest.mark.parametrize(
    ("base", "tuned", "expected"),
    [
        # +20 points on 200 questions is over four standard errors of the difference.
        ([0.3] * 3, [0.2, 0.35, 0.5], ["clearly above", "(it rises with the budget)"]),
        # +5 points is about one standard error; a 4-point step down breaks the rise.
        ([0.3] * 3, [0.3, 0.39, 0.35], ["not clearly above", "(it does not rise with the budget)"]),
        # A rise of 4 points in all is within the noise.
        ([0.1] * 3, [0.4, 0.42, 0.44], ["clearly above", "(it does not rise with the budget)"]),
    ],
)
def test_report_findings_judge_the_numbers(base: list[float], tuned: list[float], expected: list[str]):
    from demo.report import findings

    text = " ".join(findings(_summary(base), _summary(tuned)))
    assert all(phrase in text for phrase in expected), text


def test_report_says_whether_wait_helped():
    from demo.report import findings

    base, tuned = _summary([0.3, 0.3]), _summary([0.3, 0.5])
    tuned |= _summary([0.5, 0.49, 0.2], label="wait")
    said = findings(base, tuned)[-1]
    assert 'Forcing "Wait" (ignoring the end of thinking) did not help: 50.0% without it, at most 49.0% with it' in said
    tuned |= _summary([0.5, 0.56, 0.2], label="wait")
    assert "helped: 50.0% -> 56.0% at N=32" in findings(base, tuned)[-1]


def test_difficulty_asks_the_base_model_as_the_evaluation_does():
    """The base model learnt bare questions; curation's difficulty reference must be asked them the
    same way the evaluation asks it, or it answers text it has never seen and solves almost nothing."""
    from curate.difficulty import user_prompt
    from curate.recipe import load_recipe as load_curate
    from evals.benchmarks import Problem
    from evals.recipe import load_recipe as load_eval
    from evals.runner import user_message

    stages = load_curate(ROOT / "recipes/curate/demo.yaml").stages
    difficulty = next(s.settings for s in stages if s.name == "difficulty")
    evaluation = load_eval(ROOT / "recipes/eval/demo-base.yaml")
    question = "Arithmetic: add 9, 2 times, and give the last digit. Start at 70."
    asked = user_prompt({"question": question, "kind": "math"}, difficulty.prompts)[0]["content"]
    assert asked == user_message(evaluation, Problem("demo", "q", question, "8", "math"), "") == question


def test_lcpo_questions_leave_out_the_held_out_set_and_the_flawed_rows(tmp_path: Path):
    from demo.splits import main as splits

    held = "Arithmetic: add 9, 2 times, and give the last digit. Start at 70."
    pool = [{"id": f"p{i}", "question": f"Counting: how many multiples of {i} are there up to 90?", "answer": "1",
             "domain": "counting", "level": 1, "trace": f"1) 0+{i}={i}\nSo the answer is 1.", "flaw": ""}
            for i in range(2, 22)]  # fmt: skip
    pool += [
        {**pool[0], "id": "unmarked", "question": held, "flaw": ""},  # held out, though not marked as leaked
        {**pool[0], "id": "leak", "question": held, "flaw": "leaked"},
        {**pool[1], "id": "copy"},  # a second copy of p3's question
        {**pool[2], "id": "blank", "question": "Base conversion: in base 2, write 9.", "answer": ""},
        {**pool[3], "id": "figure", "question": "Base conversion: in base 3, write 9.", "flaw": "image reference"},
    ]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    (tmp_path / "heldout.jsonl").write_text(json.dumps({"id": "h0", "question": held, "answer": "8"}) + "\n")
    assert splits([str(tmp_path), "--validation", "0.25"]) == 0
    train, val = ([json.loads(line) for line in (tmp_path / f"{n}.jsonl").read_text().splitlines()]
                  for n in ("rl_train", "rl_val"))  # fmt: skip
    assert (len(train), len(val)) == (15, 5)
    assert sorted(r["id"] for r in train + val) == sorted(f"p{i}" for i in range(2, 22))
    assert splits([str(tmp_path), "--validation", "2"]) == 2


def test_warmup_rows_come_as_close_to_their_budget_as_whole_lines_can(tokenizers):
    from decode import get_format
    from demo.warmup import CHECK, warmup_rows
    from sft.data import assistant_text

    tokenizer, fmt = tokenizers["s1"], get_format("s1")
    task = generate_tasks(8, seed=5)[3]
    row = {"id": "q", "question": task.question, "answer": task.answer, "trace": task.trace}
    rows = warmup_rows([row] * 40, tokenizer, 16, 256, seed=0)

    def completion_tokens(trace: str) -> int:
        text = assistant_text(fmt, trace, task.answer, "Final Answer: ")[len(fmt.open) :]
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    lines = task.trace.splitlines()
    lines += [CHECK, *lines[: task.level], "It matches."] * 12
    candidates = ["\n".join(lines[:end]) for end in range(1, len(lines) + 1)]
    for out in rows:
        assert out["question"] == f"{task.question}\n\nThink for {out['budget']} tokens."
        assert out["trace"] in candidates  # whole lines: the trace, then checks
        best = min(abs(completion_tokens(c) - out["budget"]) for c in candidates)
        assert abs(completion_tokens(out["trace"]) - out["budget"]) == best
    full = completion_tokens(task.trace)
    assert min(r["budget"] for r in rows) < full < max(r["budget"] for r in rows)
    assert max(r["trace"].count(CHECK) for r in rows) > task.trace.count(CHECK) + 1
    with pytest.raises(ValueError, match="row 1 \\(q\\): a question with its trace and answer is needed"):
        warmup_rows([{**row, "trace": ""}], tokenizer, 16, 256, seed=0)


def test_warmup_command_reads_the_lcpo_recipe_and_names_what_is_wrong(tmp_path: Path, capsys):
    from demo.warmup import main as warmup
    from tests.conftest import tokenizer_dir

    rows = [{"id": f"q{t.level}", "question": t.question, "answer": t.answer, "trace": t.trace}
            for t in generate_tasks(3, seed=2)]  # fmt: skip
    (tmp_path / "rl_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {"data": [{"path": str(tmp_path / "rl_train.jsonl")}], "prompts": {"min_budget": 20, "max_budget": 40}}
    (tmp_path / "rl.yaml").write_text(yaml.safe_dump(recipe))
    assert warmup([str(tmp_path / "rl.yaml"), str(tokenizer_dir("qwen2.5"))]) == 0
    out = [json.loads(line) for line in (tmp_path / "rl_warmup.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == [r["id"] for r in rows] and all(20 <= r["budget"] <= 40 for r in out)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"data": recipe["data"]}))
    assert warmup([str(tmp_path / "bad.yaml"), str(tokenizer_dir("qwen2.5"))]) == 2
    expected = "bad.yaml: expected an LCPO recipe with data[0].path and prompts.min_budget/max_budget"
    assert expected in capsys.readouterr().err


def _points(accuracies: list[float], deviations: list[float] | None = None) -> dict:
    points = []
    for i, accuracy in enumerate(accuracies):
        point = {"budget": 16 * 2**i, "accuracy": accuracy, "runs": 200, "length_abs_error": 0.0}
        if deviations:
            point["length_abs_error"] = deviations[i]
        points.append(point)
    return {"points": points}


@pytest.mark.parametrize(
    ("lcpo", "forcing", "expected"),
    [
        (
            _points([0.3, 0.4, 0.5], [0.05, 0.1, 0.12]),
            [0.2, 0.4, 0.6],
            ["after LCPO: 0.09", "meets", "at least as accurate"],
        ),
        (
            _points([0.3, 0.39, 0.5], [0.3, 0.1, 0.12]),
            [0.2, 0.4, 0.6],
            ["after LCPO: 0.17", "misses", "less accurate", "-1.0 points"],
        ),
    ],
)
def test_l1_findings_judge_the_targets(lcpo: dict, forcing: list[float], expected: list[str]):
    from demo.compare import findings

    tuned = {"budget_forcing": _points(forcing), "length_prompt_exact": _points([0.1] * 3, [0.5, 0.5, 0.8])}
    text = " ".join(findings(tuned, {"length_prompt_exact": lcpo}))
    assert all(phrase in text for phrase in expected), text
    assert "before LCPO: 0.60" in text
