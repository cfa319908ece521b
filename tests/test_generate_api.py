"""The Python entry points: generate() from a folder, BudgetForcing inside a user's generate call."""

import pytest
import torch

from decode import Budget, BudgetForcing, ModelLoadError, Sampling, generate, get_format, prompt_ids, prompt_text
from tests.conftest import IM_START


def test_generate_loads_model_and_tokenizer_from_a_folder(s1_model_dir):
    [result] = generate(
        str(s1_model_dir), None, ["What is 2 + 2?"], budget=Budget(max_thinking_tokens=6, max_answer_tokens=3)
    )
    assert result.thinking_tokens <= 6 and len(result.completion_ids) <= 6 + 7 + 3


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="model path '.*nope' does not exist"):
        generate(str(tmp_path / "nope"), None, ["hi"])


def test_prompt_text_appends_the_opener_once(tokenizers):
    tok, fmt = tokenizers["s1"], get_format("s1")
    text = prompt_text(tok, [{"role": "user", "content": "hi"}], fmt)
    assert text.endswith("<|im_start|>assistant\n<|im_start|>think\n")
    assert prompt_text(tok, text, fmt) == text  # already open: not opened twice
    assert prompt_ids(tok, "abc", fmt)[-3:] == list(fmt.tokens(tok).open)


def test_budget_forcing_inside_a_users_generate_call(greedy_models, tokenizers):
    """The drop-in path: the user's own batch, their own generate call, HF sampling flags left on."""
    model, tok, fmt = greedy_models["s1"], tokenizers["s1"], get_format("s1")
    texts = [prompt_text(tok, [{"role": "user", "content": q}], fmt) for q in ("What is 9 * 9?", "Is 7 prime?")]
    side, tok.padding_side = tok.padding_side, "left"
    try:
        batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tok.padding_side = side
    budgets = [Budget(min_thinking_tokens=5, max_thinking_tokens=9, max_answer_tokens=4), Budget(max_thinking_tokens=3)]
    forcing = BudgetForcing(tok, "s1", budgets, max_new_tokens=30)
    out = model.generate(**batch, **forcing.generate_kwargs())
    results = forcing.results()
    for row, (result, budget) in enumerate(zip(results, budgets, strict=True)):
        generated = out[row, batch["input_ids"].shape[1] :].tolist()
        assert generated[: len(result.completion_ids)] == result.completion_ids
        assert result.thinking_tokens <= budget.max_thinking_tokens
    assert results[0].thinking_tokens >= 5


def test_one_budget_per_row_is_enforced(greedy_models, tokenizers):
    model, tok = greedy_models["s1"], tokenizers["s1"]
    ids = torch.tensor([prompt_ids(tok, "hi", get_format("s1"))])
    forcing = BudgetForcing(tok, "s1", [Budget(max_thinking_tokens=2)], max_new_tokens=8)
    with pytest.raises(ValueError, match="set up for 1 sequences but generate runs 2 rows"):
        model.generate(input_ids=ids, num_return_sequences=2, do_sample=True, **forcing.generate_kwargs())
    with pytest.raises(TypeError, match="one Budget per row"):
        BudgetForcing(tok, "s1", Budget())


def test_a_forcing_object_serves_one_call(greedy_models, tokenizers):
    model, tok = greedy_models["s1"], tokenizers["s1"]
    ids = torch.tensor([prompt_ids(tok, "hi", get_format("s1"))])
    forcing = BudgetForcing(tok, "s1", [Budget(max_thinking_tokens=3)], max_new_tokens=5)
    model.generate(input_ids=ids, **forcing.generate_kwargs())
    with pytest.raises(RuntimeError, match="serves a single generate"):
        model.generate(input_ids=ids, **forcing.generate_kwargs())


def test_sampling_settings_are_validated():
    for kwargs, message in [
        (dict(temperature=-1), "temperature"),
        (dict(top_p=0), "top_p"),
        (dict(top_k=-1), "top_k"),
        (dict(min_p=2), "min_p"),
    ]:
        with pytest.raises(ValueError, match=message):
            Sampling(**kwargs)


def test_sampler_never_draws_a_zero_probability_token():
    scores = torch.full((64, 1000), float("-inf"))
    scores[:, [3, 500, 999]] = torch.tensor([0.0, 1.0, 2.0])
    drawn = Sampling(temperature=1.0).propose(scores, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) <= {3, 500, 999}


def test_sampling_with_forced_end_respects_budgets(greedy_models, tokenizers):
    model, tok = greedy_models["s1"], tokenizers["s1"]
    results = generate(
        model,
        tok,
        ["Count to ten."] * 6,
        budget=Budget(min_thinking_tokens=4, max_thinking_tokens=10, max_answer_tokens=2),
        sampling=Sampling(temperature=1.5, top_k=50),
        seed=11,
        batch_size=3,
    )
    for r in results:
        assert 4 <= r.thinking_tokens <= 10
        assert IM_START in r.completion_ids
