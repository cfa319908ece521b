"""Budget forcing over an OpenAI-compatible `/v1/completions` endpoint.

Prompts go as token ids and completions come back as token ids (vLLM's `return_token_ids`), so
nothing is re-tokenised. Two ways to force:

- `forcing="processor"`: the server is vLLM with `decode.vllm:VLLMBudgetForcingProcessor` loaded
  (`vllm serve MODEL --logits-processors decode.vllm:VLLMBudgetForcingProcessor`); each request
  carries its budget in `vllm_xargs` and is forced in one pass. The client checks once that the
  processor is there (a server without it would silently ignore the budget).
- `forcing="reprompt"`: any server that takes token-id prompts and `stop_token_ids` and returns
  token ids: s1's re-prompt loop (`decode.reprompt`) over HTTP.

Every request states every sampling setting, the neutral value included for what `Sampling` leaves
off (no penalty, no top-k, no min-p), because a server fills the fields a request omits with its own
defaults: `vllm serve` reads them from the model's `generation_config.json`. What comes back is
checked before it is used: token ids must be integers inside the tokenizer's vocabulary, and the
server must end a completion exactly where the client's end-of-sequence ids say it ends.

Requests run concurrently (a thread pool). Each attempt has a deadline, `timeout_s`, that covers
everything from connecting to the last byte of the answer, so a server that trickles its answer
cannot hold the client past it, and each request has a total deadline, `deadline_s`, that its retries
and the waits between them count against. Attempts are retried with exponential backoff on connection
errors, timeouts, 429 and 5xx answers, a bounded number of times; other errors and malformed answers
raise `ServerError` with the server's message. Nothing waits in silence: every retry, and every
`progress_s` seconds a request stays unanswered, a line goes to the `decode.openai_client` logger
(stderr by default) with the time waited so far.

An answer is read as it arrives and refused once it is larger than any answer to the request could
be (a bound from `max_tokens` and the prompt's length; `answer_bound`), so a runaway server cannot
fill the client's memory.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from ..reprompt.loop import Continuation, Engine, reprompt_generate
from ..rules.budget import Budget
from ..rules.formats import FormatTokens
from ..rules.replay import replay
from ..rules.request_args import FORMAT_KEY, to_request_args
from ..rules.sampling import Sampling
from ..rules.state import BudgetSummary

logger = logging.getLogger("decode.openai_client")

RETRY_STATUS = {408, 429, 500, 502, 503, 504}
# The largest answer a request can have: a fixed allowance (the JSON around the choice, usage, an error
# message) and, per generated token, room for its id, its text JSON-escaped (a long token of control
# characters) and its top log-probability entry; per prompt token, its id echoed back (vLLM's
# `return_token_ids` returns `prompt_token_ids`).
ANSWER_BASE_BYTES = 2**20
ANSWER_BYTES_PER_TOKEN = 4096
ANSWER_BYTES_PER_PROMPT_TOKEN = 16
# What the request sets where `Sampling` has nothing to say, in vLLM's convention for "off"
# (`vllm.entrypoints.openai` fills exactly these fields from the model's generation config).
NEUTRAL = {"repetition_penalty": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0}


class ServerError(RuntimeError):
    """The server refused a request, answered something unusable, or stayed unreachable."""


class ClientSettingsError(ValueError):
    """A client setting (`timeout_s`, `max_retries`, ...) with a value that cannot work."""


def answer_bound(max_tokens: int | None, prompt_tokens: int = 0) -> int:
    """The most bytes an answer to a request for `max_tokens` tokens may take (None: no generation)."""
    return (
        ANSWER_BASE_BYTES + ANSWER_BYTES_PER_TOKEN * (max_tokens or 0) + ANSWER_BYTES_PER_PROMPT_TOKEN * prompt_tokens
    )


class _TooLarge(Exception):
    def __init__(self, size: int | None, bound: int):
        super().__init__(size, bound)
        self.size = size  # the Content-Length the server announced, or None: it was sending more than the bound
        self.bound = bound


class _Compressed(Exception):
    def __init__(self, encoding: str):
        super().__init__(encoding)
        self.encoding = encoding


@dataclass
class Completion:
    """One answer: the generated token ids and, when asked for, the model's top choice at each."""

    token_ids: list[int]
    top_ids: list[int] | None
    finish_reason: str | None


# -- a deadline for each attempt, from connecting to the last byte ------------------------------

_this_thread = threading.local()  # .deadline: time.monotonic() by which this thread's attempt must end
# .max_bytes: the most bytes this thread's answer may take


def _time_left(timeout: float | None) -> float | None:
    """The socket timeout for the next operation: the phase's own, cut to what the deadline leaves."""
    deadline = getattr(_this_thread, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write stops at the current attempt's deadline."""

    def __init__(self, stream: httpcore.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _time_left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _time_left(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, _time_left(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(host, port, _time_left(timeout), local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._backend.connect_unix_socket(path, _time_left(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _read_bounded(answer: httpcore.Response, bound: int | None) -> bytes:
    """The body, read as it arrives; `_TooLarge` as soon as it is (or announces to be) over `bound` bytes."""
    headers = {key.lower(): value for key, value in answer.headers}
    encoding = headers.get(b"content-encoding", b"identity").decode("latin-1").strip().lower()
    if encoding != "identity":  # asked for none: a compressed body could expand past any bound
        raise _Compressed(encoding)
    length = headers.get(b"content-length", b"").strip()
    if bound is not None and length.isdigit() and int(length) > bound:
        raise _TooLarge(int(length), bound)
    chunks, size = [], 0
    for chunk in answer.iter_stream():
        size += len(chunk)
        if bound is not None and size > bound:
            raise _TooLarge(None, bound)
        chunks.append(chunk)
    return b"".join(chunks)


class _DeadlineTransport(httpx.BaseTransport):
    """httpx over an httpcore pool whose connections keep the deadline; the body is read up to the
    thread's bound, and a connection whose answer was refused is closed, not reused."""

    def __init__(self) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=None, network_backend=_DeadlineBackend()
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = httpcore.URL(
            scheme=request.url.raw_scheme, host=request.url.raw_host, port=request.url.port, target=request.url.raw_path
        )
        core = httpcore.Request(
            request.method, url, headers=request.headers.raw, content=request.read(), extensions=request.extensions
        )
        try:
            answer = self._pool.handle_request(core)
            try:
                content = _read_bounded(answer, getattr(_this_thread, "max_bytes", None))
            finally:
                answer.close()
        except httpcore.TimeoutException as err:
            raise httpx.TimeoutException(str(err) or type(err).__name__, request=request) from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as err:
            raise _TransportError(type(err).__name__, str(err), request) from None
        return httpx.Response(answer.status, headers=answer.headers, content=content, request=request)

    def close(self) -> None:
        self._pool.close()


class _TransportError(httpx.TransportError):
    def __init__(self, kind: str, message: str, request: httpx.Request):
        super().__init__(message, request=request)
        self.kind = kind  # ConnectError, ReadError, RemoteProtocolError, ...


# -- what the client is waiting for, said while it waits ---------------------------------------------


@dataclass
class _Request:
    where: str
    start: float
    attempt: int = 1


class _Waiting:
    """The requests in flight, and a thread that says every `progress_s` seconds how long the oldest
    has waited, while any has waited that long (it runs while requests are in flight)."""

    def __init__(self, base_url: str, progress_s: float | None, deadline_s: float):
        self.base_url = base_url
        self.progress_s = progress_s
        self.deadline_s = deadline_s
        self.answered = 0
        self._requests: dict[int, _Request] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def track(self, where: str) -> Iterator[_Request]:
        request = _Request(where, time.monotonic())
        with self._lock:
            self._requests[id(request)] = request
            if self.progress_s is not None and self._thread is None:
                self._thread = threading.Thread(target=self._report, name="openai-client-progress", daemon=True)
                self._thread.start()
        answered = False
        try:
            yield request
            answered = True
        finally:
            with self._lock:
                del self._requests[id(request)]
                self.answered += answered

    def _report(self) -> None:
        assert self.progress_s is not None
        while not self._stop.wait(self.progress_s):
            with self._lock:
                requests = list(self._requests.values())
                answered = self.answered
                if not requests:
                    self._thread = None
                    return
            now = time.monotonic()
            waited = [r for r in requests if now - r.start >= self.progress_s]
            if not waited:
                continue
            oldest = min(waited, key=lambda r: r.start)
            logger.warning(
                "%s: waiting for the server: %d request(s) unanswered, the oldest (%s) for %.0f s, attempt %d; "
                "%d answered so far; a request gives up after deadline_s=%g",
                self.base_url, len(requests), oldest.where, now - oldest.start, oldest.attempt, answered,
                self.deadline_s,
            )  # fmt: skip

    def stop(self) -> None:
        self._stop.set()


# -- the client ----------------------------------------------------------------------------------


def _number(name: str, value: Any, *, low: float, low_ok: bool, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        expected = "an integer" if integer else "a finite number"
        raise ClientSettingsError(f"client setting {name} must be {expected}, got {value!r}")
    if value < low or (value == low and not low_ok):
        raise ClientSettingsError(f"client setting {name} must be {'>=' if low_ok else '>'} {low}, got {value!r}")


class CompletionsClient:
    """A client of one server's `/v1/completions`.

    Args:
        base_url: the server's API root, e.g. "http://127.0.0.1:8000/v1".
        model: the served model name (default: the first one `/v1/models` lists).
        api_key: sent as a bearer token when given.
        timeout_s: the most one attempt of a request may take, from connecting to the answer's last
            byte (a server that sends its answer slowly is cut off there).
        deadline_s: the most one request may take, all its attempts and the waits between them
            included (default: `timeout_s`, so an attempt that times out is not retried, and quick
            failures are retried within the same time).
        max_retries: further attempts after a retryable failure (0: none).
        backoff_s: the first retry waits this long, each next one twice as long.
        concurrency: requests in flight at once.
        vocab_size: the tokenizer's vocabulary size; a returned token id at or above it is refused
            (`server_generate` is given it by `decode.generate`).
        progress_s: while a request is unanswered, a line every this many seconds says how long it
            has waited (None: no such lines; retries are logged regardless).
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        deadline_s: float | None = None,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        concurrency: int = 8,
        vocab_size: int | None = None,
        progress_s: float | None = 30.0,
    ):
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ClientSettingsError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        for name, value in (("model", model), ("api_key", api_key)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ClientSettingsError(f"client setting {name} must be a non-empty string, got {value!r}")
        _number("timeout_s", timeout_s, low=0, low_ok=False)
        if deadline_s is not None:
            _number("deadline_s", deadline_s, low=0, low_ok=False)
        if progress_s is not None:
            _number("progress_s", progress_s, low=0, low_ok=False)
        _number("max_retries", max_retries, low=0, low_ok=True, integer=True)
        _number("backoff_s", backoff_s, low=0, low_ok=True)
        _number("concurrency", concurrency, low=1, low_ok=True, integer=True)
        if vocab_size is not None:
            _number("vocab_size", vocab_size, low=1, low_ok=True, integer=True)
        self.base_url = base_url.rstrip("/")
        headers = {"Accept-Encoding": "identity"}  # a compressed answer could expand past any bound
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.timeout_s = float(timeout_s)
        self.deadline_s = float(deadline_s if deadline_s is not None else timeout_s)
        self.http = httpx.Client(timeout=timeout_s, headers=headers, transport=_DeadlineTransport())
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.concurrency = concurrency
        self.vocab_size = vocab_size
        self._model = model
        self._has_processor: bool | None = None
        self._waiting = _Waiting(self.base_url, progress_s, self.deadline_s)

    def close(self) -> None:
        self._waiting.stop()
        self.http.close()

    def __enter__(self) -> CompletionsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def model(self) -> str:
        if self._model is None:
            answer = self._request("GET", "/models", max_bytes=answer_bound(None))
            listed = answer.get("data") if isinstance(answer, dict) else None
            if not listed or not isinstance(listed[0], dict) or not isinstance(listed[0].get("id"), str):
                raise ServerError(f"{self.base_url}/models lists no model; pass model=")
            self._model = listed[0]["id"]
        return self._model

    def _send(self, method: str, url: str, body: dict[str, Any] | None, end: float, max_bytes: int) -> httpx.Response:
        """One attempt, ending by `end` and under a size bound (kept per thread: `complete_many` runs
        one attempt per thread)."""
        _this_thread.deadline = end
        _this_thread.max_bytes = max_bytes
        try:
            return self.http.request(method, url, json=body)
        finally:
            _this_thread.deadline = _this_thread.max_bytes = None

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, label: str = "", max_bytes: int
    ) -> dict[str, Any]:
        """One request's answer, retried as the settings say, within its total deadline."""
        url = self.base_url + path
        where = f"{url}, {label}" if label else url
        start = time.monotonic()
        end = start + self.deadline_s
        with self._waiting.track(where) as waiting:
            for attempt in range(self.max_retries + 1):
                waiting.attempt = attempt + 1
                attempt_end = min(time.monotonic() + self.timeout_s, end)
                try:
                    response = self._send(method, url, body, attempt_end, max_bytes)
                except httpx.TimeoutException:
                    limit = f"timeout_s={self.timeout_s:g} s"
                    if attempt_end == end:
                        limit = f"the request's deadline_s={self.deadline_s:g} s"
                    head, tail = f"Timeout: no complete answer within {limit}, ", ""
                except _TooLarge as err:
                    size = f"{err.size} bytes" if err.size is not None else f"more than {err.bound} bytes"
                    raise ServerError(
                        f"{where}: the answer is {size}, over the {err.bound} bytes any answer to this request "
                        "can take (from its max_tokens and prompt length): refused without reading the rest"
                    ) from None
                except _Compressed as err:
                    raise ServerError(
                        f"{where}: the answer is compressed ({err.encoding}) although the client asked for none: "
                        "its size cannot be bounded before it is expanded"
                    ) from None
                except httpx.TransportError as err:
                    kind = getattr(err, "kind", type(err).__name__)
                    head, tail = f"{kind} after ", f": {err}"
                else:
                    if response.status_code == 200:
                        try:
                            return response.json()
                        except ValueError:
                            raise ServerError(f"{url}: answer is not JSON: {response.text[:200]!r}") from None
                    if response.status_code not in RETRY_STATUS:
                        raise ServerError(f"{url}: HTTP {response.status_code}: {_message(response)}")
                    head, tail = f"HTTP {response.status_code}: {_message(response)} (after ", ")"
                now = time.monotonic()
                pause = self.backoff_s * 2**attempt
                failure = f"{head}{attempt + 1} attempt(s) in {now - start:.1f} s{tail}"
                if attempt == self.max_retries:
                    raise ServerError(f"{url}: {failure} (max_retries={self.max_retries})")
                if now + pause >= end:
                    raise ServerError(f"{url}: {failure}; no time left for another attempt within the request's "
                                      f"deadline_s={self.deadline_s:g} s")  # fmt: skip
                logger.warning(
                    "%s: %s; retry %d of %d in %.1f s (%.0f s left of deadline_s=%g)",
                    where, failure[:300], attempt + 1, self.max_retries, pause, end - now, self.deadline_s,
                )  # fmt: skip
                time.sleep(pause)
        raise AssertionError("unreachable")

    def complete(
        self,
        prompt_ids: Sequence[int],
        max_tokens: int,
        sampling: Sampling,
        *,
        seed: int | None = None,
        stop_token_ids: Sequence[int] = (),
        xargs: dict[str, Any] | None = None,
        top_ids: bool = False,
        label: str = "request",
        vocab_size: int | None = None,
    ) -> Completion:
        """Continue `prompt_ids` (token ids) for at most `max_tokens` tokens.

        `label` names the request in errors (e.g. "prompt 3"); `vocab_size` bounds the returned ids
        (default: the client's).
        """
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": [int(t) for t in prompt_ids],
            "max_tokens": max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,  # 0: off
            "min_p": sampling.min_p or 0.0,  # 0: off
            **NEUTRAL,
            "return_token_ids": True,
            "skip_special_tokens": False,
        }
        if seed is not None and not sampling.greedy:
            body["seed"] = seed
        if stop_token_ids:
            body["stop_token_ids"] = [int(t) for t in stop_token_ids]
        if xargs:
            body["vllm_xargs"] = xargs
        if top_ids:
            body.update(logprobs=1, return_tokens_as_token_ids=True)
        where = f"{self.base_url}/completions, {label}"
        bound = answer_bound(max_tokens, len(body["prompt"]))
        answer = self._request("POST", "/completions", body, label=label, max_bytes=bound)
        try:
            choice = answer["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise ServerError(f"{where}: no choices in the answer: {str(answer)[:200]}") from None
        if not isinstance(choice, dict):
            raise ServerError(f"{where}: a choice is not a JSON object: {str(choice)[:200]}")
        ids = choice.get("token_ids")
        if ids is None:
            raise ServerError(
                f"{where}: the server returned no token_ids: budget forcing works on token ids and needs a "
                "server that returns them (vLLM: return_token_ids)"
            )
        vocab_size = vocab_size or self.vocab_size
        ids = _checked_ids(ids, vocab_size, where, "token_ids")
        finish = choice.get("finish_reason")
        if len(ids) > max_tokens:
            raise ServerError(f"{where}: the server returned {len(ids)} tokens, more than max_tokens={max_tokens}")
        if finish == "length" and len(ids) < max_tokens:
            raise ServerError(
                f"{where}: the server stopped at its length limit after {len(ids)} of max_tokens={max_tokens} tokens "
                "(the prompt and the completion exceed its context length?)"
            )
        top = None
        if top_ids:
            top = _checked_ids(_top_ids(choice.get("logprobs"), len(ids), where), vocab_size, where, "top_logprobs")
        return Completion(ids, top, finish)

    def complete_many(self, requests: list[dict[str, Any]]) -> list[Completion]:
        """`complete(**request)` for each request, `concurrency` at a time, in order."""
        if len(requests) <= 1 or self.concurrency == 1:
            return [self.complete(**r) for r in requests]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(lambda r: self.complete(**r), requests))

    def has_processor(self) -> bool:
        """Whether the server runs the budget-forcing logits processor: it refuses a malformed format."""
        if self._has_processor is None:
            try:
                self.complete([0], 1, Sampling(), xargs={FORMAT_KEY: "__probe__"}, label="the processor probe")
                self._has_processor = False
            except ServerError as err:
                if "HTTP 400" not in str(err):
                    raise
                self._has_processor = FORMAT_KEY in str(err)
        return self._has_processor


def _checked_ids(ids: Any, vocab_size: int | None, where: str, field: str) -> list[int]:
    """`ids` if it is a list of integer token ids inside the vocabulary; otherwise a `ServerError`."""
    if not isinstance(ids, list):
        raise ServerError(f"{where}: {field} is not a list of token ids: {str(ids)[:200]}")
    for position, token in enumerate(ids):
        if isinstance(token, bool) or not isinstance(token, int):
            raise ServerError(f"{where}: {field}[{position}] = {token!r} is not an integer token id")
        if token < 0 or (vocab_size is not None and token >= vocab_size):
            bound = "" if vocab_size is None else f" (the tokenizer's vocabulary is 0..{vocab_size - 1})"
            raise ServerError(f"{where}: {field}[{position}] = {token} is not a token id{bound}")
    return ids


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    error = body.get("error", body) if isinstance(body, dict) else body
    return str(error.get("message", error) if isinstance(error, dict) else error)[:500]


def _top_ids(logprobs: Any, n: int, where: str) -> list[Any]:
    """The highest-probability token at each position, from OpenAI-style `top_logprobs` keyed 'token_id:N'."""
    tops = logprobs.get("top_logprobs") if isinstance(logprobs, dict) else None
    if not isinstance(tops, list) or len(tops) != n:
        raise ServerError(f"{where}: the server returned no top log-probabilities (return_tokens_as_token_ids)")
    ids = []
    for entry in tops:
        if not isinstance(entry, dict) or not entry:
            raise ServerError(f"{where}: malformed top log-probabilities entry: {str(entry)[:200]}")
        best = max(entry.items(), key=lambda kv: kv[1])[0]
        prefix, _, number = str(best).partition(":")
        if prefix != "token_id" or not number.lstrip("-").isdigit():
            raise ServerError(f"{where}: top log-probabilities are not keyed by token id: {best!r}")
        ids.append(int(number))
    return ids


def check_ends(
    ids: Sequence[int], finish_reason: str | None, stops: frozenset[int], eos: frozenset[int], label: str
) -> None:
    """Refuse a completion that does not end where the client's stop ids say it ends.

    `stops` are the ids the server had to stop at (end-of-sequence, and the request's
    `stop_token_ids`); `eos` the end-of-sequence ids the client knows (the tokenizer's and its
    folder's generation config). The server stops at its own end-of-sequence ids, so a stop at another
    id, or a completion that goes on past an end-of-sequence id, means the two sides disagree on which
    ids end a sequence: the error names the id.
    """
    for position, token in enumerate(ids[:-1]):
        if token in eos:
            raise ServerError(
                f"{label}: the server went on after token {token} (position {position}), an end-of-sequence id for "
                f"the client (its ids: {sorted(eos)}): the server does not stop at it; serve the model from a "
                "folder whose generation_config.json lists the same eos_token_id as the client's tokenizer folder"
            )
        if token in stops:
            raise ServerError(f"{label}: the server went on after stop token {token} (position {position}): it "
                              "ignores stop_token_ids")  # fmt: skip
    if finish_reason == "stop" and (not ids or ids[-1] not in stops):
        last = ids[-1] if ids else None
        raise ServerError(
            f"{label}: the server stopped at token {last}, which is not an end-of-sequence id for the client "
            f"(its ids: {sorted(eos)}, from the tokenizer and the generation_config.json of its folder): pass the "
            "served model's folder as the tokenizer, so both sides read the same ids"
        )


def client_engine(
    client: CompletionsClient, sampling: Sampling, eos: frozenset[int] = frozenset(), vocab_size: int | None = None
) -> Engine:
    """The re-prompt loop's engine over HTTP: one request per sequence and round, concurrently.

    `eos`: the client's end-of-sequence ids (named in errors); `vocab_size`: bounds the returned ids.
    """
    rounds = 0

    def run(requests: list[Continuation]) -> list[list[int]]:
        nonlocal rounds
        rounds += 1
        calls = [
            dict(prompt_ids=r.prompt_ids, max_tokens=r.max_tokens, sampling=sampling, seed=r.seed,
                 stop_token_ids=r.stop_token_ids, label=f"round {rounds}, sequence {i}", vocab_size=vocab_size)
            for i, r in enumerate(requests)
        ]  # fmt: skip
        answers = client.complete_many(calls)
        for call, request, done in zip(calls, requests, answers, strict=True):
            check_ends(done.token_ids, done.finish_reason, frozenset(request.stop_token_ids), eos, call["label"])
        return [done.token_ids for done in answers]

    return run


def server_generate(
    client: CompletionsClient,
    prompts: Sequence[Sequence[int]],
    tokens: FormatTokens,
    budgets: Sequence[Budget],
    max_new_tokens: Sequence[int],
    *,
    sampling: Sampling | None = None,
    seed: int | None = None,
    forcing: str = "processor",
    vocab_size: int | None = None,
) -> list[BudgetSummary]:
    """Budget-forced completions of token-id prompts (ending with the opener) on a server.

    Prompt i is seeded with `seed + i` (sampling only). `vocab_size` (the tokenizer's) bounds the
    token ids the server may return, when the client was not given one.
    """
    sampling = sampling or Sampling()
    if forcing == "reprompt":
        engine = client_engine(client, sampling, tokens.eos, vocab_size)
        return reprompt_generate(engine, prompts, tokens, budgets, max_new_tokens, seed=seed)
    if forcing != "processor":
        raise ValueError(f"forcing must be 'processor' or 'reprompt', got {forcing!r}")
    if not client.has_processor():
        raise ServerError(
            f"{client.base_url} does not run the budget-forcing logits processor (start vLLM with "
            "--logits-processors decode.vllm:VLLMBudgetForcingProcessor), or use forcing='reprompt'"
        )
    calls = [
        dict(prompt_ids=p, max_tokens=cap, sampling=sampling, seed=None if seed is None else seed + i,
             xargs=to_request_args(tokens.format, b), top_ids=sampling.greedy, label=f"prompt {i} of the batch",
             vocab_size=vocab_size)
        for i, (p, b, cap) in enumerate(zip(prompts, budgets, max_new_tokens, strict=True))
    ]  # fmt: skip
    summaries = []
    for call, budget, cap, done in zip(calls, budgets, max_new_tokens, client.complete_many(calls), strict=True):
        check_ends(done.token_ids, done.finish_reason, tokens.eos, tokens.eos, call["label"])
        own = None if done.top_ids is None else [t == top for t, top in zip(done.token_ids, done.top_ids, strict=True)]
        summaries.append(replay(tokens, budget, cap, done.token_ids, own))
    return summaries
