"""Budget forcing under vLLM's Model Runner V2 (the default on GPUs with Triton, vLLM >= 0.32).

Model Runner V2 keeps a request's state in a slot, recycled through a free list, and tells a logits
processor only `add_request(slot, params)` (which must reset the slot) and, at every step, the
logits with the step's layout (`LogitsContext`: which slot each row belongs to, rows reordered every
step). Committed tokens live on the device (`req_states.all_token_ids`); a request resumed after
preemption is re-added with its output so far as part of its prefill (`prefill_len > prompt_len`).
Nothing tells the processor that a request left.

The processor decides every token of a forced request itself, so it needs no read-back of what vLLM
sampled: whether this step's token counts is known on the host before sampling (a step still
reading the prefill, `seq_len < prefill_len`, is discarded), and the chosen token gets the winning
logit, so nothing after the processor changes it (vLLM's own thinking budget is refused alongside).
V2 applies repetition, frequency and presence penalties *before* custom processors, so the proposal
includes them. A resumed request's committed output is read back from the device once, to find its
state again.

Greedy requests that the rules leave alone for now (`BudgetState.free_run`: thinking with no count
at a budget, or the answer) are handled together, with numpy over per-slot arrays: their argmaxes
are copied to the host, kept there as the run grows, and given to the state in one call when the run
ends (a token the rules watch, a budget reached, or `RUN_CHUNK` tokens). Only the rows where a rule
acts, and forced strings and sampled rows, run per row in Python.

Host-device synchronisation: one copy of the forced rows' greedy argmaxes and draws per step; none on
steps where every forced row emits a forced token, and none for plain requests. vLLM's own thinking
budget runs entirely on the device. Removing this copy would need the rules themselves on the device.

Speculative decoding gives a request several rows per step (draft tokens); forced requests are then
refused at admission (logged, ended at once), plain ones pass untouched.

Under CUDA graphs a decode batch runs in the graph of the next capture size, and the host array of
sequence-length bounds is sized to that padded count (zeros past the real rows), while the slot
mapping and the logits hold only the real rows: only the array's head is read. vLLM 0.34 calls
`apply_staged_writes` only on steps that admit a request, and reads `add_request`'s answer (whether
the processor may change the request's logits) in its speculative rejection sampler.

No call from vLLM lets an exception out: a request our code fails on is ended (end-of-sequence at
its next row, one log line), and every other request goes on.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from vllm import SamplingParams
from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsContext, LogitsProcessor, LogitsProcRequestState

from ..rules.sampling import first_argmax
from .admission import FORCED_LOGIT, Admission, ForcedRequest, claim_engine, logger, replayed, validate

MAX_RETIRED = 4096  # states of requests whose slot was taken while they were unfinished (preempted)
RUN_CHUNK = 256  # the most tokens of a free run kept in the slot arrays before the state records them
PLAIN, FREE, HOST = 0, 1, 2  # a slot's lane: not forced; greedy in a free run; decided row by row

SPECULATIVE_REFUSAL = (
    "budget forcing cannot run with speculative decoding under vLLM's Model Runner V2 (draft tokens would "
    "bypass the rules); use the re-prompt loop (forcing='reprompt') on such an engine"
)


class V2BudgetForcingProcessor(LogitsProcessor):
    """vLLM Model Runner V2 logits processor: budget forcing for the requests whose `extra_args` ask for it."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        validate(sampling_params)

    def __init__(self, vllm_config: Any, req_states: LogitsProcRequestState):
        self.vllm_config = vllm_config  # kept alive with this processor, so its id is not reused meanwhile
        self.duplicate = not claim_engine(vllm_config, self)
        self.req_states = req_states
        self.device = req_states.device
        self.speculative = getattr(vllm_config, "speculative_config", None) is not None
        self.admission = Admission(vllm_config, self.device, "V2")
        slots = req_states.max_num_reqs
        self.slots: list[ForcedRequest | None] = [None] * slots
        self.lane = np.zeros(slots, np.int8)
        self.run_left = np.zeros(slots, np.int64)  # free lane: tokens the run may still take
        self.run = np.zeros((slots, RUN_CHUNK), np.int64)  # free lane: the run's tokens, not yet in the state
        self.run_len = np.zeros(slots, np.int64)
        self.watched = np.full((slots, 4), -1, np.int64)  # free lane: the proposals that end the run
        self.retired: dict[int, ForcedRequest] = {}  # by id(record), oldest first
        self._resumed: list[int] = []
        self._eos_slots: torch.Tensor | None = None  # refused slots, for speculative batches

    @property
    def active(self) -> np.ndarray:
        return self.lane != PLAIN

    # Every call from vLLM into the processor goes through one of the three methods below, and none
    # lets an exception out: a request our code fails on is ended (`_fail`), the others go on.

    def add_request(self, req_idx: int, sampling_params: SamplingParams) -> bool:
        if self.duplicate:
            return False
        try:
            self._vacate(req_idx)
        except Exception as err:  # the slot's previous request is gone from the batch: only its record is lost
            logger.error("budget forcing: could not keep the state of slot %d's previous request: %s", req_idx, err)
            self.slots[req_idx] = None
        try:
            return self._add_request(req_idx, sampling_params)
        except Exception as err:
            self._fail(req_idx, sampling_params, err)
            return True

    def _vacate(self, slot: int) -> None:
        previous = self.slots[slot]
        if previous is not None and previous.state is not None:
            self._level(slot)
            if not previous.state.done:
                self._retire(previous)  # finished by vLLM, or preempted: kept in case it resumes

    def _add_request(self, req_idx: int, sampling_params: SamplingParams) -> bool:
        record = self.admission.admit(sampling_params, SPECULATIVE_REFUSAL if self.speculative else None)
        self.slots[req_idx] = record
        self._eos_slots = None
        self._plan(req_idx)
        if record is None:
            return False
        output_len = int(self.req_states.prefill_len.np[req_idx]) - int(self.req_states.prompt_len.np[req_idx])
        if output_len > 0 and record.state is not None:
            self._resumed.append(req_idx)
        return True

    def _fail(self, slot: int, params: SamplingParams | None, err: Exception) -> None:
        """End the request in `slot`: our code failed on it (logged once, with the reason)."""
        record = self.slots[slot]
        if params is None and record is not None:
            params = record.params
        self.slots[slot] = self.admission.fail(params, f"slot {slot}", err)
        self.run_len[slot] = 0
        self.lane[slot] = HOST
        self._eos_slots = None
        if slot in self._resumed:
            self._resumed.remove(slot)

    def _retire(self, record: ForcedRequest) -> None:
        self.retired[id(record)] = record
        while len(self.retired) > MAX_RETIRED:
            self.retired.pop(next(iter(self.retired)))

    def _level(self, slot: int) -> None:
        """Give the slot's state the free run kept in the slot arrays."""
        length = int(self.run_len[slot])
        if length:
            self.run_len[slot] = 0
            self.slots[slot].state.extend_free(self.run[slot, :length].tolist())  # type: ignore[union-attr]

    def _plan(self, slot: int) -> None:
        """The slot's lane for the next steps: a free run (greedy, no rule acting), or row by row."""
        record = self.slots[slot]
        self.run_len[slot] = 0
        if record is None:
            self.lane[slot] = PLAIN
            return
        state = record.state
        if state is None or state.done or not state.needs_proposal() or not record.sampling.greedy:
            self.lane[slot] = HOST
            return
        watched = sorted(state.watched())
        if len(watched) > self.watched.shape[1]:
            wider = np.full((len(self.slots), len(watched)), -1, np.int64)
            wider[:, : self.watched.shape[1]] = self.watched
            self.watched = wider
        self.watched[slot] = -1
        self.watched[slot, : len(watched)] = watched
        self.run_left[slot] = min(state.free_run(), RUN_CHUNK)
        self.lane[slot] = FREE

    def apply_staged_writes(self) -> None:
        """Find the state of each request resumed after preemption (its output is read from the device).
        vLLM 0.34 calls this only on steps that admit a request, as `_resumed` fills only then."""
        resumed, self._resumed = self._resumed, []
        for slot in resumed:
            try:
                self._find_state(slot)
            except Exception as err:
                self._fail(slot, None, err)

    def _find_state(self, slot: int) -> None:
        record = self.slots[slot]
        if record is None or record.state is None:
            return
        prompt_len = int(self.req_states.prompt_len.np[slot])
        prefill_len = int(self.req_states.prefill_len.np[slot])
        output = self.req_states.all_token_ids.gpu[slot, prompt_len:prefill_len].tolist()
        self.slots[slot] = self._resume(record, output)
        self._plan(slot)

    def _resume(self, record: ForcedRequest, output: list[int]) -> ForcedRequest:
        for slot, live in enumerate(self.slots):  # a request re-added before its old slot was reused
            if live is not None and live is not record and live.params == record.params:
                self._level(slot)
        match = next(
            (
                old
                for old in [*reversed(self.retired.values()), *(s for s in self.slots if s is not None)]
                if old is not record
                and old.state is not None
                and old.params == record.params
                and old.state.completion == output
            ),
            None,
        )
        if match is not None:
            self.retired.pop(id(match), None)
            resumed = copy.copy(match)
            resumed.state = copy.deepcopy(match.state)
            resumed.generator = record.generator if match.generator is None else _cloned(match.generator)
            return resumed
        state = replayed(record, output)
        if state is None:
            return self.admission.refuse(record.params, f"resumed with {len(output)} tokens the rules cannot give")
        logger.warning("budget forcing: a request resumed with no state kept; state rebuilt from its tokens")
        record.state = state
        return record

    # -- the step ------------------------------------------------------------------------------

    def apply(self, logits: torch.Tensor, ctx: LogitsContext) -> torch.Tensor:
        if self.duplicate:
            return logits
        try:
            return self._apply(logits, ctx)
        except Exception as err:  # in code shared by the step's forced rows: all of them end
            return self._fail_step(logits, ctx, err)

    def _apply(self, logits: torch.Tensor, ctx: LogitsContext) -> torch.Tensor:
        slots = ctx.idx_mapping_np
        lanes = self.lane[slots]
        if not lanes.any():
            return logits
        if logits.shape[0] != len(slots):  # draft rows: only refused forced requests can be here
            return self._end_refused(logits, ctx)
        # False: the step still reads the prefill and vLLM discards its token. The host array is sized
        # to the CUDA graph's padded request count (zeros past the real rows): only its head is ours.
        counts = ctx.seq_lens_upper_bound_np[: len(slots)] >= self.req_states.prefill_len.np[slots]
        rows: list[int] = []  # rows whose token the rules chose, and those tokens
        tokens: list[int] = []
        failed: list[int] = []  # rows of requests our code failed on at this step (ended: reset, then eos)
        sampled = self._host_rows(logits, np.flatnonzero(lanes == HOST), slots, counts, rows, tokens, failed)
        free = np.flatnonzero((lanes == FREE) & counts)  # (a discarded step of a free row needs nothing)
        argmax = None
        if free.size:  # each free row's argmax gets the winning logit: vLLM's sampler takes exactly it
            everything = free.size == logits.shape[0]
            index = torch.from_numpy(free).to(logits.device)
            argmax = first_argmax(logits if everything else logits.index_select(0, index))
            logits[index, argmax] = FORCED_LOGIT
        if argmax is not None or sampled:
            parts = ([argmax] if argmax is not None else []) + [draw for _, _, draw, _ in sampled]
            proposals = torch.cat(parts).cpu().numpy()  # the one device-to-host copy of the step
            if free.size:
                self._free_rows(logits, free, slots[free], proposals[: free.size], rows, tokens, failed)
            for (position, slot, _, before), proposal in zip(sampled, proposals[free.size :].tolist(), strict=True):
                record = self.slots[slot]
                try:
                    if counts[position]:
                        token = record.state.advance(proposal)  # type: ignore[union-attr]
                        self._plan(slot)
                    else:
                        token = record.state.preview(proposal)  # type: ignore[union-attr]
                        record.generator.set_state(before)  # type: ignore[union-attr]  # nothing was drawn
                except Exception as err:
                    self._fail(slot, None, err)
                    failed.append(position)
                    continue
                rows.append(position)
                tokens.append(token)
        self._end_failed(logits, slots, failed, rows, tokens)
        if rows:
            logits[torch.tensor(rows, device=logits.device), torch.tensor(tokens, device=logits.device)] = FORCED_LOGIT
        return logits

    def _end_failed(
        self, logits: torch.Tensor, slots: np.ndarray, failed: list[int], rows: list[int], tokens: list[int]
    ) -> None:
        """The rows of requests that failed at this step: whatever was written to them is undone, and
        their end-of-sequence gets the winning logit (added to `rows` and `tokens`)."""
        if not failed:
            return
        logits[torch.tensor(failed, device=logits.device)] = -FORCED_LOGIT
        for position in failed:
            eos = self.admission.end_token(self.slots[int(slots[position])])  # type: ignore[arg-type]
            if eos is not None:
                rows.append(position)
                tokens.append(eos)

    def _fail_step(self, logits: torch.Tensor, ctx: LogitsContext, err: Exception) -> torch.Tensor:
        """End every forced request of the step, leaving the plain rows as they came."""
        try:
            forced = sorted({int(slot) for slot in ctx.idx_mapping_np if self.lane[slot] != PLAIN})
            for slot in forced:
                self._fail(slot, None, err)
            if logits.shape[0] == len(ctx.idx_mapping_np):
                row_slots = np.asarray(ctx.idx_mapping_np)
            else:
                row_slots = ctx.expanded_idx_mapping.cpu().numpy()
            failed = np.flatnonzero(np.isin(row_slots, forced)).tolist()
            rows: list[int] = []
            tokens: list[int] = []
            self._end_failed(logits, row_slots, failed, rows, tokens)
            if rows:
                index = torch.tensor(rows, device=logits.device)
                logits[index, torch.tensor(tokens, device=logits.device)] = FORCED_LOGIT
        except Exception as again:
            logger.error("budget forcing: could not end the step's forced requests after an error: %s", again)
        return logits

    def _host_rows(
        self,
        logits: torch.Tensor,
        positions: np.ndarray,
        slots: np.ndarray,
        counts: np.ndarray,
        rows: list[int],
        tokens: list[int],
        failed: list[int],
    ) -> list[tuple[int, int, torch.Tensor, torch.Tensor | None]]:
        """Rows decided one by one: requests that must end, forced strings (chosen here) and sampled rows
        (their draws are returned, still on the device)."""
        sampled = []
        for position in positions.tolist():
            slot = int(slots[position])
            record = self.slots[slot]
            try:
                assert record is not None
                state = record.state
                if state is None or state.done:  # refused, failed, or the answer budget is spent: end
                    eos = self.admission.end_token(record)
                    if eos is not None:
                        rows.append(position)
                        tokens.append(eos)
                elif not state.needs_proposal():
                    token = state.advance() if counts[position] else state.preview()
                    if counts[position]:
                        self._plan(slot)
                    rows.append(position)
                    tokens.append(token)
                else:  # sampling (greedy rows that need a proposal are in the free lane)
                    generator = record.generator
                    before = generator.get_state() if generator is not None and not counts[position] else None
                    draw = record.sampling.propose(logits[position : position + 1], generator)
                    sampled.append((position, slot, draw, before))
            except Exception as err:
                self._fail(slot, None, err)
                failed.append(position)
        return sampled

    def _free_rows(
        self,
        logits: torch.Tensor,
        positions: np.ndarray,
        slots: np.ndarray,
        proposals: np.ndarray,
        rows: list[int],
        tokens: list[int],
        failed: list[int],
    ) -> None:
        """Free-run rows, together: each argmax joins its run, except a watched token or the run's last,
        where the state takes the run and the rules decide the token."""
        watched = (self.watched[slots] == proposals[:, None]).any(axis=1)
        ends = watched | (self.run_len[slots] + 1 >= self.run_left[slots])
        going = slots[~ends]
        self.run[going, self.run_len[going]] = proposals[~ends]
        self.run_len[going] += 1
        ending = zip(positions[ends].tolist(), slots[ends].tolist(), proposals[ends].tolist(), strict=True)
        for position, slot, proposal in ending:
            try:
                self._level(slot)
                token = self.slots[slot].state.advance(proposal)  # type: ignore[union-attr]
                self._plan(slot)
            except Exception as err:
                self._fail(slot, None, err)
                failed.append(position)
                continue
            if token != proposal:
                logits[position, proposal] = -FORCED_LOGIT  # overrule the argmax's winning logit
                rows.append(position)
                tokens.append(token)

    def _end_refused(self, logits: torch.Tensor, ctx: LogitsContext) -> torch.Tensor:
        """Under speculative decoding every forced request was refused: end-of-sequence on all its rows,
        without leaving the device."""
        if self._eos_slots is None:
            self._eos_slots = torch.tensor(np.flatnonzero(self.active), device=logits.device)
        rows = torch.isin(ctx.expanded_idx_mapping, self._eos_slots)
        eos = min(self.admission.eos_ids())  # (if unknown, the step fails and `_fail_step` ends what it can)
        logits[:, eos] = torch.where(rows, torch.full_like(logits[:, eos], FORCED_LOGIT), logits[:, eos])
        return logits


def _cloned(generator: torch.Generator) -> torch.Generator:
    clone = torch.Generator(device=generator.device)
    clone.set_state(generator.get_state())
    return clone
