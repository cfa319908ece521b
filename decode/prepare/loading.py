"""Loading a model and its tokenizer, from a local folder or a hub id, in the checkpoint's own dtype.

A path that does not exist is refused at once, a model folder is read as files before minutes of
loading (`preflight.model_folder_problem`), and a hub id is looked up in the local cache when the hub
cannot be reached, instead of after a minute of download retries.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .dtype import DtypeError, resolve_dtype, torch_dtype
from .preflight import model_folder_problem


class ModelLoadError(ValueError):
    """A model or tokenizer that cannot be found or loaded."""


def check_source(name_or_path: str, what: str) -> None:
    """Refuse a path that does not exist; a hub id ("org/name") is left for the hub to resolve.

    A hub id that is not a local folder needs the hub or a cached copy. When the hub cannot be reached
    (offline, or HF_HUB_OFFLINE set), an id that is not in the cache is refused here at once, instead
    of after a minute of download retries; one that is cached is loaded from the cache, with the hub
    switched off so that nothing waits on it.
    """
    path = Path(name_or_path)
    looks_like_path = name_or_path.startswith((".", "/", "~")) or os.sep + os.sep in name_or_path
    hub_id = name_or_path.count("/") <= 1 and not looks_like_path
    if not path.exists() and not hub_id:
        raise ModelLoadError(f"{what} path {name_or_path!r} does not exist")
    if what == "model" and path.is_dir():  # its files are read now, not after minutes of loading
        problem = model_folder_problem(path, tokenizer_needed=False)
        if problem:
            raise ModelLoadError(problem)
    if path.exists() or hub_online():
        return
    if _in_hub_cache(name_or_path):
        go_offline()
        return
    raise ModelLoadError(
        f"{what} {name_or_path!r} is not a local folder nor in the local hub cache, and the hub cannot be "
        "reached to download it (offline, or HF_HUB_OFFLINE is set); give the path of a model folder"
    )


def hub_online() -> bool:
    """Whether the hub may be used: not switched off, and it answers."""
    from huggingface_hub import constants

    return not constants.HF_HUB_OFFLINE and _hub_answers()


@functools.cache
def _hub_answers() -> bool:
    """Whether the hub answers at all (any HTTP status counts), asked once per process, with a short timeout."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=5)
    except Exception:  # no route, no name resolution, refused, timed out: the hub is out of reach
        return False
    return True


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for filename in ("config.json", "tokenizer_config.json"):
        try:
            if isinstance(try_to_load_from_cache(repo_id, filename), str):
                return True
        except ValueError:  # not a valid repo id
            return False
    return False


def go_offline() -> None:
    """Read hub ids from the cache only, in this process and the ones it starts (vLLM, grading workers)."""
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True


def load_model(name_or_path: str, dtype: str | torch.dtype = "auto", device: str | None = None) -> Any:
    """A causal LM from a local folder or a hub id (the hub is only tried for ids, never for paths).

    `dtype="auto"` is the checkpoint's own dtype, resolved by `decode.prepare.dtype.resolve_dtype` as for vLLM.
    """
    check_source(name_or_path, "model")
    try:
        resolved = torch_dtype(resolve_dtype(name_or_path, dtype))
    except DtypeError as err:
        raise ModelLoadError(f"could not load model {name_or_path!r}: {err}") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=resolved)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load model {name_or_path!r}: {err}") from None
    return model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()


def load_tokenizer(name_or_path: str) -> Any:
    check_source(name_or_path, "tokenizer")
    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load tokenizer {name_or_path!r}: {err}") from None
