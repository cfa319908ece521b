"""The OpenAI-compatible engine: budget forcing through a server's `/v1/completions`, by the server's
own logits processor (vLLM with `decode.vllm:VLLMBudgetForcingProcessor`) or by the re-prompt loop."""

from .client import (
    ClientSettingsError,
    Completion,
    CompletionsClient,
    ServerError,
    answer_bound,
    check_ends,
    client_engine,
    server_generate,
)

__all__ = [
    "ClientSettingsError",
    "Completion",
    "CompletionsClient",
    "ServerError",
    "answer_bound",
    "check_ends",
    "client_engine",
    "server_generate",
]
