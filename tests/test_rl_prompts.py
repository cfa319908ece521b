"""Budget-conditioned prompts: L1's exact strings, the distribution of N, the Exact/Max mix, and the
dataset built from the real MATH training questions with a real tokenizer."""

import statistics
from collections import Counter

import pytest
from transformers import AutoTokenizer

from evals import BenchmarkSpec
from evals.recipe import recipe_from_dict as eval_recipe_from_dict
from evals.runner import user_message as eval_user_message
from rl import (
    INSTRUCTION,
    PromptError,
    PromptSettings,
    build_dataset,
    draw_budgets,
    draw_modes,
    length_sentence,
    load_questions,
    user_message,
)
from tests.conftest import SHARED, tokenizer_dir

MATH_TRAIN = SHARED / "data" / "pool" / "math_train_answers.json"


def test_l1_strings():
    assert INSTRUCTION == "Let's think step by step and output the final answer within \\boxed{}."
    assert length_sentence(512, "exact") == "Think for 512 tokens."
    assert length_sentence(512, "max") == "Think for maximum 512 tokens."
    assert user_message("What is 1+1?", 100, "exact") == (
        "What is 1+1? Let's think step by step and output the final answer within \\boxed{}. Think for 100 tokens."
    )
    assert user_message("Q", 7, "max", instruction="") == "Q Think for maximum 7 tokens."
    with pytest.raises(PromptError, match="mode"):
        length_sentence(5, "minimum")


def test_blank_line_layout_matches_the_evaluation_harness():
    """With separator "\\n\\n", a training prompt is word for word what `length_prompt` evaluates."""
    recipe = eval_recipe_from_dict(
        {
            "model": "m",
            "output_dir": "o",
            "benchmarks": [{"name": "b", "path": "b.jsonl"}],
            "methods": [{"method": "length_prompt", "mode": mode, "budgets": [1024]} for mode in ("exact",)]
            + [{"method": "length_prompt", "mode": "max", "budgets": [1024]}],
            "instruction": {"math": INSTRUCTION},
        }
    )
    problem = type("P", (), {"question": "What is 2+2?", "kind": "math"})()
    for method in recipe.methods:
        point = method.points()[0]
        expected = eval_user_message(recipe, problem, method.suffix(point))
        assert user_message("What is 2+2?", 1024, method.mode, separator="\n\n") == expected


def test_without_an_instruction_the_blank_line_layout_still_matches_the_harness():
    """A model trained on bare questions (the demo's) is evaluated with no instruction: the harness then
    puts the blank line before the length sentence, and so does a training prompt."""
    recipe = eval_recipe_from_dict(
        {
            "model": "m",
            "output_dir": "o",
            "benchmarks": [{"name": "b", "path": "b.jsonl"}],
            "methods": [{"method": "length_prompt", "mode": mode, "budgets": [64]} for mode in ("exact", "max")],
            "instruction": {"math": ""},
        }
    )
    problem = type("P", (), {"question": "Add 3, twice. Start at 4.", "kind": "math"})()
    for method in recipe.methods:
        expected = eval_user_message(recipe, problem, method.suffix(method.points()[0]))
        assert (
            expected == f"Add 3, twice. Start at 4.\n\nThink for {'maximum ' if method.mode == 'max' else ''}64 tokens."
        )
        assert user_message(problem.question, 64, method.mode, instruction="", separator="\n\n") == expected


def test_budgets_are_seeded_and_uniform_over_the_range():
    draws = draw_budgets(40_000, 100, 4000, seed=0)
    assert draws == draw_budgets(40_000, 100, 4000, seed=0)
    assert draws != draw_budgets(40_000, 100, 4000, seed=1)
    assert min(draws) == 100 and max(draws) == 4000  # both ends included
    assert statistics.fmean(draws) == pytest.approx(2050, abs=15)  # sd of the mean: 5.6
    # Ten equal bins of [100, 4000]: each holds 10% (binomial sd 0.15 percentage points).
    bins = Counter(min((n - 100) * 10 // 3901, 9) for n in draws)
    assert all(abs(bins[b] / len(draws) - 0.1) < 0.006 for b in range(10))
    small = draw_budgets(5000, 4, 6, seed=3)
    assert set(small) == {4, 5, 6}
    with pytest.raises(PromptError, match="low <= high"):
        draw_budgets(3, 10, 5, seed=0)


def test_modes_exact_max_and_a_seeded_half_half_mix():
    assert draw_modes(4, "exact", 0.5, 0) == ["exact"] * 4
    assert draw_modes(4, "max", 0.5, 0) == ["max"] * 4
    mix = draw_modes(1000, "mix", 0.5, seed=0)
    assert Counter(mix) == {"exact": 500, "max": 500}
    assert mix == draw_modes(1000, "mix", 0.5, seed=0) and mix != draw_modes(1000, "mix", 0.5, seed=1)
    assert mix[:500].count("max") not in (0, 500)  # shuffled, not in two blocks
    assert Counter(draw_modes(10, "mix", 0.3, 0)) == {"exact": 7, "max": 3}
    with pytest.raises(PromptError, match="mode"):
        draw_modes(3, "both", 0.5, 0)
    with pytest.raises(PromptError, match="max_fraction"):
        PromptSettings(mode="mix", max_fraction=1.5)
    with pytest.raises(ValueError, match="unknown thinking format"):
        PromptSettings(format="nope")


def test_dataset_from_real_math_questions():
    if not MATH_TRAIN.exists():
        pytest.skip(f"real data {MATH_TRAIN} is absent")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir("qwen3-style"))
    problems = load_questions([BenchmarkSpec("math_train", path=str(MATH_TRAIN), id=None, limit=40)])
    settings = PromptSettings(mode="mix", min_budget=100, max_budget=4000, seed=5, format="think")
    data = build_dataset(problems, tokenizer, settings)
    assert len(data) == 40
    assert set(data.column_names) == {"prompt", "budget", "mode", "answer", "kind", "letters", "source", "message"}
    assert Counter(data["mode"]) == {"exact": 20, "max": 20}
    assert all(100 <= n <= 4000 for n in data["budget"])
    first = data[0]
    assert first["message"] == user_message(problems[0].question, first["budget"], first["mode"])
    assert first["prompt"].endswith(first["message"] + "<|im_end|>\n<|im_start|>assistant\n<think>\n")
    assert first["answer"] == problems[0].gold and first["kind"] == "math"
    assert data["budget"] == build_dataset(problems, tokenizer, settings)["budget"]  # same seed, same prompts
    with pytest.raises(PromptError, match="no questions"):
        build_dataset([], tokenizer, settings)
    misspelt = PromptSettings(format="think", chat_template_kwargs={"enable_thinkng": False})
    with pytest.raises(PromptError, match="not read by the tokenizer.s chat template"):
        build_dataset(problems, tokenizer, misspelt)
