"""Budget forcing in vLLM: a logits processor for both model runners, and the re-prompt loop as a fallback.

The processor runs the same `BudgetState` as the transformers adapter, one per request, inside
vLLM's own decoding loop. It sees each step's logits before vLLM's sampler, takes the model's
proposal there (the argmax, or a draw under the request's temperature, top-k, top-p and min-p made
exactly as the transformers adapter makes it), applies the rules, and makes the chosen token the
one vLLM's sampler picks, whatever its own settings. So under sampling the probability the model
gives to ending thinking becomes the probability of a wait, and under greedy decoding the output is
the transformers adapter's, token for token.

vLLM has two model runners with two processor interfaces: Model Runner V1 (the CPU build; GPUs
without Triton; removed in vLLM 0.34) and Model Runner V2 (the default on GPUs from vLLM 0.32).
`VLLMBudgetForcingProcessor` is the one entry point for both: it subclasses each interface the
installed vLLM has (read from what it ships, not its version), so vLLM's loaders accept it, and
building it gives the runner's own processor (`decode.vllm.v1`, `decode.vllm.v2`). Neither lets an
exception into vLLM's step: a request it fails on ends at once, with one log line saying why.

A request opts in through `SamplingParams.extra_args` (over HTTP: `vllm_xargs`) with the keys of
`decode.rules.request_args` (`bf_format`, `bf_max_thinking_tokens`, ...); requests without them are left
untouched, so one engine serves forced and plain requests in one batch. Load the processor by class
(`LLM(..., logits_processors=[VLLMBudgetForcingProcessor])`), by qualified name
(`vllm serve MODEL --logits-processors decode.vllm:VLLMBudgetForcingProcessor`), or through the
`vllm.logits_processors` entry point of this package.

Where a runner cannot honour a request, the request is refused at admission and the engine keeps
serving: penalties under V1 (it applies them after logits processors), speculative decoding under V2,
and vLLM's own `thinking_token_budget` with either. There, `forcing="reprompt"` runs
`decode.reprompt` on the same engine instead.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm import SamplingParams
from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor as V2LogitsProcessor

from .admission import has_v1_runner, validate
from .v2 import V2BudgetForcingProcessor

if has_v1_runner():  # vLLM 0.32, 0.33
    from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor

    from .v1 import V1BudgetForcingProcessor

    _INTERFACES: tuple[type, ...] = (V1LogitsProcessor, V2LogitsProcessor)
else:  # vLLM 0.34 removed Model Runner V1 and its processor interface
    V1BudgetForcingProcessor = None  # type: ignore[assignment,misc]
    _INTERFACES = (V2LogitsProcessor,)

QUALIFIED_NAME = "decode.vllm:VLLMBudgetForcingProcessor"


class VLLMBudgetForcingProcessor(*_INTERFACES):  # type: ignore[misc]
    """Budget forcing for vLLM, under either model runner. A subclass of each processor interface the
    installed vLLM has, so its runners' loaders accept it; building it gives the runner's own
    processor: V1 builds processors with `(vllm_config, device, is_pin_memory)`, V2 with
    `(vllm_config, req_states)`."""

    # Named by its public path, as vLLM's loaders and `has_processor` read it: module:qualname.
    __module__ = "decode.vllm"

    def __new__(cls, vllm_config: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
        v1 = V1BudgetForcingProcessor is not None and (
            "device" in kwargs or (bool(args) and isinstance(args[0], (torch.device, str)))
        )
        runner = V1BudgetForcingProcessor if v1 else V2BudgetForcingProcessor
        return runner(vllm_config, *args, **kwargs)

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        validate(sampling_params)
