"""A stand-in for vLLM's Model Runner V2 around a logits processor, for machines without a GPU.

No V2 engine starts without Triton, so this drives the processor the way V2's model runner and
`Sampler` do (vllm/v1/worker/gpu/model_runner.py, sample/sampler.py), built from vLLM's own classes:
`RequestState` holds the slots (recycled through its free list), the committed tokens and the
lengths; `LogitsProcRequestState` and `LogitsContext` are what the processor sees. Per step:
admission (`add_request`, then the staged writes, then the processor's `apply_staged_writes`), then
one logits row per scheduled request in a shuffled order, penalties, the processor's `apply`, the
argmax, and the update of the committed tokens, which a step still reading the prefill
(`seq_len < prefill_len`) leaves alone. Preemption frees the slot; the request comes back with its
output as part of a prefill that is recomputed in chunks.

What vLLM does in Triton kernels (applying staged writes, penalties, the post-sampling update) is
done here in torch with the same formulas.
"""

from __future__ import annotations

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
    output: list[int] = field(default_factory=list)
    req_id: str = ""
    prefill_len: int = 0
    computed: int = 0
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
        speculative: bool = False,
    ):
        buffer_utils.is_uva_available = lambda: False  # the CPU has no pinned memory: vLLM's own fallback
        self.next_logits = next_logits
        self.req_states = RequestState(max_num_reqs, max_model_len, max_model_len, 0, VOCAB_SIZE, torch.device("cpu"))
        self.config = SimpleNamespace(
            speculative_config=object() if speculative else None,
            model_config=SimpleNamespace(model=tokenizer_dir, tokenizer=tokenizer_dir),
        )
        lp_states = LogitsProcRequestState.from_request_state(self.req_states)
        self.processor = VLLMBudgetForcingProcessor(self.config, lp_states)
        self.chunk = chunk
        self.rng = random.Random(seed)
        self.eos = set(eos)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.finished: list[Request] = []
        self.steps = 0
        self._ids = 0

    def submit(self, prompt: list[int], params: SamplingParams) -> Request:
        self._ids += 1
        request = Request(list(prompt), params, req_id=f"r{self._ids}")
        self.waiting.append(request)
        return request

    # -- what the model runner does ------------------------------------------------------------

    def _flush(self) -> None:
        """`RequestState.apply_staged_writes`, with the write kernel done in torch."""
        states = self.req_states
        states.prompt_len.copy_to_uva()
        states.prefill_len.copy_to_uva()
        for tensor in (states.total_len, states.all_token_ids, states.num_computed_tokens):
            begin = 0
            for index, start, end in zip(
                tensor._staged_write_indices, tensor._staged_write_starts, tensor._staged_write_cu_lens, strict=True
            ):
                values = torch.tensor(tensor._staged_write_contents[begin:end], dtype=tensor.gpu.dtype)
                if tensor.gpu.dim() == 1:
                    tensor.gpu[index] = values[0]
                else:
                    tensor.gpu[index, start : start + len(values)] = values
                begin = end
            tensor.clear_staged_writes()

    def _admit(self) -> None:
        added = False
        while self.waiting and self.req_states.free_indices:
            request = self.waiting.popleft()
            tokens = request.prompt + request.output
            self.req_states.add_request(request.req_id, len(request.prompt), tokens, 0, request.params.max_tokens)
            request.prefill_len, request.computed = len(tokens), 0
            self.processor.add_request(self.req_states.req_id_to_index[request.req_id], request.params)
            self.running.append(request)
            added = True
        if added:
            self._flush()
        self.processor.apply_staged_writes()

    def preempt(self, request: Request) -> None:
        """Free the request's slot; it comes back first, to be recomputed from its prompt and output."""
        self.req_states.remove_request(request.req_id)
        self.running.remove(request)
        request.preemptions += 1
        self.waiting.appendleft(request)

    def step(self) -> None:
        self._admit()
        order = list(self.running)
        self.rng.shuffle(order)  # rows are reordered every step
        slots, seq_lens, rows = [], [], []
        for request in order:
            tokens = request.prompt + request.output
            scheduled = (
                1
                if request.computed >= request.prefill_len
                else min(self.chunk, request.prefill_len - request.computed)
            )
            seq_len = request.computed + scheduled
            row = self.next_logits(tokens[:seq_len]).float()
            if _uses_penalties(request.params):
                row = penalized(row, request.prompt, request.output, request.params)
            slots.append(self.req_states.req_id_to_index[request.req_id])
            seq_lens.append(seq_len)
            rows.append(row)
        if not order:
            return
        logits = torch.stack(rows)
        mapping = torch.tensor(slots, dtype=torch.int32)
        ctx = LogitsContext(
            expanded_idx_mapping=mapping,
            idx_mapping=mapping,
            idx_mapping_np=np.array(slots, dtype=np.int32),
            expanded_local_pos=torch.zeros(len(slots), dtype=torch.int32),
            input_ids=torch.tensor([(r.prompt + r.output)[s - 1] for r, s in zip(order, seq_lens, strict=True)]),
            pos=torch.tensor(seq_lens) - 1,
            seq_lens_upper_bound_np=np.array(seq_lens, dtype=np.int32),
        )
        sampled = self.processor.apply(logits, ctx).argmax(dim=-1).tolist()
        self.steps += 1
        for request, slot, seq_len, token in zip(order, slots, seq_lens, sampled, strict=True):
            request.computed = seq_len
            if seq_len < request.prefill_len:
                continue  # a chunk of the prefill: vLLM discards the token
            total = int(self.req_states.total_len.gpu[slot])
            self.req_states.all_token_ids.gpu[slot, total] = token
            self.req_states.total_len.gpu[slot] = total + 1
            request.output.append(token)
            stopped = token in self.eos and not request.params.ignore_eos
            if stopped or len(request.output) >= request.params.max_tokens:
                request.record = self.processor.slots[slot]
                self.req_states.remove_request(request.req_id)
                self.running.remove(request)
                self.finished.append(request)

    def run(self, preempt: Callable[[V2Harness], None] | None = None, max_steps: int = 10_000) -> None:
        while self.waiting or self.running:
            if preempt is not None:
                preempt(self)
            self.step()
            if self.steps > max_steps:
                raise RuntimeError("the harness did not finish")


def _uses_penalties(params: SamplingParams) -> bool:
    return params.repetition_penalty != 1.0 or params.frequency_penalty != 0.0 or params.presence_penalty != 0.0
