"""What a model's configuration says that decoding needs: its end-of-sequence ids and its number of positions."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """End-of-sequence ids of the tokenizer and the model's generation config, merged."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.add(config_eos)
    elif config_eos:
        ids.update(config_eos)
    return sorted(ids)


def folder_eos_ids(model_path: str | None, tokenizer: Any) -> list[int]:
    """End-of-sequence ids of a model folder: the tokenizer's and its generation config's (those vLLM
    stops at, and those an HTTP client must agree on with a server)."""
    return sorted(set(eos_ids(None, tokenizer)) | set(_config_eos(model_path)))


def _config_eos(model_path: str | None) -> list[int]:
    """End-of-sequence ids in a model folder's generation config (vLLM stops at them too)."""
    if not model_path:
        return []
    from transformers import GenerationConfig

    try:
        config_eos = GenerationConfig.from_pretrained(model_path).eos_token_id
    except (OSError, ValueError):
        return []
    return [config_eos] if isinstance(config_eos, int) else list(config_eos or [])


def read_model_config(model_path: str | None) -> Any:
    """A model folder's config (for its number of positions), or None where there is none."""
    if not model_path or not (Path(model_path) / "config.json").is_file():
        return None
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError):
        return None
