"""Traces: a teacher model writes a reasoning trace and an attempt for every surviving question.

s1 asked Gemini Thinking (s1.1: DeepSeek-R1) for each question. The teacher here is either an
OpenAI-compatible API (`api`: any server, with bounded concurrency, retries with backoff and a
limit) or a local model through the decoder (`local`); both are cached by content. A pool that
already carries its traces (s1.1's pool holds DeepSeek-R1's; the demo's generator writes its own)
names the metadata fields that hold them (`from_metadata`), and no teacher is called. A question whose
trace failed keeps its row with an empty trace and the reason in `trace_error`; a later quality stage
with `required: [thinking_trajectories]` drops it, as s1 dropped its API errors. Trace length is
counted in tokens of the target model's tokenizer (the model to be fine-tuned), not the teacher's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import datasets

from .api import ApiSettings, chat_all
from .cache import CallCache
from .generation import ModelSpec, generate_cached
from .schema import CurateError, metadata_of

DEFAULT_PROMPT = "{question}"


@dataclass
class TracesSettings:
    """Settings of the traces stage.

    Attributes:
        api: the teacher as an OpenAI-compatible endpoint (see `ApiSettings`), or
        local: the teacher as a local model run by the decoder (see `ModelSpec`), or
        from_metadata: the traces are in the pool: {"trace": field, "attempt": field} of each row's
            metadata (a list of traces gives its first, as s1 read `thinking_trajectories[0]`; an
            empty trace counts as a failed call); give exactly one of the three.
        prompt: the user message; `{question}` is replaced (s1 sent the question as it is).
        target_tokenizer: the tokenizer whose token count is the trace length (s1: Qwen2.5's).
    """

    api: ApiSettings | None = None
    local: ModelSpec | None = None
    from_metadata: dict[str, str] | None = None
    prompt: str = DEFAULT_PROMPT
    target_tokenizer: str = ""

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.api, self.local, self.from_metadata)) != 1:
            raise CurateError("traces: give exactly one teacher: 'api', 'local' or 'from_metadata'")
        if self.from_metadata is not None and set(self.from_metadata) != {"trace", "attempt"}:
            raise CurateError(
                f"traces: from_metadata must map 'trace' and 'attempt' to metadata fields, got {self.from_metadata!r}"
            )
        if not self.target_tokenizer:
            raise CurateError("traces: 'target_tokenizer' is required (trace lengths are counted with it)")


def teacher_traces(rows: list[dict[str, Any]], settings: TracesSettings, cache: CallCache) -> list[dict[str, str]]:
    """Per row: {trace, attempt, error}; `error` is "" on success."""
    if settings.from_metadata is not None:
        out = []
        for row in rows:
            meta = metadata_of(row)
            trace, attempt = meta.get(settings.from_metadata["trace"]), meta.get(settings.from_metadata["attempt"])
            if isinstance(trace, list):  # s1's pools hold a list of traces and use the first (s1K's layout)
                trace = trace[0] if trace else ""
            if not isinstance(trace, str) or not trace.strip():
                out.append({"trace": "", "attempt": "", "error": "the pool row has no trace"})
            else:
                out.append({"trace": trace, "attempt": attempt if isinstance(attempt, str) else "", "error": ""})
        return out
    conversations = [[{"role": "user", "content": settings.prompt.format(question=r["question"])}] for r in rows]
    if settings.api is not None:
        replies = chat_all(settings.api, conversations, cache)
        out = []
        for reply in replies:
            if reply.error:
                out.append({"trace": "", "attempt": "", "error": f"teacher {reply.error}"})
            elif not reply.reasoning:
                out.append({"trace": "", "attempt": "", "error": "teacher reply has no reasoning trace"})
            else:
                out.append({"trace": reply.reasoning, "attempt": reply.content, "error": ""})
        return out
    assert settings.local is not None
    completions = generate_cached(settings.local, conversations, cache)
    return [
        {"trace": c["thinking"], "attempt": c["answer"], "error": "" if c["thinking"] else "teacher wrote no thinking"}
        for c in completions
    ]


def traces(
    data: datasets.Dataset, settings: TracesSettings, cache: CallCache
) -> tuple[datasets.Dataset, dict[str, Any]]:
    """The input with `thinking_trajectories` (a list with one trace, as in s1K), `attempt`,
    `trace_tokens` and `trace_error`. Rows are never dropped here (see the module docstring)."""
    from decode import load_tokenizer

    tokenizer = load_tokenizer(settings.target_tokenizer)
    before = (cache.hits, cache.misses)
    results = teacher_traces(data.to_list(), settings, cache)
    token_counts = [len(tokenizer.encode(r["trace"], add_special_tokens=False)) if r["trace"] else 0 for r in results]
    out = data.add_column("thinking_trajectories", [[r["trace"]] if r["trace"] else [] for r in results])
    out = out.add_column("attempt", [r["attempt"] for r in results])
    out = out.add_column("trace_tokens", token_counts)
    out = out.add_column("trace_error", [r["error"] for r in results])
    out = out.add_column("drop_reason", [""] * len(out))
    failures = [r["error"] for r in results if r["error"]]
    info = {
        "teacher": settings.api.model if settings.api else settings.local.name if settings.local else "pool metadata",
        "cached": cache.hits - before[0],
        "called": cache.misses - before[1],
        "failures": len(failures),
        "failure_examples": failures[:10],
    }
    return out, info
