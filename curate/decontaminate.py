"""Decontamination against evaluation sets, and exact and near deduplication within the pool.

Contamination (s1 §2): a pool question that shares any lower-cased word 8-gram with an evaluation
question is dropped. Words are runs of letters and digits (`\\w+`), so LaTeX punctuation and spacing
do not hide an overlap; a question shorter than 8 words counts as one n-gram of all its words.

Duplicates: an exact duplicate has the same words in the same order as an earlier question; a near
duplicate has word-shingle Jaccard similarity at or above a threshold with an earlier question.
Near duplicates are found with MinHash and locality-sensitive hashing (bands of rows), and every
candidate pair is confirmed with the exact Jaccard of its shingle sets, so no pair below the
threshold is ever dropped. The first occurrence in pool order (the recipe's source order) is kept.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from .schema import CurateError

WORD = re.compile(r"\w+")
MASK61 = np.uint64((1 << 61) - 1)


@dataclass
class DecontaminateSettings:
    """Settings of the decontamination and deduplication stage.

    Attributes:
        eval_sets: evaluation sets, each an `evals` benchmark entry (a preset name or a mapping with
            `name` and `path` or `hub`, see evals.BenchmarkSpec), plus `optional: true` to skip a set
            that cannot be loaded (e.g. gated GPQA offline) instead of stopping.
        ngram: n of the word n-grams shared with an evaluation question that make a pool question contaminated.
        exact_dedup: drop questions whose words equal an earlier question's.
        near_dedup: drop questions whose shingle Jaccard with an earlier question is >= near_threshold.
        near_ngram: words per shingle for near duplicates.
        near_threshold: Jaccard similarity at or above which two questions are near duplicates.
        num_perm, bands: MinHash size and LSH bands (num_perm must divide into bands); more bands
            find pairs of lower similarity as candidates, at more cost.
    """

    eval_sets: list[Any] = field(default_factory=list)
    ngram: int = 8
    exact_dedup: bool = True
    near_dedup: bool = True
    near_ngram: int = 5
    near_threshold: float = 0.8
    num_perm: int = 64
    bands: int = 16

    def __post_init__(self) -> None:
        if self.ngram < 1 or self.near_ngram < 1:
            raise CurateError(f"decontaminate: ngram and near_ngram must be >= 1, got {self.ngram}, {self.near_ngram}")
        if not 0 < self.near_threshold <= 1:
            raise CurateError(f"decontaminate: near_threshold must be in (0, 1], got {self.near_threshold}")
        if self.num_perm % self.bands:
            raise CurateError(f"decontaminate: num_perm ({self.num_perm}) must be a multiple of bands ({self.bands})")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def word_ngrams(tokens: list[str], n: int) -> set[str]:
    if len(tokens) < n:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def load_eval_questions(entries: list[Any]) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """(name:id, question) of every evaluation question, and per set how many were loaded or why skipped."""
    from evals.benchmarks import BenchmarkError, load_problems, resolve_spec

    questions: list[tuple[str, str]] = []
    info: dict[str, Any] = {}
    for entry in entries:
        optional = isinstance(entry, dict) and bool(entry.get("optional"))
        spec_entry = {k: v for k, v in entry.items() if k != "optional"} if isinstance(entry, dict) else entry
        try:
            problems = load_problems(resolve_spec(spec_entry))
        except BenchmarkError as err:
            if not optional:
                raise CurateError(f"decontaminate: eval set {spec_entry!r}: {err}") from None
            info[str(getattr(err, "name", spec_entry))] = {"skipped": str(err)}
            continue
        name = problems[0].benchmark if problems else str(spec_entry)
        info[name] = {"questions": len(problems)}
        questions += [(f"{p.benchmark}:{p.id}", p.question) for p in problems]
    return questions, info


class ShingleHasher:
    """Stable 61-bit hashes of word shingles (independent of Python's per-process string hashing)."""

    def __init__(self, n: int):
        self.n = n
        self.vocab: dict[str, int] = {}

    def word_ids(self, tokens: list[str]) -> np.ndarray:
        ids = np.empty(len(tokens), dtype=np.uint64)
        for i, token in enumerate(tokens):
            value = self.vocab.get(token)
            if value is None:
                digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
                value = self.vocab[token] = int.from_bytes(digest, "little") & ((1 << 61) - 1)
            ids[i] = value
        return ids

    def shingles(self, tokens: list[str]) -> np.ndarray:
        ids = self.word_ids(tokens)
        if len(ids) == 0:
            return ids
        width = min(self.n, len(ids))
        count = len(ids) - width + 1
        out = np.zeros(count, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for k in range(width):  # a polynomial hash of the shingle's word hashes (wrapping uint64)
                out = out * np.uint64(1_000_003) + ids[k : k + count]
        return np.unique(out)


class MinHashLSH:
    """MinHash signatures banded into buckets; candidates are confirmed by exact Jaccard."""

    def __init__(self, num_perm: int, bands: int, seed: int = 1):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, (1 << 61) - 1, size=num_perm, dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, (1 << 61) - 1, size=num_perm, dtype=np.uint64)
        self.bands = bands
        self.rows = num_perm // bands
        self.buckets: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]

    def signature(self, shingles: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return ((shingles[None, :] * self.a[:, None] + self.b[:, None]) & MASK61).min(axis=1)

    def candidates(self, signature: np.ndarray) -> set[int]:
        found: set[int] = set()
        for band, buckets in enumerate(self.buckets):
            found.update(buckets.get(signature[band * self.rows : (band + 1) * self.rows].tobytes(), ()))
        return found

    def add(self, index: int, signature: np.ndarray) -> None:
        for band, buckets in enumerate(self.buckets):
            buckets.setdefault(signature[band * self.rows : (band + 1) * self.rows].tobytes(), []).append(index)


def decontaminate(data: datasets.Dataset, settings: DecontaminateSettings) -> tuple[datasets.Dataset, dict[str, Any]]:
    """The input with a `drop_reason` column ("" = kept, else "category: detail"), and what was loaded."""
    eval_questions, eval_info = load_eval_questions(settings.eval_sets)
    eval_ngrams: dict[str, int] = {}  # n-gram -> the first evaluation question holding it, in file order
    for number, (_, question) in enumerate(eval_questions):
        for gram in word_ngrams(words(question), settings.ngram):
            eval_ngrams.setdefault(gram, number)

    hasher = ShingleHasher(settings.near_ngram)
    lsh = MinHashLSH(settings.num_perm, settings.bands)
    kept_shingles: dict[int, set[int]] = {}
    exact_seen: dict[str, int] = {}
    ids = data["id"]
    reasons: list[str] = []
    for index, question in enumerate(data["question"]):
        tokens = words(question)
        reason = ""
        # The reason names the first matching evaluation question in file order (not the first n-gram
        # met: a set's order changes from run to run), so that two runs write the same reasons.
        hits = [eval_ngrams[g] for g in word_ngrams(tokens, settings.ngram) if g in eval_ngrams]
        if hits:
            reason = f"contaminated: shares a {settings.ngram}-gram with {eval_questions[min(hits)][0]}"
        text_key = " ".join(tokens)
        if not reason and settings.exact_dedup:
            first = exact_seen.get(text_key)
            if first is not None:
                reason = f"exact duplicate: of {ids[first]}"
        shingles = signature = None
        if not reason and settings.near_dedup and tokens:
            shingles = hasher.shingles(tokens)
            signature = lsh.signature(shingles)
            mine = set(shingles.tolist())
            for other in sorted(lsh.candidates(signature)):
                theirs = kept_shingles[other]
                jaccard = len(mine & theirs) / len(mine | theirs)
                if jaccard >= settings.near_threshold:
                    reason = f"near duplicate: of {ids[other]} (Jaccard {jaccard:.2f})"
                    break
            if not reason:
                kept_shingles[index] = mine
        if not reason:
            exact_seen.setdefault(text_key, index)
            if signature is not None:
                lsh.add(index, signature)
        reasons.append(reason)
    info = {"eval_sets": eval_info, "eval_ngrams": len(eval_ngrams)}
    return data.add_column("drop_reason", reasons), info


def eval_set_paths(entries: list[Any]) -> list[str]:
    """Local files named by the eval sets (their content goes into the stage's cache key)."""
    return [str(Path(e["path"])) for e in entries if isinstance(e, dict) and e.get("path")]
