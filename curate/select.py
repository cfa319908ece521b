"""Select: s1's diversity sampling down to the target size, seeded, and the ablations of s1's Table 2.

s1 (§2): optionally keep some rows outright (s1 kept 384 from sources it trusted); then, until the
target size is reached, pick a domain uniformly at random, rank its remaining questions by trace
length (longest first, rank 0, 1, 2, ...) and draw one with probability proportional to 2^-rank.
Methods:
- "s1": the above.
- "s1_notebook": as s1's notebook did it: domains are picked uniformly while fewer than
  `uniform_first` rows are selected, preselected rows included (the notebook's
  `len(selected_qhashes) < 700` counts its 384 preselected rows: 316 uniform picks), then in
  proportion to `domain_weights` (the benchmarks' domain mix: 300 picks to reach 1,000).
- "random": uniform over all questions (Table 2, "Only Quality").
- "diverse": a uniform domain, then a uniform question in it (Table 2, "Only Diversity").
- "longest": the longest traces (Table 2, "Only Difficulty").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np

from .cache import CallCache
from .domains import DomainSettings, classify_texts
from .schema import CurateError

METHODS = ("s1", "s1_notebook", "random", "diverse", "longest")


@dataclass
class PreselectRule:
    """Rows kept outright, before sampling: those whose `field` matches `pattern` (a regular expression)."""

    field: str
    pattern: str
    limit: int | None = None


@dataclass
class SelectSettings:
    """Settings of the select stage.

    Attributes:
        size: how many rows to select (s1: 1,000); fewer if fewer remain.
        method: one of "s1", "s1_notebook", "random", "diverse", "longest".
        seed: the sampling seed.
        preselect: rules whose matches are kept outright (they count toward `size`).
        uniform_first: for "s1_notebook": selected rows, preselected ones included, below which domains
            are picked uniformly; from there `domain_weights` apply (s1's notebook: 700).
        domain_weights: for "s1_notebook": weight per MSC code (codes not listed get 0 after the
            uniform picks; if no listed domain has rows left, domains are picked uniformly again).
        benchmark_mix: for "s1_notebook", instead of `domain_weights`: evaluation sets (entries as in
            the decontaminate stage) whose questions are classified with `domains` settings; their
            domain histogram becomes the weights.
        domains: the classifier settings for `benchmark_mix` (see `DomainSettings`; default: embedding).
    """

    size: int = 1000
    method: str = "s1"
    seed: int = 0
    preselect: list[PreselectRule] = field(default_factory=list)
    uniform_first: int = 700
    domain_weights: dict[str, float] = field(default_factory=dict)
    benchmark_mix: list[Any] = field(default_factory=list)
    domains: DomainSettings | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CurateError(f"select: method must be one of {METHODS}, got {self.method!r}")
        if self.size < 1:
            raise CurateError(f"select: size must be >= 1, got {self.size}")


def sample_indices(domains: list[str], lengths: list[int], candidates: list[int], count: int,
                   settings: SelectSettings, rng: np.random.Generator, already: int = 0) -> list[int]:  # fmt: skip
    """`count` indices drawn from `candidates` by the settings' method; `already` rows are selected
    before them (preselected), which the notebook variant's `uniform_first` counts."""
    count = min(count, len(candidates))
    if settings.method == "random":
        return sorted(rng.choice(candidates, size=count, replace=False).tolist()) if count else []
    if settings.method == "longest":
        return sorted(candidates, key=lambda i: (-lengths[i], i))[:count]
    # Per domain, the remaining questions sorted longest first (ties by pool order).
    pools: dict[str, list[int]] = {}
    for i in candidates:
        pools.setdefault(domains[i], []).append(i)
    for members in pools.values():
        members.sort(key=lambda i: (-lengths[i], i))
    chosen: list[int] = []
    while len(chosen) < count:
        names = sorted(d for d, members in pools.items() if members)
        weights = np.ones(len(names))
        if settings.method == "s1_notebook" and already + len(chosen) >= settings.uniform_first:
            weights = np.array([settings.domain_weights.get(d, 0.0) for d in names], dtype=float)
            if weights.sum() <= 0:
                weights = np.ones(len(names))
        domain = names[rng.choice(len(names), p=weights / weights.sum())]
        members = pools[domain]
        if settings.method == "diverse":
            pick = int(rng.integers(len(members)))
        else:  # weight 2^-rank (ranks past ~1075 underflow to 0: never drawn while a shorter rank remains)
            ranks = np.arange(len(members), dtype=float)
            probs = np.exp2(-ranks)
            pick = int(rng.choice(len(members), p=probs / probs.sum()))
        chosen.append(members.pop(pick))
    return chosen


def benchmark_weights(settings: SelectSettings, cache: CallCache) -> dict[str, float]:
    """The evaluation sets' domain mix: their questions classified like the pool's."""
    from .decontaminate import load_eval_questions

    questions, _ = load_eval_questions(settings.benchmark_mix)
    codes, _ = classify_texts([q for _, q in questions], settings.domains or DomainSettings(), cache)
    counts: dict[str, float] = {}
    for code in codes:
        if code:
            counts[code] = counts.get(code, 0.0) + 1.0
    return counts


def select(
    data: datasets.Dataset, settings: SelectSettings, cache: CallCache | None = None
) -> tuple[datasets.Dataset, dict[str, Any]]:
    """The input with `drop_reason` ("not selected: ..." for rows left out) and `selected_by`."""
    if settings.benchmark_mix:
        if cache is None:
            raise CurateError("select: benchmark_mix needs the call cache (run it through the pipeline)")
        weights = benchmark_weights(settings, cache)
        settings = SelectSettings(**{**settings.__dict__, "domain_weights": weights, "benchmark_mix": []})
    needs = {"s1": ("domain", "trace_tokens"), "s1_notebook": ("domain", "trace_tokens"), "diverse": ("domain",),
             "longest": ("trace_tokens",), "random": ()}[settings.method]  # fmt: skip
    missing = [c for c in needs if c not in data.column_names]
    if missing:
        raise CurateError(f"select: method {settings.method!r} needs column(s) {missing}; run those stages first")
    n = len(data)
    domains = data["domain"] if "domain" in data.column_names else [""] * n
    lengths = data["trace_tokens"] if "trace_tokens" in data.column_names else [0] * n
    rng = np.random.default_rng(settings.seed)
    how = [""] * n
    for rule in settings.preselect:
        if rule.field not in data.column_names:
            raise CurateError(f"select: preselect field {rule.field!r} is not a column ({data.column_names})")
        regex = re.compile(rule.pattern)
        hits = [i for i, value in enumerate(data[rule.field]) if not how[i] and regex.search(str(value))]
        for i in hits[: rule.limit]:
            how[i] = f"preselected: {rule.field} ~ {rule.pattern}"
    kept = sum(1 for h in how if h)
    if kept > settings.size:
        raise CurateError(f"select: preselect rules keep {kept} rows, more than size {settings.size}")
    candidates = [i for i in range(n) if not how[i]]
    picks = sample_indices(domains, lengths, candidates, settings.size - kept, settings, rng, already=kept)
    for i in picks:
        how[i] = f"sampled: {settings.method}"
    reasons = ["" if h else f"not selected: {settings.method} sampling to {settings.size}" for h in how]
    out = data.add_column("selected_by", how).add_column("drop_reason", reasons)
    info = {"method": settings.method, "preselected": kept, "selected": sum(1 for h in how if h)}
    if settings.method == "s1_notebook":
        uniform = min(len(picks), max(0, settings.uniform_first - kept))
        info.update(uniform_picks=uniform, weighted_picks=len(picks) - uniform, domain_weights=settings.domain_weights)
    return out, info
