"""Generation with no thinking format: the model answers the plain chat prompt until its end-of-sequence.

Instruct models that never learnt a thinking format (s1's difficulty references, Qwen2.5-Instruct) are
asked as they were trained: no opener is appended, nothing is forced, the model's own end-of-sequence
ends the completion, and the whole completion is the answer. Every backend runs it through the same
engine it uses for the re-prompt loop (`hf.engine.hf_engine`, `vllm.engine.vllm_engine`,
`openai_client.client_engine`): one continuation per prompt, stopped at end-of-sequence or the cap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..rules.budget import Budget
from ..rules.result import BudgetResult
from ..rules.state import FINISH_EOS, FINISH_LENGTH, FINISH_MAX_ANSWER
from .loop import Continuation, Engine

DEFAULT_PLAIN_MAX_NEW_TOKENS = 4096


def check_plain_budget(budget: Budget) -> None:
    """A run with no thinking format has no thinking to budget; only the answer may be capped."""
    if budget.max_thinking_tokens is not None or budget.min_thinking_tokens or budget.num_ignore:
        raise ValueError(
            "with no thinking format (format=None) there is no thinking to budget: leave max_thinking_tokens, "
            f"min_thinking_tokens and num_ignore unset (got {budget}); cap the answer with max_answer_tokens"
        )


def plain_cap(budget: Budget, max_new_tokens: int | None) -> int:
    """At most `max_new_tokens`, and no more than the answer budget."""
    caps = [c for c in (max_new_tokens, budget.max_answer_tokens) if c is not None]
    return max(1, min(caps)) if caps else DEFAULT_PLAIN_MAX_NEW_TOKENS


def plain_generate(
    engine: Engine,
    rows: Sequence[Sequence[int]],
    eos: Sequence[int],
    budgets: Sequence[Budget],
    tokenizer: Any,
    *,
    batch_size: int,
    max_new_tokens: int | None,
    seed: int | None,
    on_batch: Callable[[int, list[BudgetResult]], None] | None = None,
) -> list[BudgetResult]:
    """One completion per token-id prompt; prompt i is seeded with `seed + i` (sampling only)."""
    stops = tuple(sorted(set(eos)))
    results: list[BudgetResult] = []
    for start in range(0, len(rows), batch_size):
        chunk = range(start, min(start + batch_size, len(rows)))
        caps = [plain_cap(budgets[i], max_new_tokens) for i in chunk]
        requests = [
            Continuation(list(rows[i]), cap, stops, None if seed is None else seed + i)
            for i, cap in zip(chunk, caps, strict=True)
        ]
        outputs = engine(requests)
        if len(outputs) != len(requests):
            raise RuntimeError(f"the engine answered {len(outputs)} of {len(requests)} requests")
        batch = [
            _result(list(ids), stops, budgets[i].max_answer_tokens, tokenizer)
            for i, ids in zip(chunk, outputs, strict=True)
        ]
        results.extend(batch)
        if on_batch is not None:
            on_batch(start, batch)
    return results


def _result(ids: list[int], eos: tuple[int, ...], max_answer: int | None, tokenizer: Any) -> BudgetResult:
    answer_ids = [t for t in ids if t not in eos]
    if ids and ids[-1] in eos:
        finish = FINISH_EOS
    elif max_answer is not None and len(answer_ids) >= max_answer:
        finish = FINISH_MAX_ANSWER
    else:
        finish = FINISH_LENGTH
    return BudgetResult(
        completion_ids=ids,
        thinking="",
        answer=tokenizer.decode(answer_ids),
        thinking_tokens=0,
        answer_tokens=len(answer_ids),
        waits=0,
        forced_end=False,
        finish_reason=finish,
    )
