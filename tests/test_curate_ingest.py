"""Ingest: every file of the real pool into one schema; bad rows named by file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate import CurateError, load_recipe
from curate.ingest import SourceSpec, ingest

ROOT = Path(__file__).resolve().parents[1]
POOL = ROOT.parent / "shared" / "data" / "pool"
DEFAULT_RECIPE = ROOT / "recipes" / "curate" / "default.yaml"


def real_pool_sources() -> list[SourceSpec]:
    if not POOL.is_dir():
        pytest.skip(f"real pool {POOL} is absent (../shared is not beside the project)")
    sources = load_recipe(DEFAULT_RECIPE).sources
    for spec in sources:
        spec.path = str(ROOT / spec.path) if spec.path and not Path(spec.path).is_absolute() else spec.path
    return sources


def count_rows(path: Path) -> int:
    if path.suffix == ".json":
        return len(json.loads(path.read_text()))
    if path.suffix == ".parquet":
        import datasets

        return len(datasets.Dataset.from_parquet(str(path)))
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def test_default_recipe_covers_every_pool_file():
    sources = real_pool_sources()
    named = {Path(s.path).resolve() for s in sources}
    on_disk = {p.resolve() for p in POOL.rglob("*") if p.suffix in (".json", ".jsonl", ".parquet")}
    assert on_disk == named


def test_real_pool_ingests_every_row_into_one_schema():
    sources = real_pool_sources()
    data, info = ingest(sources)
    expected = sum(count_rows(Path(s.path)) for s in sources)
    assert len(data) == expected > 15000
    assert all(s["skipped"] == 0 for s in info["sources"].values())
    assert len(set(data["id"])) == len(data)
    rows = {r["id"]: r for r in data.to_list()}
    # AGIEval multiple choice: options lettered in the question, the label is the gold letter.
    first = json.loads((POOL / "agieval" / "aqua-rat.jsonl").read_text().splitlines()[0])
    row = rows["agieval-aqua-rat:0"]
    assert row["kind"] == "choice" and row["answer"] == first["label"] and row["letters"] == "ABCDE"
    assert "\nA) 5(√3 + 1)\nB) 6(√3 + √2)" in row["question"] and "(A)" not in row["question"]
    assert row["solution"].startswith("Explanation")
    lsat = next(r for r in data.to_list() if r["source"] == "agieval-lsat-rc")
    assert lsat["question"].index("\n\n") > 200  # the passage comes first
    math = rows["agieval-math:0"]
    assert math["kind"] == "math" and math["answer"] == "(3,4]" and math["letters"] == ""
    omni = json.loads(next(r["metadata"] for r in data.to_list() if r["source"] == "omni-math"))
    assert isinstance(omni["domain"], list)
    assert rows["s1k:0"]["solution"] and rows["s1k:0"]["answer"] == ""
    assert rows["s1k-1.1-head:0"]["question"].startswith("Let  $a,b,A,B$")


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"q": ""}, "line 2: field 'q' is missing or empty"),
        ({"x": "no question"}, "line 2: field 'q' is missing or empty"),
        ({"q": ["a", "list"]}, "line 2: field 'q': expected text, got list"),
        ("{not json", "line 2: not valid JSON"),
        ({"q": "Which?", "opts": ["(A)1", "(B)2"], "lab": "C"}, "line 2: field 'lab': expected one of the letters AB"),
    ],
)
def test_bad_rows_are_named_by_file_line_and_field(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"q": "fine"}, row])
    spec = SourceSpec(name="bad", path=str(path), question="q", options="opts", label="lab")
    with pytest.raises(CurateError, match=message) as err:
        ingest([spec])
    assert str(path) in str(err.value)


def test_skip_mode_counts_bad_rows(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [{"q": "one"}, {"q": 3.0}, {"q": ""}, "oops", {"q": "two"}])
    data, info = ingest([SourceSpec(name="m", path=str(path), question="q", on_error="skip")])
    assert data["question"] == ["one", "3", "two"]
    assert info["sources"]["m"]["skipped"] == 2
    assert any("line 3" in e for e in info["sources"]["m"]["errors"])


def test_duplicate_ids_and_missing_files_are_refused(tmp_path):
    path = write_jsonl(tmp_path / "dup.jsonl", [{"id": 1, "q": "a"}, {"id": 1, "q": "b"}])
    with pytest.raises(CurateError, match="duplicate id 'dup:1'"):
        ingest([SourceSpec(name="dup", path=str(path), question="q", id="id")])
    with pytest.raises(CurateError, match="does not exist"):
        ingest([SourceSpec(name="gone", path=str(tmp_path / "gone.jsonl"))])
