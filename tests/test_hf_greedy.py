"""Greedy budget forcing inside `model.generate` is token-identical to the reference loop."""

from collections import Counter

import pytest

from decode import Budget, generate, get_format, model_next_logits, prompt_ids, reference_generate

PROMPTS = [
    [{"role": "user", "content": "What is 7 * 8?"}],
    [{"role": "user", "content": "How many r's are in strawberry? Think carefully."}],
    "Solve: x^2 - 5x + 6 = 0.",
    [{"role": "user", "content": "Find the sum of all positive divisors of 36."}],
    "<|im_start|>user\nIs 221 prime?<|im_end|>\n<|im_start|>assistant\n",
    [{"role": "user", "content": "A train leaves at 3pm at 60 mph. When has it gone 150 miles?"}],
    [{"role": "user", "content": "Compute 2^10 mod 7."}],
    "Question: what is the derivative of x^3?\nAnswer step by step.",
]

CAP = 48  # max_new_tokens in these tests: no unbounded answers
BUDGETS = [
    Budget(),  # no budget
    Budget(max_thinking_tokens=0),
    Budget(max_thinking_tokens=1),
    Budget(max_thinking_tokens=7),
    Budget(max_thinking_tokens=30),
    Budget(min_thinking_tokens=1),
    Budget(min_thinking_tokens=12),
    Budget(min_thinking_tokens=40),
    Budget(num_ignore=1),
    Budget(num_ignore=3, max_thinking_tokens=25),
    Budget(min_thinking_tokens=6, max_thinking_tokens=10),
    Budget(min_thinking_tokens=9, max_thinking_tokens=9),
    Budget(min_thinking_tokens=5, max_answer_tokens=0),
    Budget(max_thinking_tokens=4, max_answer_tokens=3),
    Budget(min_thinking_tokens=3, num_ignore=2, max_answer_tokens=6),
    Budget(min_thinking_tokens=2, max_thinking_tokens=20, num_ignore=1, max_answer_tokens=10),
]


def reference(model, tokenizer, fmt, prompt, budget):
    ids = prompt_ids(tokenizer, prompt, fmt)
    eos = sorted({tokenizer.eos_token_id, *([model.generation_config.eos_token_id])})
    tokens = fmt.tokens(tokenizer, eos)
    return reference_generate(model_next_logits(model), ids, tokens, budget, CAP)


def check(results, expected):
    for result, ref in zip(results, expected, strict=True):
        assert result.completion_ids == ref.completion_ids
        assert result.thinking_tokens == ref.thinking_tokens
        assert (result.waits, result.forced_end, result.finish_reason) == (ref.waits, ref.forced_end, ref.finish_reason)


@pytest.mark.parametrize("preset", ["s1", "think"])
def test_batch_of_8_with_mixed_budgets_matches_reference(preset, greedy_models, tokenizers):
    model, tokenizer, fmt = greedy_models[preset], tokenizers[preset], get_format(preset)
    seen = Counter()
    # Every budget runs in a batch of 8 beside seven others; each batch holds prompts of different lengths.
    for start in range(0, len(BUDGETS), 8):
        budgets = BUDGETS[start : start + 8]
        results = generate(model, tokenizer, PROMPTS, format=fmt, budget=budgets, max_new_tokens=CAP)
        expected = [reference(model, tokenizer, fmt, p, b) for p, b in zip(PROMPTS, budgets, strict=True)]
        check(results, expected)
        for r, b in zip(results, budgets, strict=True):
            seen["waits"] += r.waits
            seen["forced"] += r.forced_end
            seen["natural_end"] += not r.forced_end and r.finish_reason != "length" and r.thinking_tokens > 0
            seen["eos_in_thinking"] += tokenizer.decode(r.completion_ids).count(fmt.close) > 0 and not r.forced_end
            seen["max_answer"] += r.finish_reason == "max_answer"
            if b.max_thinking_tokens is not None:
                assert r.thinking_tokens <= b.max_thinking_tokens
            if not r.forced_end and r.finish_reason != "length":
                assert r.thinking_tokens >= b.min_thinking_tokens
    # The tiny model ends its thinking often enough that every path ran.
    assert all(seen[k] > 0 for k in ("waits", "forced", "natural_end", "eos_in_thinking", "max_answer")), seen


@pytest.mark.parametrize("preset", ["s1", "think"])
def test_batch_of_1_matches_reference(preset, greedy_models, tokenizers):
    model, tokenizer, fmt = greedy_models[preset], tokenizers[preset], get_format(preset)
    for i, budget in enumerate(BUDGETS[::2]):
        prompt = PROMPTS[i % len(PROMPTS)]
        [result] = generate(model, tokenizer, [prompt], format=fmt, budget=budget, max_new_tokens=CAP)
        check([result], [reference(model, tokenizer, fmt, prompt, budget)])


def test_long_wait_string_cut_at_maximum_matches_reference(greedy_models, tokenizers):
    model, tokenizer = greedy_models["s1"], tokenizers["s1"]
    fmt = get_format("s1").with_wait("Wait, let me double-check that step")
    budgets = [Budget(min_thinking_tokens=m, max_thinking_tokens=m + extra) for m in (3, 5, 8, 12) for extra in (0, 2)]
    results = generate(model, tokenizer, PROMPTS, format=fmt, budget=budgets, max_new_tokens=CAP)
    check(results, [reference(model, tokenizer, fmt, p, b) for p, b in zip(PROMPTS, budgets, strict=True)])
    assert any(r.waits and r.forced_end for r in results)


def test_results_split_thinking_and_answer(greedy_models, tokenizers):
    model, tokenizer = greedy_models["s1"], tokenizers["s1"]
    [forced, natural] = generate(
        model,
        tokenizer,
        PROMPTS[:2],
        budget=[Budget(min_thinking_tokens=5, max_thinking_tokens=5, max_answer_tokens=4), Budget()],
        max_new_tokens=CAP,
    )
    text = tokenizer.decode(forced.completion_ids)
    assert text.startswith(forced.thinking)
    assert forced.thinking_tokens == 5 and forced.forced_end
    assert forced.answer.startswith("Final Answer:")  # the "answer\n" header is not part of the answer
    assert text == forced.thinking + "\n<|im_start|>answer\n" + forced.answer
    assert "<|im_start|>" not in natural.thinking
