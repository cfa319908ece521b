"""Budget-forcing settings of one request as flat key/value pairs, for engines that carry them.

vLLM passes per-request arguments of custom logits processors in `SamplingParams.extra_args`
(over HTTP: `vllm_xargs`, whose values must be strings, numbers or lists of them). This module is
the one place that writes and reads those keys, so the client side (offline backend, HTTP client)
and the engine side (the logits processor) agree. It imports nothing from vLLM.

Keys (all optional except `bf_format`, which marks a request as budget-forced):
    bf_format: a preset name ("s1", "think") or a JSON object of `ThinkingFormat` fields;
    bf_wait: the wait string (default: the format's);
    bf_max_thinking_tokens, bf_min_thinking_tokens, bf_num_ignore, bf_max_answer_tokens: the budget.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from .budget import Budget, BudgetError
from .formats import PRESETS, FormatError, ThinkingFormat

PREFIX = "bf_"
FORMAT_KEY = "bf_format"
WAIT_KEY = "bf_wait"
BUDGET_KEYS = {f"bf_{name}": name for name in Budget.__dataclass_fields__}
KNOWN_KEYS = {FORMAT_KEY, WAIT_KEY, *BUDGET_KEYS}


class RequestArgsError(ValueError):
    """Budget-forcing request arguments that are malformed (unknown key, bad value)."""


def to_request_args(fmt: ThinkingFormat, budget: Budget) -> dict[str, Any]:
    """The `extra_args` / `vllm_xargs` entries that ask for budget forcing with `fmt` and `budget`."""
    preset = PRESETS.get(fmt.name)
    if preset is not None and preset.with_wait(fmt.wait) == fmt:
        args: dict[str, Any] = {FORMAT_KEY: fmt.name}
        if fmt.wait != preset.wait:
            args[WAIT_KEY] = fmt.wait
    else:
        fields = asdict(fmt)
        fields["end"] = list(fmt.end)
        args = {FORMAT_KEY: json.dumps(fields)}
    for key, name in BUDGET_KEYS.items():
        value = getattr(budget, name)
        if value is not None and value != getattr(Budget(), name):
            args[key] = value
    return args


def from_request_args(extra_args: dict[str, Any] | None) -> tuple[ThinkingFormat, Budget] | None:
    """The format and budget a request asks for, or None when it carries no budget-forcing keys."""
    if not extra_args:
        return None
    ours = {k: v for k, v in extra_args.items() if k.startswith(PREFIX)}
    if not ours:
        return None
    unknown = set(ours) - KNOWN_KEYS
    if unknown:
        raise RequestArgsError(f"unknown budget-forcing argument(s) {sorted(unknown)}; known: {sorted(KNOWN_KEYS)}")
    if FORMAT_KEY not in ours:
        raise RequestArgsError(f"budget-forcing arguments {sorted(ours)} need {FORMAT_KEY!r} (e.g. 's1', 'think')")
    fmt = _format(ours[FORMAT_KEY])
    if WAIT_KEY in ours:
        if not isinstance(ours[WAIT_KEY], str) or not ours[WAIT_KEY]:
            raise RequestArgsError(f"{WAIT_KEY} must be a non-empty string, got {ours[WAIT_KEY]!r}")
        fmt = fmt.with_wait(ours[WAIT_KEY])
    values = {}
    for key, name in BUDGET_KEYS.items():
        if key in ours:
            value = ours[key]
            if isinstance(value, float) and value.is_integer():  # JSON clients may send 512.0
                value = int(value)
            values[name] = value
    try:
        return fmt, Budget(**values)
    except BudgetError as err:
        raise RequestArgsError(f"budget-forcing arguments: {err}") from None


def _format(value: Any) -> ThinkingFormat:
    if isinstance(value, str) and value in PRESETS:
        return PRESETS[value]
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            fields = json.loads(value)
        except json.JSONDecodeError as err:
            raise RequestArgsError(f"{FORMAT_KEY}: not valid JSON ({err})") from None
        if isinstance(fields.get("end"), list):
            fields["end"] = tuple(fields["end"])
        try:
            return ThinkingFormat(**fields)
        except (TypeError, FormatError) as err:
            raise RequestArgsError(f"{FORMAT_KEY}: {err}") from None
    raise RequestArgsError(
        f"{FORMAT_KEY} must be one of {sorted(PRESETS)} or a JSON object of format fields, got {value!r}"
    )
