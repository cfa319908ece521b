"""Select: s1's diversity sampling down to the target size, seeded, and the ablations of s1's Table 2.

s1 (§2): optionally keep some rows outright (s1 kept 384 from sources it trusted); then, until the
target size is reached, pick a domain uniformly at random, rank its remaining questions by trace
length (longest first, rank 0, 1, 2, ...) and draw one with probability proportional to 2^-rank.
Methods:
- "s1": the above.
- "s1_notebook": as s1's notebook did it (simplescaling/s1@77272c6:data/filter.ipynb:538-563):
  domains are picked uniformly while fewer than `uniform_first` rows are selected, preselected rows
  included (the notebook's `len(selected_qhashes) < 700` counts its preselected rows), then in
  proportion to `domain_weights` or `source_mix` (the benchmarks' domain mix: 300 picks to reach
  1,000). The notebook's domain pools still hold the preselected rows (filter.ipynb:512-514): a draw
  may land on one, which is then used up without adding a row, and they count in the length ranks.
- "random": uniform over all questions (Table 2, "Only Quality").
- "diverse": a uniform domain, then a uniform question in it (Table 2, "Only Diversity").
- "longest": the longest traces (Table 2, "Only Difficulty").
"""

from __future__ import annotations

import re
from collections import Counter
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
    """Rows kept outright, before sampling: those whose `field` matches `pattern` (a regular
    expression), whose `require` columns are all true (s1: `teacher_correct`), and whose trace has
    more than `more_tokens_than` tokens (s1: MATH rows over 5,600); at most `limit` of them."""

    field: str
    pattern: str
    limit: int | None = None
    require: list[str] = field(default_factory=list)
    more_tokens_than: int | None = None

    def matches(self, row: dict[str, Any]) -> bool:
        if not re.search(self.pattern, str(row[self.field])):
            return False
        if any(row[column] is not True for column in self.require):
            return False
        return self.more_tokens_than is None or row["trace_tokens"] > self.more_tokens_than


@dataclass
class MixSource:
    """One source of the notebook's benchmark mix: the domains of the pool's rows whose `source`
    matches `source` (a regular expression), scaled so that they total `weight` times the rows of
    the mix's first source (s1: AIME 1.0, GPQA 0.5; simplescaling/s1@77272c6:data/filter.ipynb:477-479)."""

    source: str
    weight: float = 1.0


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
        source_mix: for "s1_notebook", instead of `domain_weights`: the notebook's weights, from the
            domains of the pool's own rows of the listed sources (see `MixSource`).
    """

    size: int = 1000
    method: str = "s1"
    seed: int = 0
    preselect: list[PreselectRule] = field(default_factory=list)
    uniform_first: int = 700
    domain_weights: dict[str, float] = field(default_factory=dict)
    benchmark_mix: list[Any] = field(default_factory=list)
    domains: DomainSettings | None = None
    source_mix: list[MixSource] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CurateError(f"select: method must be one of {METHODS}, got {self.method!r}")
        if self.size < 1:
            raise CurateError(f"select: size must be >= 1, got {self.size}")
        given = [name for name in ("domain_weights", "benchmark_mix", "source_mix") if getattr(self, name)]
        if len(given) > 1:
            raise CurateError(f"select: give one of domain_weights, benchmark_mix and source_mix, got {given}")


def sample_indices(domains: list[str], lengths: list[int], candidates: list[int], count: int,
                   settings: SelectSettings, rng: Any, taken: list[int] | None = None) -> list[int]:  # fmt: skip
    """`count` indices drawn from `candidates` by the settings' method; `taken` rows are selected
    before them (preselected): the notebook variant counts them against `uniform_first` and keeps
    them in its domain pools, where a draw uses one up without selecting anything."""
    taken = taken or []
    already = len(taken)
    count = min(count, len(candidates))
    notebook = settings.method == "s1_notebook"
    if settings.method == "random":
        return sorted(rng.choice(candidates, size=count, replace=False).tolist()) if count else []
    if settings.method == "longest":
        return sorted(candidates, key=lambda i: (-lengths[i], i))[:count]
    # Per domain, the remaining questions sorted longest first (ties by pool order).
    pools: dict[str, list[int]] = {}
    for i in sorted([*candidates, *taken]) if notebook else candidates:
        pools.setdefault(domains[i], []).append(i)
    spent = set(taken)
    for members in pools.values():
        members.sort(key=lambda i: (-lengths[i], i))
    chosen: list[int] = []
    while len(chosen) < count:
        names = sorted(d for d, members in pools.items() if members)
        weights = np.ones(len(names))
        if notebook and already + len(chosen) >= settings.uniform_first:
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
        index = members.pop(pick)
        if index not in spent:
            chosen.append(index)
        if not any(pools.values()):
            break
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


def source_mix_weights(sources: list[str], domains: list[str], mix: list[MixSource]) -> dict[str, float]:
    """The notebook's benchmark weights: per mix source, the domain counts of its rows in the pool,
    scaled to `weight` x the first source's row count and truncated to integers as the notebook's
    `int(...)` did (simplescaling/s1@77272c6:data/filter.ipynb:473-482)."""
    counts = []
    for entry in mix:
        regex = re.compile(entry.source)
        counts.append(Counter(d for s, d in zip(sources, domains, strict=True) if regex.search(s)))
    first = sum(counts[0].values())
    weights: Counter[str] = Counter()
    for entry, per_domain in zip(mix, counts, strict=True):
        total = sum(per_domain.values())
        if not total:
            raise CurateError(f"select: source_mix: no row's source matches {entry.source!r}")
        factor = entry.weight * first / total
        weights += Counter({d: int(n * factor) for d, n in per_domain.items()})  # keeps positive counts only
    return {d: float(n) for d, n in sorted(weights.items())}


def select(
    data: datasets.Dataset, settings: SelectSettings, cache: CallCache | None = None
) -> tuple[datasets.Dataset, dict[str, Any]]:
    """The input with `drop_reason` ("not selected: ..." for rows left out) and `selected_by`."""
    if settings.source_mix:
        for column in ("source", "domain"):
            if column not in data.column_names:
                raise CurateError(f"select: source_mix needs column {column!r}; run the domains stage first")
        weights = source_mix_weights(data["source"], data["domain"], settings.source_mix)
        settings = SelectSettings(**{**settings.__dict__, "domain_weights": weights, "source_mix": []})
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
    rows = data.to_list() if settings.preselect else []
    for number, rule in enumerate(settings.preselect):
        needed = [rule.field, *rule.require, *(["trace_tokens"] if rule.more_tokens_than is not None else [])]
        absent = [c for c in needed if c not in data.column_names]
        if absent:
            raise CurateError(f"select: preselect[{number}] needs column(s) {absent}; have {data.column_names}")
        hits = [i for i, row in enumerate(rows) if not how[i] and rule.matches(row)]
        label = " and ".join([f"{rule.field} ~ {rule.pattern}", *[f"{c} true" for c in rule.require],
                              *([f"trace over {rule.more_tokens_than} tokens"] if rule.more_tokens_than is not None
                                else [])])  # fmt: skip
        for i in hits[: rule.limit]:
            how[i] = f"preselected: {label}"
    kept = sum(1 for h in how if h)
    if kept > settings.size:
        raise CurateError(f"select: preselect rules keep {kept} rows, more than size {settings.size}")
    candidates = [i for i in range(n) if not how[i]]
    taken = [i for i in range(n) if how[i]]
    picks = sample_indices(domains, lengths, candidates, settings.size - kept, settings, rng, taken=taken)
    for i in picks:
        how[i] = f"sampled: {settings.method}"
    reasons = ["" if h else f"not selected: {settings.method} sampling to {settings.size}" for h in how]
    out = data.add_column("selected_by", how).add_column("drop_reason", reasons)
    info = {"method": settings.method, "preselected": kept, "selected": sum(1 for h in how if h)}
    if settings.method == "s1_notebook":
        uniform = min(len(picks), max(0, settings.uniform_first - kept))
        info.update(uniform_picks=uniform, weighted_picks=len(picks) - uniform, domain_weights=settings.domain_weights)
    return out, info
