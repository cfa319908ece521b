"""Budget forcing over an OpenAI-compatible `/v1/completions` endpoint.

Prompts go as token ids and completions come back as token ids (vLLM's `return_token_ids`), so
nothing is re-tokenised. Two ways to force:

- `forcing="processor"`: the server is vLLM with `decode.vllm:VLLMBudgetForcingProcessor` loaded
  (`vllm serve MODEL --logits-processors decode.vllm:VLLMBudgetForcingProcessor`); each request
  carries its budget in `vllm_xargs` and is forced in one pass. The client checks once that the
  processor is there (a server without it would silently ignore the budget).
- `forcing="reprompt"`: any server that takes token-id prompts and `stop_token_ids` and returns
  token ids: s1's re-prompt loop (`decode.reprompt`) over HTTP.

Requests run concurrently (a thread pool), each under a timeout, retried with exponential backoff
on connection errors, timeouts, 429 and 5xx answers, a bounded number of times; other errors and
malformed answers raise `ServerError` with the server's message.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from .budget import Budget
from .formats import FormatTokens
from .replay import replay
from .reprompt import Continuation, Engine, reprompt_generate
from .request_args import FORMAT_KEY, to_request_args
from .sampling import Sampling
from .state import BudgetSummary

RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class ServerError(RuntimeError):
    """The server refused a request, answered something unusable, or stayed unreachable."""


@dataclass
class Completion:
    """One answer: the generated token ids and, when asked for, the model's top choice at each."""

    token_ids: list[int]
    top_ids: list[int] | None
    finish_reason: str | None


class CompletionsClient:
    """A client of one server's `/v1/completions`.

    Args:
        base_url: the server's API root, e.g. "http://127.0.0.1:8000/v1".
        model: the served model name (default: the first one `/v1/models` lists).
        api_key: sent as a bearer token when given.
        timeout_s: per request (connect and read).
        max_retries: further attempts after a retryable failure (0: none).
        backoff_s: the first retry waits this long, each next one twice as long.
        concurrency: requests in flight at once.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        concurrency: int = 8,
    ):
        if max_retries < 0 or concurrency < 1 or timeout_s <= 0:
            raise ValueError("max_retries must be >= 0, concurrency >= 1 and timeout_s > 0")
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(timeout=timeout_s, headers=headers)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.concurrency = concurrency
        self._model = model
        self._has_processor: bool | None = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> CompletionsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def model(self) -> str:
        if self._model is None:
            listed = self._request("GET", "/models").get("data") or []
            if not listed:
                raise ServerError(f"{self.base_url}/models lists no model; pass model=")
            self._model = listed[0]["id"]
        return self._model

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self.base_url + path
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = self.http.request(method, url, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as err:
                if last:
                    raise ServerError(f"{url}: {type(err).__name__} after {attempt + 1} attempt(s): {err}") from None
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError:
                        raise ServerError(f"{url}: answer is not JSON: {response.text[:200]!r}") from None
                if response.status_code not in RETRY_STATUS or last:
                    raise ServerError(f"{url}: HTTP {response.status_code}: {_message(response)}")
            time.sleep(self.backoff_s * 2**attempt)
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
    ) -> Completion:
        """Continue `prompt_ids` (token ids) for at most `max_tokens` tokens."""
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": [int(t) for t in prompt_ids],
            "max_tokens": max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "return_token_ids": True,
            "skip_special_tokens": False,
        }
        if sampling.top_k:
            body["top_k"] = sampling.top_k
        if sampling.min_p is not None:
            body["min_p"] = sampling.min_p
        if seed is not None and not sampling.greedy:
            body["seed"] = seed
        if stop_token_ids:
            body["stop_token_ids"] = [int(t) for t in stop_token_ids]
        if xargs:
            body["vllm_xargs"] = xargs
        if top_ids:
            body.update(logprobs=1, return_tokens_as_token_ids=True)
        answer = self._request("POST", "/completions", body)
        try:
            choice = answer["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise ServerError(f"{self.base_url}/completions: no choices in the answer: {str(answer)[:200]}") from None
        ids = choice.get("token_ids")
        if ids is None:
            raise ServerError(
                f"{self.base_url}/completions returned no token_ids: budget forcing works on token ids and needs a "
                "server that returns them (vLLM: return_token_ids)"
            )
        top = _top_ids(choice.get("logprobs"), len(ids)) if top_ids else None
        return Completion([int(t) for t in ids], top, choice.get("finish_reason"))

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
                self.complete([0], 1, Sampling(), xargs={FORMAT_KEY: "__probe__"})
                self._has_processor = False
            except ServerError as err:
                if "HTTP 400" not in str(err):
                    raise
                self._has_processor = FORMAT_KEY in str(err)
        return self._has_processor


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    error = body.get("error", body) if isinstance(body, dict) else body
    return str(error.get("message", error) if isinstance(error, dict) else error)[:500]


def _top_ids(logprobs: dict[str, Any] | None, n: int) -> list[int]:
    """The highest-probability token at each position, from OpenAI-style `top_logprobs` keyed 'token_id:N'."""
    tops = (logprobs or {}).get("top_logprobs")
    if not tops or len(tops) != n:
        raise ServerError("the server returned no top log-probabilities (return_tokens_as_token_ids)")
    ids = []
    for entry in tops:
        best = max(entry.items(), key=lambda kv: kv[1])[0]
        if not best.startswith("token_id:"):
            raise ServerError(f"top log-probabilities are not keyed by token id: {best!r}")
        ids.append(int(best.split(":", 1)[1]))
    return ids


def client_engine(client: CompletionsClient, sampling: Sampling) -> Engine:
    """The re-prompt loop's engine over HTTP: one request per sequence and round, concurrently."""

    def run(requests: list[Continuation]) -> list[list[int]]:
        calls = [
            dict(prompt_ids=r.prompt_ids, max_tokens=r.max_tokens, sampling=sampling, seed=r.seed,
                 stop_token_ids=r.stop_token_ids)
            for r in requests
        ]  # fmt: skip
        return [c.token_ids for c in client.complete_many(calls)]

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
) -> list[BudgetSummary]:
    """Budget-forced completions of token-id prompts (ending with the opener) on a server.

    Prompt i is seeded with `seed + i` (sampling only).
    """
    sampling = sampling or Sampling()
    if forcing == "reprompt":
        return reprompt_generate(client_engine(client, sampling), prompts, tokens, budgets, max_new_tokens, seed=seed)
    if forcing != "processor":
        raise ValueError(f"forcing must be 'processor' or 'reprompt', got {forcing!r}")
    if not client.has_processor():
        raise ServerError(
            f"{client.base_url} does not run the budget-forcing logits processor (start vLLM with "
            "--logits-processors decode.vllm:VLLMBudgetForcingProcessor), or use forcing='reprompt'"
        )
    calls = [
        dict(prompt_ids=p, max_tokens=cap, sampling=sampling, seed=None if seed is None else seed + i,
             xargs=to_request_args(tokens.format, b), top_ids=sampling.greedy)
        for i, (p, b, cap) in enumerate(zip(prompts, budgets, max_new_tokens, strict=True))
    ]  # fmt: skip
    summaries = []
    for budget, cap, done in zip(budgets, max_new_tokens, client.complete_many(calls), strict=True):
        own = None if done.top_ids is None else [t == top for t, top in zip(done.token_ids, done.top_ids, strict=True)]
        summaries.append(replay(tokens, budget, cap, done.token_ids, own))
    return summaries
