"""Budget forcing under vLLM's Model Runner V1 (the CPU build; GPUs without Triton or with features
Model Runner V2 lacks).

vLLM V1 hands the processor each request's live output list. The processor runs one `BudgetState`
per request; a preempted request leaves the batch and comes back with its output, its state waiting
in a parking lot meanwhile.

The state only ever holds tokens vLLM committed: a step's choice is remembered, and the state
advances once the output shows the token (vLLM discards the token of a step that only read a chunk
of the prompt, and such a step must leave the state, and the sampler's random stream, as they were).

Each step, a request is in one of these lanes:

- *device* (greedy, thinking): the argmax and rule 2 or 3 run on the device for all such rows at
  once: where the argmax ends thinking, its replacement (the wait string's first token, or the
  closing string's) gets the winning logit. The argmaxes are read on the host only at a step after
  a watched token came out, from a copy started when they were made (no wait for the running step);
- *vllm* (greedy, where no rule can act: the answer, or thinking where every end is allowed): the
  logits are left alone and vLLM's own argmax decides;
- *host* (forced strings, sampling, end-of-sequence): decided in Python, row by row.

In the first two lanes the model chooses freely until a token the rules watch appears or a count
reaches a budget (`BudgetState.free_run`); until then the processor only checks each row's newest
token, and records the run in one call when it ends.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from ..rules.sampling import first_argmax
from ..rules.state import BudgetState
from .admission import FORCED_LOGIT, Admission, ForcedRequest, claim_engine, logger, replayed, v1_refusal, validate

MAX_PARKED = 4096  # states of preempted requests kept until they resume

HOST, DEVICE, VLLM = "host", "device", "vllm"
PROBE = 2048  # CPU: the ids whose best logit is compared with the replaced tokens' before any full argmax
NOT_COMPUTED = -1  # a device-lane proposal left to vLLM's own argmax (no replaced token could win)
PLACEHOLDER = -1  # what an output list holds, under async scheduling, for a token not yet copied back


@dataclass(slots=True)
class _Row:
    """One budget-forced request in the batch."""

    request: ForcedRequest
    output: list[int]  # vLLM's live list of the request's generated tokens
    lane: str = HOST
    seen: int = 0  # output[:seen] is accounted for: in the state, or checked as part of the free run
    horizon: int = 0  # the output length at which the free run ends (device and vllm lanes)
    watched: frozenset[int] = frozenset()  # tokens that end the free run when they appear
    redirect: tuple[tuple[int, ...], int] | None = None  # device lane: the argmaxes replaced, and by what
    # The choice behind the last step's token, until the output shows it: (proposal, the random stream
    # before the draw). Host lane; also a row that left before its token came back (async scheduling).
    choice: tuple[int | None, torch.Tensor | None] | None = None

    @property
    def state(self) -> BudgetState | None:
        return self.request.state

    def finished(self, eos: list[int]) -> bool:
        """Whether vLLM ended this request (it left the batch for good), read from its output: a state
        that is done may still owe the end-of-sequence that stops the request (an answer budget spent)."""
        if self.state is None:
            return True
        if not self.output:
            return False
        params = self.request.params
        stops = set(eos) | set(params.all_stop_token_ids) | set(params.stop_token_ids or [])
        at_cap = params.max_tokens is not None and len(self.output) >= params.max_tokens
        return at_cap or (self.output[-1] in stops and not params.ignore_eos)


@dataclass
class _DeviceBatch:
    """The rows of the device lane as tensors, rebuilt only when the batch or a row's lane changes."""

    size: int  # the batch's number of rows
    indices: list[int]
    rows: torch.Tensor  # [n] their rows in the batch
    whole: bool  # they are every row of the batch, in order
    redirected: torch.Tensor  # [n, k] the argmaxes each row replaces (padded by repeating one)
    targets: torch.Tensor  # [n] what replaces them
    position: dict[int, int] = field(default_factory=dict)  # id(row) -> its place in the tensors


class V1BudgetForcingProcessor(LogitsProcessor):
    """vLLM V1 logits processor: budget forcing for the requests whose `extra_args` ask for it."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        validate(sampling_params)

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool):
        if getattr(vllm_config, "speculative_config", None) is not None:
            raise ValueError(
                "budget forcing's logits processor cannot run with speculative decoding; "
                "use the re-prompt loop (forcing='reprompt') instead"
            )
        self.vllm_config = vllm_config  # kept alive with this processor, so its id is not reused meanwhile
        self.duplicate = not claim_engine(vllm_config, self)
        self.device = device
        self.admission = Admission(vllm_config, device, "V1")
        self.rows: dict[int, _Row] = {}
        self.parked: OrderedDict[int, tuple[weakref.ref, _Row]] = OrderedDict()  # by id(SamplingParams)
        self._device_batch: _DeviceBatch | None = None
        self._proposals: torch.Tensor | None = None  # the device lane's argmaxes at the last step
        self._proposals_host: list[int] | None = None
        self._positions: dict[int, int] = {}  # id(row) -> its place in `_proposals`
        self._copied: tuple[torch.Tensor, torch.Event] | None = None  # GPU: their copy on its way to the host
        self.pin_memory = is_pin_memory

    def is_argmax_invariant(self) -> bool:
        return self.duplicate  # it decides the token, greedy included (an idle duplicate changes nothing)

    # -- batch bookkeeping -------------------------------------------------------------------

    # vLLM calls the processor through `update_state` and `apply`, and neither lets an exception out: a
    # request our code fails on is ended (`_fail`), the others go on.

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if not batch_update or self.duplicate:
            return
        self._device_batch = None
        # vLLM lists as removed only the slots freed this step that stay empty: those it fills with a
        # new request, or with one moved there to close the gap, are not listed, so a request added or
        # moved (one way) to an occupied slot means its occupant left the batch.
        for index in batch_update.removed:
            self._leave_safely(index)
        for index, params, _prompt, output in batch_update.added:
            self._leave_safely(index)
            try:
                row = self._row_for(params, output)
            except Exception as err:
                row = _Row(self.admission.fail(params, f"batch row {index}", err), output)
            if row is not None:
                self.rows[index] = row
        for a, b, direction in batch_update.moved:
            if direction == MoveDirectionality.UNIDIRECTIONAL:
                self._leave_safely(b)
            row_a, row_b = self.rows.pop(a, None), self.rows.pop(b, None)
            if row_a is not None:
                self.rows[b] = row_a
            if row_b is not None and direction == MoveDirectionality.SWAP:
                self.rows[a] = row_b

    def _leave_safely(self, index: int) -> None:
        try:
            self._leave(index)
        except Exception as err:  # the request left the batch: only its kept state is lost
            logger.error("budget forcing: could not keep the state of a request leaving the batch: %s", err)

    def _fail(self, index: int, row: _Row, err: Exception) -> None:
        """End the request at `index`: our code failed on it (logged once, with the reason)."""
        row.request = self.admission.fail(row.request.params, f"batch row {index}", err)
        row.lane, row.redirect, row.choice, row.horizon, row.watched = HOST, None, None, 0, frozenset()
        self._device_batch = None

    def _leave(self, index: int) -> None:
        """The request at `index` left the batch: finished, or preempted or not scheduled this step (it
        comes back with its output, and its state waits in the parking lot meanwhile)."""
        row = self.rows.pop(index, None)
        if row is None:
            return
        if row.output and row.output[-1] == PLACEHOLDER:
            # Async scheduling: the last step's token is not back from the device yet, so whether the
            # request ended cannot be told. Its choice is kept for when it resumes with its tokens; a
            # request that ended never does, and its parked state goes with its `SamplingParams`.
            if row.choice is None:
                row.choice = (self._device_proposal(row) if row.lane == DEVICE else NOT_COMPUTED, None)
            self._park(row)
            return
        if row.state is not None:
            self._level(row)  # reads the last committed token (a final end-of-sequence)
        if not row.finished(self.admission.eos_ids()):
            self._park(row)

    def _park(self, row: _Row) -> None:
        """Keep a row that left unfinished until its request resumes. Only vLLM's own record of the
        request keeps its `SamplingParams` alive (the parked row holds it weakly), so a request that
        finished or was aborted unseen takes its parked state with it."""
        params, key = row.request.params, id(row.request.params)
        row.request.params = None  # type: ignore[assignment]

        def forget(ref: weakref.ref, key: int = key) -> None:
            if self.parked.get(key, (None,))[0] is ref:
                del self.parked[key]

        self.parked[key] = (weakref.ref(params, forget), row)
        while len(self.parked) > MAX_PARKED:
            self.parked.popitem(last=False)

    def _row_for(self, params: SamplingParams, output: list[int]) -> _Row | None:
        ref, parked = self.parked.pop(id(params), (None, None))
        if parked is not None and ref() is params:  # resumed after preemption
            parked.request.params, parked.output = params, output
            return parked
        request = self.admission.admit(params)
        if request is None:
            return None
        if not request.refused:
            refusal = v1_refusal(params)  # admission could not tell the runner (a GPU that fell back to V1)
            if refusal:
                request = self.admission.refuse(params, refusal)
        row = _Row(request, output)
        if output and not request.refused:  # resumed after its parked state was dropped: rebuild it
            logger.warning("budget forcing: a request resumed with no state kept; rebuilding it from its output")
            self._rebuild(row)
        self._plan(row)
        return row

    # -- the step ------------------------------------------------------------------------------

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:  # (always so for an idle duplicate)
            return logits
        try:
            return self._apply(logits)
        except Exception as err:  # in code shared by the step's forced rows: all of them end
            try:
                for index, row in self.rows.items():
                    if row.state is not None:
                        self._fail(index, row, err)
                return self._end_rows(logits, list(self.rows))
            except Exception as again:
                logger.error("budget forcing: could not end the step's forced requests after an error: %s", again)
                return logits

    def _apply(self, logits: torch.Tensor) -> torch.Tensor:
        host_rows: list[int] = []
        host_tokens: list[int] = []
        failed: list[int] = []
        for index, row in self.rows.items():
            try:
                seen, output = row.seen, row.output
                if len(output) == seen + 1 and seen + 1 < row.horizon and output[-1] not in row.watched:
                    row.seen += 1  # the free run goes on: nothing to decide
                    continue
                if len(output) != seen or row.choice is not None:
                    self._level(row)
                if row.lane == HOST:
                    token = self._choose(index, row, logits)
                    if token is not None:
                        host_rows.append(index)
                        host_tokens.append(token)
            except Exception as err:
                self._fail(index, row, err)
                failed.append(index)
        if self._device_batch is None or self._device_batch.size != logits.shape[0]:
            self._device_batch = self._build_device_batch(logits.shape[0])
        if self._device_batch.indices:
            self._device_step(logits, self._device_batch)
        if failed:
            self._end_rows(logits, failed)
        if host_rows:
            logits[torch.tensor(host_rows, device=logits.device), torch.tensor(host_tokens, device=logits.device)] = (
                FORCED_LOGIT
            )
        return logits

    def _end_rows(self, logits: torch.Tensor, indices: list[int]) -> torch.Tensor:
        """Rows of requests that failed: whatever was written to them is undone, and their
        end-of-sequence gets the winning logit."""
        for index in indices:
            eos = self.admission.end_token(self.rows[index].request)
            if eos is not None:
                logits[index] = -FORCED_LOGIT
                logits[index, eos] = FORCED_LOGIT
        return logits

    def _choose(self, index: int, row: _Row, logits: torch.Tensor) -> int | None:
        """The token of a host-lane row, remembered until the output shows whether vLLM committed it
        (None: a request to end whose end-of-sequence is unknown)."""
        state = row.state
        if state is None or state.done:  # refused, or the answer budget is spent: end-of-sequence
            return self.admission.end_token(row.request)
        if not state.needs_proposal():
            row.choice = (None, None)
            return state.preview()
        generator = row.request.generator
        before = generator.get_state() if generator is not None else None
        proposal = int(row.request.sampling.propose(logits[index : index + 1], generator)[0])
        row.choice = (proposal, before)
        return state.preview(proposal)

    def _device_step(self, logits: torch.Tensor, batch: _DeviceBatch) -> None:
        """Rules 2 and 3 for every device-lane row at once, without leaving the device: where the argmax
        is one the row replaces, its replacement gets the winning logit."""
        self._proposals_host, self._positions, self._copied = None, batch.position, None
        if logits.device.type == "cpu":
            proposals = self._proposals = self._cpu_argmax(logits, batch)
            if proposals is None:
                return
        else:  # one parallel kernel; the copy to the host is waited for only when a row needs it
            proposals = self._proposals = first_argmax(logits if batch.whole else logits.index_select(0, batch.rows))
            host = torch.empty(proposals.shape, dtype=proposals.dtype, pin_memory=self.pin_memory)
            host.copy_(proposals, non_blocking=True)
            event = torch.Event(device=proposals.device)
            event.record()
            self._copied = (host, event)
        replaced = (batch.redirected == proposals[:, None]).any(dim=1)
        current = logits[batch.rows, batch.targets]
        logits[batch.rows, batch.targets] = torch.where(replaced, torch.full_like(current, FORCED_LOGIT), current)

    @staticmethod
    def _cpu_argmax(logits: torch.Tensor, batch: _DeviceBatch) -> torch.Tensor | None:
        """The argmax of the rows where it may be a token the row replaces, NOT_COMPUTED elsewhere, and
        None where it is so nowhere. On a CPU a full pass over the vocabulary is most of the cost, and
        it is rarely needed: a token of the first `PROBE` ids whose logit beats every replaced token
        proves that none of them is the argmax (the tokens that end thinking are, in the usual
        tokenizers, special tokens at the end of the vocabulary)."""
        best_replaced = logits[batch.rows[:, None], batch.redirected].amax(dim=1)
        probe = logits[:, :PROBE].amax(dim=1)
        probe = probe if batch.whole else probe.index_select(0, batch.rows)
        unsure = torch.nonzero(best_replaced >= probe).flatten()
        if not unsure.numel():
            return None
        if 2 * unsure.numel() > batch.rows.numel():  # most rows: one pass, without copying rows
            return first_argmax(logits if batch.whole else logits.index_select(0, batch.rows))
        proposals = torch.full_like(batch.targets, NOT_COMPUTED)
        proposals[unsure] = first_argmax(logits.index_select(0, batch.rows[unsure]))
        return proposals

    def _build_device_batch(self, size: int) -> _DeviceBatch:
        indices = sorted(index for index, row in self.rows.items() if row.lane == DEVICE)
        width = max((len(self.rows[i].redirect[0]) for i in indices), default=1)  # type: ignore[index]
        redirected, targets = [], []
        for index in indices:
            stops, target = self.rows[index].redirect  # type: ignore[misc]
            redirected.append(list(stops) + [stops[0]] * (width - len(stops)))
            targets.append(target)
        return _DeviceBatch(
            size,
            indices,
            torch.tensor(indices, device=self.device, dtype=torch.long),
            len(indices) == size,  # (indices are sorted and below size)
            torch.tensor(redirected, device=self.device, dtype=torch.long).reshape(len(indices), width),
            torch.tensor(targets, device=self.device, dtype=torch.long),
            {id(self.rows[index]): position for position, index in enumerate(indices)},
        )

    # -- keeping the state level with vLLM's output ---------------------------------------------

    def _level(self, row: _Row) -> None:
        """Bring the state level with vLLM's output: record the free run, then each newer token against
        the choice behind it; a step whose token vLLM discarded rewinds the sampler. Then plan the next
        step's lane."""
        state = row.state
        choice, row.choice = row.choice, None
        if state is None:
            return
        if state.done:  # only the end-of-sequence that stops the request comes after this
            row.seen = len(row.output)
            self._plan(row)
            return
        output = row.output
        if len(output) == len(state.completion) and choice is not None and choice[1] is not None:
            row.request.generator.set_state(choice[1])  # type: ignore[union-attr]  # the draw never happened
        try:
            state.extend_free(output[len(state.completion) : row.seen])
            for position in range(row.seen, len(output)):
                committed = output[position]
                if choice is not None:
                    proposal = choice[0] if state.needs_proposal() else None
                elif row.lane == DEVICE:
                    proposal = self._device_proposal(row)
                else:  # vllm lane: vLLM's own argmax, which the rules pass through
                    proposal = NOT_COMPUTED
                if proposal == NOT_COMPUTED:
                    proposal = committed
                choice = None
                if state.done or (proposal is None and state.needs_proposal()) or state.advance(proposal) != committed:
                    raise ValueError(f"token {committed} at {position} is not the one chosen")
        except ValueError as err:
            logger.warning("budget forcing: %s; rebuilding the state from the request's %d tokens", err, len(output))
            self._rebuild(row)
        row.seen = len(output)
        self._plan(row)

    def _device_proposal(self, row: _Row) -> int | None:
        """The row's argmax at the last step (NOT_COMPUTED: vLLM's own decided; None: not known)."""
        position = self._positions.get(id(row))
        if position is None:
            return None
        if self._proposals is None:  # no row's argmax was computed
            return NOT_COMPUTED
        if self._proposals_host is None:
            if self._copied is None:
                self._proposals_host = self._proposals.tolist()
            else:  # waits for that copy only, not for the step running now
                host, event = self._copied
                event.synchronize()
                self._proposals_host = host.tolist()
        return self._proposals_host[position]

    def _rebuild(self, row: _Row) -> None:
        """Replace the row's state with one replayed from vLLM's committed output, or end the request."""
        state = replayed(row.request, row.output)
        if state is None:
            logger.error("budget forcing: a request's output breaks the rules; ending it")
            row.request.state = None
        else:
            row.request.state = state
        row.seen = len(row.output)

    def _plan(self, row: _Row) -> None:
        """Choose the row's lane for the next steps, and the free run it may go on for."""
        before = (row.lane, row.redirect)
        state, sampling = row.state, row.request.sampling
        row.lane, row.redirect, row.watched, row.horizon = HOST, None, frozenset(), 0
        if state is not None and not state.done and state.needs_proposal() and sampling.greedy:
            row.horizon = len(row.output) + state.free_run()
            row.watched = state.watched()
            row.lane = VLLM
            redirected, target = state.replaced_ends()  # (nothing in the answer)
            if redirected:
                row.lane, row.redirect = DEVICE, (tuple(sorted(redirected)), target)
                row.watched = row.watched | {target}
        if (row.lane, row.redirect) != before:
            self._device_batch = None
