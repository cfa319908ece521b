"""A stand-in for vLLM's Model Runner V2 around a logits processor, for machines without a GPU.

No V2 engine starts without Triton, so this drives the processor the way V2's model runner and
`Sampler` do, built from vLLM's own classes: `RequestState` holds the slots (recycled through its
free list), the committed tokens and the lengths; `LogitsProcRequestState` and `LogitsContext` are
what the processor sees. What vLLM does in Triton kernels (applying staged writes, penalties, the
post-sampling update) is done here in torch with the same formulas.

Each behaviour is cited by file and line in the vLLM wheels it was read from (paths under `vllm/`):

- Per step: the finished and preempted requests' slots are freed, the new ones admitted
  (`add_request`), the staged writes applied, the sampler's `apply_staged_writes` called, then one
  logits row per scheduled request, penalties, the custom processors' `apply`, sampling, and the
  update of the committed tokens, which a step still reading the prefill (`seq_len < prefill_len`)
  leaves alone. v1/worker/gpu/model_runner.py `execute_model` / `add_requests` /
  `postprocess_sampled`: 0.32 :1719-1735, :1181-1234, :1679; sample/sampler.py `apply_sampling_params`
  0.32 :229-258 (0.33 the same lines, 0.34 :226-255).
- `sampler.apply_staged_writes()` runs on every step in 0.32 and 0.33 (model_runner.py 0.32 :1233,
  0.33 :1267), only on steps that admit a request in 0.34 (:1334-1338, and the interface's docstring,
  sample/logits_processor/interface.py 0.34 :139). `Runner.staged_writes_every_step`.
- The sampler-warmup request: 0.33 and 0.34 add `SamplingParams.for_sampler_warmup()` to every slot,
  call `apply_staged_writes` and run the sampler on a dummy batch before serving, without adding the
  requests to `RequestState` (model_runner.py `_dummy_sampler_run`, 0.33 :1010-1014, 0.34
  :1058-1062). `Runner.sampler_warmup`.
- `add_request`'s return value: 0.32 and 0.33 OR it into `needs_logits_processing` (sampler.py 0.32
  :101-103); 0.34 into `may_mask_logits` as well (sampler.py 0.34 :103-106), which the speculative
  rejection sampler reads (spec_decode/rejection_sampler.py 0.34 :301-303). Recorded in `may_mask`.
- CUDA-graph padding: a decode-only batch runs the captured graph of the smallest capture size at or
  above its request count, and `seq_lens_cpu_upper_bound_np` is sized to that padded count, zeros at
  the end, while `idx_mapping_np` and the logits hold only the real rows (model_runner.py
  `prepare_inputs`: 0.32 :1427 and :1497-1503, 0.33 :1462 and :1535-1541, 0.34 :1532 and
  :1605-1611; sampler.py passes it on unchanged, 0.32 :146). The default capture sizes are 1, 2, 4,
  then multiples of 8, up to min(2 * max_num_seqs, 512) and max_num_batched_tokens
  (config/vllm.py `_set_cudagraph_sizes`, 0.32 :2346-2490).
- Async scheduling (vLLM's default on GPUs): the scheduler schedules the next step before the last
  step's tokens are back, so a request that stopped is scheduled once more (that step's token is
  dropped: v1/core/sched/scheduler.py 0.32 :2090-2099) and its slot is freed a step later; a request
  preempted with a token in flight gets that token delivered afterwards and resumes only once it is
  in (scheduler.py 0.32 :934-939, :1596-1606). The model runner itself reads its committed tokens.
- Preemption frees the slot (model_runner.py 0.32 :1152-1164); the request comes back with its
  output as part of its prefill (`prefill_len > prompt_len`), recomputed in chunks.
- Speculative decoding: a decode row has `1 + k` logits rows (`expanded_idx_mapping`), verified
  greedily by the rejection sampler (draft i accepted while it equals the argmax of row i, then one
  bonus token): model_runner.py 0.32 :1386-1407, `sample` :1644-1653.
"""

from __future__ import annotations

import bisect
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch
import vllm.v1.worker.gpu.buffer_utils as buffer_utils
from vllm import SamplingParams
from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsContext, LogitsProcRequestState
from vllm.v1.worker.gpu.states import RequestState

from decode.vllm import VLLMBudgetForcingProcessor
from tests.tiny_model import QWEN_EOS, VOCAB_SIZE

NextLogits = Callable[[list[int]], torch.Tensor]


@dataclass(frozen=True)
class Runner:
    """How one vLLM version's Model Runner V2 calls a logits processor where the versions differ."""

    name: str
    sampler_warmup: bool
    staged_writes_every_step: bool


VLLM_0_32 = Runner("0.32", sampler_warmup=False, staged_writes_every_step=True)
VLLM_0_33 = Runner("0.33", sampler_warmup=True, staged_writes_every_step=True)
VLLM_0_34 = Runner("0.34", sampler_warmup=True, staged_writes_every_step=False)


def capture_sizes(max_num_seqs: int, max_num_batched_tokens: int) -> list[int]:
    """vLLM's default CUDA-graph capture sizes (one token per request: no speculative decoding)."""
    largest = min(max_num_seqs * 2, 512, max_num_batched_tokens)
    sizes = [n for n in (1, 2, 4) if n <= largest] + list(range(8, min(largest + 1, 256), 8))
    sizes += list(range(256, largest + 1, 16))
    if max_num_batched_tokens <= largest:
        sizes.append(max_num_batched_tokens)
    return sorted(set(sizes))


def penalized(logits: torch.Tensor, prompt: list[int], output: list[int], params: SamplingParams) -> torch.Tensor:
    """V2's penalty kernel (sample/penalties.py) on one row: repetition over prompt and output tokens,
    then frequency and presence over output tokens."""
    logits = logits.clone()
    counts = torch.bincount(torch.tensor(output, dtype=torch.long), minlength=logits.shape[-1])[: logits.shape[-1]]
    seen = counts > 0
    if params.repetition_penalty != 1.0:
        in_prompt = torch.zeros_like(seen)
        in_prompt[torch.tensor(prompt, dtype=torch.long)] = True
        scale = torch.where(in_prompt | seen, params.repetition_penalty, 1.0)
        logits = logits * torch.where(logits > 0, 1.0 / scale, scale)
    logits = logits - params.frequency_penalty * counts - params.presence_penalty * seen.float()
    return logits


@dataclass
class Request:
    prompt: list[int]
    params: SamplingParams
    output: list[int] = field(default_factory=list)  # the scheduler's view: tokens delivered
    committed: list[int] = field(default_factory=list)  # the model runner's view (ahead under async)
    req_id: str = ""
    prefill_len: int = 0
    computed: int = 0
    in_flight: int = 0  # tokens sampled but not yet delivered (async scheduling)
    stopped: bool = False
    record: object = None  # the processor's record when the request finished
    preemptions: int = 0


class V2Harness:
    def __init__(
        self,
        next_logits: NextLogits,
        tokenizer_dir: str,
        *,
        max_num_reqs: int = 6,
        max_model_len: int = 512,
        chunk: int = 8,
        seed: int = 0,
        eos: tuple[int, ...] = (QWEN_EOS,),
        speculative_tokens: int = 0,
        runner: Runner = VLLM_0_32,
        cuda_graphs: bool = True,
        async_scheduling: bool = False,
    ):
        buffer_utils.is_uva_available = lambda: False  # the CPU has no pinned memory: vLLM's own fallback
        if speculative_tokens and async_scheduling:
            raise ValueError("the harness runs speculative decoding with synchronous scheduling only")
        self.next_logits = next_logits
        self.req_states = RequestState(max_num_reqs, max_model_len, max_model_len, 0, VOCAB_SIZE, torch.device("cpu"))
        self.config = SimpleNamespace(
            speculative_config=object() if speculative_tokens else None,
            model_config=SimpleNamespace(model=tokenizer_dir, tokenizer=tokenizer_dir),
        )
        lp_states = LogitsProcRequestState.from_request_state(self.req_states)
        self.processor = VLLMBudgetForcingProcessor(self.config, lp_states)
        self.runner = runner
        self.capture_sizes = capture_sizes(max_num_reqs, max_model_len) if cuda_graphs else []
        self.async_scheduling = async_scheduling
        self.speculative_tokens = speculative_tokens
        self.chunk = chunk
        self.rng = random.Random(seed)
        self.eos = set(eos)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.finished: list[Request] = []
        self.to_free: list[Request] = []  # stopped; the model runner frees their slots at the next step
        self.in_flight: list[tuple[Request, list[int]]] = []  # the last step's tokens, not yet delivered
        self.may_mask: dict[str, bool] = {}  # add_request's return value, per request id
        self.steps = 0
        self.padded_sizes: set[tuple[int, int]] = set()  # (real rows, padded rows) of padded steps
        self._ids = 0
        if runner.sampler_warmup:
            self._sampler_warmup()

    def submit(self, prompt: list[int], params: SamplingParams) -> Request:
        self._ids += 1
        request = Request(list(prompt), params, req_id=f"r{self._ids}")
        self.waiting.append(request)
        return request

    # -- what the model runner does ------------------------------------------------------------

    def _sampler_warmup(self) -> None:
        """0.33+: every slot gets the warmup parameters, then a dummy batch through the sampler."""
        params = SamplingParams.for_sampler_warmup()
        slots = self.req_states.max_num_reqs
        for slot in range(slots):
            self.processor.add_request(slot, params)
        self.processor.apply_staged_writes()
        mapping = torch.arange(slots, dtype=torch.int32)
        ctx = LogitsContext(
            expanded_idx_mapping=mapping,
            idx_mapping=mapping,
            idx_mapping_np=mapping.numpy().copy(),
            expanded_local_pos=torch.zeros(slots, dtype=torch.int32),
            input_ids=torch.zeros(slots, dtype=torch.int64),
            pos=torch.zeros(slots, dtype=torch.int64),
            seq_lens_upper_bound_np=np.zeros(slots, dtype=np.int32),
        )
        self.processor.apply(torch.randn(slots, VOCAB_SIZE), ctx)

    def _flush(self) -> None:
        """`RequestState.apply_staged_writes`, with the write kernel done in torch."""
        states = self.req_states
        states.prompt_len.copy_to_uva()
        states.prefill_len.copy_to_uva()
        for tensor in (states.total_len, states.all_token_ids, states.num_computed_tokens):
            chunks = tensor._staged_chunks() if hasattr(tensor, "_staged_chunks") else [tensor._staged_write_contents]
            contents = [int(x) for chunk in chunks for x in chunk]
            begin = 0
            for index, start, end in zip(
                tensor._staged_write_indices, tensor._staged_write_starts, tensor._staged_write_cu_lens, strict=True
            ):
                values = torch.tensor(contents[begin:end], dtype=tensor.gpu.dtype)
                if tensor.gpu.dim() == 1:
                    tensor.gpu[index] = values[0]
                else:
                    tensor.gpu[index, start : start + len(values)] = values
                begin = end
            tensor.clear_staged_writes()

    def _admit(self) -> None:
        for request in self.to_free:
            self.req_states.remove_request(request.req_id)
        self.to_free.clear()
        added = False
        # A request preempted with a token in flight waits for it (scheduler.py 0.32 :934-939).
        for request in [r for r in self.waiting if not r.in_flight]:
            if not self.req_states.free_indices:
                break
            self.waiting.remove(request)
            tokens = request.prompt + request.output
            self.req_states.add_request(request.req_id, len(request.prompt), tokens, 0, request.params.max_tokens)
            request.prefill_len, request.computed, request.committed = len(tokens), 0, list(request.output)
            slot = self.req_states.req_id_to_index[request.req_id]
            self.may_mask[request.req_id] = self.processor.add_request(slot, request.params)
            self.running.append(request)
            added = True
        if added:
            self._flush()
        if added or self.runner.staged_writes_every_step:
            self.processor.apply_staged_writes()

    def preempt(self, request: Request) -> None:
        """Free the request's slot; it comes back first, to be recomputed from its prompt and output."""
        self.req_states.remove_request(request.req_id)
        self.running.remove(request)
        request.preemptions += 1
        self.waiting.appendleft(request)

    def _schedulable(self, request: Request) -> bool:
        """The scheduler's view: under async scheduling it does not yet know the last step's tokens."""
        return len(request.output) + request.in_flight < request.params.max_tokens

    def step(self) -> None:
        self._admit()
        order = [r for r in self.running if self._schedulable(r)]
        self.rng.shuffle(order)  # rows are reordered every step (vLLM sorts them by its own rule)
        slots, seq_lens, rows, drafts = [], [], [], []
        for request in order:
            tokens = request.prompt + request.committed
            decoding = request.computed >= request.prefill_len
            scheduled = 1 if decoding else min(self.chunk, request.prefill_len - request.computed)
            seq_len = request.computed + scheduled
            draft = self._drafts(request, tokens[:seq_len]) if decoding and self.speculative_tokens else []
            for i in range(len(draft) + 1):
                context = tokens[:seq_len] + draft[:i]
                row = self.next_logits(context).float()
                if _uses_penalties(request.params):
                    row = penalized(row, request.prompt, context[len(request.prompt) :], request.params)
                rows.append(row)
            slots.append(self.req_states.req_id_to_index[request.req_id])
            seq_lens.append(seq_len)
            drafts.append(draft)
        if not order:
            self._deliver([])
            return
        decode_only = all(r.computed >= r.prefill_len for r in order)
        padded = len(order)
        at = bisect.bisect_left(self.capture_sizes, len(order))
        if decode_only and not self.speculative_tokens and at < len(self.capture_sizes):
            padded = self.capture_sizes[at]
        upper_bound = np.zeros(padded, dtype=np.int32)  # padded entries stay zero
        upper_bound[: len(order)] = seq_lens
        if padded != len(order):
            self.padded_sizes.add((len(order), padded))
        mapping = torch.tensor(slots, dtype=torch.int32)
        expanded = torch.tensor([s for s, d in zip(slots, drafts, strict=True) for _ in range(len(d) + 1)])
        ctx = LogitsContext(
            expanded_idx_mapping=expanded.to(torch.int32),
            idx_mapping=mapping,
            idx_mapping_np=np.array(slots, dtype=np.int32),
            expanded_local_pos=torch.tensor([i for d in drafts for i in range(len(d) + 1)], dtype=torch.int32),
            input_ids=torch.tensor([(r.prompt + r.committed)[s - 1] for r, s in zip(order, seq_lens, strict=True)]),
            pos=torch.tensor(seq_lens) - 1,
            seq_lens_upper_bound_np=upper_bound,
        )
        sampled = self.processor.apply(torch.stack(rows), ctx).argmax(dim=-1).tolist()
        self.steps += 1
        delivered = []
        cursor = 0
        for request, slot, seq_len, draft in zip(order, slots, seq_lens, drafts, strict=True):
            verified = self._verify(draft, sampled[cursor : cursor + len(draft) + 1])
            cursor += len(draft) + 1
            request.computed = seq_len
            if seq_len < request.prefill_len:
                continue  # a chunk of the prefill: vLLM discards the token
            for token in verified:
                total = int(self.req_states.total_len.gpu[slot])
                self.req_states.all_token_ids.gpu[slot, total] = token
                self.req_states.total_len.gpu[slot] = total + 1
            request.committed.extend(verified)
            request.computed += len(verified) - 1
            request.in_flight += len(verified)
            delivered.append((request, verified))
        self._deliver(delivered)

    def _drafts(self, request: Request, tokens: list[int]) -> list[int]:
        """A drafter that guesses the model's own argmax: drafts are accepted unless a processor intervenes."""
        draft: list[int] = []
        for _ in range(self.speculative_tokens):
            draft.append(int(self.next_logits(tokens + draft).float().argmax()))
        return draft

    @staticmethod
    def _verify(draft: list[int], sampled: list[int]) -> list[int]:
        """Greedy rejection sampling: the sampled token of each row while the draft before it matched."""
        out = []
        for i, token in enumerate(sampled):
            out.append(token)
            if i < len(draft) and token != draft[i]:
                break
        return out

    def _deliver(self, delivered: list[tuple[Request, list[int]]]) -> None:
        """The scheduler gets the sampled tokens: now, or (async scheduling) one step later."""
        if self.async_scheduling:
            delivered, self.in_flight = self.in_flight, delivered
        for request, tokens in delivered:
            request.in_flight -= len(tokens)
            if request.stopped:
                continue  # stopped at an earlier step: vLLM drops the token
            for token in tokens:
                request.output.append(token)
                if (token in self.eos and not request.params.ignore_eos) or len(
                    request.output
                ) >= request.params.max_tokens:
                    self._finish(request)
                    break

    def _finish(self, request: Request) -> None:
        request.stopped = True
        if request in self.running:
            slot = self.req_states.req_id_to_index[request.req_id]
            request.record = self.processor.slots[slot]
            self.running.remove(request)
            if self.async_scheduling:
                self.to_free.append(request)  # its slot is freed at the next step
            else:
                self.req_states.remove_request(request.req_id)
        else:  # preempted, and its token in flight ended it
            self.waiting.remove(request)
        self.finished.append(request)

    def run(self, preempt: Callable[[V2Harness], None] | None = None, max_steps: int = 10_000) -> None:
        while self.waiting or self.running or self.in_flight:
            if preempt is not None:
                preempt(self)
            self.step()
            if self.steps > max_steps:
                raise RuntimeError("the harness did not finish")


def _uses_penalties(params: SamplingParams) -> bool:
    return params.repetition_penalty != 1.0 or params.frequency_penalty != 0.0 or params.presence_penalty != 0.0
