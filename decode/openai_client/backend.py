"""`generate(..., backend="openai")`: a server's `/v1/completions`, prompts tokenized here and sent as ids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..prepare.loading import load_tokenizer
from ..prepare.prompts import Prompt
from ..reprompt.batches import OnBatch, check_penalty, generate_on_ids
from ..rules.budget import Budget
from ..rules.formats import FormatTokens, ThinkingFormat, get_format
from ..rules.result import BudgetResult
from ..rules.sampling import Sampling
from ..rules.state import BudgetSummary
from .client import CompletionsClient, client_engine, server_generate


def openai_backend(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    format: str | ThinkingFormat | None,
    budgets: list[Budget],
    sampling: Sampling | None,
    batch_size: int,
    max_new_tokens: int | None,
    seed: int | None,
    on_batch: OnBatch,
    forcing: str,
    engine_args: dict[str, Any],
    template_kwargs: dict[str, Any],
) -> list[BudgetResult]:
    """The results `generate` returns, from a `CompletionsClient` or one built here for a base URL; the
    server's model folder is read where the tokenizer is given as a path (a model folder holds both)."""
    fmt = None if format is None else get_format(format)
    model_path = str(model) if isinstance(model, str | Path) else None
    sampling = sampling or Sampling()
    check_penalty("openai", sampling, False)  # the HTTP client sends no penalty
    if tokenizer is None:
        raise ValueError("backend 'openai' needs the model's tokenizer (a path or object): prompts go as token ids")
    if model_path is not None:
        model = CompletionsClient(model_path, **engine_args)
    elif engine_args:
        raise ValueError("engine_args apply when the client is built here (model given as a URL)")
    config_path = str(tokenizer) if isinstance(tokenizer, str | Path) else None
    if isinstance(tokenizer, str | Path):
        tokenizer = load_tokenizer(str(tokenizer))

    def run(
        rows: list[list[int]], tokens: FormatTokens, chunk: list[Budget], caps: list[int], first_seed: int | None
    ) -> list[BudgetSummary]:
        return server_generate(
            model, rows, tokens, chunk, caps, sampling=sampling, seed=first_seed, forcing=forcing,
            vocab_size=len(tokenizer),
        )  # fmt: skip

    return generate_on_ids(
        tokenizer, prompts, fmt, budgets,
        config_path=config_path,
        engine_limit=None,  # the server's own limit is not known here
        plain_engine=client_engine(model, sampling) if fmt is None else None,
        run=run, batch_size=batch_size, max_new_tokens=max_new_tokens, seed=seed, on_batch=on_batch,
        template_kwargs=template_kwargs,
    )  # fmt: skip
