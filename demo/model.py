"""The demo's model: a small Qwen2 built from a config with random weights, saved with its tokenizer.

Qwen2 is the architecture of the models s1 and L1 fine-tune, so everything downstream (sft, decode
on transformers or vLLM, evals) treats the demo model as it would treat Qwen2.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM


@dataclass
class ModelSettings:
    """Size of the demo model.

    Attributes:
        hidden_size, layers, heads, intermediate_size: the transformer's shape (head size is
            hidden_size / heads; vLLM's CPU attention needs at least 64 to run it).
        max_positions: the longest sequence the model is built for.
        seed: seeds the random initial weights.
    """

    hidden_size: int = 128
    layers: int = 4
    heads: int = 2
    intermediate_size: int = 512
    max_positions: int = 1024
    seed: int = 0


def init_model(tokenizer: PreTrainedTokenizerFast, settings: ModelSettings, folder: Path) -> Path:
    """A randomly initialised model sized for `tokenizer`, saved with it to `folder`."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden_size,
        intermediate_size=settings.intermediate_size,
        num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads,
        num_key_value_heads=settings.heads,
        max_position_embeddings=settings.max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(settings.seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
