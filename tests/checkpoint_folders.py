"""Tiny random models saved as real checkpoints of three families: the family's real tokenizer and chat
template, and its real generation_config.json (sampling defaults, penalties, end-of-sequence ids).

Family -> (tokenizer, generation config, thinking format, end-of-thinking id, end-of-sequence id):
qwen2.5-instruct thinks in s1's format (s1 fine-tunes Qwen2.5-Instruct); R1-Distill-Qwen and Qwen3 in
<think>...</think>. The tiny model favours ending its thinking and its answer, as tests/tiny_model.py does.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.conftest import GREEDY_INIT_STD, SHARED, tokenizer_dir
from tests.tiny_model import build_tiny_model

GENERATION_CONFIGS = SHARED / "generation_configs"


@dataclass(frozen=True)
class Family:
    name: str
    tokenizer: str
    format: str
    end: int  # the format's end-of-thinking token id in this tokenizer
    eos: int  # the checkpoint's end-of-sequence id

    @property
    def generation_config(self) -> Path:
        path = GENERATION_CONFIGS / f"{self.name}.json"
        if not path.is_file():
            pytest.skip(f"generation config {path} is absent (../shared is not beside the project)")
        return path


FAMILIES = {
    "qwen2.5-instruct": Family("qwen2.5-instruct", "qwen2.5", "s1", 151644, 151645),
    "r1-distill-qwen": Family("r1-distill-qwen", "r1-distill-qwen", "think", 151649, 151643),
    "qwen3": Family("qwen3", "qwen3", "think", 151668, 151645),
}


def save_checkpoint(folder: Path, family: Family, dtype: torch.dtype = torch.float32) -> Path:
    """A tiny model in `dtype` (config.json states it), with the family's tokenizer and generation config."""
    from transformers import AutoTokenizer

    generation = json.loads(family.generation_config.read_text())
    model = build_tiny_model({family.end: 3.3, family.eos: 3.5}, seed=1, init_std=GREEDY_INIT_STD)
    model.config.eos_token_id = generation["eos_token_id"]
    model.config.bos_token_id = generation.get("bos_token_id")
    folder.mkdir(parents=True, exist_ok=True)
    model.to(dtype).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir(family.tokenizer)).save_pretrained(folder)
    shutil.copy(family.generation_config, folder / "generation_config.json")  # the real one, not the tiny model's
    return folder
