"""Budget forcing for engines that cannot run a logits processor: s1's re-prompt loop, on token ids.

The engine is asked to continue each sequence until the next point where the budget rules may act:
during thinking it stops at an end of thinking (end token or end-of-sequence) or at the maximum;
during the answer at end-of-sequence or at the answer budget. Every token the engine returns is the
model's proposal and goes through the same `BudgetState` as in the logits processors; where the state
emits something else (a wait in place of an end, the forced answer prefix) the sequence grows by the
state's tokens and the engine continues from there, on token ids, never on re-tokenised text.

Compared with s1's own harness, the maximum is exact: each round may think only the tokens left in
the budget, not the full budget again. Each round re-reads the whole sequence; with prefix caching on
(vLLM's default) that re-read is a cache hit rather than a prefill.

An engine is a function from a list of `Continuation` requests to the new token ids of each, the
stop token included when it stopped at one. `decode.hf.engine` wraps a transformers model (the
reference in tests); `decode.vllm` and `decode.openai_client` provide vLLM and HTTP engines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..rules.budget import Budget
from ..rules.formats import FormatTokens
from ..rules.state import BudgetState, BudgetSummary


@dataclass(frozen=True)
class Continuation:
    """One engine request: continue `prompt_ids` for at most `max_tokens` tokens.

    Attributes:
        prompt_ids: the whole sequence so far (prompt and completion).
        max_tokens: at most this many new tokens.
        stop_token_ids: stop after emitting any of these (the token is returned).
        seed: seeds this request's sampling (None: unseeded, or greedy).
    """

    prompt_ids: list[int]
    max_tokens: int
    stop_token_ids: tuple[int, ...]
    seed: int | None = None


Engine = Callable[[list[Continuation]], list[list[int]]]


def round_seed(seed: int | None, index: int, done: int) -> int | None:
    """A distinct seed per sequence and round (`seed + index` is the sequence's own seed, as in the
    logits processors, so results do not depend on how prompts are batched)."""
    if seed is None:
        return None
    return ((seed + index) * 1_000_003 + done) % 2**63


def reprompt_generate(
    engine: Engine,
    prompts: Sequence[Sequence[int]],
    tokens: FormatTokens,
    budgets: Sequence[Budget],
    max_new_tokens: Sequence[int],
    *,
    seed: int | None = None,
) -> list[BudgetSummary]:
    """Budget-forced completions of `prompts` (token ids ending with the opener), one round at a time.

    Returns, per prompt, the same record the logits processors keep (`BudgetSummary`).
    """
    states = [BudgetState(tokens, b, cap) for b, cap in zip(budgets, max_new_tokens, strict=True)]
    for state in states:
        _drain(state)
    while True:
        live = [i for i, s in enumerate(states) if not s.done]
        if not live:
            return [s.summary() for s in states]
        requests = [
            Continuation(
                list(prompts[i]) + states[i].completion,
                _room(states[i]),
                tuple(sorted(tokens.stops_thinking if states[i].thinking_phase else tokens.eos)),
                round_seed(seed, i, len(states[i].completion)),
            )
            for i in live
        ]
        outputs = engine(requests)
        if len(outputs) != len(requests):
            raise RuntimeError(f"the engine answered {len(outputs)} of {len(requests)} requests")
        for i, request, new in zip(live, requests, outputs, strict=True):
            state = states[i]
            if not new:
                raise RuntimeError(f"prompt {i}: the engine returned no tokens (asked for {request.max_tokens})")
            for token in new:
                # The first token the state changes ends this round: what follows was not conditioned on it.
                if state.advance(int(token)) != token or state.done or not state.needs_proposal():
                    break
            _drain(state)


def _drain(state: BudgetState) -> None:
    """Emit the forced tokens now due (a wait, a forced answer prefix)."""
    while not state.done and not state.needs_proposal():
        state.advance()


def _room(state: BudgetState) -> int:
    """How many proposals the state takes before it may act whatever they are."""
    room = state.max_new_tokens - len(state.completion)
    budget = state.budget
    if state.thinking_phase and budget.max_thinking_tokens is not None:
        room = min(room, budget.max_thinking_tokens - state.thinking)
    if not state.thinking_phase and budget.max_answer_tokens is not None:
        room = min(room, budget.max_answer_tokens - state.answer_tokens)
    return max(1, room)
