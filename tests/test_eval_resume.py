"""Resumes never mix settings: every setting that changes a record is part of what identifies it, so a
rerun with a changed setting either runs new records or is refused with the setting named. Also: a
method with no thinking maximum leaves room for the answer, and cut answers are reported as cut."""

import json
import shutil
from pathlib import Path

import pytest

from evals import load_problems, run
from evals.recipe import recipe_from_dict
from evals.runner import RunError, check_settings, plan
from tests.conftest import SHARED

MATH500 = SHARED / "data" / "eval" / "math500.jsonl"


def test_a_saved_record_is_checked_against_its_job_without_a_model(tmp_path):
    """What a resume checks before any model loads: each saved record's settings against its job's."""
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps({"id": k, "problem": f"{k} + 1?", "answer": str(k + 1)}) for k in range(3)))
    data = {"model": "m", "output_dir": str(tmp_path / "run"), "benchmarks": [{"name": "q", "path": str(path)}],
            "methods": [{"method": "budget_forcing", "num_ignore": [1, 2]}]}  # fmt: skip

    def jobs(recipe_data):
        recipe = recipe_from_dict(recipe_data)
        return plan(recipe, [p for spec in recipe.benchmarks for p in load_problems(spec)])

    done = {job.key: {"key": job.key, "settings": job.settings} for job in jobs(data)}
    check_settings(jobs(data), done, tmp_path / "samples.jsonl")  # the same recipe resumes
    grown = {**data, "methods": [{"method": "budget_forcing", "num_ignore": [1, 2, 4]}]}
    check_settings(jobs(grown), done, tmp_path / "samples.jsonl")  # a new point is new records
    hmm = {**data, "methods": [{"method": "budget_forcing", "num_ignore": [1, 2], "wait": "Hmm"}]}
    with pytest.raises(RunError, match="q/0/budget_forcing/wait x1/0 made with other settings.*wait: 'Wait' -> 'Hmm'"):
        check_settings(jobs(hmm), done, tmp_path / "samples.jsonl")
    path.write_text(json.dumps({"id": 0, "problem": "0 + 2?", "answer": "2"}))  # the file changed under the run
    with pytest.raises(RunError, match=r"gold: '1' -> '2'; prompt: .*; question: '0 \+ 1\?' -> '0 \+ 2\?'"):
        check_settings(jobs(data), done, tmp_path / "samples.jsonl")


@pytest.fixture(scope="module")
def base(s1_model_dir, tmp_path_factory):
    if not MATH500.exists():
        pytest.skip(f"real benchmark file {MATH500} not found")
    folder = tmp_path_factory.mktemp("resume")
    gpqa = folder / "gpqa.jsonl"
    wrong = {f"Incorrect Answer {k}": f"w{k}" for k in (1, 2, 3)}
    rows = [
        {"Question": f"Which is right ({i})?", "Correct Answer": "right", **wrong, "Record ID": f"r{i}"}
        for i in range(2)
    ]
    gpqa.write_text("\n".join(json.dumps(r) for r in rows))
    data = {
        "model": str(s1_model_dir),
        "format": "s1",
        "dtype": "float32",
        "benchmarks": [
            {"name": "math500", "path": str(MATH500), "limit": 2},
            {
                "name": "gpqa",
                "path": str(gpqa),
                "question": "Question",
                "answer": "Correct Answer",
                "id": "Record ID",
                "kind": "gpqa",
                "options": sorted(wrong),
            },
        ],  # fmt: skip
        "methods": [
            {"method": "budget_forcing", "label": "wait", "budgets": [10], "num_ignore": [1], "min_thinking": 2},
            {"method": "class_conditional"},
            {"method": "rejection_sampling", "budgets": [3], "max_attempts": 2},
            {"method": "majority_vote", "votes": [1, 2], "budgets": [6]},
        ],
        "max_tokens": 32,
        "max_answer_tokens": 6,
        "grading": {"workers": 1},
        "output_dir": str(folder / "run"),
    }
    run(recipe_from_dict(data), progress=False)
    return data


def changed(data: dict, section: str, index: int, **settings) -> dict:
    entries = [dict(e) for e in data[section]]
    entries[index].update(settings)
    return {**data, section: entries}


@pytest.mark.slow  # each test below shares one run of the tiny model (minutes on 2 busy cores)
@pytest.mark.parametrize(
    ("section", "index", "settings", "named"),
    [
        ("methods", 0, {"wait": "Hmm"}, "wait: 'Wait' -> 'Hmm'"),
        ("methods", 0, {"min_thinking": 3}, "min_thinking: 2 -> 3"),
        ("methods", 1, {"classes": {"short": "Answer at once.", "long": "Think a lot."}}, "instruction"),
        ("methods", 2, {"max_attempts": 3}, "max_attempts: 2 -> 3"),
        ("methods", 3, {"temperature": 0.7}, "sampling.temperature: 1.0 -> 0.7"),
        ("benchmarks", 0, {"answer": "solution"}, "benchmark.answer: 'answer' -> 'solution'"),
        ("benchmarks", 1, {"seed": 5}, "benchmark.seed: 0 -> 5"),
    ],
)
def test_a_changed_setting_is_refused_by_name(base, section, index, settings, named):
    with pytest.raises(RunError, match="made with other settings") as err:
        run(recipe_from_dict(changed(base, section, index, **settings)), progress=False)
    assert named in str(err.value)


@pytest.mark.slow
def test_a_moved_benchmark_file_is_refused_by_name(base, tmp_path):
    copy = tmp_path / "math500.jsonl"
    shutil.copy(MATH500, copy)
    with pytest.raises(RunError, match="benchmark.path"):
        run(recipe_from_dict(changed(base, "benchmarks", 0, path=str(copy))), progress=False)


@pytest.mark.slow
def test_more_questions_run_as_new_records_and_keep_the_old(base, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(base["output_dir"], folder)
    before = (folder / "samples.jsonl").read_text().splitlines()
    grown = {**changed(base, "benchmarks", 0, limit=3), "output_dir": str(folder)}
    run(recipe_from_dict(grown), progress=False)
    after = (folder / "samples.jsonl").read_text().splitlines()
    assert after[: len(before)] == before
    new = [json.loads(line) for line in after[len(before) :]]
    # One more question, through 1 + 3 + 1 points and 2 majority-vote draws.
    assert len(new) == 7 and {r["benchmark"] for r in new} == {"math500"}
    assert {r["problem_id"] for r in new}.isdisjoint(json.loads(line)["problem_id"] for line in before[:1])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["benchmarks"]["math500"]["wait"]["points"][0]["runs"] == 3


@pytest.mark.slow
def test_records_carry_their_settings_and_the_new_measures(base):
    rows = [json.loads(line) for line in (Path(base["output_dir"]) / "samples.jsonl").read_text().splitlines()]
    for r in rows:
        assert r["settings"]["prompt"] == r["prompt"] and r["settings"]["gold"] == r["gold"]
        assert r["completion_tokens"] == len(r["completion_ids"]) - (r["finish_reason"] == "eos")
        assert r["truncated"] == (r["finish_reason"] in ("max_answer", "length") and not r["unanswered"])
    # class_conditional sets no maximum: its budget got the cap that keeps room for the answer.
    classes = [r for r in rows if r["method"] == "class_conditional"]
    assert all(r["settings"]["budget"]["max_thinking_tokens"] is None for r in classes)
    assert all(r["thinking_tokens"] <= 32 - 6 - 7 for r in classes)  # window - answer room - force string


def unbounded(s1_model_dir, tmp_path, reserve):
    data = {
        "model": str(s1_model_dir),
        "format": "s1",
        "dtype": "float32",
        "benchmarks": [{"name": "math500", "path": str(MATH500), "limit": 2}],
        "methods": [{"method": "budget_forcing", "label": "wait", "num_ignore": [1000]}],  # never ends by itself
        "max_tokens": 30,
        "answer_reserve": reserve,
        "grading": {"workers": 1},
        "output_dir": str(tmp_path / f"run-{reserve}"),
    }
    folder = run(recipe_from_dict(data), progress=False)
    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    return rows, json.loads((folder / "summary.json").read_text())["benchmarks"]["math500"]["wait"]["points"][0]


@pytest.mark.slow
def test_thinking_without_a_maximum_is_forced_to_leave_room_for_the_answer(s1_model_dir, tmp_path):
    if not MATH500.exists():
        pytest.skip(f"real benchmark file {MATH500} not found")
    rows, point = unbounded(s1_model_dir, tmp_path, 8)
    # The force string "\n<|im_start|>answer\nFinal Answer:" is 7 Qwen tokens: thinking stops at 30 - 8 - 7.
    assert all(r["thinking_tokens"] == 15 and r["forced_end"] and r["forced_for_answer"] for r in rows)
    assert all(r["answer"].startswith("Final Answer:") and not r["unanswered"] for r in rows)
    assert point["forced"] == 1.0 and point["forced_for_answer"] == 1.0 and point["unanswered"] == 0.0
    # Turned off, thinking spends the window and the report counts the empty answers.
    rows, point = unbounded(s1_model_dir, tmp_path, None)
    assert all(r["unanswered"] and r["answer"] == "" and not r["correct"] for r in rows)
    assert all(r["reason"] == "no answer: thinking reached the generation window (30 tokens)" for r in rows)
    assert point["unanswered"] == 1.0 and point["forced"] == 0.0
