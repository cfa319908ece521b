"""Budget forcing under vLLM's Model Runner V2 (the default on GPUs with Triton, vLLM >= 0.32).

Model Runner V2 keeps a request's state in a slot, recycled through a free list, and tells a logits
processor only `add_request(slot, params)` (which must reset the slot) and, at every step, the
logits with the step's layout (`LogitsContext`: which slot each row belongs to, rows reordered every
step). Committed tokens live on the device (`req_states.all_token_ids`); a request resumed after
preemption is re-added with its output so far as part of its prefill (`prefill_len > prompt_len`).
Nothing tells the processor that a request left.

The processor decides every token of a forced request itself, so it needs no read-back of what vLLM
sampled: whether this step's token counts is known on the host before sampling (a step still
reading the prefill, `seq_len < prefill_len`, is discarded), and nothing after the processor changes
its choice (vLLM's own thinking budget is refused alongside). V2 applies repetition, frequency and
presence penalties *before* custom processors, so the proposal includes them. A resumed request's
committed output is read back from the device once, to find its state again.

Host-device synchronisation: one copy of the proposals of the forced rows that need one (greedy
argmax, or the draw) per step; none on steps where every forced row emits a forced token, and none
for plain requests. vLLM's own thinking budget runs entirely on the device.

Speculative decoding gives a request several rows per step (draft tokens); forced requests are then
refused at admission (logged, ended at once), plain ones pass untouched.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from vllm import SamplingParams
from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsContext, LogitsProcessor, LogitsProcRequestState

from .sampling import first_argmax
from .vllm_requests import FORCED_LOGIT, Admission, ForcedRequest, claim_engine, logger, replayed, validate

MAX_RETIRED = 4096  # states of requests whose slot was taken while they were unfinished (preempted)

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
        self.slots: list[ForcedRequest | None] = [None] * req_states.max_num_reqs
        self.active = np.zeros(req_states.max_num_reqs, bool)
        self.retired: dict[int, ForcedRequest] = {}  # by id(record), oldest first
        self._resumed: list[int] = []
        self._eos_slots: torch.Tensor | None = None  # refused slots, for speculative batches

    def add_request(self, req_idx: int, sampling_params: SamplingParams) -> bool:
        if self.duplicate:
            return False
        previous = self.slots[req_idx]
        if previous is not None and previous.state is not None and not previous.state.done:
            self._retire(previous)  # finished by vLLM, or preempted: kept in case it resumes
        record = self.admission.admit(sampling_params, SPECULATIVE_REFUSAL if self.speculative else None)
        self.slots[req_idx] = record
        self.active[req_idx] = record is not None
        self._eos_slots = None
        if record is None:
            return False
        output_len = int(self.req_states.prefill_len.np[req_idx]) - int(self.req_states.prompt_len.np[req_idx])
        if output_len > 0 and record.state is not None:
            self._resumed.append(req_idx)
        return True

    def _retire(self, record: ForcedRequest) -> None:
        self.retired[id(record)] = record
        while len(self.retired) > MAX_RETIRED:
            self.retired.pop(next(iter(self.retired)))

    def apply_staged_writes(self) -> None:
        """Find the state of each request resumed after preemption (its output is read from the device)."""
        for slot in self._resumed:
            record = self.slots[slot]
            if record is None or record.state is None:
                continue
            prompt_len = int(self.req_states.prompt_len.np[slot])
            prefill_len = int(self.req_states.prefill_len.np[slot])
            output = self.req_states.all_token_ids.gpu[slot, prompt_len:prefill_len].tolist()
            self.slots[slot] = self._resume(record, output)
        self._resumed.clear()

    def _resume(self, record: ForcedRequest, output: list[int]) -> ForcedRequest:
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
        slots = ctx.idx_mapping_np
        forced = self.active[slots]
        if not forced.any():
            return logits
        if logits.shape[0] != len(slots):  # draft rows: only refused forced requests can be here
            return self._end_refused(logits, ctx)
        positions = np.flatnonzero(forced).tolist()
        prefill = self.req_states.prefill_len.np[slots]
        counts = ctx.seq_lens_upper_bound_np >= prefill  # False: vLLM discards this step's token
        rows: list[int] = []
        tokens: list[int] = []
        greedy: list[int] = []
        sampled: list[tuple[int, torch.Tensor, torch.Tensor | None]] = []
        for pos in positions:
            record = self.slots[slots[pos]]
            assert record is not None
            state = record.state
            if state is None or state.done:  # refused, or the answer budget is spent: end-of-sequence
                eos = record.tokens.eos if record.tokens is not None else self.admission.eos_ids()
                rows.append(pos)
                tokens.append(min(eos))
            elif not state.needs_proposal():
                rows.append(pos)
                tokens.append(state.advance() if counts[pos] else state.preview())
            elif record.sampling.greedy:
                greedy.append(pos)
            else:
                generator = record.generator
                before = None if generator is None or counts[pos] else generator.get_state()
                draw = record.sampling.propose(logits[pos : pos + 1], generator)
                sampled.append((pos, draw, before))
        proposed = greedy + [pos for pos, _, _ in sampled]
        if proposed:
            parts = []
            if greedy:
                parts.append(first_argmax(logits[torch.tensor(greedy, device=logits.device)]))
            parts.extend(draw for _, draw, _ in sampled)
            proposals = torch.cat(parts).tolist()  # the one device-to-host copy of the step
            for pos, proposal in zip(proposed, proposals, strict=True):
                state = self.slots[slots[pos]].state  # type: ignore[union-attr]
                assert state is not None
                rows.append(pos)
                tokens.append(state.advance(proposal) if counts[pos] else state.preview(proposal))
            for pos, _, before in sampled:
                if before is not None:  # a discarded step draws nothing
                    self.slots[slots[pos]].generator.set_state(before)  # type: ignore[union-attr]
        if rows:
            logits[torch.tensor(rows, device=logits.device), torch.tensor(tokens, device=logits.device)] = FORCED_LOGIT
        return logits

    def _end_refused(self, logits: torch.Tensor, ctx: LogitsContext) -> torch.Tensor:
        """Under speculative decoding every forced request was refused: end-of-sequence on all its rows,
        without leaving the device."""
        if self._eos_slots is None:
            self._eos_slots = torch.tensor(np.flatnonzero(self.active), device=logits.device)
        rows = torch.isin(ctx.expanded_idx_mapping, self._eos_slots)
        eos = min(self.admission.eos_ids())
        logits[:, eos] = torch.where(rows, torch.full_like(logits[:, eos], FORCED_LOGIT), logits[:, eos])
        return logits


def _cloned(generator: torch.Generator) -> torch.Generator:
    clone = torch.Generator(device=generator.device)
    clone.set_state(generator.get_state())
    return clone
