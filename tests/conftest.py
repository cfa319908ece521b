"""Shared fixtures: the real tokenizers from ../shared and tiny random Qwen2 models built from a config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from tests.tiny_model import QWEN_EOS, build_tiny_model, save_tiny_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TOKENIZERS = SHARED / "tokenizers"
IM_START, THINK_END = 151644, 151668

# Greedy tests: the end token is the argmax at roughly a third of the steps, end-of-sequence at some.
GREEDY_BIASES = {"s1": {IM_START: 3.3, QWEN_EOS: 3.5}, "think": {THINK_END: 3.3, QWEN_EOS: 3.5}}
GREEDY_INIT_STD = 0.3  # larger weights than usual, so the next token depends on more than the last one
TOKENIZER_OF = {"s1": "qwen2.5", "think": "qwen3-style"}


def tokenizer_dir(name: str) -> Path:
    path = TOKENIZERS / name
    if not (path / "tokenizer.json").is_file():
        pytest.skip(f"real tokenizer {path} is absent (../shared is not beside the project)")
    return path


def tokenizer_without_template(folder: Path) -> Path:
    """A copy of the real Qwen2.5 tokenizer in `folder` with its chat template removed."""
    shutil.copytree(tokenizer_dir("qwen2.5"), folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="session")
def tokenizers() -> dict[str, object]:
    """Real tokenizers keyed by format preset: s1 -> Qwen2.5, think -> the <think>-style one."""
    return {fmt: AutoTokenizer.from_pretrained(tokenizer_dir(name)) for fmt, name in TOKENIZER_OF.items()}


@pytest.fixture(scope="session")
def greedy_models() -> dict[str, torch.nn.Module]:
    """Per preset, a tiny model in float64 (so cached and recomputed logits agree far below any gap)."""
    return {
        fmt: build_tiny_model(GREEDY_BIASES[fmt], seed=1, init_std=GREEDY_INIT_STD).double() for fmt in TOKENIZER_OF
    }


@pytest.fixture(scope="session")
def s1_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny s1-format model saved to a folder with the Qwen2.5 tokenizer beside it."""
    folder = tmp_path_factory.mktemp("tiny-qwen2-s1")
    return save_tiny_model(folder, tokenizer_dir("qwen2.5"), GREEDY_BIASES["s1"], seed=1, init_std=GREEDY_INIT_STD)
