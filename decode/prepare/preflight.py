"""Checks made before a model loads, so that a run fails in a second, writes nothing, and never half-works.

A model folder is read as files first (its config parses, every weights file has a whole header and
the bytes that header promises, a tokenizer is there), an output path is tried against the file
system, the device against the machine, and the tokenizer against the model's embedding. Each check
returns what is wrong in words (None when nothing is); callers add the file, row or setting.

`model_fingerprint` names a model by what it is rather than where it lives, so that a resumed run
notices weights replaced under the same path.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import math
import os
import struct
from pathlib import Path
from typing import Any

# Files that define a model besides its weights: hashed whole into its fingerprint.
DEFINING_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
SAMPLE_BYTES = 1 << 16  # bytes read at each sampled place of a large weights file
SAMPLES = 16  # places sampled per large weights file, evenly spread


class DuplicateKeyError(json.JSONDecodeError):
    """A JSON object that names one key twice (the parser would keep the last one silently)."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKeyError(f"duplicate key {key!r}", "", 0)
        seen[key] = value
    return seen


def loads_unique(text: str | bytes) -> Any:
    """`json.loads` that refuses an object with a key given twice (`DuplicateKeyError`, a JSONDecodeError
    whose `msg` names the key), where the standard parser keeps the last value and says nothing."""
    return json.loads(text, object_pairs_hook=_unique_pairs)


def is_local(name_or_path: str | Path) -> bool:
    return Path(name_or_path).expanduser().exists()


def model_folder_problem(folder: str | Path, tokenizer_needed: bool = True) -> str | None:
    """What keeps a local model folder from loading, read from its files alone (None: nothing found).

    config.json must parse as an object; each safetensors file must hold its whole header and every
    byte its header places (a copy cut short fails here, not after minutes of loading); an index must
    name files that exist; weights must be there at all; and, when `tokenizer_needed`, tokenizer files.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return None  # a single file or a hub id: left to the loader
    config = folder / "config.json"
    if not config.is_file():
        return f"model folder {folder} has no config.json"
    try:
        data = loads_unique(config.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{config}: not valid JSON ({getattr(err, 'msg', err)})"
    if not isinstance(data, dict):
        return f"{config}: expected a JSON object, got {type(data).__name__}"
    weights = [p for p in sorted(folder.iterdir()) if p.suffix in WEIGHT_SUFFIXES and p.is_file()]
    for index in sorted(folder.glob("*.index.json")):
        try:
            mapping = loads_unique(index.read_bytes().decode("utf-8")).get("weight_map")
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
            return f"{index}: not a weights index (a JSON object with 'weight_map'): {err}"
        if not isinstance(mapping, dict):
            return f"{index}: has no 'weight_map' object"
        missing = sorted({str(name) for name in mapping.values()} - {p.name for p in weights})
        if missing:
            return f"{index} names weights files that are not in the folder: {', '.join(missing[:3])}"
    if not weights:
        return f"model folder {folder} holds no weights file ({', '.join('*' + s for s in WEIGHT_SUFFIXES)})"
    for path in weights:
        if path.suffix == ".safetensors":
            problem = safetensors_problem(path)
            if problem:
                return problem
        elif path.stat().st_size == 0:
            return f"{path}: empty weights file"
    if tokenizer_needed and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return (
            f"model folder {folder} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); copy the tokenizer "
            "beside the weights or give the tokenizer's folder"
        )
    return None


def safetensors_problem(path: Path) -> str | None:
    """A safetensors file whose header is unreadable, or shorter than the data its header places."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{path}: not a safetensors file ({size} bytes: no header)"
        (length,) = struct.unpack("<Q", head)
        if 8 + length > size:
            return f"{path}: cut short ({size} bytes, its header alone claims {8 + length}); copy it again"
        try:
            header = loads_unique(f.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return f"{path}: unreadable safetensors header ({getattr(err, 'msg', err)})"
    if not isinstance(header, dict):
        return f"{path}: unreadable safetensors header (not a JSON object)"
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            return f"{path}: tensor {name!r} has no valid data_offsets in its header"
        end = max(end, offsets[1])
    if 8 + length + end > size:
        return f"{path}: cut short ({size} bytes, its tensors need {8 + length + end}); copy it again"
    return None


def model_fingerprint(name_or_path: str | Path) -> str:
    """A short hash of what a model is: its defining files hashed whole (config, generation config,
    tokenizer, index files) and, per weights file, its name, size, header and 16 samples of 64 KiB
    spread over the file (small files whole). Cheap (a few MB read for any size of model), and new
    weights under the same path change it: trained weights differ everywhere, not in one byte.

    A hub id is fingerprinted through its cached snapshot when there is one, else by its name."""
    folder = _local_folder(name_or_path)
    if folder is None:
        return "id:" + hashlib.sha256(str(name_or_path).encode()).hexdigest()[:16]
    digest = hashlib.sha256()
    names = [p for p in sorted(folder.iterdir()) if p.is_file()]
    for path in names:
        if path.name in DEFINING_FILES or path.name.endswith(".index.json"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for path in names:
        if path.suffix in WEIGHT_SUFFIXES:
            digest.update(path.name.encode() + b"\0" + _weights_digest(path))
    return digest.hexdigest()[:16]


def _local_folder(name_or_path: str | Path) -> Path | None:
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        return path.parent
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(name_or_path), "config.json")
    except Exception:  # not a repo id, or no cache
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def _weights_digest(path: Path) -> bytes:
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        if size <= SAMPLES * SAMPLE_BYTES * 2:
            digest.update(f.read())
            return digest.digest()
        if path.suffix == ".safetensors":
            (length,) = struct.unpack("<Q", f.read(8))
            digest.update(f.read(min(length, size)))
        step = (size - SAMPLE_BYTES) // (SAMPLES - 1)
        for i in range(SAMPLES):
            f.seek(i * step)
            digest.update(f.read(SAMPLE_BYTES))
    return digest.digest()


def output_problem(output: str | Path, *inputs: str | Path) -> str | None:
    """An output file that cannot be written: a folder in its place, a parent missing or not a folder
    or not writable, a read-only file, or one of the run's own input files (it would be overwritten)."""
    path = Path(output).expanduser()
    if path.is_dir():
        return f"output {output} is a folder; give a file path"
    parent = path.parent
    if not parent.exists():
        return f"output folder {parent} does not exist"
    if not parent.is_dir():
        return f"output {output}: {parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"output folder {parent} is not writable"
    if path.exists() and not os.access(path, os.W_OK):
        return f"output {output} exists and is read-only"
    for source in inputs:
        if Path(source).expanduser().exists() and path.exists() and os.path.samefile(path, source):
            return f"output {output} is the input file {source}; writing it would destroy the input"
    return None


def folder_writable_problem(folder: str | Path, setting: str) -> str | None:
    """An output folder that cannot be created or written (its nearest existing ancestor decides)."""
    path = Path(folder).expanduser()
    for existing in (path, *path.parents):
        if existing.exists():
            if existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
                return f"{setting} {folder}: {existing} is not writable"
            return None
    return None


def device_problem(device: Any, setting: str = "device", here: bool = True) -> str | None:
    """A device name torch does not know ("cpu", "cuda", "cuda:1", "mps" are known; None is the default)
    or, with `here`, a CUDA device this machine does not have (a recipe may be read on a machine other
    than the one it runs on: there `here` is False)."""
    if device is None:
        return None
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        return f"{setting} expects a torch device such as 'cpu', 'cuda' or 'cuda:1', got {device!r}"
    if here and parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (parsed.index or 0) >= count:
            return f"{setting} is {device!r}, but torch sees {count} CUDA device(s) here"
    return None


def embedding_size(config: Any) -> int | None:
    """The model's vocabulary (rows of its embedding), from a transformers config or a config.json dict."""
    if isinstance(config, dict):
        text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
        size = config.get("vocab_size", text.get("vocab_size"))
    elif config is not None:
        get_text = getattr(config, "get_text_config", None)
        size = getattr(get_text() if callable(get_text) else config, "vocab_size", None)
    else:
        size = None
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def vocabulary_problem(tokenizer: Any, config: Any) -> str | None:
    """A tokenizer with ids past the model's embedding: the model would fail deep inside torch on the
    first such id (or, on a GPU, read memory it does not own)."""
    size = embedding_size(config)
    if size is None:
        return None
    largest = len(tokenizer)
    if largest > size:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        return (
            f"tokenizer {name!r} has {largest} tokens, but the model's embedding has {size} rows (config vocab_size): "
            "ids past it cannot be embedded; use the model's own tokenizer"
        )
    return None


def template_kwargs_problem(tokenizer: Any, kwargs: dict[str, Any] | None) -> str | None:
    """A chat_template_kwargs key that the tokenizer's chat template never reads (a misspelling would
    otherwise be dropped by Jinja without a word)."""
    if not kwargs:
        return None
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = "\n".join(template.values())
    if not template:
        return f"chat_template_kwargs {sorted(kwargs)} given, but the tokenizer has no chat template to pass them to"
    try:
        from jinja2 import Environment, meta

        names = meta.find_undeclared_variables(Environment().parse(template))
    except Exception:  # a template jinja2 cannot parse here: rendering will say so
        return None
    for key in kwargs:
        if key not in names:
            close = difflib.get_close_matches(key, sorted(names), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return (
                f"chat_template_kwargs key {key!r} is not read by the tokenizer's chat template{hint}; "
                f"it reads: {', '.join(sorted(names))}"
            )
    return None


def number_problem(name: str, value: Any) -> str | None:
    """A float that is nan or infinite (YAML's `.nan`, `.inf`; a command line's `nan`): no setting means it."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} must be a finite number, got {value!r}"
    return None


def template_roles(template: str) -> frozenset[str]:
    """The roles a chat template tells apart: the strings it compares a message's `role` with
    (`message.role == "user"`, `message['role'] in ['system', 'developer']`). Empty when it names none
    (a template that writes any role as it is)."""
    return _template_roles(template)


@functools.cache
def _template_roles(template: str) -> frozenset[str]:
    try:
        from jinja2 import Environment, nodes

        tree = Environment().parse(template)
    except Exception:  # a template jinja2 cannot parse here: rendering will say so
        return frozenset()

    def is_role(node: Any) -> bool:
        if isinstance(node, nodes.Getattr):
            return node.attr == "role"
        if isinstance(node, nodes.Getitem):
            return isinstance(node.arg, nodes.Const) and node.arg.value == "role"
        return False

    def constants(node: Any) -> list[str]:
        if isinstance(node, nodes.Const) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, nodes.List | nodes.Tuple):
            return [item.value for item in node.items if isinstance(item, nodes.Const) and isinstance(item.value, str)]
        return []

    roles: set[str] = set()
    for compare in tree.find_all(nodes.Compare):
        operands = [compare.expr, *(op.expr for op in compare.ops)]
        if any(is_role(node) for node in operands):
            for node in operands:
                roles.update(constants(node))
    return frozenset(roles)


def role_problem(tokenizer: Any, messages: Any, chat_template_kwargs: dict[str, Any] | None = None) -> str | None:
    """A chat message the tokenizer's chat template drops without a word (Qwen2.5's writes only the roles
    it names; ChatML-style templates write any role as it is, so nothing is dropped there).

    Found by rendering: each message's content is replaced by a marker of its own, and every marker must
    come out in the rendered prompt. Assistant turns are not checked, since templates may rewrite them
    (reasoning templates cut the thinking out of earlier turns)."""
    template = getattr(tokenizer, "chat_template", None)
    if not template or not isinstance(messages, list | tuple):
        return None
    probe = [
        {**message, "content": f"[message {number} marker]"} if isinstance(message, dict) else message
        for number, message in enumerate(messages)
    ]
    try:
        text = tokenizer.apply_chat_template(
            probe, tokenize=False, add_generation_prompt=True, **(chat_template_kwargs or {})
        )
    except Exception:  # the template refuses the chat itself: rendering the real prompt reports its own error
        return None
    for number, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role != "assistant" and f"[message {number} marker]" not in text:
            named = template_roles(template) if isinstance(template, str) else frozenset()
            known = f" (the roles it names: {', '.join(sorted(named))})" if named else ""
            return f"message {number} has role {role!r}, which the chat template drops{known}"
    return None
