"""The evaluation harness on the vLLM backend: a recipe that says `backend: vllm` gives, under greedy
decoding, the same completions and verdicts as the same recipe on transformers; bad backend settings
are refused before anything loads."""

import json
import os

import pytest

from evals import RecipeError, run
from evals.recipe import recipe_from_dict
from tests.conftest import SHARED

EVAL_DATA = SHARED / "data" / "eval"


def minimal(**overrides):
    data = {
        "model": "some/model",
        "benchmarks": [{"name": "math500", "path": "x.jsonl"}],
        "methods": [{"method": "budget_forcing", "budgets": [8]}],
        "output_dir": "out",
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"backend": "tgi"}, "backend must be one of"),
        ({"forcing": "masking"}, "forcing must be one of"),
        ({"backend": "openai", "model": "http://127.0.0.1:8000/v1"}, "needs 'tokenizer'"),
        ({"engine_args": {"max_model_len": 512}}, "engine_args apply to"),
        ({"backend": "vllm", "engine_args": [1, 2]}, "engine_args expects a mapping"),
    ],
)
def test_bad_backend_settings_are_refused(overrides, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(minimal(**overrides), "r.yaml")


def test_forcing_is_part_of_the_run_fingerprint():
    processor = recipe_from_dict(minimal(backend="vllm"))
    reprompt = recipe_from_dict(minimal(backend="vllm", forcing="reprompt"))
    assert processor.fingerprint() != reprompt.fingerprint()


@pytest.mark.slow
def test_vllm_backend_gives_the_transformers_completions(s1_model_dir, tmp_path):
    pytest.importorskip("vllm", reason="vLLM is not installed (make install-vllm)")
    if not (EVAL_DATA / "math500.jsonl").exists():
        pytest.skip(f"real benchmark files not found in {EVAL_DATA}")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from decode.vllm import release_llms

    data = {
        "model": str(s1_model_dir),
        "format": "s1",
        "dtype": "float32",
        "benchmarks": [{"name": "math500", "path": str(EVAL_DATA / "math500.jsonl"), "limit": 3}],
        "methods": [
            {"method": "budget_forcing", "budgets": [4, 12]},
            {"method": "budget_forcing", "label": "wait", "num_ignore": [2], "budgets": [24]},
            {"method": "length_prompt", "mode": "exact", "budgets": [8], "forcing": True},
        ],
        "max_tokens": 40,
        "max_answer_tokens": 12,
        "grading": {"workers": 1},
    }
    runs = {}
    try:
        for backend in ("hf", "vllm"):
            extra = {"engine_args": {"max_model_len": 1024, "enforce_eager": True}} if backend == "vllm" else {}
            recipe = recipe_from_dict({**data, **extra, "backend": backend, "output_dir": str(tmp_path / backend)})
            folder = run(recipe, progress=False)
            rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
            runs[backend] = {r["key"]: (r["completion_ids"], r["correct"], r["waits"], r["forced_end"]) for r in rows}
    finally:
        release_llms()
    assert len(runs["hf"]) == 3 * 4
    assert runs["vllm"] == runs["hf"]
    assert any(waits for _, _, waits, _ in runs["hf"].values())
