"""The front door: one call from prompts to budget-forced completions, on transformers, vLLM or an
OpenAI-compatible server. It checks the arguments, picks the backend and calls it; each backend lives in
its engine's package (`decode.hf`, `decode.vllm`, `decode.openai_client`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .hf.backend import hf_backend
from .prepare.prompts import Prompt
from .reprompt.plain import check_plain_budget
from .rules.arguments import check_generate_arguments
from .rules.budget import Budget
from .rules.formats import ThinkingFormat
from .rules.result import BudgetResult
from .rules.sampling import Sampling

BACKENDS = ("hf", "vllm", "openai")
FORCING = ("processor", "reprompt")


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    *,
    format: str | ThinkingFormat | None = "s1",
    budget: Budget | Sequence[Budget] | None = None,
    sampling: Sampling | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    seed: int | None = None,
    on_batch: Callable[[int, list[BudgetResult]], None] | None = None,
    backend: str = "hf",
    forcing: str = "processor",
    engine_args: dict[str, Any] | None = None,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> list[BudgetResult]:
    """Budget-forced generation for a list of prompts.

    Args:
        model: backend "hf": a transformers causal LM, or a local path / hub id to load one from;
            "vllm": a `vllm.LLM` or a path / hub id (the engine is built once per process and kept);
            "openai": a `decode.openai_client.CompletionsClient` or the server's base URL
            ("http://host:8000/v1").
        tokenizer: its tokenizer, or a path / hub id (None: the model's path; required for "openai").
        prompts: strings (used as they are) or chat messages (rendered by the chat template);
            the format's opener is appended to each unless it already ends with it (see `prompt_text`).
        format: "s1", "think", a path to a format JSON, or a `ThinkingFormat`; None: no thinking
            format (an instruct model answering the plain prompt until its end-of-sequence; the
            budget may cap only the answer).
        budget: one `Budget` for all prompts, or one per prompt (None: no budget).
        sampling: `Sampling(temperature=..., top_p=..., top_k=...)`; greedy by default.
        batch_size: prompts per `generate` call (left-padded).
        max_new_tokens: hard cap per completion; default: the longest the budget allows.
        seed: makes sampling reproducible: prompt i is seeded with seed + i, so its completion does not
            depend on the batch it falls in (a resumed run draws what an uninterrupted one did).
        on_batch: called with (first index, results) after each batch, e.g. to save progress.
        backend: "hf" (transformers, the default), "vllm" (offline vLLM engine) or "openai" (the
            /v1/completions endpoint of a server). The same inputs give the same outputs: token for
            token under greedy decoding, in distribution under sampling.
        forcing: "processor" (inside the engine's decoding loop; on a server this needs vLLM with
            `decode.vllm:VLLMBudgetForcingProcessor` loaded) or "reprompt" (s1's re-prompt loop on
            token ids, for engines where no logits processor can run).
        engine_args: backend "vllm": keyword arguments for `vllm.LLM` (dtype, max_model_len, ...);
            "openai": for `CompletionsClient` (timeout_s, max_retries, concurrency, api_key, ...).
        chat_template_kwargs: passed to the chat template (e.g. `{"enable_thinking": True}` for Qwen3).

    A model given as a path is loaded in the checkpoint's own dtype on "hf" and "vllm" alike
    (`decode.prepare.dtype`; engine_args' "dtype" chooses another). Only `sampling` decides how tokens are
    drawn: the model's generation config is not applied (`Sampling.from_generation_config` asks for it).
    """
    check_generate_arguments(prompts, format, budget, sampling, batch_size, max_new_tokens, seed, on_batch,
                             engine_args, chat_template_kwargs)  # fmt: skip
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if forcing not in FORCING:
        raise ValueError(f"forcing must be one of {FORCING}, got {forcing!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    budget = Budget() if budget is None else budget
    budgets = [budget] * len(prompts) if isinstance(budget, Budget) else list(budget)
    if len(budgets) != len(prompts):
        raise ValueError(f"got {len(budgets)} budgets for {len(prompts)} prompts")
    if format is None:
        for b in budgets:
            check_plain_budget(b)
    template_kwargs = dict(chat_template_kwargs or {})
    common = (model, tokenizer, prompts, format, budgets, sampling, batch_size, max_new_tokens, seed, on_batch, forcing)
    if backend == "vllm":
        from .vllm.backend import vllm_backend  # vLLM is optional: imported only when asked for

        return vllm_backend(*common, engine_args or {}, template_kwargs)
    if backend == "openai":
        from .openai_client.backend import openai_backend

        return openai_backend(*common, engine_args or {}, template_kwargs)
    if engine_args:
        raise ValueError("engine_args apply to the 'vllm' and 'openai' backends; load the transformers model yourself")
    return hf_backend(*common, template_kwargs)
