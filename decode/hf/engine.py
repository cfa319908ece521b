"""The re-prompt loop's engine on a transformers model (`decode.reprompt`), also used with no thinking format."""

from __future__ import annotations

from typing import Any

import torch

from ..reprompt.loop import Continuation, Engine
from ..rules.sampling import Sampling
from .processor import RowPenalty, check_generation_defaults, explicit_generation_config


def hf_engine(model: Any, pad_token_id: int, sampling: Sampling | None = None) -> Engine:
    """An engine over a transformers causal LM: one batched `generate` call per round.

    Rows are left-padded; each is cut at its own `max_tokens` and first stop token, so the batch
    gives every row what a call of its own would (exactly so under greedy decoding). Every generation
    setting is given explicitly from `sampling`, so nothing comes from the model's generation config,
    and the repetition penalty sees each row's own tokens, not its padding.
    """
    sampling = sampling or Sampling()
    check_generation_defaults(model)
    device = next(model.parameters()).device

    @torch.no_grad()
    def run(requests: list[Continuation]) -> list[list[int]]:
        width = max(len(r.prompt_ids) for r in requests)
        ids = torch.full((len(requests), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, r in enumerate(requests):
            ids[row, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
            mask[row, width - len(r.prompt_ids) :] = 1
        stops = sorted({t for r in requests for t in r.stop_token_ids})
        seeds = [r.seed for r in requests if r.seed is not None]
        if seeds:
            torch.manual_seed(seeds[0])
        config = explicit_generation_config(
            sampling, max_new_tokens=max(r.max_tokens for r in requests), eos_token_id=stops, pad_token_id=pad_token_id
        )
        penalty = [RowPenalty(sampling, [width - len(r.prompt_ids) for r in requests])] if sampling.penalised else []
        out = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config, logits_processor=penalty
        )
        results = []
        for row, r in enumerate(requests):
            new = out[row, width:].tolist()[: r.max_tokens]
            # generate stops a row at any row's stop token: what came before it is still the model's.
            stop = next((j for j, t in enumerate(new) if t in stops), None)
            results.append(new if stop is None else new[: stop + 1])
        return results

    return run
