"""The checks `decode.generate` makes on its arguments before anything loads or runs.

Python does not check annotations, so a wrong argument would otherwise fail far from where it was
given (`sampling={"temperature": 0.7}` as an AttributeError in the decoding loop, `batch_size=1.5` in
`range`). Each check here names the argument, what was expected and what was given.

A single string given as `prompts` is refused rather than read as one prompt: iterating it would
give one prompt per character, and guessing would make `prompts` mean two things.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .budget import Budget
from .formats import ThinkingFormat
from .sampling import Sampling


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def prompt_problem(prompt: Any) -> str | None:
    """What keeps one prompt from being a string or a non-empty list of {'role', 'content'} messages."""
    if isinstance(prompt, str):
        return None
    if isinstance(prompt, dict):
        return "is one chat message (a dict); a chat is a list of messages: [{'role': 'user', 'content': ...}]"
    if not isinstance(prompt, list | tuple) or not prompt:
        return f"expects a string or a non-empty list of chat messages, got {_shown(prompt)}"
    for number, message in enumerate(prompt):
        if not isinstance(message, dict) or set(message) - {"role", "content"} - {"name", "tool_calls"}:
            return f"message {number} expects a {{'role', 'content'}} mapping, got {_shown(message)}"
        if not isinstance(message.get("role"), str) or not isinstance(message.get("content"), str):
            return f"message {number} expects text 'role' and 'content', got {_shown(message)}"
    return None


def check_generate_arguments(
    prompts: Any,
    format: Any,
    budget: Any,
    sampling: Any,
    batch_size: Any,
    max_new_tokens: Any,
    seed: Any,
    on_batch: Any,
    engine_args: Any,
    chat_template_kwargs: Any,
) -> None:
    """Raise TypeError (wrong kind of value) or ValueError (a value out of range), naming the argument."""
    if isinstance(prompts, str | bytes):
        raise TypeError(
            "generate(): prompts expects a list of prompts, got a single string; wrap it in a list: [prompt]"
        )
    if not isinstance(prompts, Sequence) or isinstance(prompts, dict):
        raise TypeError(f"generate(): prompts expects a list of prompts, got {type(prompts).__name__}")
    if prompts and isinstance(prompts[0], dict) and "role" in prompts[0]:
        raise TypeError("generate(): prompts is one chat (a list of messages); give a list of chats: [messages]")
    for index, prompt in enumerate(prompts):
        problem = prompt_problem(prompt)
        if problem:
            raise TypeError(f"generate(): prompts[{index}] {problem}")
    if format is not None and not isinstance(format, str | Path | ThinkingFormat):
        raise TypeError(f"generate(): format expects 's1', 'think', a path or a ThinkingFormat, got {_shown(format)}")
    if budget is not None and not isinstance(budget, Budget):
        if isinstance(budget, str | dict) or not isinstance(budget, Sequence):
            raise TypeError(f"generate(): budget expects a Budget or a list of Budgets, got {_shown(budget)}")
        for index, item in enumerate(budget):
            if not isinstance(item, Budget):
                raise TypeError(f"generate(): budget[{index}] expects a Budget (Budget() for none), got {_shown(item)}")
    if sampling is not None and not isinstance(sampling, Sampling):
        hint = f" (e.g. Sampling(**{_shown(sampling)}))" if isinstance(sampling, dict) else ""
        raise TypeError(f"generate(): sampling expects a decode.Sampling or None{hint}, got {_shown(sampling)}")
    if not _integer(batch_size):
        raise TypeError(f"generate(): batch_size expects an integer >= 1, got {_shown(batch_size)}")
    if batch_size < 1:
        raise ValueError(f"generate(): batch_size expects an integer >= 1, got {batch_size}")
    if max_new_tokens is not None and not _integer(max_new_tokens):
        raise TypeError(f"generate(): max_new_tokens expects an integer >= 1 or None, got {_shown(max_new_tokens)}")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ValueError(f"generate(): max_new_tokens expects an integer >= 1 or None, got {max_new_tokens}")
    if seed is not None and not _integer(seed):
        raise TypeError(f"generate(): seed expects an integer or None, got {_shown(seed)}")
    if on_batch is not None and not isinstance(on_batch, Callable):
        raise TypeError(
            f"generate(): on_batch expects a function (first index, results) or None, got {_shown(on_batch)}"
        )
    for name, value in (("engine_args", engine_args), ("chat_template_kwargs", chat_template_kwargs)):
        if value is not None and not isinstance(value, dict):
            raise TypeError(f"generate(): {name} expects a dict or None, got {_shown(value)}")
    if max_new_tokens is not None:
        budgets = [budget] if isinstance(budget, Budget) else list(budget or [])
        for index, item in enumerate(budgets):
            # A minimum past the window is a way to watch the forced waits of the first steps; a maximum
            # there is never reached, so a result would read as within budget whatever the model did.
            value = item.max_thinking_tokens
            if value is not None and value >= max_new_tokens:
                where = "budget" if isinstance(budget, Budget) else f"budget[{index}]"
                raise ValueError(
                    f"generate(): {where}.max_thinking_tokens {value} cannot bind: max_new_tokens {max_new_tokens} "
                    f"ends every completion first; raise max_new_tokens above {value} (with room for the answer)"
                )
