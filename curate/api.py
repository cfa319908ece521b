"""Chat completions over any OpenAI-compatible HTTP API (vLLM, SGLang, a hosted API), bounded and cached.

Used by the teacher (traces), the LLM judge (difficulty) and the LLM domain classifier. Calls run in
a bounded thread pool; a call that times out, gets a 408/429/5xx, or gets a body that is not a
well-formed chat completion is retried with exponential backoff up to `max_retries` times, then
recorded as a failure with its reason: the run goes on and the report counts failures. `timeout_s`
bounds each wait for the server, not a whole reply: a server that sends a byte now and then could hold
a call for ever, so `deadline_s` bounds a call from its first try to its last byte, and
`max_reply_bytes` bounds what one reply may hold. Successful
results are cached by (model, messages, settings) and committed one by one, so a killed run resumes
where it stopped; failures are not cached, so a rerun tries them again.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from .cache import CallCache
from .schema import CurateError

RETRY_STATUS = {408, 409, 425, 429}
THINK_BLOCK = re.compile(r"^\s*<think>(.*?)</think>\s*(.*)$", re.DOTALL)


@dataclass
class ApiSettings:
    """An OpenAI-compatible chat endpoint and how to call it.

    Attributes:
        base_url: the API root, e.g. "http://localhost:8000/v1" (POSTs go to base_url + "/chat/completions").
        model: the model name the server knows.
        api_key_env: environment variable holding the API key (None or unset: no key sent).
        concurrency: requests in flight at once.
        timeout_s: time allowed per request.
        max_retries: retries after the first try before a call is recorded as failed.
        backoff_s: first wait before a retry; doubles each retry (with jitter), up to max_backoff_s.
        max_backoff_s: the longest wait between tries.
        deadline_s: the most one call may take, every try and wait between them included (None: no
            bound beyond the tries); checked between the chunks of a reply, so a slow trickle ends too.
        max_reply_bytes: the largest reply body accepted; a larger one fails the call at once (a server
            that sends it will send it again). The default holds a 32,768-token reply many times over.
        max_tokens, temperature: request settings (None: the server's default).
        extra_body: more request fields (e.g. {"top_p": 0.95} or a provider's reasoning settings).
    """

    base_url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout_s: float = 600.0
    max_retries: int = 4
    backoff_s: float = 2.0
    max_backoff_s: float = 60.0
    deadline_s: float | None = None
    max_reply_bytes: int = 16 * 2**20
    max_tokens: int | None = None
    temperature: float | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.max_retries < 0 or self.timeout_s <= 0:
            raise CurateError(f"api {self.base_url}: concurrency >= 1, max_retries >= 0, timeout_s > 0 required")
        deadline, size = self.deadline_s, self.max_reply_bytes
        if deadline is not None and (
            isinstance(deadline, bool) or not isinstance(deadline, int | float) or deadline <= 0
        ):
            raise CurateError(f"api {self.base_url}: deadline_s must be a number of seconds > 0, or null for none")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise CurateError(f"api {self.base_url}: max_reply_bytes must be a whole number of bytes >= 1")

    def cache_settings(self) -> dict[str, Any]:
        """What decides a reply (where it is served and how patiently it is asked do not)."""
        return {"model": self.model, "max_tokens": self.max_tokens, "temperature": self.temperature,
                "extra_body": self.extra_body}  # fmt: skip


@dataclass
class ChatResult:
    """One call's outcome: `content` and `reasoning` on success, `error` ("" on success) otherwise."""

    content: str = ""
    reasoning: str = ""
    finish_reason: str = ""
    error: str = ""
    attempts: int = 0
    cached: bool = False


class BadReply(Exception):
    """A reply that is not a well-formed chat completion (retried like a server error)."""


class DeadlinePassed(Exception):
    """The call's `deadline_s` ran out (not retried: there is no time left to retry in)."""


def parse_reply(body: Any) -> ChatResult:
    """Content and reasoning from a chat completion; reasoning from `reasoning_content` / `reasoning`
    (vLLM, DeepSeek) or a leading <think>...</think> block in the content."""
    try:
        choice = body["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise BadReply("reply has no choices[0].message") from None
    content = message.get("content")
    reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
    if content is not None and not isinstance(content, str):
        raise BadReply(f"message.content is {type(content).__name__}, not text")
    if not isinstance(reasoning, str):
        raise BadReply("message reasoning is not text")
    content = content or ""
    if not reasoning:
        match = THINK_BLOCK.match(content)
        if match:
            reasoning, content = match.group(1).strip(), match.group(2).strip()
    if not content and not reasoning:
        raise BadReply("reply is empty")
    return ChatResult(content=content, reasoning=reasoning, finish_reason=str(choice.get("finish_reason") or ""))


def read_reply(response: httpx.Response, settings: ApiSettings, end: float) -> bytes:
    """The body, a chunk at a time, so that neither the deadline nor the size bound waits for its end."""
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > settings.max_reply_bytes:
            raise PermissionError(f"reply larger than max_reply_bytes={settings.max_reply_bytes}")
        if time.monotonic() > end:
            raise DeadlinePassed
    return bytes(body)


def call_once(
    client: httpx.Client, settings: ApiSettings, messages: list[dict[str, str]], end: float = float("inf")
) -> ChatResult:
    """One request; `end` (time.monotonic) is the call's deadline, which also caps each wait for the server."""
    payload: dict[str, Any] = {"model": settings.model, "messages": messages, **settings.extra_body}
    if settings.max_tokens is not None:
        payload["max_tokens"] = settings.max_tokens
    if settings.temperature is not None:
        payload["temperature"] = settings.temperature
    left = end - time.monotonic()
    if left <= 0:
        raise DeadlinePassed
    with client.stream("POST", "/chat/completions", json=payload, timeout=min(settings.timeout_s, left)) as response:
        raw = read_reply(response, settings, end)
    text = raw.decode("utf-8", errors="replace")
    if response.status_code in RETRY_STATUS or response.status_code >= 500:
        raise httpx.HTTPStatusError(f"HTTP {response.status_code}", request=response.request, response=response)
    if response.status_code >= 400:
        raise PermissionError(f"HTTP {response.status_code}: {text[:200]}")  # not worth retrying
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadReply(f"reply is not JSON: {text[:80]!r}") from None
    return parse_reply(body)


def call_with_retries(client: httpx.Client, settings: ApiSettings, messages: list[dict[str, str]]) -> ChatResult:
    """Try up to 1 + max_retries times, within deadline_s; the last reason is kept when every try failed."""
    rng = random.Random()
    reason = ""
    end = time.monotonic() + settings.deadline_s if settings.deadline_s is not None else float("inf")
    for attempt in range(settings.max_retries + 1):
        if attempt:
            wait = min(settings.max_backoff_s, settings.backoff_s * 2 ** (attempt - 1))
            time.sleep(min(wait * rng.uniform(0.5, 1.0), max(0.0, end - time.monotonic())))
        try:
            result = call_once(client, settings, messages, end)
            result.attempts = attempt + 1
            return result
        except PermissionError as err:
            return ChatResult(error=str(err), attempts=attempt + 1)
        except DeadlinePassed:
            last = f" (last: {reason})" if reason else ""
            return ChatResult(error=f"deadline_s={settings.deadline_s:g} passed in try {attempt + 1}{last}",
                              attempts=attempt + 1)  # fmt: skip
        except httpx.TimeoutException:
            reason = f"timed out after {settings.timeout_s:g} s"
        except httpx.HTTPStatusError as err:
            reason = str(err)
        except httpx.TransportError as err:
            reason = f"connection failed ({type(err).__name__})"
        except BadReply as err:
            reason = f"bad reply: {err}"
    tries = settings.max_retries + 1
    return ChatResult(error=f"failed after {tries} tries: {reason}", attempts=tries)


def chat_all(
    settings: ApiSettings,
    conversations: list[list[dict[str, str]]],
    cache: CallCache,
    on_done: Callable[[int, ChatResult], None] | None = None,
) -> list[ChatResult]:
    """One result per conversation, in order; cached ones are not sent again."""
    cache_settings = settings.cache_settings()
    keys = [CallCache.key("chat", cache_settings, messages) for messages in conversations]
    found = cache.get_many(keys)
    results: list[ChatResult | None] = [None] * len(conversations)
    todo = []
    for i, key in enumerate(keys):
        if key in found:
            results[i] = ChatResult(**found[key], cached=True)
        else:
            todo.append(i)
    if todo:
        key_value = os.environ.get(settings.api_key_env) if settings.api_key_env else None
        headers = {"Authorization": f"Bearer {key_value}"} if key_value else {}
        limits = httpx.Limits(max_connections=settings.concurrency)
        with (
            httpx.Client(
                base_url=settings.base_url.rstrip("/"), headers=headers, timeout=settings.timeout_s, limits=limits
            ) as client,  # fmt: skip
            ThreadPoolExecutor(max_workers=settings.concurrency) as pool,
        ):

            def work(i: int) -> tuple[int, ChatResult]:
                result = call_with_retries(client, settings, conversations[i])
                if not result.error:
                    cache.put_many({keys[i]: {"content": result.content, "reasoning": result.reasoning,
                                              "finish_reason": result.finish_reason}})  # fmt: skip
                return i, result

            for i, result in pool.map(work, todo):
                results[i] = result
                if on_done is not None:
                    on_done(i, result)
    return [r if r is not None else ChatResult(error="not run") for r in results]
