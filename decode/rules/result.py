"""What the decoder returns for one sequence, with its thinking and answer as text."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .formats import FormatTokens
from .state import BudgetSummary


@dataclass
class BudgetResult:
    """One completion.

    Attributes:
        completion_ids: every generated token id (thinking, forced strings, answer, end-of-sequence).
        thinking: text of the thinking tokens (injected waits included).
        answer: text after the end of thinking, without the format's header ("answer\\n" in s1)
            and without end-of-sequence; "" when thinking never ended.
        thinking_tokens: number of thinking tokens.
        answer_tokens: number of tokens after the end of thinking, end-of-sequence excluded.
        waits: wait strings injected.
        forced_end: whether the maximum budget forced the end of thinking.
        finish_reason: "eos", "max_answer" (answer budget spent) or "length" (hard cap reached).
    """

    completion_ids: list[int]
    thinking: str
    answer: str
    thinking_tokens: int
    answer_tokens: int
    waits: int
    forced_end: bool
    finish_reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def to_result(summary: BudgetSummary, tokens: FormatTokens, tokenizer: Any) -> BudgetResult:
    ids = summary.completion_ids
    thinking = tokenizer.decode(ids[: summary.thinking_tokens])
    answer = ""
    answer_ids: list[int] = []
    if summary.answer_start is not None:
        answer_ids = [t for t in ids[summary.answer_start :] if t not in tokens.eos]
        answer = tokenizer.decode(answer_ids)
        if tokens.close_suffix and answer.startswith(tokens.close_suffix):
            answer = answer[len(tokens.close_suffix) :]
    return BudgetResult(
        completion_ids=list(ids),
        thinking=thinking,
        answer=answer,
        thinking_tokens=summary.thinking_tokens,
        answer_tokens=len(answer_ids),
        waits=summary.waits,
        forced_end=summary.forced_end,
        finish_reason=summary.finish_reason,
    )
