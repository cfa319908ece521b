"""Decontamination, deduplication, quality rules and the cap: what is dropped, and why."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from curate import CurateError
from curate.cap import CapSettings, cap
from curate.decontaminate import DecontaminateSettings, decontaminate
from curate.quality import QualityRule, QualitySettings, inconsistent_numbering, quality
from curate.schema import POOL_FEATURES

EVAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval"


def pool(questions: list[str], sources: list[str] | None = None) -> datasets.Dataset:
    rows = [
        {"id": f"t:{i}", "question": q, "solution": "", "answer": "", "kind": "math", "letters": "",
         "source": (sources or ["t"] * len(questions))[i], "cot_type": "math", "metadata": "{}"}
        for i, q in enumerate(questions)
    ]  # fmt: skip
    return datasets.Dataset.from_list(rows, features=POOL_FEATURES)


BASE = "Find the number of ordered pairs of positive integers a and b such that a times b equals 360 exactly"


def test_contamination_needs_a_shared_word_8gram(tmp_path):
    eval_file = tmp_path / "bench.jsonl"
    eval_file.write_text(json.dumps({"id": "e1", "problem": BASE, "answer": "24"}) + "\n")
    questions = [
        "Hint: find the NUMBER of ordered pairs, of positive integers a and b; then stop.",  # 8 words shared
        "Find the number of ordered pairs of real x and y with x + y = 1.",  # only 7 shared in a row
    ]
    settings = DecontaminateSettings(eval_sets=[{"name": "bench", "path": str(eval_file)}], near_dedup=False)
    out, info = decontaminate(pool(questions), settings)
    assert out["drop_reason"][0] == "contaminated: shares a 8-gram with bench:e1"
    assert out["drop_reason"][1] == ""
    assert info["eval_sets"] == {"bench": {"questions": 1}}


def test_exact_and_near_duplicates_keep_the_first():
    variant = BASE.replace("360", "720")  # one word of 19 differs
    same = "  find THE number of ordered pairs of positive integers a and b such that a times b equals 360 exactly!"
    questions = [BASE, same, variant, BASE + " and also list them all in increasing order of a please"]
    loose = DecontaminateSettings(near_ngram=3, near_threshold=0.7, exact_dedup=True)
    out, _ = decontaminate(pool(questions), loose)
    reasons = out["drop_reason"]
    assert reasons[0] == ""
    assert reasons[1] == "exact duplicate: of t:0"
    assert reasons[2].startswith("near duplicate: of t:0 (Jaccard 0.")
    assert reasons[3] == ""  # Jaccard 17/28 < 0.7
    strict = DecontaminateSettings(near_ngram=3, near_threshold=0.95)
    assert decontaminate(pool(questions), strict)[0]["drop_reason"][2] == ""


def test_missing_optional_eval_set_is_skipped_and_required_one_stops(tmp_path):
    gone = {"name": "gone", "path": str(tmp_path / "gone.jsonl")}
    with pytest.raises(CurateError, match="eval set"):
        decontaminate(pool([BASE]), DecontaminateSettings(eval_sets=[gone]))
    out, info = decontaminate(pool([BASE]), DecontaminateSettings(eval_sets=[{**gone, "optional": True}]))
    assert out["drop_reason"] == [""] and "skipped" in next(iter(info["eval_sets"].values()))


def test_real_eval_sets_catch_math500_questions_in_the_pool():
    if not EVAL.is_dir():
        pytest.skip(f"real eval sets {EVAL} are absent")
    first = json.loads((EVAL / "math500.jsonl").read_text().splitlines()[0])
    settings = DecontaminateSettings(eval_sets=[{"name": "math500", "path": str(EVAL / "math500.jsonl"),
                                                 "id": "unique_id"}])  # fmt: skip
    out, _ = decontaminate(pool(["Reformatted: " + first["problem"].replace("  ", " "), BASE]), settings)
    assert out["drop_reason"][0].startswith("contaminated: shares a 8-gram with math500:")
    assert out["drop_reason"][1] == ""


def test_quality_rules_are_data_with_exemptions_and_counts():
    questions = ["Look: [asy]draw((0,0)--(1,1));[/asy] Find x.", "AIME [asy]draw(unitcircle);[/asy] Find r.",
                 "See ![fig](a.png) and find y.", "Plain question about primes?", "2. Then find z."]  # fmt: skip
    sources = ["math", "aime-1983", "math", "math", "math"]
    settings = QualitySettings(
        rules=[
            QualityRule("asymptote figure", pattern=r"\[asy\]", except_sources="aime"),
            QualityRule("image reference", pattern=r"!\[[^\]]*\]\("),
            QualityRule("inconsistent numbering", check="inconsistent_numbering"),
        ]
    )
    out, info = quality(pool(questions, sources), settings)
    assert out["drop_reason"] == ["rule: asymptote figure", "", "rule: image reference", "",
                                  "rule: inconsistent numbering"]  # fmt: skip
    assert info["rule_counts"] == {"asymptote figure": 1, "image reference": 1, "inconsistent numbering": 1}


def test_required_fields_name_the_failure():
    data = pool(["q1", "q2"]).add_column("thinking_trajectories", [["trace"], []])
    data = data.add_column("trace_error", ["", "teacher failed after 3 tries: HTTP 503"])
    out, _ = quality(data, QualitySettings(required=["thinking_trajectories"]))
    assert out["drop_reason"] == ["", "missing field: thinking_trajectories (teacher failed after 3 tries: HTTP 503)"]
    with pytest.raises(CurateError, match="required column"):
        quality(pool(["q"]), QualitySettings(required=["attempt"]))
    with pytest.raises(CurateError, match="invalid regular expression"):
        QualityRule("bad", pattern="(")


def test_numbering_check():
    assert not inconsistent_numbering("Solve:\n(1) x+1=2\n(2) y-1=0")
    assert inconsistent_numbering("Solve:\n(1) x+1=2\n(3) y-1=0")
    assert inconsistent_numbering("3. Find the area.")
    assert not inconsistent_numbering("Find the area of a 3.5 by 2 rectangle.")


def test_cap_is_seeded_and_keeps_pool_order():
    data = pool([f"question {i}" for i in range(50)])
    first, _ = cap(data, CapSettings(size=10, seed=3))
    again, _ = cap(data, CapSettings(size=10, seed=3))
    assert first["drop_reason"] == again["drop_reason"]
    assert sum(1 for r in first["drop_reason"] if not r) == 10
    other, _ = cap(data, CapSettings(size=10, seed=4))
    assert other["drop_reason"] != first["drop_reason"]
