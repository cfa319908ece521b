"""The per-sequence budget-forcing state machine, shared by every engine adapter.

An adapter drives it one token at a time: when `needs_proposal()` the model's own choice of next
token (argmax, or a sample under the user's sampling settings) is passed to `advance`, which
applies the rules and returns the token to emit; otherwise `advance()` returns a forced token.

The rules, with n thinking tokens so far:
1. If n equals the maximum, the format's `force` string is emitted; thinking never exceeds it.
2. Otherwise, if the proposed token ends thinking (end token or end-of-sequence) while n is below
   the minimum or ignores remain, the wait string is emitted in its place (one ignore used). A wait
   string that would cross the maximum is cut at it, and rule 1 applies. With an empty wait string
   (s1's Table 4, "2x without string") nothing is emitted in its place: the adapter calls
   `suppress_end` and proposes again from the model with the end tokens excluded.
3. Otherwise the proposal is emitted. An allowed end token starts the answer; an allowed
   end-of-sequence is replaced by the format's `close` string, so an answer still follows. The
   answer ends at end-of-sequence or after `max_answer_tokens` model tokens.

A format with steps (s1's step-conditional model writes `<|im_start|>{k} steps left\n` before each
step) uses its end token for every marker, so the token after it decides:
4. An end token in thinking is emitted as thinking. If the model then proposes the close string's
   rest ("answer"), thinking ended at that end token; with `end_at_zero_steps`, a proposal of the
   zero-steps marker ("0") is replaced by the close string's rest, which ends thinking there (s1
   stopped at `<|im_start|>0` and appended `answer`); an end-of-sequence there is replaced the same
   way, as rule 3 would close thinking. Anything else is a step marker: thinking goes on. Minimum
   budgets and ignores are refused with steps (s1 ran none).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

from .budget import Budget
from .formats import AFTER_END, AT_END, FormatTokens


class Role(Enum):
    """What an emitted token is, for counting."""

    THOUGHT = "thought"  # chosen by the model while thinking
    WAIT = "wait"  # injected wait string (counts as thinking)
    CLOSING = "closing"  # forced string, before its end-of-thinking token
    END = "end"  # the token that ends thinking
    TAIL = "tail"  # forced string, after its end-of-thinking token
    ANSWER = "answer"  # chosen by the model after thinking


FINISH_EOS, FINISH_MAX_ANSWER, FINISH_LENGTH = "eos", "max_answer", "length"


@dataclass
class BudgetSummary:
    """What happened to one sequence: the decoder's record, independent of any tokenizer."""

    completion_ids: list[int]
    thinking_tokens: int
    answer_start: int | None  # index in completion_ids of the first token after the end of thinking
    waits: int
    forced_end: bool
    finish_reason: str | None


class BudgetState:
    """Budget forcing for one sequence. See the module docstring for the rules."""

    def __init__(self, tokens: FormatTokens, budget: Budget, max_new_tokens: int):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.tokens = tokens
        self.budget = budget
        self.max_new_tokens = max_new_tokens
        self.completion: list[int] = []
        self.thinking = 0
        self.answer_tokens = 0
        self.waits = 0
        self.ignores_left = budget.num_ignore
        self.forced_end = False
        self.answer_start: int | None = None
        self.finish_reason: str | None = None
        self._queue: deque[tuple[int, Role]] = deque()
        self._marker = False  # rule 4: an end token was just emitted in thinking under a format with steps
        if tokens.step_zero is not None and (budget.min_thinking_tokens or budget.num_ignore):
            raise ValueError("a format with steps takes no minimum thinking budget and no ignores (rule 4 decides "
                             "each end token by the token after it)")  # fmt: skip
        if budget.max_thinking_tokens == 0:
            self._force_end()

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def thinking_phase(self) -> bool:
        return self.answer_start is None

    @property
    def at_step_marker(self) -> bool:
        """Rule 4 decides the next token: an end token was just emitted in thinking under a format with steps."""
        return self._marker

    def replaces_end(self) -> bool:
        """Whether an end of thinking proposed now would be replaced by the wait string (rule 2)."""
        return self.thinking_phase and (self.thinking < self.budget.min_thinking_tokens or self.ignores_left > 0)

    def suppresses_end(self, proposal: int) -> bool:
        """Whether `proposal` is an end of thinking that rule 2 refuses with nothing in its place (an empty
        wait string): the adapter then calls `suppress_end` and proposes again without the end tokens."""
        if self.tokens.wait or not self.thinking_phase:
            return False
        replaced, by_wait = self._replaced()
        return by_wait and int(proposal) in replaced

    def suppress_end(self) -> None:
        """Rule 2 with an empty wait string: one ignore is used, and no token is emitted for it."""
        self.ignores_left = max(0, self.ignores_left - 1)
        self.waits += 1

    def needs_proposal(self) -> bool:
        """Whether the next token depends on the model (False: it is forced, or the sequence is done)."""
        return not self.done and not self._queue

    def advance(self, proposal: int | None = None) -> int:
        """Emit the next token and return it: the forced one, or `proposal` with the rules applied."""
        if self.done:
            raise RuntimeError("advance() on a finished sequence")
        if self._queue:
            token, role = self._queue.popleft()
            self._marker = False
        elif proposal is None:
            raise ValueError("the next token is not forced: advance() needs the model's proposal")
        else:
            token, role = self._apply_rules(int(proposal))
        self._record(token, role)
        return token

    def preview(self, proposal: int | None = None) -> int:
        """The token `advance(proposal)` would emit, without emitting it (engines that learn only later
        whether the step counted: vLLM discards the token of a step that only read a chunk of the prompt)."""
        if self.done:
            raise RuntimeError("preview() on a finished sequence")
        if self._queue:
            return self._queue[0][0]
        if proposal is None:
            raise ValueError("the next token is not forced: preview() needs the model's proposal")
        proposal = int(proposal)
        replaced, replacement = self.replaced_ends()
        return replacement if proposal in replaced else proposal

    def replaced_ends(self) -> tuple[frozenset[int], int]:
        """The proposals rule 2 or 3 would replace now, and the first token emitted in their place: in
        thinking, every end of thinking by the wait string while it applies, else an end-of-sequence
        by the closing string. Outside thinking, nothing (the replacement is then meaningless)."""
        if not self.thinking_phase:
            return frozenset(), -1
        if self._marker:  # rule 4: the close string's rest stands in for these
            tokens = self.tokens
            assert tokens.answer_head is not None and tokens.step_zero is not None
            zero = {tokens.step_zero} if self.budget.end_at_zero_steps else set()
            return frozenset((tokens.eos - tokens.end) | zero), tokens.answer_head
        replaced, by_wait = self._replaced()
        if by_wait and not self.tokens.wait:
            raise ValueError("an empty wait string needs an engine that proposes again without the end tokens "
                             "(the transformers backend); this engine replaces them by a token")  # fmt: skip
        return replaced, self.tokens.wait[0] if by_wait else self.tokens.close[0][0]

    def _replaced(self) -> tuple[frozenset[int], bool]:
        """Rules 2 and 3 in thinking, the one place they are stated: the proposals replaced now, and
        whether by the wait string (rule 2: every end of thinking while it applies) or else by the
        closing string (rule 3: an end-of-sequence that is not itself an end token)."""
        if self.replaces_end():
            return self.tokens.stops_thinking, True
        return self.tokens.eos - self.tokens.end, False

    def free_run(self) -> int:
        """How many of the next tokens the model chooses with no rule able to act on them, unless one of
        them is in `watched()`. Engines that learn the chosen tokens only later (vLLM) record such a
        run at once with `extend_free` instead of calling `advance` for every token."""
        if self.done or self._queue or self._marker:
            return 0
        left = self.max_new_tokens - len(self.completion)
        budget = self.budget
        if not self.thinking_phase:
            if budget.max_answer_tokens is not None:
                left = min(left, budget.max_answer_tokens - self.answer_tokens)
            return left
        if budget.max_thinking_tokens is not None:
            left = min(left, budget.max_thinking_tokens - self.thinking)
        if self.ignores_left == 0 and self.thinking < budget.min_thinking_tokens:
            left = min(left, budget.min_thinking_tokens - self.thinking)  # rule 2 stops acting there
        return left

    def watched(self) -> frozenset[int]:
        """The proposals the rules may act on now: the tokens that end thinking (in the answer, the
        end-of-sequence ids)."""
        if not self.thinking_phase:
            return self.tokens.eos
        if self._marker:
            return self.tokens.stops_thinking | {self.tokens.answer_head, self.tokens.step_zero}
        return self.tokens.stops_thinking

    def extend_free(self, tokens: list[int]) -> None:
        """Record model tokens as `advance` would one by one: at most `free_run()` of them, none of
        them in `watched()`."""
        if not tokens:
            return
        watched = self.watched()
        if len(tokens) > self.free_run() or any(token in watched for token in tokens):
            raise ValueError(f"{len(tokens)} tokens are not a free run of this state (free run {self.free_run()})")
        self.completion.extend(tokens)
        if self.thinking_phase:
            self.thinking += len(tokens)
            if self.thinking == self.budget.max_thinking_tokens:
                self._force_end()
        else:
            self.answer_tokens += len(tokens)
            if self.budget.max_answer_tokens is not None and self.answer_tokens >= self.budget.max_answer_tokens:
                self.finish_reason = FINISH_MAX_ANSWER
                return
        if len(self.completion) >= self.max_new_tokens:
            self.finish_reason = FINISH_LENGTH

    def summary(self) -> BudgetSummary:
        return BudgetSummary(
            completion_ids=list(self.completion),
            thinking_tokens=self.thinking,
            answer_start=self.answer_start,
            waits=self.waits,
            forced_end=self.forced_end,
            finish_reason=self.finish_reason,
        )

    # -- rules -------------------------------------------------------------------------------

    def _apply_rules(self, proposal: int) -> tuple[int, Role]:
        if not self.thinking_phase:
            return proposal, Role.ANSWER
        if self.tokens.step_zero is not None:
            decided = self._step_rules(proposal)
            if decided is not None:
                return decided
        replaced, by_wait = self._replaced()
        if proposal not in replaced:  # rule 3: a thought, or a natural end of thinking
            return proposal, Role.END if proposal in self.tokens.end else Role.THOUGHT
        if by_wait:  # rule 2
            if not self.tokens.wait:
                raise ValueError("an end of thinking proposed under rule 2 with an empty wait string: the adapter "
                                 "must call suppress_end() and propose again without the end tokens")  # fmt: skip
            self.ignores_left = max(0, self.ignores_left - 1)
            self.waits += 1
            self._queue.extend((t, Role.WAIT) for t in self.tokens.wait[1:])
            return self.tokens.wait[0], Role.WAIT
        return self._start_forced(self.tokens.close)  # rule 3: end-of-sequence inside thinking

    def _step_rules(self, proposal: int) -> tuple[int, Role] | None:  # rule 4; None: the other rules decide
        tokens = self.tokens
        if self._marker:
            self._marker = False
            if proposal == tokens.answer_head:  # the model ends thinking itself
                self._end_at_marker()
                return proposal, Role.ANSWER
            zero = proposal == tokens.step_zero and self.budget.end_at_zero_steps
            if zero or (proposal in tokens.eos and proposal not in tokens.end):
                self._end_at_marker()
                self.forced_end = self.forced_end or zero
                tail = [(t, Role.TAIL) for t, pos in tokens.close if pos == AFTER_END]
                self._queue.extend(tail[1:])
                return tail[0]
            return None
        if proposal in tokens.end:
            self._marker = True
            return proposal, Role.THOUGHT
        return None

    def _end_at_marker(self) -> None:
        """The end token just emitted ended thinking: it stops counting as thinking and the answer starts after it."""
        self.thinking -= 1
        self.answer_start = len(self.completion)

    def _force_end(self) -> None:  # rule 1
        self._queue.clear()  # drops what is left of a wait string cut at the maximum
        self.forced_end = True
        first = self._start_forced(self.tokens.force)
        self._queue.appendleft(first)

    def _start_forced(self, forced: tuple[tuple[int, str], ...]) -> tuple[int, Role]:
        roles = {AT_END: Role.END, AFTER_END: Role.TAIL}
        items = [(token, roles.get(pos, Role.CLOSING)) for token, pos in forced]
        self._queue.extend(items[1:])
        return items[0]

    def _record(self, token: int, role: Role) -> None:
        self.completion.append(token)
        if role in (Role.THOUGHT, Role.WAIT):
            self.thinking += 1
            if self.thinking == self.budget.max_thinking_tokens:
                self._force_end()
        elif role is Role.END:
            self.answer_start = len(self.completion)
        elif role is Role.ANSWER:
            self.answer_tokens += 1
            if token in self.tokens.eos:
                self.finish_reason = FINISH_EOS
                return
        max_answer = self.budget.max_answer_tokens
        answering = not self.thinking_phase and not self._queue
        if answering and max_answer is not None and self.answer_tokens >= max_answer:
            self.finish_reason = FINISH_MAX_ANSWER
            return
        if len(self.completion) >= self.max_new_tokens:
            self.finish_reason = FINISH_LENGTH
