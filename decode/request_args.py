"""`decode.request_args`, the path vLLM users build a request's `extra_args` with (see docs/vllm.md);
the keys and their parsing live in `decode.rules.request_args`."""

from .rules.request_args import (
    BUDGET_KEYS,
    FORMAT_KEY,
    KNOWN_KEYS,
    PREFIX,
    WAIT_KEY,
    RequestArgsError,
    from_request_args,
    to_request_args,
)

__all__ = [
    "BUDGET_KEYS",
    "FORMAT_KEY",
    "KNOWN_KEYS",
    "PREFIX",
    "WAIT_KEY",
    "RequestArgsError",
    "from_request_args",
    "to_request_args",
]
