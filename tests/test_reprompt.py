"""The re-prompt loop (on transformers) and the replay of engine outputs give the adapter's results."""

import pytest
import torch

from decode import Budget, generate, get_format, prompt_ids
from decode.rules.replay import ReplayError, replay
from decode.rules.request_args import RequestArgsError, from_request_args, to_request_args
from tests.test_hf_greedy import BUDGETS, CAP, PROMPTS, check


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["s1", "think"])
def test_reprompt_loop_matches_the_adapter_in_mixed_batches(preset, greedy_models, tokenizers):
    """The adapter is token-identical to the reference (tests/test_hf_greedy.py); so must the loop be."""
    model, tokenizer, fmt = greedy_models[preset], tokenizers[preset], get_format(preset)
    # The budgets with waits, ignores, forced ends and answer budgets, beside each other in one batch.
    kwargs = dict(format=fmt, budget=BUDGETS[8:], max_new_tokens=CAP)
    results = generate(model, tokenizer, PROMPTS, forcing="reprompt", **kwargs)
    check(results, generate(model, tokenizer, PROMPTS, **kwargs))
    assert sum(r.waits for r in results) > 0 and any(r.forced_end for r in results)


def test_replay_recovers_the_adapters_record_from_tokens_and_argmax_flags(greedy_models, tokenizers):
    """What the vLLM and HTTP backends do: rebuild the record from the emitted tokens alone."""
    model, tokenizer, fmt = greedy_models["s1"], tokenizers["s1"], get_format("s1")
    tokens = fmt.tokens(tokenizer, [model.generation_config.eos_token_id])
    budgets = BUDGETS[:8]
    results = generate(model, tokenizer, PROMPTS, format=fmt, budget=budgets, max_new_tokens=CAP)
    for prompt, budget, result in zip(PROMPTS, budgets, results, strict=True):
        ids = prompt_ids(tokenizer, prompt, fmt)
        with torch.no_grad():  # the model's argmax at every position of the completion, in one pass
            logits = model(torch.tensor([ids + result.completion_ids])).logits[0, len(ids) - 1 : -1]
        own = [int(best) == t for best, t in zip(logits.argmax(-1), result.completion_ids, strict=True)]
        summary = replay(tokens, budget, CAP, result.completion_ids, own)
        assert summary.completion_ids == result.completion_ids
        assert (summary.thinking_tokens, summary.waits, summary.forced_end, summary.finish_reason) == (
            result.thinking_tokens,
            result.waits,
            result.forced_end,
            result.finish_reason,
        )
        # Without the flags (sampling), an emitted wait where one was possible counts as injected.
        guessed = replay(tokens, budget, CAP, result.completion_ids)
        assert guessed.completion_ids == result.completion_ids and guessed.thinking_tokens == result.thinking_tokens


def test_replay_drops_the_stop_after_the_answer_budget_and_refuses_impossible_tokens(tokenizers):
    tokens = get_format("s1").tokens(tokenizers["s1"])
    budget = Budget(max_thinking_tokens=2, max_answer_tokens=1)
    forced = [t for t, _ in tokens.force]
    emitted = [11, 12, *forced, 13, min(tokens.eos)]
    summary = replay(tokens, budget, 64, emitted)
    assert summary.completion_ids == emitted[:-1] and summary.finish_reason == "max_answer" and summary.forced_end
    with pytest.raises(ReplayError, match="budget rules give"):
        replay(tokens, budget, 64, [11, 12, 13])  # thinking went past its maximum


def test_request_args_round_trip_and_clear_errors():
    s1 = get_format("s1")
    budget = Budget(max_thinking_tokens=100, min_thinking_tokens=10, num_ignore=2, max_answer_tokens=50)
    args = to_request_args(s1.with_wait("Hmm"), budget)
    assert args["bf_format"] == "s1" and args["bf_wait"] == "Hmm"
    assert from_request_args(args) == (s1.with_wait("Hmm"), budget)
    custom = s1.__class__(name="mine", open="<r>\n", end=("</r>",), close="</r>\n", force="\n</r>\nA:", wait="Hm")
    assert from_request_args(to_request_args(custom, Budget())) == (custom, Budget())
    assert from_request_args({"other": 1}) is None
    for bad, message in [
        ({"bf_format": "s1", "bf_max_thinking": 3}, "unknown budget-forcing argument"),
        ({"bf_max_thinking_tokens": 3}, "need 'bf_format'"),
        ({"bf_format": "nope"}, "must be one of"),
        ({"bf_format": "s1", "bf_min_thinking_tokens": 9, "bf_max_thinking_tokens": 3}, "above"),
    ]:
        with pytest.raises(RequestArgsError, match=message):
            from_request_args(bad)
