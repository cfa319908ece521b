"""Budget forcing under vLLM's Model Runner V1 (the CPU build; GPUs without Triton or with features
Model Runner V2 lacks).

vLLM V1 hands the processor each request's live output list, and runs it at every step, including
steps whose token it then discards (a step that only reads a chunk of the prompt, or of a preempted
request being recomputed). So the processor never changes a request's state when it picks a token:
it records a plan, and the next step reads vLLM's output list and commits the plan only if the token
is there. A preempted request leaves the batch and comes back with its output; its state waits in a
parking lot meanwhile.

Greedy rows, the common case, are handled as one vectorised lane set. While thinking, the rules act
only when the model's argmax ends thinking, and what they emit then is known in advance (the wait
string's first token, or the end token, or the close string's for an end-of-sequence). So instead of
finding each row's argmax, the processor edits the few logits of those tokens so that vLLM's own
argmax emits the rules' choice: the stop tokens are removed and the replacement token gets their
maximum. The logits of those few tokens are kept, and the next step tells, from the emitted token,
which proposal the model made. Rows whose emitted token is ordinary only count it (the state records
such tokens in bulk when a rule may next act); only rows where something happened run Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from .formats import FormatTokens
from .state import FINISH_MAX_ANSWER
from .vllm_requests import FORCED_LOGIT, Admission, ForcedRequest, claim_engine, logger, replayed, v1_refusal

MAX_PARKED = 4096  # states of preempted requests kept until they resume


@dataclass
class _Row:
    """One budget-forced request in the batch, and what the processor asked of its last step."""

    request: ForcedRequest
    output: list[int]  # vLLM's live list of the request's generated tokens
    lane: int = -1  # position in the greedy lanes (-1: none)
    plan: str | None = None  # "forced", "sampled" or "end"; greedy lanes keep theirs in the lanes
    planned_token: int = -1
    proposal: int = -1
    generator_state: torch.Tensor | None = field(default=None, repr=False)

    @property
    def accounted(self) -> int:
        assert self.request.state is not None
        return len(self.request.state.completion)


class _Lanes:
    """The greedy rows, one lane each, as arrays. A lane is `free` while its row needs the model's
    proposal; `cnt` counts the ordinary tokens vLLM emitted that the state has not recorded yet."""

    def __init__(self, capacity: int = 64, width: int = 6):
        self.rows: list[_Row | None] = []
        self.width = width
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        old = getattr(self, "batch_row", None)
        n = 0 if old is None else len(old)
        new: dict[str, np.ndarray] = {
            "batch_row": np.zeros(capacity, np.int64),
            "free": np.zeros(capacity, bool),
            "planned": np.zeros(capacity, bool),
            "cnt": np.zeros(capacity, np.int64),
            "committed": np.zeros(capacity, np.int64),
            "limit": np.zeros(capacity, np.int64),
            "t0": np.zeros(capacity, np.int64),
            "minimum": np.zeros(capacity, np.int64),
            "ignores": np.zeros(capacity, bool),
            "thinking": np.zeros(capacity, bool),
            "rep_planned": np.zeros(capacity, bool),
            "cols": np.zeros((capacity, self.width), np.int64),
            "special": np.zeros((capacity, self.width), bool),  # a column whose emission needs a look
            "is_stop": np.zeros((capacity, self.width), bool),
            "is_eos": np.zeros((capacity, self.width), bool),
            "is_wait": np.zeros((capacity, self.width), bool),
            "is_close": np.zeros((capacity, self.width), bool),
            "vals": np.zeros((capacity, self.width), np.float32),
        }
        for name, array in new.items():
            if old is not None:
                src = getattr(self, name)[: min(n, capacity)]
                if array.ndim == 2:
                    array[: len(src), : src.shape[1]] = src
                else:
                    array[: len(src)] = src
            setattr(self, name, array)

    def add(self, row: _Row, batch_row: int, tokens: FormatTokens) -> int:
        lane = next((i for i, r in enumerate(self.rows) if r is None), len(self.rows))
        if lane == len(self.rows):
            self.rows.append(None)
        if lane >= len(self.batch_row):
            self._alloc(2 * len(self.batch_row))
        real_cols = sorted({tokens.wait[0], tokens.close[0][0], *tokens.stops_thinking})
        if len(real_cols) > self.width:
            self.width = len(real_cols)
            self._alloc(len(self.batch_row))
        pad = next(t for t in range(self.width + 1) if t not in real_cols)  # a column left as it is
        col = np.array(real_cols + [pad] * (self.width - len(real_cols)))
        real = np.arange(self.width) < len(real_cols)
        self.cols[lane] = col
        self.is_stop[lane] = real & np.isin(col, list(tokens.stops_thinking))
        self.is_eos[lane] = real & np.isin(col, list(tokens.eos))
        self.is_wait[lane] = real & (col == tokens.wait[0])
        self.is_close[lane] = real & (col == tokens.close[0][0])
        self.special[lane] = real
        self.rows[lane] = row
        self.batch_row[lane] = batch_row
        self.free[lane] = self.planned[lane] = False
        self.cnt[lane] = 0
        row.lane = lane
        return lane

    def remove(self, row: _Row) -> None:
        self.rows[row.lane] = None
        self.free[row.lane] = self.planned[row.lane] = False
        row.lane = -1

    def open(self, row: _Row) -> None:
        """Let the lane of `row` take the model's proposals from the state's present point."""
        state = row.request.state
        assert state is not None and state.needs_proposal()
        lane = row.lane
        self.free[lane] = True
        self.planned[lane] = False
        self.cnt[lane] = 0
        self.committed[lane] = len(state.completion)
        self.limit[lane] = state.passes_through()
        self.t0[lane] = state.thinking
        self.minimum[lane] = state.budget.min_thinking_tokens
        self.ignores[lane] = state.ignores_left > 0
        self.thinking[lane] = state.thinking_phase


class V1BudgetForcingProcessor(LogitsProcessor):
    """vLLM V1 logits processor: budget forcing for the requests whose `extra_args` ask for it."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        from .vllm_requests import validate

        validate(sampling_params)

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool):
        if getattr(vllm_config, "speculative_config", None) is not None:
            raise ValueError(
                "budget forcing's logits processor cannot run with speculative decoding under vLLM's Model Runner V1; "
                "use the re-prompt loop (forcing='reprompt') instead"
            )
        self.vllm_config = vllm_config  # kept alive with this processor, so its id is not reused meanwhile
        self.duplicate = not claim_engine(vllm_config, self)
        self.device = device
        self.admission = Admission(vllm_config, device, "V1")
        self.rows: dict[int, _Row] = {}
        self.single: dict[int, _Row] = {}  # rows handled one by one this step (not a free greedy lane)
        self.lanes = _Lanes()
        self.parked: dict[int, _Row] = {}  # by id(SamplingParams): preempted requests, oldest first

    def is_argmax_invariant(self) -> bool:
        return self.duplicate  # it decides the token, greedy included (an idle duplicate changes nothing)

    # -- batch bookkeeping -------------------------------------------------------------------

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if not batch_update or self.duplicate:
            return
        for index in batch_update.removed:
            row = self.rows.pop(index, None)
            if row is not None:
                self._leave(index, row)
        for index, params, _prompt, output in batch_update.added:
            old = self.rows.pop(index, None)
            if old is not None:  # (vLLM removes first; kept safe if it does not)
                self._leave(index, old)
            row = self._row_for(params, output)
            if row is not None:
                self.rows[index] = row
                self._place(index, row)
        for a, b, direction in batch_update.moved:
            row_a, row_b = self.rows.pop(a, None), self.rows.pop(b, None)
            self.single.pop(a, None)
            self.single.pop(b, None)
            if row_a is not None:
                self._at(b, row_a)
            if row_b is not None and direction == MoveDirectionality.SWAP:
                self._at(a, row_b)

    def _at(self, index: int, row: _Row) -> None:
        self.rows[index] = row
        if row.lane >= 0:
            self.lanes.batch_row[row.lane] = index
        if row.lane < 0 or not self.lanes.free[row.lane]:
            self.single[index] = row

    def _place(self, index: int, row: _Row) -> None:
        """Put a newly admitted row in a lane (greedy) or among the single rows."""
        request = row.request
        if request.state is not None and request.sampling.greedy and request.tokens is not None:
            self.lanes.add(row, index, request.tokens)
            if request.state.needs_proposal():
                self.lanes.open(row)
                return
        self.single[index] = row

    def _leave(self, index: int, row: _Row) -> None:
        """A row leaves the batch: finished, or preempted (then its state is parked until it resumes)."""
        self.single.pop(index, None)
        self._settle(row)
        if row.lane >= 0:
            self.lanes.remove(row)
        if not self._finished(row):
            self.parked[id(row.request.params)] = row  # the row holds params, so the id stays unique
            while len(self.parked) > MAX_PARKED:
                logger.warning("budget forcing: more than %d requests preempted; forgetting the oldest", MAX_PARKED)
                self.parked.pop(next(iter(self.parked)))

    def _finished(self, row: _Row) -> bool:
        """Whether vLLM ended the request. A state can be done before that: a spent answer budget (or a
        refusal) still has to emit the end-of-sequence that stops the request."""
        state, params, output = row.request.state, row.request.params, row.output
        if params.max_tokens is not None and len(output) >= params.max_tokens:
            return True
        stops = {*self.admission.eos_ids(), *(params.stop_token_ids or ())}
        if output and output[-1] in stops:
            return True
        return state is not None and state.done and state.finish_reason != FINISH_MAX_ANSWER

    def _row_for(self, params: SamplingParams, output: list[int]) -> _Row | None:
        parked = self.parked.pop(id(params), None)
        if parked is not None and parked.request.params is params:
            parked.output = output  # resumed after preemption (vLLM may hand a new list)
            parked.plan = None
            if parked.request.state is not None and parked.accounted != len(output):
                self._resync(parked, f"resumed with {len(output)} tokens where its state has {parked.accounted}")
            return parked
        request = self.admission.admit(params, v1_refusal(params))
        if request is None:
            return None
        row = _Row(request, output)
        if output and request.state is not None:
            self._resync(row, f"resumed with {len(output)} tokens and no state kept")
        return row

    def _resync(self, row: _Row, why: str) -> None:
        """Rebuild the state from vLLM's output, or end the request (never the engine)."""
        state = replayed(row.request, row.output)
        if state is None:
            logger.error("budget forcing: request %s; its tokens do not follow the rules, ending it", why)
            row.request.state = None
        else:
            logger.warning("budget forcing: request %s; state rebuilt from its tokens", why)
            row.request.state = state
        row.plan = None

    # -- reading back what vLLM did with the last step -----------------------------------------

    def _settle(self, row: _Row) -> None:
        """Bring the state level with vLLM's output: the lane's counted tokens, then the last plan."""
        state = row.request.state
        if state is None:
            return
        lanes = self.lanes
        if row.lane >= 0 and lanes.free[row.lane]:
            lane = row.lane
            counted = int(lanes.cnt[lane])
            if counted:
                start = len(state.completion)
                state.advance_many(row.output[start : start + counted])
                lanes.cnt[lane] = 0
            if lanes.planned[lane]:
                lanes.planned[lane] = False
                grown = len(row.output) - row.accounted
                if grown == 1:
                    self._commit_greedy(row, row.output[-1])
                elif grown != 0:
                    self._resync(row, f"has {len(row.output)} tokens where its state has {row.accounted}")
            lanes.free[lane] = False
            return
        plan, row.plan = row.plan, None
        if plan is None or plan == "end":
            return
        grown = len(row.output) - row.accounted
        if grown == 0:  # vLLM discarded the step (a chunk of the prompt): the plan never happened
            if plan == "sampled" and row.generator_state is not None:
                assert row.request.generator is not None
                row.request.generator.set_state(row.generator_state)
            return
        if grown != 1:
            self._resync(row, f"has {len(row.output)} tokens where its state has {row.accounted}")
            return
        emitted = row.output[-1]
        token = state.advance() if plan == "forced" else state.advance(row.proposal)
        if token != emitted:
            self._resync(row, f"emitted {emitted} where the processor forced {token}")

    def _commit_greedy(self, row: _Row, emitted: int) -> None:
        """Commit a greedy lane's step whose emitted token may stand for another proposal."""
        state, lanes, lane = row.request.state, self.lanes, row.lane
        assert state is not None
        proposal = emitted
        if lanes.thinking[lane]:
            rep = bool(lanes.rep_planned[lane])
            target = lanes.is_wait[lane] if rep else lanes.is_close[lane]
            col = lanes.cols[lane]
            if emitted in col[target]:
                sources = lanes.is_stop[lane] if rep else lanes.is_eos[lane]
                candidates = sources | target
                values = np.where(candidates, lanes.vals[lane], -np.inf)
                proposal = int(col[int(np.argmax(values))])  # first of equal maxima: the lowest id
        token = state.advance(proposal)
        if token != emitted:
            self._resync(row, f"emitted {emitted} where the rules give {token}")

    # -- the step ------------------------------------------------------------------------------

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:  # (always so for an idle duplicate)
            return logits
        lanes = self.lanes
        n = len(lanes.rows)
        if n:
            self._read_lanes(n)
        forced_rows: list[int] = []
        forced_tokens: list[int] = []
        for index, row in list(self.single.items()):
            self._settle(row)
            token = self._plan_single(index, row, logits)
            if token is not None:
                forced_rows.append(index)
                forced_tokens.append(token)
        if n:
            self._plan_lanes(logits, n)
        if forced_rows:
            index = torch.tensor(forced_rows, device=logits.device)
            logits[index, torch.tensor(forced_tokens, device=logits.device)] = FORCED_LOGIT
        return logits

    def _read_lanes(self, n: int) -> None:
        """Count the ordinary tokens vLLM emitted on the free lanes; settle the others one by one."""
        lanes = self.lanes
        read = np.flatnonzero(lanes.free[:n] & lanes.planned[:n])
        if read.size == 0:
            return
        outputs = [lanes.rows[i].output for i in read]  # type: ignore[union-attr]
        lengths = np.fromiter((len(o) for o in outputs), np.int64, read.size)
        grown = lengths - lanes.committed[read]
        last = np.fromiter((o[-1] if o else -1 for o in outputs), np.int64, read.size)
        special = ((lanes.cols[read] == last[:, None]) & lanes.special[read]).any(axis=1)
        plain = (grown == 1) & ~special
        counted = read[plain]
        lanes.cnt[counted] += 1
        lanes.committed[counted] += 1
        lanes.planned[read[grown == 0]] = False  # a discarded step: nothing to count
        lanes.planned[counted] = False
        look = read[((grown != 0) & ~plain)]
        over = counted[lanes.cnt[counted] > lanes.limit[counted]]  # a rule may act next: record them
        for lane in np.concatenate([look, over]).tolist():
            row = lanes.rows[lane]
            assert row is not None
            self._settle(row)
            self._reopen(row)

    def _reopen(self, row: _Row) -> None:
        state = row.request.state
        index = int(self.lanes.batch_row[row.lane])
        if state is not None and state.needs_proposal():
            self.lanes.open(row)
        else:
            self.single[index] = row

    def _plan_single(self, index: int, row: _Row, logits: torch.Tensor) -> int | None:
        """The token a row handled on its own must emit (None: its lane takes the model's proposal)."""
        request, state = row.request, row.request.state
        if state is None or state.done:  # refused, or the answer budget is spent: end-of-sequence stops it
            row.plan = "end"
            return min(request.tokens.eos) if request.tokens is not None else min(self.admission.eos_ids())
        if not state.needs_proposal():
            row.plan = "forced"
            return state.preview()
        if row.lane >= 0:  # a greedy row back to proposals: its lane plans it, vectorised
            del self.single[index]
            self.lanes.open(row)
            return None
        generator = request.generator
        row.generator_state = None if generator is None else generator.get_state()
        proposal = int(request.sampling.propose(logits[index : index + 1], generator)[0])
        row.plan, row.proposal = "sampled", proposal
        return state.preview(proposal)

    def _plan_lanes(self, logits: torch.Tensor, n: int) -> None:
        """Edit the stop tokens' logits of the free thinking lanes so vLLM's argmax emits the rules' choice."""
        lanes = self.lanes
        free = np.flatnonzero(lanes.free[:n])
        lanes.planned[free] = True
        think = free[lanes.thinking[free]]
        if think.size == 0:
            return
        rep = lanes.ignores[think] | (lanes.t0[think] + lanes.cnt[think] < lanes.minimum[think])
        lanes.rep_planned[think] = rep
        device = logits.device
        rows = torch.from_numpy(lanes.batch_row[think]).to(device)[:, None]
        cols = torch.from_numpy(lanes.cols[think]).to(device)
        values = logits[rows, cols]
        lanes.vals[think] = values.float().cpu().numpy()
        rep_t = torch.from_numpy(rep).to(device)[:, None]
        is_stop = torch.from_numpy(lanes.is_stop[think]).to(device)
        is_eos = torch.from_numpy(lanes.is_eos[think]).to(device)
        is_wait = torch.from_numpy(lanes.is_wait[think]).to(device)
        is_close = torch.from_numpy(lanes.is_close[think]).to(device)
        low = torch.full_like(values, float("-inf"))
        stop_max = torch.where(is_stop, values, low).amax(dim=1, keepdim=True)
        eos_max = torch.where(is_eos, values, low).amax(dim=1, keepdim=True)
        edited = torch.where(rep_t & is_stop, low, values)
        edited = torch.where(~rep_t & is_eos, low, edited)
        edited = torch.where(rep_t & is_wait, torch.maximum(values, stop_max), edited)
        edited = torch.where(~rep_t & is_close, torch.maximum(values, eos_max), edited)
        logits[rows, cols] = edited
