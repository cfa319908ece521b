"""Every model generation of the curation pipeline goes through `generate_cached`, and through the decoder.

Reference models (difficulty) and a local teacher (traces) are run by `decode.generate`; the engine is
the recipe's `backend` setting, passed through to the decoder (which owns the transformers, vLLM and
OpenAI-compatible paths), so curation has no generation code of its own. Every completion is cached
by (model, settings, prompt): a rerun or a resumed run never asks a model the same thing twice, and
progress is committed after each chunk of prompts, so a killed run loses at most one chunk.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .cache import CallCache
from .schema import CurateError

Prompt = str | list[dict[str, str]]
NO_FORMAT = "none"  # a model with no thinking format: the plain chat prompt, answered until end-of-sequence


@dataclass
class ModelSpec:
    """A model that answers questions through the decoder.

    Attributes:
        name: a short label used in reports and columns (e.g. "qwen7b").
        model: a local model folder or a hub id.
        tokenizer: its tokenizer (default: the model's).
        backend: the decoder's engine: "hf" (transformers), "vllm" (an offline vLLM engine) or "openai"
            (a server's completions endpoint: `model` is its base URL, `tokenizer` is required).
        backend_options: the decoder's `engine_args` for "vllm" (e.g. tensor_parallel_size) or
            "openai" (timeout_s, max_retries, concurrency, api_key, ...).
        forcing: how the decoder enforces the budget on "vllm"/"openai": "processor" or "reprompt".
        format: thinking format ("s1", "think", or a format JSON), or "none": a model with no thinking
            format (an instruct model) is asked the plain chat prompt, nothing is forced, its own
            end-of-sequence ends the completion and the whole completion is its answer.
        chat_template_kwargs: passed to the chat template (e.g. `{enable_thinking: false}` for Qwen3).
        dtype: how an "hf" model is loaded ("auto", "float32", "bfloat16").
        max_thinking_tokens, max_answer_tokens: the decoder's budget (None: no limit); with format
            "none" only `max_answer_tokens` applies.
        max_tokens: hard cap on each completion.
        temperature, top_p: sampling (temperature 0: greedy).
        sampling: "model": the checkpoint's generation_config.json (`decode.Sampling.from_generation_config`)
            in place of temperature and top_p; None (default): those two.
        seed: seeds sampling.
        batch_size: prompts per decoder batch.
        chunk: prompts per cache commit (a killed run loses at most one chunk).
    """

    name: str
    model: str
    tokenizer: str | None = None
    backend: str = "hf"
    backend_options: dict[str, Any] = field(default_factory=dict)
    forcing: str = "processor"
    format: str = "s1"
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    dtype: str = "auto"
    max_thinking_tokens: int | None = None
    max_answer_tokens: int | None = None
    max_tokens: int | None = 4096
    temperature: float = 0.0
    top_p: float = 1.0
    sampling: str | None = None
    seed: int = 0
    batch_size: int = 8
    chunk: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.chat_template_kwargs, dict):
            raise CurateError(f"model {self.name!r}: chat_template_kwargs must be a mapping of template arguments")
        if self.format == NO_FORMAT and self.max_thinking_tokens is not None:
            raise CurateError(
                f"model {self.name!r}: max_thinking_tokens is set but format is {NO_FORMAT!r} (a model with no "
                "thinking format has no thinking to budget): cap it with max_tokens / max_answer_tokens, or give "
                "the thinking format it was trained on (format: s1 or think)"
            )
        limit, window = self.max_thinking_tokens, self.max_tokens
        if isinstance(limit, int) and isinstance(window, int) and 0 < window <= limit:
            raise CurateError(
                f"model {self.name!r}: max_thinking_tokens {limit} cannot bind: max_tokens {window} ends every "
                f"completion first; raise max_tokens above {limit} (with room for the answer) or lower the budget"
            )

    @property
    def thinking_format(self) -> str | None:
        """The decoder's `format` argument (None: no thinking format)."""
        return None if self.format == NO_FORMAT else self.format

    def cache_settings(self) -> dict[str, Any]:
        """What decides a completion (batching and chunking do not)."""
        values = asdict(self)
        for name in ("name", "batch_size", "chunk"):
            values.pop(name)
        if not values["chat_template_kwargs"]:  # unset: the same keys as completions cached before it existed
            values.pop("chat_template_kwargs")
        if values["sampling"] is None:  # absent, as before the setting existed: earlier caches stay valid
            values.pop("sampling")
        # The model by what it is: weights replaced under the same path are another model, asked anew.
        folders = [self.tokenizer] if self.backend == "openai" else [self.model, self.tokenizer]
        values["model_fingerprint"] = " ".join(_fingerprint(f) for f in folders if f)
        return values


def _fingerprint(name_or_path: str) -> str:
    """`decode.prepare.preflight.model_fingerprint` (a few MB read, whatever the model's size)."""
    from decode.prepare.preflight import model_fingerprint

    return model_fingerprint(name_or_path)


class _Loaded:
    """The model and tokenizer of one spec, loaded at most once per process and only when needed."""

    cache: dict[str, tuple[Any, Any]] = {}

    @classmethod
    def get(cls, spec: ModelSpec) -> tuple[Any, Any]:
        import decode

        key = f"{spec.model}|{spec.tokenizer}|{spec.dtype}|{spec.backend}"
        if key not in cls.cache:
            if spec.backend == "openai" and not spec.tokenizer:
                raise CurateError(f"model {spec.name!r}: backend openai needs 'tokenizer' (prompts go as token ids)")
            if spec.backend != "hf":  # other engines take the path (or URL) and load the model themselves
                cls.cache[key] = (spec.model, spec.tokenizer or spec.model)
            else:
                try:
                    model = decode.load_model(spec.model, dtype=spec.dtype)
                    tokenizer = decode.load_tokenizer(spec.tokenizer or spec.model)
                except decode.ModelLoadError as err:
                    raise CurateError(f"model {spec.name!r}: {err}") from None
                cls.cache[key] = (model, tokenizer)
        return cls.cache[key]


def generate_cached(spec: ModelSpec, prompts: list[Prompt], cache: CallCache) -> list[dict[str, Any]]:
    """One completion per prompt: {thinking, answer, thinking_tokens, answer_tokens, finish_reason}.

    Cached completions are returned as they are; only the missing ones reach the model, in chunks
    committed to the cache as they finish.
    """
    import decode

    settings = spec.cache_settings()
    sampling = decode.Sampling(temperature=spec.temperature, top_p=spec.top_p) if spec.temperature > 0 else None
    if spec.sampling is not None:
        if spec.sampling != "model":
            raise CurateError(f"model {spec.name!r}: sampling must be 'model' or absent, got {spec.sampling!r}")
        try:
            sampling = decode.Sampling.from_generation_config(
                spec.tokenizer if spec.backend == "openai" else spec.model
            )
        except ValueError as err:
            raise CurateError(f"model {spec.name!r}: sampling: {err}") from None
        settings["sampling"] = asdict(sampling)  # the values themselves decide the completions
    keys = [CallCache.key("generate", settings, prompt) for prompt in prompts]
    found = cache.get_many(keys)
    todo = [i for i, key in enumerate(keys) if key not in found]
    if todo:
        model, tokenizer = _Loaded.get(spec)
        budget = decode.Budget(max_thinking_tokens=spec.max_thinking_tokens, max_answer_tokens=spec.max_answer_tokens)
        extra: dict[str, Any] = {"backend": spec.backend}
        if spec.backend != "hf":
            engine_args = dict(spec.backend_options)
            if spec.backend == "vllm" and spec.dtype != "auto":
                engine_args.setdefault("dtype", spec.dtype)
            extra.update(engine_args=engine_args, forcing=spec.forcing)
        for start in range(0, len(todo), spec.chunk):
            chunk = todo[start : start + spec.chunk]
            results = decode.generate(
                model,
                tokenizer,
                [prompts[i] for i in chunk],
                format=spec.thinking_format,
                chat_template_kwargs=spec.chat_template_kwargs or None,
                budget=budget,
                sampling=sampling,
                batch_size=spec.batch_size,
                max_new_tokens=spec.max_tokens,
                # Greedy decoding (the default) gives the same completion however a run is split into
                # chunks; with sampling, the decoder seeds each prompt by its place in the call, and a resumed
                # run's calls hold other prompts, so it draws anew.
                seed=spec.seed if sampling else None,
                **extra,
            )
            done = {
                keys[i]: {
                    "thinking": r.thinking,
                    "answer": r.answer,
                    "thinking_tokens": r.thinking_tokens,
                    "answer_tokens": r.answer_tokens,
                    "finish_reason": r.finish_reason,
                }
                for i, r in zip(chunk, results, strict=True)
            }
            cache.put_many(done)
            found.update(done)
    return [found[key] for key in keys]
