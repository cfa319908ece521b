"""One reader for the JSON files of a checkpoint (config.json, generation_config.json), with one set of errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json_object(path: Path, error: type[ValueError] = ValueError) -> dict[str, Any]:
    """The JSON object in `path`; `error`, naming the file, if it cannot be read, is not JSON or holds
    something else than an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise error(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object")
    return data
