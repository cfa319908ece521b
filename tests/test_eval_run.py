"""End to end: a recipe on the tiny model with the real tokenizer and real MATH500 / AIME24 questions
writes every report file, resumes after a crash to the same summary, and refuses bad input clearly."""

import json
import shutil

import pytest

from evals import BenchmarkError, RecipeError, load_recipe, run
from evals.recipe import recipe_from_dict
from evals.runner import RunError
from tests.conftest import SHARED

EVAL_DATA = SHARED / "data" / "eval"


@pytest.fixture(scope="module")
def recipe_data(s1_model_dir, tmp_path_factory):
    if not (EVAL_DATA / "math500.jsonl").exists():
        pytest.skip(f"real benchmark files not found in {EVAL_DATA}")
    return {
        "model": str(s1_model_dir),
        "format": "s1",
        "dtype": "float32",
        "benchmarks": [
            {"name": "math500", "path": str(EVAL_DATA / "math500.jsonl"), "limit": 3},
            {"name": "aime24", "path": str(EVAL_DATA / "aime24.jsonl"), "limit": 2},
        ],
        "methods": [
            {"method": "budget_forcing", "budgets": [4, 12]},
            {"method": "budget_forcing", "label": "wait", "num_ignore": [0, 2], "budgets": [24]},
            {"method": "length_prompt", "mode": "max", "budgets": [4, 12], "forcing": True},
            {"method": "class_conditional"},
            {"method": "rejection_sampling", "budgets": [3], "max_attempts": 3},
            {"method": "majority_vote", "votes": [1, 3], "budgets": [8]},
        ],
        "max_tokens": 40,
        "max_answer_tokens": 12,
        "batch_size": 8,
        "grading": {"workers": 1},
        "output_dir": str(tmp_path_factory.mktemp("eval") / "run"),
    }


@pytest.fixture(scope="module")
def finished_run(recipe_data):
    folder = run(recipe_from_dict(recipe_data), progress=False)
    return folder, json.loads((folder / "summary.json").read_text())


def test_every_output_file_is_written(finished_run):
    folder, summary = finished_run
    for name in ("samples.jsonl", "summary.json", "results.md", "run.json"):
        assert (folder / name).stat().st_size > 0
    for bench in ("math500", "aime24"):
        for plot in ("accuracy_vs_thinking", "thinking_vs_budget"):
            assert (folder / f"{plot}_{bench}.png").read_bytes()[:4] == b"\x89PNG"
    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    # 5 problems x (2 + 2 + 2 + 3 + 1 points, one sample each, + 3 majority-vote draws)
    assert len(rows) == 5 * (10 + 3)
    needed = {"prompt", "completion_ids", "thinking", "answer", "extracted", "correct", "reason", "thinking_tokens",
              "answer_tokens"}  # fmt: skip
    assert all(needed <= row.keys() for row in rows)
    table = (folder / "results.md").read_text()
    assert "| budget_forcing | N=4 |" in table
    assert "L1 length dev. %, completion (signed / abs)" in table and "thinking length dev. %" in table


def test_summary_holds_the_metrics_and_budgets_hold(finished_run):
    _, summary = finished_run
    forced = summary["benchmarks"]["math500"]["budget_forcing"]
    assert [p["point"] for p in forced["points"]] == ["N=4", "N=12"]
    assert forced["control"] == 1.0 and forced["within_budget"] == 1.0  # forcing keeps every run within its budget
    assert forced["control_points"] == 2 and "s1's Control" in summary["control"]
    assert all(p["thinking_tokens"]["max"] <= p["budget"] for p in forced["points"])
    waits = summary["benchmarks"]["math500"]["wait"]["points"]
    assert [p["point"] for p in waits] == ["N=24 wait x0", "N=24 wait x2"]
    assert waits[0]["waits"] == 0 and waits[1]["waits"] > 0
    votes = summary["benchmarks"]["aime24"]["majority_vote"]["points"]
    assert [p["point"] for p in votes] == ["N=8 k=1", "N=8 k=3"] and all(p["runs"] == 2 for p in votes)
    assert [p["budget"] for p in votes] == [8, 24] and all(p["within_budget"] == 1.0 for p in votes)  # k samples of N
    assert all(p["in_control"] for p in votes) and summary["benchmarks"]["aime24"]["majority_vote"]["control"] == 1.0
    assert "doubling" in summary["scaling_unit"]
    classes = summary["benchmarks"]["aime24"]["class_conditional"]
    # s1's Control for classes: "short" and "long" against the unprompted point
    assert [p["point"] for p in classes["points"]] == ["unprompted", "short", "long"]
    assert classes["control_points"] == 2 and classes["control"] in (0.0, 0.5, 1.0)


def test_rejection_sampling_reports_attempts(finished_run):
    folder, _ = finished_run
    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    rejection = [r for r in rows if r["method"] == "rejection_sampling"]
    assert all(1 <= r["attempts"] <= 3 for r in rejection)
    for r in rejection:
        assert r["fits"] == (r["thinking_tokens"] <= 3)
        if not r["fits"]:
            assert r["correct"] is False and "no draw fitted" in r["reason"]


def test_a_crashed_run_resumes_to_the_same_summary(finished_run, recipe_data, tmp_path):
    folder, summary = finished_run
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    lines = (copy / "samples.jsonl").read_text().splitlines()
    # Half the samples lost, and the last append cut mid-line.
    (copy / "samples.jsonl").write_text("\n".join(lines[: len(lines) // 2]) + "\n" + lines[-1][:25])
    (copy / "summary.json").unlink()
    run(recipe_from_dict({**recipe_data, "output_dir": str(copy)}), progress=False)
    resumed = json.loads((copy / "summary.json").read_text())
    assert resumed["benchmarks"] == summary["benchmarks"]


def test_a_finished_run_is_not_generated_again(finished_run, recipe_data, monkeypatch):
    folder, summary = finished_run

    def no_model(*args, **kwargs):
        raise AssertionError("a finished run must not load the model")

    monkeypatch.setattr("evals.runner.load_model", no_model)
    run(recipe_from_dict(recipe_data), progress=False)
    assert json.loads((folder / "summary.json").read_text())["benchmarks"] == summary["benchmarks"]


def test_resume_with_other_generation_settings_is_refused(finished_run, recipe_data):
    with pytest.raises(RunError, match="other generation settings"):
        run(recipe_from_dict({**recipe_data, "sampling": {"temperature": 0.7}}), progress=False)


def test_bad_recipes_are_refused_with_the_reason(recipe_data, tmp_path):
    missing = {**recipe_data, "benchmarks": [{"name": "aime24", "path": str(tmp_path / "nope.jsonl")}]}
    with pytest.raises(BenchmarkError, match="nope.jsonl does not exist"):
        run(recipe_from_dict(missing), progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1?", "answer": "2", "id": 1}\n{"problem": "2+2?", "id": 2}\n')
    malformed = {**recipe_data, "benchmarks": [{"name": "mine", "path": str(bad)}]}
    with pytest.raises(BenchmarkError, match=r"bad.jsonl: line 2: missing field\(s\) \['answer'\]"):
        run(recipe_from_dict(malformed), progress=False)
    bad.write_text('{"problem": "1+1?", "answer": "2"}\n{"problem": \n')
    with pytest.raises(BenchmarkError, match="line 2: not valid JSON"):
        run(recipe_from_dict(malformed), progress=False)
    with pytest.raises(RecipeError, match="unknown method 'beam_search'"):
        recipe_from_dict({**recipe_data, "methods": [{"method": "beam_search"}]})
    with pytest.raises(RecipeError, match=r"grading: unknown setting\(s\) \['wrkers'\]"):
        recipe_from_dict({**recipe_data, "grading": {"wrkers": 2}})
    with pytest.raises(RecipeError, match="unknown benchmark 'aime99'"):
        recipe_from_dict({**recipe_data, "benchmarks": ["aime99"]})
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: x\nmethods: [budget_forcing]\n")
    with pytest.raises(RecipeError, match="'output_dir' is required"):
        load_recipe(recipe)


def test_gpqa_style_choices_are_shuffled_reproducibly(tmp_path):
    from evals import BenchmarkSpec, load_problems

    rows = [
        {"Question": f"Which is right ({i})?", "Correct Answer": "right", "Incorrect Answer 1": "w1",
         "Incorrect Answer 2": "w2", "Incorrect Answer 3": "w3", "Record ID": f"rec{i}"}
        for i in range(12)
    ]  # fmt: skip
    path = tmp_path / "gpqa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    spec = BenchmarkSpec(
        "gpqa_local", path=str(path), question="Question", answer="Correct Answer", id="Record ID", kind="gpqa",
        options=("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"),
    )  # fmt: skip
    first, again = load_problems(spec), load_problems(spec)
    assert [p.question for p in first] == [p.question for p in again]
    assert len({p.gold for p in first}) > 1  # the correct option moves between questions
    for p in first:
        assert f"{p.gold}) right" in p.question and p.kind == "choice" and p.letters == "ABCD"


def test_default_recipes_parse():
    from pathlib import Path

    for path in sorted(Path(__file__).resolve().parents[1].glob("recipes/eval/*.yaml")):
        recipe = load_recipe(path)
        assert recipe.methods and recipe.benchmarks


def test_command_line_prints_the_headline_and_refuses_bad_input(finished_run, recipe_data, tmp_path, capsys):
    import yaml

    from evals.__main__ import main

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(recipe_data))
    assert main([str(recipe), "--no-progress"]) == 0  # the finished run: only the report is rewritten
    out = capsys.readouterr().out
    assert "budget_forcing" in out and "report:" in out and "doubling" in out
    assert main([str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "error: recipe" in err and "does not exist" in err
