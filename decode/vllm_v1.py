"""Budget forcing under vLLM's Model Runner V1 (the CPU build; GPUs without Triton or with features
Model Runner V2 lacks).

vLLM V1 hands the processor each request's live output list. The processor runs one `BudgetState`
per request; a preempted request leaves the batch and comes back with its output, its state waiting
in a parking lot meanwhile. Greedy rows whose argmax cannot end thinking are left to vLLM's own
argmax and read back at the next step.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from .budget import Budget
from .formats import FormatTokens, ThinkingFormat
from .hf import DEFAULT_MAX_NEW_TOKENS
from .request_args import from_request_args
from .sampling import Sampling, first_argmax
from .state import BudgetState
from .vllm_requests import (
    ForcedRequest,
    claim_engine,
    eos_token_ids,
    logger,
    replayed,
    sampling_of,
    v1_refusal,
    validate,
)

MAX_PARKED = 4096  # states of preempted requests kept until they resume


AWAITED_ARGMAX = -1  # the pending proposal is vLLM's own argmax, read from the output once committed


@dataclass
class _Row:
    """One budget-forced request in the batch.

    The state only ever holds tokens vLLM committed. A step's token is previewed, and the state
    advances at the next step once the output shows it: vLLM discards the token of a step that
    only read a chunk of the prompt (a new request, or one recomputed after preemption), and such a
    step must leave the state, and the sampler's random stream, as they were."""

    params: SamplingParams
    output: list[int]  # vLLM's live list of the request's generated tokens
    tokens: FormatTokens | None
    budget: Budget
    state: BudgetState | None  # None: a refused request, ended at once
    sampling: Sampling
    generator: torch.Generator | None
    pending: bool = False  # a token was chosen at the last step and may or may not have been committed
    proposal: int | None = None  # the model's proposal behind it (None: forced; AWAITED_ARGMAX: vLLM's argmax)
    generator_state: torch.Tensor | None = None  # the random stream before that step's draw

    def expect(self, proposal: int | None, generator_state: torch.Tensor | None = None) -> None:
        self.pending, self.proposal, self.generator_state = True, proposal, generator_state

    def finished(self, eos: list[int]) -> bool:
        """Whether vLLM ended this request (it left the batch for good), read from its output: a state
        that is done may still owe the end-of-sequence that stops the request (an answer budget spent)."""
        if self.state is None:
            return True
        if not self.output:
            return False
        params = self.params
        stops = set(eos) | set(params.all_stop_token_ids) | set(params.stop_token_ids or [])
        at_cap = params.max_tokens is not None and len(self.output) >= params.max_tokens
        return at_cap or (self.output[-1] in stops and not params.ignore_eos)


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
        model_config = vllm_config.model_config
        self.model_path = model_config.model
        self.tokenizer_path = model_config.tokenizer or model_config.model
        self._tokenizer: Any = None
        self._eos: list[int] | None = None
        self._resolved: dict[ThinkingFormat, FormatTokens] = {}
        self._stops: dict[FormatTokens, torch.Tensor] = {}
        self.rows: dict[int, _Row] = {}
        self.parked: OrderedDict[int, _Row] = OrderedDict()  # by id(SamplingParams): preempted requests

    def is_argmax_invariant(self) -> bool:
        return self.duplicate  # it decides the token, greedy included (an idle duplicate changes nothing)

    # -- batch bookkeeping -------------------------------------------------------------------

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if not batch_update or self.duplicate:
            return
        # vLLM lists as removed only the slots freed this step that stay empty: those it fills with a
        # new request, or with one moved there to close the gap, are not listed, so a request added or
        # moved (one way) to an occupied slot means its occupant left the batch.
        for index in batch_update.removed:
            self._leave(index)
        for index, params, _prompt, output in batch_update.added:
            self._leave(index)
            row = self._row_for(params, output)
            if row is not None:
                self.rows[index] = row
        for a, b, direction in batch_update.moved:
            if direction == MoveDirectionality.UNIDIRECTIONAL:
                self._leave(b)
            row_a, row_b = self.rows.pop(a, None), self.rows.pop(b, None)
            if row_a is not None:
                self.rows[b] = row_a
            if row_b is not None and direction == MoveDirectionality.SWAP:
                self.rows[a] = row_b

    def _leave(self, index: int) -> None:
        """The request at `index` left the batch: finished, or preempted or not scheduled this step (it
        comes back with its output, and its state waits in the parking lot meanwhile)."""
        row = self.rows.pop(index, None)
        if row is None:
            return
        if row.state is not None:
            self._catch_up(index, row)  # reads the last committed token (a final end-of-sequence)
        if not row.finished(self._eos_ids()):
            self._park(row)

    def _park(self, row: _Row) -> None:
        self.parked[id(row.params)] = row  # the row holds params, so the id stays unique
        while len(self.parked) > MAX_PARKED:
            self.parked.popitem(last=False)

    def _row_for(self, params: SamplingParams, output: list[int]) -> _Row | None:
        parked = self.parked.pop(id(params), None)
        if parked is not None and parked.params is params:
            parked.output = output  # resumed after preemption
            return parked
        try:
            parsed = from_request_args(params.extra_args)
            if parsed is None:
                return None
            fmt, budget = parsed
            tokens = self._tokens(fmt)
        except ValueError as err:  # a request that bypassed validate_params: end it rather than the engine
            logger.error("budget forcing: request refused: %s", err)
            return self._refused(params, output)
        refusal = v1_refusal(params)
        if refusal:  # admission could not tell the runner (a GPU with Triton that fell back to V1)
            logger.error("budget forcing (Model Runner V1): request refused, ending it: %s", refusal)
            return self._refused(params, output)
        seed = params.seed if params.seed is not None else random.getrandbits(63)
        sampling = sampling_of(params)
        generator = None if sampling.greedy else torch.Generator(device=self.device).manual_seed(seed)
        cap = params.max_tokens or DEFAULT_MAX_NEW_TOKENS
        row = _Row(params, output, tokens, budget, BudgetState(tokens, budget, cap), sampling, generator)
        if output:  # resumed after its parked state was dropped: rebuild it from the committed tokens
            logger.warning("budget forcing: a request resumed with no state kept; rebuilding it from its output")
            return row if self._rebuild(row) else self._refused(params, output)
        return row

    def _refused(self, params: SamplingParams, output: list[int]) -> _Row:
        """A row that emits end-of-sequence at once (the client sees an empty answer and the log says why)."""
        return _Row(params, output, None, Budget(), None, Sampling(), None)

    def _eos_ids(self) -> list[int]:
        if self._eos is None:
            self._eos = eos_token_ids(self.model_path, self._load_tokenizer())
        return self._eos

    def _load_tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path)
        return self._tokenizer

    def _tokens(self, fmt: ThinkingFormat) -> FormatTokens:
        if fmt not in self._resolved:
            self._resolved[fmt] = fmt.tokens(self._load_tokenizer(), self._eos_ids())
        return self._resolved[fmt]

    # -- the step ------------------------------------------------------------------------------

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:  # (always so for an idle duplicate)
            return logits
        chosen: dict[int, int] = {}
        greedy: list[int] = []
        for index, row in self.rows.items():
            if row.state is None:
                chosen[index] = min(self._eos_ids())
                continue
            self._catch_up(index, row)
            state = row.state
            if state is None:  # its output could not be explained by the rules
                chosen[index] = min(self._eos_ids())
            elif state.done:  # answer budget spent: end-of-sequence makes vLLM stop the request
                chosen[index] = min(state.tokens.eos)
            elif not state.needs_proposal():
                row.expect(None)
                chosen[index] = state.preview()
            elif row.sampling.greedy:
                greedy.append(index)
            else:
                assert row.generator is not None
                before = row.generator.get_state()
                proposal = int(row.sampling.propose(logits[index : index + 1], row.generator)[0])
                row.expect(proposal, before)
                chosen[index] = state.preview(proposal)
        if greedy:
            self._greedy(logits, greedy, chosen)
        if chosen:
            rows = torch.tensor(list(chosen), device=logits.device)
            tokens = torch.tensor(list(chosen.values()), device=logits.device)
            logits[rows] = float("-inf")
            logits[rows, tokens] = 0.0
        return logits

    def _catch_up(self, index: int, row: _Row) -> None:
        """Bring the state level with vLLM's output: advance it by the last step's token if vLLM
        committed it, leave it (and rewind the sampler) if vLLM discarded it."""
        state = row.state
        assert state is not None
        pending, row.pending = row.pending, False
        if state.done:  # only the end-of-sequence that stops the request comes after this
            return
        done, emitted = len(state.completion), len(row.output)
        if emitted == done:
            if pending and row.generator_state is not None and row.generator is not None:
                row.generator.set_state(row.generator_state)  # the step's draw never happened
            return
        if pending and emitted == done + 1:
            committed = row.output[-1]
            if row.proposal == AWAITED_ARGMAX:  # vLLM's own argmax, which the rules pass through
                token = state.advance(committed)
            else:
                token = state.advance(row.proposal if state.needs_proposal() else None)
            if token == committed:
                return
        logger.warning(
            "budget forcing: request at batch row %d has %d tokens where its state emitted %d; rebuilding the "
            "state from the output",
            index,
            emitted,
            done,
        )
        if not self._rebuild(row):
            logger.error("budget forcing: the output of the request at batch row %d breaks the rules; ending it", index)
            row.state = None

    def _rebuild(self, row: _Row) -> bool:
        """Replace the row's state with one replayed from vLLM's committed output; False if it cannot be."""
        record = ForcedRequest(row.params, row.tokens, row.budget, row.state, row.sampling, row.generator)
        state = replayed(record, row.output)
        if state is None:
            return False
        row.state = state
        return True

    def _greedy(self, logits: torch.Tensor, greedy: list[int], chosen: dict[int, int]) -> None:
        """Greedy rows that need the model's choice. Where the argmax cannot be an end of thinking the
        rules pass it through: vLLM's own argmax emits it and the state reads it back at the next step
        (`_catch_up`), so no argmax is computed here. Only rows whose maximum is reached by a token that
        stops thinking (or in the answer, none) need the exact first-index argmax."""
        if greedy == list(range(logits.shape[0])):
            row_max = logits.amax(dim=-1).tolist()
        else:
            row_max = logits[torch.tensor(greedy, device=logits.device)].amax(dim=-1).tolist()
        exact: list[int] = []
        for position, row_index in enumerate(greedy):
            row = self.rows[row_index]
            state = row.state
            assert state is not None and row.tokens is not None
            if state.thinking_phase:
                stops = self._stop_index(row.tokens)
                stop_max = float(logits[row_index, stops].amax())
                if stop_max >= row_max[position]:
                    exact.append(row_index)
                    continue
            row.expect(AWAITED_ARGMAX)
        if exact:
            best = first_argmax(logits[torch.tensor(exact, device=logits.device)]).tolist()
            for row_index, proposal in zip(exact, best, strict=True):
                row = self.rows[row_index]
                row.expect(proposal)
                token = row.state.preview(proposal)  # type: ignore[union-attr]
                if token != proposal:  # vLLM's own argmax picks an unchanged proposal
                    chosen[row_index] = token

    def _stop_index(self, tokens: FormatTokens) -> torch.Tensor:
        if tokens not in self._stops:
            self._stops[tokens] = torch.tensor(sorted(tokens.stops_thinking), device=self.device)
        return self._stops[tokens]
