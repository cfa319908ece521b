"""Padding-free packing keeps examples apart: a packed row gives the loss of the same examples padded."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import Qwen2ForCausalLM
from trl import SFTConfig, SFTTrainer

from sft import DataConfig, RecipeError, build_dataset, recipe_from_dict
from tests.test_sft_data import short_s1k_rows
from tests.tiny_model import tiny_config


def model(attn: str) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    # Large initial weights so that attention to the wrong tokens changes the loss visibly.
    config = tiny_config(hidden_size=64, intermediate_size=128, initializer_range=0.2, attn_implementation=attn)
    return Qwen2ForCausalLM(config).eval()


def one_batch(trainer: SFTTrainer) -> dict:
    batches = list(trainer.get_train_dataloader())
    assert len(batches) == 1
    return batches[0]


@pytest.mark.slow
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_padded_loss(tokenizers, tmp_path, attn):
    """trl's own path: dataset preparation, best-fit-decreasing packing, collator and compute_loss."""
    tokenizer = tokenizers["s1"]
    source = short_s1k_rows(tmp_path / "rows.jsonl", trace_chars=250, answer_chars=100)
    dataset, report = build_dataset(
        tokenizer, DataConfig(source=str(source), question="q", trace="trace", answer="ans")
    )
    lm = model(attn)
    losses, batches = {}, {}
    for packing in (False, True):
        args = SFTConfig(
            output_dir=str(tmp_path / f"out-{packing}"),
            use_cpu=True,
            bf16=False,
            max_length=4096,
            packing=packing,
            completion_only_loss=True,
            per_device_train_batch_size=1 if packing else len(dataset),
            report_to="none",
        )
        trainer = SFTTrainer(model=lm, args=args, train_dataset=dataset, processing_class=tokenizer)
        batch = batches[packing] = one_batch(trainer)
        lm.eval()
        with torch.no_grad():
            losses[packing] = trainer.compute_loss(lm, dict(batch)).item()
    padded, packed = batches[False], batches[True]
    assert padded["attention_mask"].eq(0).any()  # the examples differ in length: real padding
    assert "attention_mask" not in packed and packed["input_ids"].shape == (1, report.tokens)
    assert packed["position_ids"].eq(0).sum() == len(dataset)  # positions restart at every example
    assert abs(losses[True] - losses[False]) < 1e-5
    # Control: without the restarting positions the packed examples see each other and the loss moves.
    with torch.no_grad():
        leaky = lm(input_ids=packed["input_ids"], labels=packed["labels"], use_cache=False).loss.item()
    assert abs(leaky - losses[False]) > 1e-3


def test_packing_is_refused_where_attention_could_mix_examples():
    from sft.train import check_packing, sft_config

    base = {"model": "m", "output_dir": "o", "data": {"source": "d"}, "packing": True}
    with pytest.raises(RecipeError, match="packing needs an attention implementation"):
        recipe_from_dict({**base, "attn_implementation": "paged|sdpa"}, "r.yaml")
    recipe = recipe_from_dict(base, "r.yaml")
    # transformers may fall back to another implementation than asked: the loaded model is checked too.
    with pytest.raises(RecipeError, match="may let packed examples attend to each other"):
        check_packing(SimpleNamespace(config=SimpleNamespace(_attn_implementation="sdpa_paged")), recipe)
    check_packing(SimpleNamespace(config=SimpleNamespace(_attn_implementation="sdpa")), recipe)
    wrapped = recipe_from_dict({**base, "training": {"packing_strategy": "wrapped"}}, "r.yaml")
    with pytest.raises(RecipeError, match="'wrapped' cuts examples"):
        sft_config(wrapped)
