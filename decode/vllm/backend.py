"""`generate(..., backend="vllm")`: the offline engine built from a path (or given), prompts sent as token ids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..prepare.dtype import DtypeError, resolve_dtype
from ..prepare.loading import ModelLoadError, check_source, load_tokenizer
from ..prepare.prompts import Prompt
from ..reprompt.batches import OnBatch, check_penalty, generate_on_ids
from ..rules.budget import Budget
from ..rules.formats import FormatTokens, ThinkingFormat, get_format
from ..rules.result import BudgetResult
from ..rules.sampling import Sampling
from ..rules.state import BudgetSummary
from .engine import load_llm, vllm_engine, vllm_generate, vllm_sampling_params


def honours_penalty() -> bool:
    """Whether the adapter passes `Sampling.repetition_penalty` on (vLLM then refuses it where its engine
    cannot put it into the proposal)."""
    return vllm_sampling_params(Sampling(repetition_penalty=2.0), 1, None).repetition_penalty == 2.0


def vllm_backend(
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
    """The results `generate` returns, on a `vllm.LLM` or one built here from a path or hub id (in the
    checkpoint's own dtype, once per process); `generate` has checked the batch size and budgets."""
    fmt = None if format is None else get_format(format)
    model_path = str(model) if isinstance(model, str | Path) else None
    sampling = sampling or Sampling()
    if sampling.penalised:
        check_penalty("vllm", sampling, honours_penalty())
    if model_path is not None:
        check_source(model_path, "model")
        tokenizer = tokenizer or model_path
        # vLLM's own "auto" would cast a float32 checkpoint to 16 bits; give it the checkpoint's dtype.
        try:
            engine_args = {**engine_args, "dtype": resolve_dtype(model_path, engine_args.get("dtype", "auto"))}
        except DtypeError as err:
            raise ModelLoadError(f"could not load model {model_path!r}: {err}") from None
        model = load_llm(model_path, str(tokenizer) if isinstance(tokenizer, str | Path) else None,
                         forcing=forcing, **engine_args)  # fmt: skip
    elif engine_args:
        raise ValueError("engine_args apply when the vLLM engine is built here (model given as a path)")
    if tokenizer is None:
        tokenizer = model.get_tokenizer()
    if isinstance(tokenizer, str | Path):
        tokenizer = load_tokenizer(str(tokenizer))

    def run(
        rows: list[list[int]], tokens: FormatTokens, chunk: list[Budget], caps: list[int], first_seed: int | None
    ) -> list[BudgetSummary]:
        return vllm_generate(model, rows, tokens, chunk, caps, sampling=sampling, seed=first_seed, forcing=forcing)

    return generate_on_ids(
        tokenizer, prompts, fmt, budgets,
        config_path=model_path or model.llm_engine.model_config.model,
        engine_limit=model.llm_engine.model_config.max_model_len,
        plain_engine=vllm_engine(model, sampling) if fmt is None else None,
        run=run, batch_size=batch_size, max_new_tokens=max_new_tokens, seed=seed, on_batch=on_batch,
        template_kwargs=template_kwargs,
    )  # fmt: skip
