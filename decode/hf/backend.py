"""`generate(..., backend="hf")`: budget forcing on a transformers model, by the logits processor inside
`model.generate` (batches left-padded) or by the re-prompt loop."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..prepare.loading import load_model, load_tokenizer
from ..prepare.model_config import eos_ids
from ..prepare.prompts import Prompt, check_chats, context_length, prompt_ids, tokenize_prompts, windows_of
from ..reprompt.batches import OnBatch, run_batches
from ..reprompt.loop import reprompt_generate
from ..reprompt.plain import plain_generate
from ..rules.budget import Budget
from ..rules.formats import FormatTokens, ThinkingFormat, get_format
from ..rules.result import BudgetResult
from ..rules.sampling import Sampling
from ..rules.state import BudgetSummary
from .engine import hf_engine
from .processor import BudgetForcing, check_generation_defaults


@torch.no_grad()
def hf_backend(
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
    template_kwargs: dict[str, Any],
) -> list[BudgetResult]:
    """The results `generate` returns, on a transformers model or one loaded here from a path or hub id
    (in the checkpoint's own dtype); `generate` has checked the batch size and budgets."""
    if isinstance(model, str | Path):
        tokenizer = tokenizer or str(model)
        model = load_model(str(model))
    if isinstance(tokenizer, str | Path):
        tokenizer = load_tokenizer(str(tokenizer))
    check_generation_defaults(model)
    fmt = None if format is None else get_format(format)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = eos_ids(tokenizer, getattr(model, "generation_config", None))
    if fmt is None:
        check_chats(tokenizer, prompts, template_kwargs)
        rows = [prompt_ids(tokenizer, p, None, template_kwargs) for p in prompts]
        return plain_generate(hf_engine(model, pad, sampling), rows, eos, budgets, tokenizer, batch_size=batch_size,
                              max_new_tokens=max_new_tokens, seed=seed, on_batch=on_batch)  # fmt: skip

    tokens = fmt.tokens(tokenizer, eos)
    context = context_length(getattr(model, "config", None), tokenizer)
    all_rows = tokenize_prompts(
        tokenizer, prompts, fmt, windows_of(tokens, budgets, max_new_tokens), context, template_kwargs
    )
    if forcing == "reprompt":
        engine = hf_engine(model, pad, sampling)

        def run(
            rows: list[list[int]], tokens: FormatTokens, chunk: list[Budget], caps: list[int], first_seed: int | None
        ) -> list[BudgetSummary]:
            return reprompt_generate(engine, rows, tokens, chunk, caps, seed=first_seed)

        return run_batches(all_rows, tokens, budgets, tokenizer, run, batch_size=batch_size,
                           max_new_tokens=max_new_tokens, seed=seed, on_batch=on_batch)  # fmt: skip
    results: list[BudgetResult] = []
    for start in range(0, len(prompts), batch_size):
        rows = all_rows[start : start + batch_size]
        generator = None
        if seed is not None:  # prompt i draws from its own generator, seeded seed + i, like the other backends
            generator = [torch.Generator(device=device).manual_seed(seed + start + i) for i in range(len(rows))]
        width = max(len(row) for row in rows)
        processor = BudgetForcing(
            tokenizer,
            fmt,
            budgets[start : start + batch_size],
            sampling=sampling,
            eos_token_ids=eos,
            max_new_tokens=max_new_tokens,
            generator=generator,
            padding=[width - len(row) for row in rows],
        )
        input_ids, attention_mask = _left_pad(rows, pad, device)
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **processor.generate_kwargs())
        batch = processor.results()
        for row, result in enumerate(batch):  # the engine emitted exactly what the states chose
            emitted = out[row, input_ids.shape[1] : input_ids.shape[1] + len(result.completion_ids)]
            if emitted.tolist() != result.completion_ids:
                raise RuntimeError(f"prompt {start + row}: generate's output differs from the forced choices")
        results.extend(batch)
        if on_batch is not None:
            on_batch(start, batch)
    return results


def _left_pad(rows: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)
