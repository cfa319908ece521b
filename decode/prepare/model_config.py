"""What a model's configuration says that decoding needs: its end-of-sequence ids and its number of positions."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def eos_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """End-of-sequence ids of the tokenizer and a generation config (a loaded model's, or a model
    folder's from `folder_generation_config`), merged: the ids every engine stops at."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    config_eos = getattr(generation_config, "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.add(config_eos)
    elif config_eos:
        ids.update(config_eos)
    return sorted(ids)


def folder_eos_ids(model_path: str | None, tokenizer: Any) -> list[int]:
    """End-of-sequence ids of a model folder: the tokenizer's and its generation config's (those vLLM
    stops at, and those an HTTP client must agree on with a server)."""
    return eos_ids(tokenizer, folder_generation_config(model_path))


def folder_generation_config(model_path: str | None) -> Any:
    """A model folder's generation config (vLLM stops at its end-of-sequence ids too), or None where
    there is none."""
    if not model_path:
        return None
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_path)
    except (OSError, ValueError):
        return None


def read_model_config(model_path: str | None) -> Any:
    """A model folder's config (for its number of positions), or None where there is none."""
    if not model_path or not (Path(model_path) / "config.json").is_file():
        return None
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError):
        return None
