"""The definitional reference of budget forcing: rules 1-3 written out as a plain loop.

It recomputes the model on the whole sequence at every step (no cache, no batching) and shares no
code with `BudgetState`, so the two are an independent check on each other: the engine adapters must
produce token-identical output under greedy decoding. It also works with any engine that can return
next-token logits for a token sequence, which makes it the fallback where no hook is available.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .budget import Budget
from .formats import AT_END, FormatTokens
from .sampling import Sampling
from .state import FINISH_EOS, FINISH_LENGTH, FINISH_MAX_ANSWER, BudgetSummary

NextLogits = Callable[[list[int]], torch.Tensor]


class _Full(Exception):
    """The sequence reached max_new_tokens."""


def model_next_logits(model: torch.nn.Module) -> NextLogits:
    """Next-token logits of a transformers causal LM, recomputed over the whole sequence."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def next_logits(ids: list[int]) -> torch.Tensor:
        out = model(torch.tensor([ids], device=device), use_cache=False, logits_to_keep=1)
        return out.logits[0, -1].float()

    return next_logits


def reference_generate(
    next_logits: NextLogits,
    prompt_ids: Sequence[int],
    tokens: FormatTokens,
    budget: Budget,
    max_new_tokens: int,
    sampling: Sampling | None = None,
    generator: torch.Generator | None = None,
) -> BudgetSummary:
    """Generate one completion (after `prompt_ids`, which already end with the opener)."""
    sampling = sampling or Sampling()
    out: list[int] = []
    maximum, minimum = budget.max_thinking_tokens, budget.min_thinking_tokens
    ignores, waits, n = budget.num_ignore, 0, 0
    forced_end = False
    answer_start = None

    def emit(token: int) -> None:
        if len(out) >= max_new_tokens:
            raise _Full
        out.append(token)

    def propose() -> int:
        if len(out) >= max_new_tokens:
            raise _Full
        sequence = list(prompt_ids) + out
        logits = next_logits(sequence)
        return int(sampling.propose(logits[None], generator, torch.tensor([sequence]))[0])

    def emit_forced(forced: tuple[tuple[int, str], ...]) -> None:
        nonlocal answer_start
        for token, pos in forced:
            emit(token)
            if pos == AT_END:
                answer_start = len(out)

    try:
        # Thinking.
        while True:
            if maximum is not None and n == maximum:  # rule 1
                forced_end = True
                emit_forced(tokens.force)
                break
            proposal = propose()
            if proposal in tokens.end or proposal in tokens.eos:
                if n < minimum or ignores > 0:  # rule 2
                    ignores = max(0, ignores - 1)
                    waits += 1
                    for token in tokens.wait:
                        if n == maximum:
                            break  # cut at the maximum; rule 1 applies next
                        emit(token)
                        n += 1
                    continue
                if proposal in tokens.end:  # rule 3
                    emit(proposal)
                    answer_start = len(out)
                else:
                    emit_forced(tokens.close)
                break
            emit(proposal)
            n += 1
        # Answer.
        answered = 0
        while budget.max_answer_tokens is None or answered < budget.max_answer_tokens:
            token = propose()
            emit(token)
            answered += 1
            if token in tokens.eos:
                return BudgetSummary(out, n, answer_start, waits, forced_end, FINISH_EOS)
        return BudgetSummary(out, n, answer_start, waits, forced_end, FINISH_MAX_ANSWER)
    except _Full:
        return BudgetSummary(out, n, answer_start, waits, forced_end, FINISH_LENGTH)
