"""The decoder's record of a completion whose budget state ran somewhere else (inside vLLM's engine
process, or on a server), rebuilt from the emitted tokens.

The engine returns token ids only. Running the same `BudgetState` over them recovers everything a
`BudgetResult` holds, given one more fact per model-chosen position: whether the emitted token was
the model's own choice or stood in for it (a wait for an end of thinking, the `close` string for an
end-of-sequence inside thinking). Under greedy decoding that fact is exact: the emitted token was the
model's choice exactly when it is the argmax of the model's logits (rank 1 in vLLM's log-probabilities,
which are taken before any logits processor). Without it (sampling), an emitted wait where a wait
could be injected counts as injected, and an allowed end token as the model's own end of thinking;
a reading that contradicts the tokens that follow is dropped for the other.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from .budget import Budget
from .formats import FormatTokens
from .state import FINISH_MAX_ANSWER, BudgetState, BudgetSummary


class ReplayError(RuntimeError):
    """The emitted tokens cannot come from budget forcing with this format and budget."""


def replay(
    tokens: FormatTokens,
    budget: Budget,
    max_new_tokens: int,
    emitted: Sequence[int],
    model_choice: Sequence[bool] | None = None,
) -> BudgetSummary:
    """The `BudgetSummary` of `emitted` (a completion made under budget forcing).

    Args:
        model_choice: per emitted token, whether it was the model's own choice (greedy: its argmax);
            None when unknown (sampling).

    A trailing end-of-sequence after an answer that reached `max_answer_tokens` (how an engine is told
    to stop there) is not part of the completion.
    """
    emitted = [int(t) for t in emitted]
    pending: list[tuple[int, BudgetState, int]] = []  # (index, state before it, other proposal) to retry
    state, i = BudgetState(tokens, budget, max_new_tokens), 0
    alternative: int | None = None
    while True:
        try:
            while i < len(emitted):
                token = emitted[i]
                if state.done:
                    last = i == len(emitted) - 1
                    if last and token in tokens.eos and state.finish_reason == FINISH_MAX_ANSWER:
                        break
                    raise ReplayError(f"token {i} ({token}) comes after the sequence ended ({state.finish_reason})")
                if state.needs_proposal():
                    if alternative is not None:
                        proposal, alternative = alternative, None
                    else:
                        options = _proposals(tokens, state, token, None if model_choice is None else model_choice[i])
                        proposal = options[0]
                        if len(options) > 1:
                            pending.append((i, copy.deepcopy(state), options[1]))
                    got = state.advance(proposal)
                else:
                    got = state.advance()
                if got != token:
                    raise ReplayError(f"token {i}: emitted {token} where the budget rules give {got}")
                i += 1
            return state.summary()
        except ReplayError:
            if not pending:
                raise
            i, state, alternative = pending.pop()


def _proposals(tokens: FormatTokens, state: BudgetState, emitted: int, own: bool | None) -> list[int]:
    """The model proposals that would make `state` emit `emitted`, the likelier first."""
    if state.at_step_marker and emitted == tokens.answer_head:  # rule 4: the model's own answer, or a stand-in
        assert tokens.step_zero is not None
        ends = sorted(tokens.eos - tokens.end)
        stand_ins = ([tokens.step_zero] if state.budget.end_at_zero_steps else []) + ends[:1]
        if own is True or not stand_ins:
            return [emitted]
        if own is False:
            return stand_ins[:1]
        return [emitted, stand_ins[0]]  # as for an allowed end token: the model's own first
    injected = state.replaces_end() and emitted == tokens.wait[0]
    closed = state.thinking_phase and not state.replaces_end() and emitted == tokens.close[0][0]
    stand_in = min(tokens.end) if injected else min(tokens.eos) if closed else None
    if own is True or stand_in is None:
        return [emitted]
    if own is False:
        return [stand_in]
    # Unknown: a wait where one can be injected was injected; an allowed end token is the model's own.
    return [stand_in, emitted] if injected else [emitted, stand_in]
