"""The HTTP client says what it waits for and bounds what it takes: against a server that never
answers it logs the time waited and each retry and gives up at the request's total deadline; an
answer larger than any answer to the request could be is refused after reading no more than the
bound; a prompt of many megabytes is refused from its length in characters, before it is tokenized."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from decode import PromptError, Sampling, generate
from decode.openai_client import CompletionsClient, ServerError
from tests.conftest import tokenizer_dir
from tests.test_openai_client_faults import ScriptedServer, choice

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def silent():
    """A server that takes every request and never answers it."""
    scripted = ScriptedServer()
    release = threading.Event()

    def never(body):
        release.wait(120)
        return choice([1])

    scripted.answer = never
    yield scripted
    release.set()
    scripted.http.shutdown()
    scripted.http.server_close()


def test_waiting_and_retries_are_logged_and_retries_count_against_the_deadline(silent, caplog):
    settings = {"timeout_s": 1.0, "deadline_s": 2.5, "max_retries": 10, "backoff_s": 0.05, "progress_s": 0.3}
    caplog.set_level(logging.WARNING, logger="decode.openai_client")
    refused = pytest.raises(ServerError, match=r"Timeout: .*within the request's deadline_s=2\.5 s")
    with CompletionsClient(silent.url, model="m", **settings) as client, refused:
        client.complete([1, 2], 1, Sampling(), label="prompt 0")
    assert 2 <= len(silent.bodies) < 11  # retried, but not the 11 times max_retries allows
    lines = [record.getMessage() for record in caplog.records]
    waiting = [line for line in lines if "waiting for the server" in line]
    assert waiting and "1 request(s) unanswered, the oldest (" in waiting[0] and "prompt 0" in waiting[0]
    assert any("attempt 2" in line for line in waiting)  # the attempt it is on, and the time waited
    retries = [line for line in lines if "retry 1 of 10" in line]
    assert len(retries) == 1 and "Timeout" in retries[0] and "1 attempt(s) in " in retries[0]


@pytest.mark.slow  # a command line in a fresh interpreter, loading a tokenizer
def test_the_command_line_says_it_is_waiting(silent, tmp_path):
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "What is 3 + 4?"}\n')
    engine = {"model": "m", "timeout_s": 2, "max_retries": 0, "progress_s": 0.5}
    done = subprocess.run(
        [sys.executable, "-m", "decode", "--backend", "openai", "--forcing", "reprompt", "--model", silent.url,
         "--tokenizer", str(tokenizer_dir("qwen2.5")), "--input", "prompts.jsonl", "--output", "out.jsonl",
         "--engine-args", json.dumps(engine)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "waiting for the server: 1 request(s) unanswered" in done.stderr, done.stderr[-2000:]
    assert "error: " in done.stderr and "Timeout" in done.stderr
    assert not (tmp_path / "out.jsonl").exists()


class FloodServer:
    """Answers every request with HTTP 200 and a valid JSON body of about `size` bytes (a choice with
    as many token ids as fit) sent in 64 KiB pieces; counts what it sent before the client hung up."""

    HEAD, PIECE, TAIL = b'{"choices": [{"finish_reason": "length", "token_ids": [1', b", 1" * (2**16 // 3), b"]}]}"

    def __init__(self, size: int, *, announce: bool = True, encoding: str | None = None):
        self.pieces = (size - len(self.HEAD) - len(self.TAIL)) // len(self.PIECE)
        self.size = len(self.HEAD) + self.pieces * len(self.PIECE) + len(self.TAIL)
        self.announce, self.encoding = announce, encoding
        self.sent = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        threading.Thread(target=self.serve, daemon=True).start()

    def body(self) -> Iterator[bytes]:
        yield self.HEAD
        for _ in range(self.pieces):
            yield self.PIECE
        yield self.TAIL

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(65536)
                head, _, body = request.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(body) < length:  # read the whole request, so that closing sends no reset
                    body += conn.recv(65536)
                headers = ["HTTP/1.1 200 OK", "Content-Type: application/json", "Connection: close"]
                if self.announce:
                    headers.append(f"Content-Length: {self.size}")
                if self.encoding:
                    headers.append(f"Content-Encoding: {self.encoding}")
                try:
                    conn.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
                    for piece in self.body():
                        conn.sendall(piece)
                        self.sent += len(piece)
                except OSError:  # the client hung up
                    pass

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "no-length"])
def test_an_answer_over_the_bound_is_refused_without_being_read_whole(announce):
    flood = FloodServer(200 * 2**20, announce=announce)  # the bound for 4 tokens: a little over 1 MiB
    message = r"prompt 0: the answer is (\d{9} bytes|more than \d+ bytes), over the \d+ bytes any answer"
    try:
        refused = pytest.raises(ServerError, match=message)
        with CompletionsClient(flood.url, model="m", timeout_s=60) as client, refused:
            client.complete([1, 2], 4, Sampling(), label="prompt 0")
    finally:
        flood.close()
    # What the server got out before the client hung up: the bound, and what socket buffers hold.
    assert flood.sent < 32 * 2**20, flood.sent


def test_a_compressed_answer_is_refused():
    flood = FloodServer(2**20, encoding="gzip")
    try:
        refused = pytest.raises(ServerError, match=r"the answer is compressed \(gzip\) although the client asked")
        with CompletionsClient(flood.url, model="m", timeout_s=60) as client, refused:
            client.complete([1], 4, Sampling())
    finally:
        flood.close()


def test_a_huge_prompt_is_refused_from_its_length_before_it_is_tokenized(tokenizers, monkeypatch):
    tokenizer = tokenizers["s1"]  # Qwen2.5: its longest vocabulary entry has 128 characters
    tokenize = tokenizer.encode

    def encode(text, *args, **kwargs):
        assert len(text) < 10**6, f"a prompt of {len(text)} characters was tokenized whole"
        return tokenize(text, *args, **kwargs)

    monkeypatch.setattr(tokenizer, "encode", encode)
    server = ScriptedServer()
    try:
        with pytest.raises(PromptError, match=r"prompt 1: has 210000\d\d characters: more than 131072 tokens"):
            generate(server.url, tokenizer, ["Hi", "x" * 21_000_000], backend="openai", forcing="reprompt",
                     engine_args={"model": "m"}, max_new_tokens=4)  # fmt: skip
    finally:
        server.http.shutdown()
        server.http.server_close()
    assert server.bodies == []  # nothing was sent


def test_more_tokens_than_max_tokens_are_refused():
    server = ScriptedServer()
    server.answer = lambda body: choice([5] * 7)
    refused = pytest.raises(ServerError, match=r"request: the server returned 7 tokens, more than max_tokens=4")
    try:
        with CompletionsClient(server.url, model="m") as client, refused:
            client.complete([1], 4, Sampling())
    finally:
        server.http.shutdown()
        server.http.server_close()
