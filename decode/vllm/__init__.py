"""The vLLM engine: a logits processor for both model runners (admission, V1, V2), and the offline
backend on a `vllm.LLM`. `decode.vllm:VLLMBudgetForcingProcessor` is the name vLLM loads the processor by
(`--logits-processors`, and this package's `vllm.logits_processors` entry point)."""

from .admission import GREEDY_EPS, sampling_of
from .engine import has_processor, load_llm, release_llms, vllm_engine, vllm_generate, vllm_sampling_params
from .processor import QUALIFIED_NAME, VLLMBudgetForcingProcessor

__all__ = [
    "GREEDY_EPS",
    "QUALIFIED_NAME",
    "VLLMBudgetForcingProcessor",
    "has_processor",
    "load_llm",
    "release_llms",
    "sampling_of",
    "vllm_engine",
    "vllm_generate",
    "vllm_sampling_params",
]
