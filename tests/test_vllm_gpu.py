"""The check a GPU user runs: budget forcing on a real vLLM engine (0.32-0.34) under Model Runner V2,
and under Model Runner V1 where the installed vLLM still has it (0.32, 0.33), with what only a GPU
runs: CUDA graphs (decode batches of 3, 5 and 7 requests, which are not capture sizes, run in the
graph of 4 or 8 with padded host arrays), async scheduling (vLLM's default on GPUs; the CPU build turns
it off) and preemption (a KV cache too small for the batch; vLLM's own counter shows it happened).

    python -m pytest tests/test_vllm_gpu.py -q

It needs a CUDA GPU, the CUDA build of vLLM (with Triton) and ../shared (the tokenizers). Elsewhere it
is skipped: no V2 engine starts without Triton, so on CPU machines Model Runner V2 is covered by the
harness of tests/test_vllm_v2.py instead. A tiny random model, built from a config: greedy forced
requests with mixed budgets must give the transformers adapter's tokens, plain requests beside them
the model's own.
"""

import pytest
import torch

vllm = pytest.importorskip("vllm", reason="vLLM is not installed")
if not torch.cuda.is_available():
    pytest.skip(
        "the GPU check needs a CUDA GPU (V2, CUDA graphs and async scheduling run only there)", allow_module_level=True
    )

from decode import generate, get_format, prompt_ids  # noqa: E402
from decode.vllm import load_llm, release_llms  # noqa: E402
from decode.vllm.admission import has_v1_runner  # noqa: E402
from tests.conftest import GREEDY_BIASES, GREEDY_INIT_STD, TOKENIZER_OF, tokenizer_dir  # noqa: E402
from tests.test_hf_greedy import BUDGETS, CAP, PROMPTS, check  # noqa: E402
from tests.tiny_model import save_tiny_model  # noqa: E402


def preemptions(llm) -> int:
    return sum(m.value for m in llm.get_metrics() if m.name == "vllm:num_preemptions")


@pytest.mark.parametrize("runner", ["V2", "V1"])
@pytest.mark.parametrize("preset", ["s1", "think"])
def test_forced_and_plain_requests_on_a_gpu(runner, preset, tmp_path, monkeypatch, greedy_models, tokenizers):
    if has_v1_runner():  # 0.32, 0.33: the runner is chosen by this switch
        monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "1" if runner == "V2" else "0")
    elif runner == "V1":
        pytest.skip("this vLLM has no Model Runner V1 (removed in 0.34)")
    folder = tmp_path / "model"
    save_tiny_model(folder, tokenizer_dir(TOKENIZER_OF[preset]), GREEDY_BIASES[preset], 1, GREEDY_INIT_STD)
    model, tokenizer, fmt = greedy_models[preset], tokenizers[preset], get_format(preset)
    llm = load_llm(
        str(folder),
        dtype="float32",
        max_model_len=512,
        seed=0,
        num_gpu_blocks_override=48,  # 768 tokens: preemption in the batch of 16 below
        block_size=16,
        disable_log_stats=False,  # for vLLM's preemption counter
    )
    try:
        config = llm.llm_engine.vllm_config
        assert getattr(config, "use_v2_model_runner", True) == (runner == "V2")
        assert config.scheduler_config.async_scheduling
        assert not config.model_config.enforce_eager  # CUDA graphs on
        for size in (3, 5, 7):  # decode batches that are not capture sizes
            prompts, budgets = (PROMPTS * 2)[:size], BUDGETS[size : size * 2]
            results = generate(llm, tokenizer, prompts, format=fmt, budget=budgets, max_new_tokens=CAP, backend="vllm")
            check(results, generate(model, tokenizer, prompts, format=fmt, budget=budgets, max_new_tokens=CAP))
        prompts = PROMPTS * 2
        results = generate(llm, tokenizer, prompts, format=fmt, budget=BUDGETS, max_new_tokens=CAP, backend="vllm")
        check(results, generate(model, tokenizer, prompts, format=fmt, budget=BUDGETS, max_new_tokens=CAP))
        assert preemptions(llm) > 0
        plain = vllm.SamplingParams(temperature=0, max_tokens=CAP, ignore_eos=True, detokenize=False)
        rows = [vllm.inputs.TokensPrompt(prompt_token_ids=prompt_ids(tokenizer, p, fmt)) for p in PROMPTS]
        outs = llm.generate(rows, plain, use_tqdm=False)
        with torch.no_grad():
            for row, out in zip(rows, outs, strict=True):
                ids = list(row["prompt_token_ids"]) + list(out.outputs[0].token_ids)
                logits = model(torch.tensor([ids])).logits[0, len(row["prompt_token_ids"]) - 1 : -1]
                assert logits.argmax(-1).tolist() == list(out.outputs[0].token_ids)
    finally:
        release_llms()
