"""Prompts run batch by batch on an engine that takes token ids, shared by the backends that send ids.

The vLLM and HTTP backends (and the transformers re-prompt loop) tokenize every prompt here first,
checked against the chat template and the model's context, and then hand the engine one batch of
token-id prompts at a time: prompt i is seeded with `seed + i`, so its completion does not depend on
the batch it falls in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..prepare.model_config import folder_eos_ids, read_model_config
from ..prepare.prompts import Prompt, check_chats, context_length, prompt_ids, tokenize_prompts, windows_of
from ..rules.budget import Budget, default_max_new_tokens
from ..rules.formats import FormatTokens, ThinkingFormat
from ..rules.result import BudgetResult, to_result
from ..rules.sampling import Sampling
from ..rules.state import BudgetSummary
from .loop import Engine
from .plain import plain_generate

# (token-id prompts, format tokens, their budgets, their caps, the first prompt's seed) -> summaries
Run = Callable[[list[list[int]], FormatTokens, list[Budget], list[int], int | None], list[BudgetSummary]]
OnBatch = Callable[[int, list[BudgetResult]], None] | None


def check_penalty(backend: str, sampling: Sampling, honoured: bool) -> None:
    """Refuse a repetition penalty the backend would not apply to the proposals (it must never drop it)."""
    if sampling.penalised and not honoured:
        raise ValueError(
            f"backend {backend!r} does not pass a repetition penalty to its engine "
            f"(repetition_penalty={sampling.repetition_penalty}); use backend 'hf', or a Sampling without it"
        )


def run_batches(
    all_rows: list[list[int]],
    tokens: FormatTokens,
    budgets: list[Budget],
    tokenizer: Any,
    run: Run,
    *,
    batch_size: int,
    max_new_tokens: int | None,
    seed: int | None,
    on_batch: OnBatch,
) -> list[BudgetResult]:
    """`run` on each batch of `all_rows`, each row capped at `max_new_tokens` or what its budget allows."""
    results: list[BudgetResult] = []
    for start in range(0, len(all_rows), batch_size):
        rows = all_rows[start : start + batch_size]
        chunk = budgets[start : start + batch_size]
        caps = [max_new_tokens or default_max_new_tokens(tokens, b) for b in chunk]
        first_seed = None if seed is None else seed + start
        batch = [to_result(s, tokens, tokenizer) for s in run(rows, tokens, chunk, caps, first_seed)]
        results.extend(batch)
        if on_batch is not None:
            on_batch(start, batch)
    return results


def generate_on_ids(
    tokenizer: Any,
    prompts: Sequence[Prompt],
    fmt: ThinkingFormat | None,
    budgets: list[Budget],
    *,
    config_path: str | None,
    engine_limit: int | None,
    plain_engine: Engine | None,
    run: Run,
    batch_size: int,
    max_new_tokens: int | None,
    seed: int | None,
    on_batch: OnBatch,
    template_kwargs: dict[str, Any],
) -> list[BudgetResult]:
    """Budget-forced results of `prompts` on a backend sent token ids: `run` with a thinking format,
    `plain_engine` without one. The end-of-sequence ids and the context come from the model folder at
    `config_path` (None: the tokenizer's alone) and the engine's own limit."""
    eos = folder_eos_ids(config_path, tokenizer)
    if fmt is None:
        check_chats(tokenizer, prompts, template_kwargs)
        rows = [prompt_ids(tokenizer, p, None, template_kwargs) for p in prompts]
        return plain_generate(plain_engine, rows, eos, budgets, tokenizer, batch_size=batch_size,
                              max_new_tokens=max_new_tokens, seed=seed, on_batch=on_batch)  # fmt: skip
    tokens = fmt.tokens(tokenizer, eos)
    context = context_length(read_model_config(config_path), tokenizer, engine_limit)
    all_rows = tokenize_prompts(
        tokenizer, prompts, fmt, windows_of(tokens, budgets, max_new_tokens), context, template_kwargs
    )
    return run_batches(all_rows, tokens, budgets, tokenizer, run, batch_size=batch_size,
                       max_new_tokens=max_new_tokens, seed=seed, on_batch=on_batch)  # fmt: skip
