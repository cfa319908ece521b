"""The dtype a model runs in: `auto` means the checkpoint's own, resolved here, the same for every backend.

transformers' `auto` keeps a float32 checkpoint in float32, while vLLM's `auto` casts it to the
platform's preferred 16-bit type: the same greedy run then gives other tokens on the two backends.
So `auto` is resolved once, from the checkpoint's files, and the engines are given the result:

1. config.json's `dtype` (what transformers 5 writes), else its `torch_dtype` (older checkpoints),
   else the same fields of its `text_config` (multimodal checkpoints);
2. if the config names none: the dtype of the weights themselves (the first floating-point tensor
   of the first safetensors file, or of pytorch_model.bin), as transformers and vLLM both fall back to;
3. if there are no local weights either: float32, torch's default, which is what transformers
   loads such a checkpoint in.

A hub id is resolved from its config.json (through the hub's cache); one whose config names no dtype
is refused, since its weights are not at hand to ask.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import torch

from ..rules.json_files import read_json_object

DTYPES = ("float32", "bfloat16", "float16")
_ALIASES = {"float": "float32", "fp32": "float32", "bf16": "bfloat16", "half": "float16", "fp16": "float16"}
_SAFETENSORS = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}


class DtypeError(ValueError):
    """A dtype that is not one of DTYPES, or a checkpoint whose dtype cannot be told."""


def resolve_dtype(model: str | Path, dtype: str | torch.dtype = "auto") -> str:
    """The dtype name ("float32", "bfloat16", "float16") `model` runs in when `dtype` is asked for."""
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).removeprefix("torch.")
    name = _ALIASES.get(str(dtype).lower(), str(dtype).lower())
    if name != "auto":
        if name not in DTYPES:
            raise DtypeError(f"dtype must be 'auto' or one of {', '.join(DTYPES)}, got {dtype!r}")
        return name
    folder = Path(model).expanduser()
    if folder.is_dir():
        config = folder / "config.json"
        stated = _config_dtype(read_json_object(config, DtypeError)) if config.is_file() else None
        found = stated or _weights_dtype(folder) or "float32"
        where = str(folder)
    else:
        stated = _config_dtype(_hub_config(str(model)))
        if stated is None:
            raise DtypeError(f"the config of {str(model)!r} names no dtype: pass one (float32, bfloat16, float16)")
        found, where = stated, str(model)
    if found not in DTYPES:
        raise DtypeError(f"{where}: its dtype {found!r} is not one the decoder runs ({', '.join(DTYPES)})")
    return found


def torch_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def model_dtype(model: Any) -> str:
    """The dtype a loaded transformers model runs in (that of its first floating-point parameter)."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return str(parameter.dtype).removeprefix("torch.")
    return "float32"


def _config_dtype(config: dict[str, Any]) -> str | None:
    for source in (config, config.get("text_config") or {}):
        for key in ("dtype", "torch_dtype"):
            value = source.get(key)
            if isinstance(value, str) and value:
                value = value.removeprefix("torch.")
                return _ALIASES.get(value, value)
    return None


def _weights_dtype(folder: Path) -> str | None:
    files = sorted(folder.glob("*.safetensors"))
    if files:
        with files[0].open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        for name, info in header.items():
            if name != "__metadata__" and info.get("dtype") in _SAFETENSORS:
                return _SAFETENSORS[info["dtype"]]
        return None
    binary = folder / "pytorch_model.bin"
    if binary.is_file():
        state = torch.load(binary, map_location="meta", weights_only=True)
        for tensor in state.values():
            if tensor.is_floating_point():
                return str(tensor.dtype).removeprefix("torch.")
    return None


def _hub_config(model_id: str) -> dict[str, Any]:
    try:
        from huggingface_hub import hf_hub_download

        return read_json_object(Path(hf_hub_download(model_id, "config.json")), DtypeError)
    except DtypeError:
        raise
    except Exception as err:  # the hub's many errors: not found, offline, gated
        raise DtypeError(f"cannot read the config of {model_id!r} to resolve dtype 'auto': {err}") from None
