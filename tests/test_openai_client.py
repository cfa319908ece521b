"""The HTTP client backend against a small loopback server of its own (a transformers model behind
`/v1/completions`): the re-prompt loop over HTTP, retries, timeouts and clear errors. The same
client against a real `vllm serve` is in tests/test_vllm_serve.py."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from decode import Budget, generate, get_format
from decode.openai_client import CompletionsClient, ServerError
from tests.test_hf_greedy import BUDGETS, CAP, PROMPTS, check


class LoopbackServer:
    """`/v1/models` and greedy `/v1/completions` on token ids, like vLLM's; failures on demand."""

    def __init__(self, model, eos: int):
        self.model, self.eos = model, eos
        self.lock = threading.Lock()
        self.fail_next: list[int] = []  # HTTP statuses to answer before serving normally
        self.delay_s = 0.0
        self.token_ids = True
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.reply(200, {"data": [{"id": "tiny"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests += 1
                    status = server.fail_next.pop(0) if server.fail_next else 200
                time.sleep(server.delay_s)
                if status != 200:
                    return self.reply(status, {"error": {"message": f"injected failure {status}"}})
                if body.get("temperature", 1.0) != 0:
                    return self.reply(400, {"error": {"message": "this test server decodes greedily only"}})
                stops = body.get("stop_token_ids", [])
                ids = server.complete(body["prompt"], body["max_tokens"], stops)
                stopped = bool(ids) and ids[-1] in {*stops, server.eos}
                choice = {"text": "", "finish_reason": "stop" if stopped else "length"}
                if server.token_ids:
                    choice["token_ids"] = ids
                self.reply(200, {"choices": [choice]})

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/v1"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @torch.no_grad()
    def complete(self, prompt: list[int], max_tokens: int, stops: list[int]) -> list[int]:
        with self.lock:
            out = self.model.generate(
                input_ids=torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=max_tokens,
                do_sample=False,
                eos_token_id=sorted({*stops, self.eos}),
                pad_token_id=self.eos,
            )
        return out[0, len(prompt) :].tolist()


@pytest.fixture(scope="module")
def server(greedy_models):
    model = greedy_models["s1"]
    loopback = LoopbackServer(model, model.generation_config.eos_token_id)
    yield loopback
    loopback.http.shutdown()


@pytest.mark.slow
def test_reprompt_loop_over_http_matches_the_adapter(server, greedy_models, tokenizers):
    model, tokenizer, fmt = greedy_models["s1"], tokenizers["s1"], get_format("s1")
    kwargs = dict(format=fmt, budget=BUDGETS[8:], max_new_tokens=CAP)
    with CompletionsClient(server.url, concurrency=4) as client:
        results = generate(client, tokenizer, PROMPTS, backend="openai", forcing="reprompt", **kwargs)
    check(results, generate(model, tokenizer, PROMPTS, **kwargs))
    assert sum(r.waits for r in results) > 0


def test_retries_are_bounded_and_errors_name_the_cause(server, greedy_models, tokenizers):
    tokenizer = tokenizers["s1"]
    kwargs = dict(budget=Budget(max_thinking_tokens=2, max_answer_tokens=1))
    with CompletionsClient(server.url, max_retries=2, backoff_s=0.01) as client:
        server.fail_next = [503, 502]  # two failures, then served: within the retries
        [result] = generate(client, tokenizer, ["Hi"], backend="openai", forcing="reprompt", **kwargs)
        [expected] = generate(greedy_models["s1"], tokenizer, ["Hi"], **kwargs)
        assert result.completion_ids == expected.completion_ids
        server.fail_next = [503, 503, 503]
        before = server.requests
        with pytest.raises(ServerError, match="HTTP 503: injected failure 503"):
            client.complete([1, 2], 1, client_sampling())
        assert server.requests - before == 3  # one attempt and two retries, no more
        server.fail_next = [400]
        with pytest.raises(ServerError, match="HTTP 400"):
            client.complete([1, 2], 1, client_sampling())
        assert not server.fail_next


def test_timeouts_missing_token_ids_and_a_server_without_the_processor(server, tokenizers):
    tokenizer = tokenizers["s1"]
    server.delay_s = 1.0
    try:
        with (
            CompletionsClient(server.url, timeout_s=0.2, max_retries=0) as client,
            pytest.raises(ServerError, match="Timeout"),
        ):
            client.complete([1, 2], 1, client_sampling())
    finally:
        server.delay_s = 0.0
    with CompletionsClient(server.url) as client:
        # A server without the logits processor ignores vllm_xargs: refused before any budget is lost.
        with pytest.raises(ServerError, match="does not run the budget-forcing logits processor"):
            generate(client, tokenizer, ["Hi"], budget=Budget(max_thinking_tokens=2), backend="openai")
        server.token_ids = False
        try:
            with pytest.raises(ServerError, match="returned no token_ids"):
                generate(client, tokenizer, ["Hi"], backend="openai", forcing="reprompt", max_new_tokens=4)
        finally:
            server.token_ids = True
    with pytest.raises(ServerError, match="ConnectError after 2 attempt"):
        CompletionsClient("http://127.0.0.1:9/v1", model="x", max_retries=1, backoff_s=0.01).complete(
            [1], 1, client_sampling()
        )
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        generate(server.url, None, ["Hi"], backend="openai")


def client_sampling():
    from decode import Sampling

    return Sampling()


def test_command_line_with_the_openai_backend(server, greedy_models, tokenizers, tmp_path):
    from decode.cli import main
    from tests.conftest import tokenizer_dir

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "What is 3 + 4?"}\n{"prompt": "Is 91 prime?", "max_thinking_tokens": 5}\n')
    out = tmp_path / "out.jsonl"
    argv = ["--backend", "openai", "--forcing", "reprompt", "--model", server.url, "--tokenizer",
            str(tokenizer_dir("qwen2.5")), "--input", str(prompts), "--output", str(out), "--min-thinking", "3",
            "--max-answer", "4", "--engine-args", '{"max_retries": 1}']  # fmt: skip
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = generate(
        greedy_models["s1"],
        tokenizers["s1"],
        ["What is 3 + 4?", "Is 91 prime?"],
        budget=[Budget(min_thinking_tokens=3, max_answer_tokens=4), Budget(5, 3, 0, 4)],
    )
    assert [r["completion_ids"] for r in rows] == [e.completion_ids for e in expected]
    bad = tmp_path / "bad.jsonl"
    argv[argv.index(str(out))] = str(bad)
    assert main([*argv[:-2], "--engine-args", "[1]"]) == 2  # not an object: refused, nothing written
    assert not bad.exists() and not bad.with_name("bad.jsonl.partial").exists()
