"""The rules of budget forcing on scripted proposals: hand-computed cases, then random budgets
checked against the independent reference loop."""

import random

import pytest
import torch

from decode import Budget, BudgetError, BudgetState, ThinkingFormat, get_format, reference_generate
from decode.rules.formats import AFTER_END, AT_END, BEFORE_END, FormatTokens
from decode.rules.state import FINISH_EOS, FINISH_LENGTH, FINISH_MAX_ANSWER

# Real Qwen2.5 ids, for readable expectations.
IM_START, EOS = 151644, 151645
WAIT = 14190  # "Wait"
CLOSE = [IM_START, 9217, 198]  # "<|im_start|>answer\n"
FORCE = [198, IM_START, 9217, 198, 19357, 21806, 25]  # "\n<|im_start|>answer\nFinal Answer:"
A, B, C, D, X, Y = 32, 33, 34, 35, 55, 56  # ordinary tokens


def drive(state: BudgetState, proposals: list[int]) -> list[int]:
    """Run a state to the end; the model's proposals are taken in order, only when asked for."""
    proposals = iter(proposals)
    while not state.done:
        state.advance(next(proposals) if state.needs_proposal() else None)
    return state.completion


@pytest.fixture(scope="module")
def s1(tokenizers) -> FormatTokens:
    return get_format("s1").tokens(tokenizers["s1"])


def run(s1, budget, proposals, cap=100):
    state = BudgetState(s1, budget, cap)
    return drive(state, proposals), state


def test_resolved_ids_are_the_ones_written_here(s1):
    assert s1.end == {IM_START} and s1.eos == {EOS} and s1.wait == (WAIT,)
    assert [t for t, _ in s1.close] == CLOSE and [t for t, _ in s1.force] == FORCE


def test_no_budget_natural_end(s1):
    out, st = run(s1, Budget(), [A, B, IM_START, X, EOS])
    assert out == [A, B, IM_START, X, EOS]
    assert (st.thinking, st.waits, st.forced_end, st.answer_start, st.finish_reason) == (2, 0, False, 3, FINISH_EOS)


def test_max_forces_the_end_and_final_answer(s1):
    out, st = run(s1, Budget(max_thinking_tokens=3), [A, B, C, X, EOS])
    assert out == [A, B, C, *FORCE, X, EOS]
    assert st.thinking == 3 and st.forced_end and st.answer_start == 5


def test_max_zero_forces_at_once_and_max_one(s1):
    out, st = run(s1, Budget(max_thinking_tokens=0), [X, EOS])
    assert out == [*FORCE, X, EOS] and st.thinking == 0 and st.forced_end
    out, st = run(s1, Budget(max_thinking_tokens=1), [A, X, EOS])
    assert out == [A, *FORCE, X, EOS] and st.thinking == 1


def test_natural_end_at_the_maximum_is_still_forced(s1):
    # Rule 1 comes first: at n == max the model is not asked.
    out, st = run(s1, Budget(max_thinking_tokens=2), [A, B, IM_START, EOS])
    assert out == [A, B, *FORCE, IM_START, EOS]  # the model's end proposal arrives in the answer
    assert st.forced_end and st.thinking == 2


def test_min_replaces_early_ends_with_wait(s1):
    out, st = run(s1, Budget(min_thinking_tokens=3), [IM_START, A, EOS, IM_START, X, EOS])
    # n=0 end -> Wait (n=1); A (n=2); EOS -> Wait (n=3); end allowed.
    assert out == [WAIT, A, WAIT, IM_START, X, EOS]
    assert st.thinking == 3 and st.waits == 2 and not st.forced_end


def test_num_ignore_replaces_ends_regardless_of_length(s1):
    out, st = run(s1, Budget(num_ignore=2), [A, IM_START, IM_START, IM_START, X, EOS])
    assert out == [A, WAIT, WAIT, IM_START, X, EOS]
    assert st.waits == 2 and st.ignores_left == 0


def test_every_wait_uses_an_ignore_while_any_remain(s1):
    # min 2, one ignore: the first early end uses the ignore, the second is still below the minimum.
    out, st = run(s1, Budget(min_thinking_tokens=2, num_ignore=1), [IM_START, IM_START, IM_START, EOS])
    assert out == [WAIT, WAIT, IM_START, EOS]
    assert st.waits == 2 and st.ignores_left == 0


def test_eos_inside_thinking_is_an_end_attempt(s1):
    out, st = run(s1, Budget(), [A, EOS, X, EOS])
    assert out == [A, *CLOSE, X, EOS]  # the decoder closes thinking itself, then the answer follows
    assert st.thinking == 1 and st.answer_start == 2 and not st.forced_end
    out, st = run(s1, Budget(min_thinking_tokens=2), [A, EOS, B, EOS, X, EOS])
    assert out == [A, WAIT, B, *CLOSE, X, EOS] and st.waits == 1


def test_min_equals_max(s1):
    out, st = run(s1, Budget(min_thinking_tokens=2, max_thinking_tokens=2), [IM_START, IM_START, X, EOS])
    assert out == [WAIT, WAIT, *FORCE, X, EOS] and st.waits == 2 and st.forced_end


def test_wait_longer_than_room_left_is_cut_at_the_maximum(tokenizers):
    fmt = get_format("s1").with_wait("Wait, let me double-check")
    ft = fmt.tokens(tokenizers["s1"])
    assert len(ft.wait) >= 4
    state = BudgetState(ft, Budget(min_thinking_tokens=3, max_thinking_tokens=3), 100)
    out = drive(state, [A, IM_START, X, EOS])
    assert out == [A, *ft.wait[:2], *FORCE, X, EOS]
    assert state.thinking == 3 and state.waits == 1 and state.forced_end


def test_answer_budget(s1):
    out, st = run(s1, Budget(max_thinking_tokens=1, max_answer_tokens=2), [A, X, Y, Y, EOS])
    assert out == [A, *FORCE, X, Y] and st.finish_reason == FINISH_MAX_ANSWER
    out, st = run(s1, Budget(max_answer_tokens=0), [A, IM_START])
    assert out == [A, IM_START] and st.finish_reason == FINISH_MAX_ANSWER
    out, st = run(s1, Budget(max_answer_tokens=0), [A, EOS])
    assert out == [A, *CLOSE] and st.finish_reason == FINISH_MAX_ANSWER


def test_hard_cap(s1):
    out, st = run(s1, Budget(max_thinking_tokens=1), [A, X], cap=4)
    assert out == [A, *FORCE[:3]] and st.finish_reason == FINISH_LENGTH and st.answer_start == 3


def test_advance_misuse_is_refused(s1):
    state = BudgetState(s1, Budget(), 10)
    with pytest.raises(ValueError, match="needs the model's proposal"):
        state.advance()
    with pytest.raises(ValueError, match="max_new_tokens"):
        BudgetState(s1, Budget(), 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_thinking_tokens=-1), "max_thinking_tokens must be >= 0"),
        (dict(min_thinking_tokens=-3), "min_thinking_tokens must be >= 0"),
        (dict(num_ignore=-1), "num_ignore must be >= 0"),
        (dict(max_answer_tokens=-2), "max_answer_tokens must be >= 0"),
        (dict(min_thinking_tokens=10, max_thinking_tokens=5), r"min_thinking_tokens \(10\) is above"),
        (dict(max_thinking_tokens=2.5), "must be an integer"),
        (dict(num_ignore=True), "must be an integer"),
    ],
)
def test_bad_budgets(kwargs, message):
    with pytest.raises(BudgetError, match=message):
        Budget(**kwargs)


# --- random budgets: the state machine against the reference loop --------------------------------

TINY_VOCAB = 12
SMALL = FormatTokens(
    format=ThinkingFormat("small", "o", "e", "c", "f"),
    open=(1,),
    end=frozenset({2}),
    eos=frozenset({3}),
    close=((2, AT_END), (4, AFTER_END)),
    force=((5, BEFORE_END), (2, AT_END), (6, AFTER_END), (7, AFTER_END)),
    wait=(8, 9, 10),
)


def scripted_logits(ids: list[int]) -> torch.Tensor:
    """A deterministic 'model': its choice depends on the whole sequence; ends are frequent."""
    rng = random.Random(hash(tuple(ids)))
    choice = rng.choices([2, 3, 8, 11, 0], weights=[25, 15, 5, 40, 15])[0]
    logits = torch.zeros(TINY_VOCAB)
    logits[choice] = 1.0
    return logits


def random_budget(rng: random.Random) -> Budget:
    maximum = rng.choice([None, 0, 1, 2, 3, 5, 8, 13, 30])
    minimum = rng.choice([0, 0, 1, 2, 4, 9, 20])
    if maximum is not None:
        minimum = min(minimum, maximum)
    return Budget(maximum, minimum, rng.choice([0, 0, 1, 2, 5]), rng.choice([None, 0, 1, 4]))


def test_state_machine_matches_reference_on_hundreds_of_budgets():
    rng = random.Random(0)
    seen = {"wait": 0, "forced": 0, "natural": 0, "closed_after_eos": 0, "cut_wait": 0, "capped": 0}
    for case in range(600):
        budget = random_budget(rng)
        cap = rng.choice([3, 20, 60])
        prompt = [rng.randrange(TINY_VOCAB) for _ in range(3)] + [1]
        expected = reference_generate(scripted_logits, prompt, SMALL, budget, cap)
        state = BudgetState(SMALL, budget, cap)
        while not state.done:
            proposal = None
            if state.needs_proposal():
                proposal = int(scripted_logits(prompt + state.completion).argmax())
            state.advance(proposal)
        assert state.summary() == expected, (case, budget, cap)
        # The contract, checked directly.
        summary = state.summary()
        if budget.max_thinking_tokens is not None:
            assert summary.thinking_tokens <= budget.max_thinking_tokens
        if summary.answer_start is not None and not summary.forced_end:
            assert summary.thinking_tokens >= budget.min_thinking_tokens
        if summary.forced_end and summary.answer_start is not None:
            assert summary.thinking_tokens == budget.max_thinking_tokens
        assert len(summary.completion_ids) <= cap
        seen["wait"] += summary.waits > 0
        seen["forced"] += summary.forced_end
        natural = summary.answer_start is not None and not summary.forced_end
        seen["natural"] += natural and summary.completion_ids[summary.answer_start - 1 :][:2] != [2, 4]
        seen["closed_after_eos"] += natural and summary.completion_ids[summary.answer_start - 1 :][:2] == [2, 4]
        seen["cut_wait"] += (
            summary.forced_end
            and summary.thinking_tokens > 0
            and summary.completion_ids[summary.thinking_tokens - 1] in (8, 9)
        )
        seen["capped"] += summary.finish_reason == "length"
    assert min(seen.values()) >= 10, seen  # every path was really taken


def test_free_runs_recorded_at_once_give_the_same_states():
    """`extend_free` over any part of a free run, then `advance` from there, ends exactly where
    `advance` token by token does (what the vLLM processors rely on to look at tokens only later)."""
    rng = random.Random(1)
    lazy_tokens = 0
    for case in range(400):
        budget, cap = random_budget(rng), rng.choice([3, 20, 60])
        prompt = [rng.randrange(TINY_VOCAB) for _ in range(3)] + [1]
        expected = reference_generate(scripted_logits, prompt, SMALL, budget, cap)
        state = BudgetState(SMALL, budget, cap)
        while not state.done:
            if not state.needs_proposal():
                state.advance()
                continue
            run = []
            for _ in range(rng.randrange(state.free_run() + 1)):
                token = int(scripted_logits(prompt + state.completion + run).argmax())
                if token in state.watched():
                    break
                run.append(token)
            state.extend_free(run)
            lazy_tokens += len(run)
            if not state.done and state.needs_proposal():
                state.advance(int(scripted_logits(prompt + state.completion).argmax()))
        assert state.summary() == expected, (case, budget, cap)
    assert lazy_tokens > 1000


def test_a_free_run_refuses_what_the_rules_would_act_on():
    state = BudgetState(SMALL, Budget(max_thinking_tokens=3, min_thinking_tokens=2), 20)
    assert state.free_run() == 2  # rule 2 stops acting at the minimum: a new run starts there
    state.extend_free([5])
    state.advance(5)
    with pytest.raises(ValueError, match="not a free run"):
        state.extend_free([5, 5])  # crosses the maximum
    with pytest.raises(ValueError, match="not a free run"):
        state.extend_free([next(iter(SMALL.end))])  # an end of thinking
    state.extend_free([5])
    assert state.forced_end and state.free_run() == 0
