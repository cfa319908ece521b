"""Evaluation inputs that were clipped, accepted or met with a vague error are refused by name."""

import json

import pytest

from evals import MethodError, MethodSpec, RecipeError, run
from evals.recipe import recipe_from_dict
from evals.runner import RunError
from tests.conftest import tokenizer_without_template


def test_a_minimum_above_the_budget_is_refused_not_clipped():
    with pytest.raises(MethodError, match=r"method 'budget_forcing': min_thinking \(100\) is above the budget 8"):
        MethodSpec(method="budget_forcing", budgets=(8, 512), min_thinking=100)
    spec = MethodSpec(method="budget_forcing", budgets=(100, 512), min_thinking=100)
    assert [spec.budget(p, None).min_thinking_tokens for p in spec.points()] == [100, 100]


def test_budgets_and_sampling_of_the_wrong_type_say_what_was_expected(tmp_path):
    with pytest.raises(MethodError, match="budgets, num_ignore and min_thinking must be whole numbers of tokens"):
        MethodSpec(method="budget_forcing", budgets=("8",))
    data = {
        "model": "m",
        "output_dir": str(tmp_path / "run"),
        "benchmarks": ["aime24"],
        "methods": ["class_conditional"],
        "sampling": {"temperature": "hot"},
    }
    with pytest.raises(RecipeError, match=r"recipe.yaml: sampling.temperature expects a number, got 'hot'"):
        recipe_from_dict(data, "recipe.yaml")


def test_a_prompt_over_the_context_names_the_problem_before_generation(s1_model_dir, tmp_path, monkeypatch):
    bench = tmp_path / "long.jsonl"
    problems = [{"id": "short-1", "problem": "What is 2 + 2?", "answer": "4"},
                {"id": "huge-2", "problem": "seven " * 5000, "answer": "7"}]  # fmt: skip
    bench.write_text("".join(json.dumps(p) + "\n" for p in problems))

    def refuse(*args, **kwargs):
        raise AssertionError("generation started before the long prompt was refused")

    monkeypatch.setattr("transformers.GenerationMixin.generate", refuse)
    recipe = recipe_from_dict(
        {
            "model": str(s1_model_dir),
            "benchmarks": [{"name": "long", "path": str(bench)}],
            "methods": [{"method": "budget_forcing", "budgets": [4]}],
            "max_tokens": 40,
            "grading": {"workers": 1},
            "output_dir": str(tmp_path / "run"),
        }
    )
    with pytest.raises(RunError, match=r"problem long/huge-2: its prompt has \d+ tokens, plus up to 40 generated"):
        run(recipe, progress=False)


def test_a_tokenizer_without_a_chat_template_is_named_after_the_model_loads(s1_model_dir, tmp_path):
    plain = tokenizer_without_template(tmp_path / "no-template")
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"id": "q1", "problem": "What is 2 + 2?", "answer": "4"}) + "\n")
    recipe = recipe_from_dict(
        {
            "model": str(s1_model_dir),
            "tokenizer": str(plain),
            "benchmarks": [{"name": "b", "path": str(bench)}],
            "methods": [{"method": "budget_forcing", "budgets": [4]}],
            "max_tokens": 40,
            "grading": {"workers": 1},
            "output_dir": str(tmp_path / "run"),
        }
    )
    with pytest.raises(RunError, match=r"problem b/q1: its prompt is a list of chat messages, but tokenizer .* has no"):
        run(recipe, progress=False)
