"""Content-addressed caches: whole stage outputs on disk, and every expensive call in a small database.

Stage outputs: a stage's key is the hash of its name, its settings and its input's key, so a rerun
with the same recipe loads every stage it already finished, and changing one stage's settings reruns
that stage and the ones after it. Each output is written to a temporary folder and renamed into
place: a run killed mid-write leaves no folder that looks finished.

Calls (a model's answer, a teacher's trace, an embedding): keyed by the hash of everything that
decides the result (model, prompt, settings), stored in SQLite and committed after every batch, so a
killed run loses at most the batch in flight and a rerun never calls a model twice for the same thing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import datasets


def content_hash(*parts: Any) -> str:
    """A stable hash of JSON-serialisable parts (dict keys sorted)."""
    text = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class StageCache:
    """Finished stage outputs, one folder per key: `<root>/stages/<stage>-<key[:16]>/`."""

    def __init__(self, root: Path):
        self.root = Path(root) / "stages"
        self.root.mkdir(parents=True, exist_ok=True)

    def folder(self, stage: str, key: str) -> Path:
        return self.root / f"{stage}-{key[:16]}"

    def load(self, stage: str, key: str) -> tuple[datasets.Dataset, dict[str, Any]] | None:
        """The stage's output and its info, or None if this stage with this input never finished."""
        folder = self.folder(stage, key)
        if not (folder / "info.json").is_file():
            return None
        info = json.loads((folder / "info.json").read_text(encoding="utf-8"))
        return datasets.load_from_disk(str(folder / "data")), info

    def save(self, stage: str, key: str, data: datasets.Dataset, info: dict[str, Any]) -> datasets.Dataset:
        """Write atomically (temporary folder, then rename) and return the dataset as loaded from disk."""
        folder = self.folder(stage, key)
        tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        data.save_to_disk(str(tmp / "data"))
        (tmp / "info.json").write_text(json.dumps(info, indent=1, sort_keys=True), encoding="utf-8")
        if folder.exists():  # an identical result from an earlier run; keep that one
            shutil.rmtree(tmp)
        else:
            os.rename(tmp, folder)
        return datasets.load_from_disk(str(folder / "data"))


class CallCache:
    """Results of expensive calls, by content key, in SQLite (safe for threads; commit per batch)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, kind TEXT, value BLOB)")
        self._db.commit()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(kind: str, *parts: Any) -> str:
        return kind + ":" + content_hash(kind, *parts)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The cached values of those keys that are present (JSON-decoded, or bytes as stored)."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, value in self._db.execute(f"SELECT key, value FROM calls WHERE key IN ({marks})", chunk):
                    found[key] = value if isinstance(value, bytes) else json.loads(value)
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        """Store and commit at once (bytes are stored raw, anything else as JSON)."""
        rows = [
            (key, key.split(":", 1)[0], value if isinstance(value, bytes) else json.dumps(value, ensure_ascii=False))
            for key, value in items.items()
        ]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO calls (key, kind, value) VALUES (?, ?, ?)", rows)
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()
