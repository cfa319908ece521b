"""The token ids a model is given: chat prompts rendered by the chat template, the format's opener
appended, and every prompt checked against the template and the model's context before anything runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..rules.budget import Budget, default_max_new_tokens
from ..rules.formats import ThinkingFormat
from .preflight import role_problem, template_kwargs_problem

Prompt = str | Sequence[dict[str, str]]


def prompt_text(
    tokenizer: Any,
    prompt: Prompt,
    fmt: ThinkingFormat | None,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> str:
    """The text the model continues, the one rule every stage uses (decoding, SFT, RL, evaluation, curation).

    Chat messages go through the chat template (with `chat_template_kwargs`, e.g. Qwen3's
    `enable_thinking`); a string is used as it is. Then the format's opener follows, unless the text
    already ends with it: a template that opens thinking itself (DeepSeek-R1-Distill's generation
    prompt ends `<｜Assistant｜><think>\\n`) gets none, so no run ever sees the opener twice. With
    `fmt` None (a model with no thinking format) the text is the prompt alone.
    """
    if isinstance(prompt, str):
        text = prompt
    else:
        kwargs = chat_template_kwargs or {}
        text = tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True, **kwargs)
    if fmt is None or text.endswith(fmt.open):
        return text
    if text.rstrip().endswith(fmt.close.rstrip()):
        raise ValueError(
            f"the prompt already ends with a closed thinking block ({fmt.close.rstrip()!r}; e.g. a chat template "
            "called with enable_thinking=False): there is no thinking left to budget; decode it with no thinking "
            "format (format=None) or let the template open thinking"
        )
    bare = fmt.open.rstrip()
    if bare and text.endswith(bare):  # the template opened thinking without the opener's trailing newline
        return text + fmt.open[len(bare) :]
    return text + fmt.open


def prompt_ids(
    tokenizer: Any,
    prompt: Prompt,
    fmt: ThinkingFormat | None,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> list[int]:
    """`prompt_text` as token ids, with one BOS at most.

    Rendered chat text already holds every special token the template writes (R1-Distill's writes the
    BOS), so it is tokenized with no special tokens added. A plain string gets the tokenizer's own
    special tokens, except a BOS the string already starts with.
    """
    text = prompt_text(tokenizer, prompt, fmt, chat_template_kwargs)
    if not isinstance(prompt, str):
        return tokenizer.encode(text, add_special_tokens=False)
    ids = tokenizer.encode(text, add_special_tokens=True)
    bos = tokenizer.bos_token_id
    if bos is not None and ids[:2] == [bos, bos]:
        ids = ids[1:]
    return ids


class PromptError(ValueError):
    """A prompt the model cannot take; `index` is its place in the prompts given to `generate`."""

    def __init__(self, index: int, detail: str):
        super().__init__(f"prompt {index}: {detail}")
        self.index = index
        self.detail = detail


NO_LIMIT = 10**9  # tokenizers with no known limit report a huge sentinel (int(1e30))


def context_length(config: Any, tokenizer: Any, engine_limit: int | None = None) -> int | None:
    """The most tokens (prompt and completion together) the model takes: the least of the model's
    positions, the tokenizer's limit and the engine's (vLLM's max_model_len); None if none is known."""
    limits = [
        engine_limit,
        getattr(config, "max_position_embeddings", None),
        getattr(tokenizer, "model_max_length", None),
    ]
    known = [n for n in limits if isinstance(n, int) and not isinstance(n, bool) and 0 < n < NO_LIMIT]
    return min(known) if known else None


def check_chats(tokenizer: Any, prompts: Sequence[Prompt], chat_template_kwargs: dict[str, Any] | None) -> None:
    """Chat prompts against the tokenizer's template, before anything is generated: a template must exist,
    read every `chat_template_kwargs` key and write every message (none dropped for its role)."""
    if not getattr(tokenizer, "chat_template", None):
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
                raise PromptError(
                    index, f"is a list of chat messages, but tokenizer {name!r} has no chat template "
                    "(give the prompt as a string, or use a tokenizer that has one)",
                )  # fmt: skip
    problem = template_kwargs_problem(tokenizer, chat_template_kwargs)
    if problem:
        raise ValueError(problem)
    for index, prompt in enumerate(prompts):
        problem = None if isinstance(prompt, str) else role_problem(tokenizer, prompt, chat_template_kwargs)
        if problem:
            raise PromptError(index, problem)


def tokenize_prompts(
    tokenizer: Any,
    prompts: Sequence[Prompt],
    fmt: ThinkingFormat,
    windows: Sequence[int | None],
    context: int | None,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> list[list[int]]:
    """Every prompt's ids, checked before anything is generated: chat messages need a chat template,
    and a prompt plus its generation window (None: not bounded, so at least one token) must fit the
    context. A prompt far over it would otherwise fill memory before failing."""
    check_chats(tokenizer, prompts, chat_template_kwargs)
    rows = []
    for index, prompt in enumerate(prompts):
        try:
            if context is not None:  # a prompt of many megabytes is refused before it is tokenized
                too_long = too_many_characters(tokenizer, prompt_text(tokenizer, prompt, fmt, chat_template_kwargs),
                                               context)  # fmt: skip
                if too_long:
                    raise PromptError(index, too_long)
            rows.append(prompt_ids(tokenizer, prompt, fmt, chat_template_kwargs))
        except PromptError:
            raise
        except ValueError as err:  # e.g. a template that closed thinking before it began
            raise PromptError(index, f"cannot be rendered: {err}") from None
        except Exception as err:  # the template's own refusal (jinja2's TemplateError: "unknown role", ...)
            raise PromptError(index, f"cannot be rendered by the chat template: {err}") from None
    if context is not None:
        for index, (ids, window) in enumerate(zip(rows, windows, strict=True)):
            if len(ids) + (window or 1) > context:
                asked = f"plus up to {window} generated tokens" if window else "leaves no room for a generated token"
                raise PromptError(
                    index, f"has {len(ids)} tokens, {asked}: over the model's context of {context} tokens"
                )
    return rows


def too_many_characters(tokenizer: Any, text: str, context: int) -> str | None:
    """Why `text` cannot fit in `context` tokens, told from its length in characters alone, or None.

    Tokenizing costs far more memory than the text (about 160 bytes a character for a fast tokenizer),
    so a text longer than its tokens could ever be is refused unread: no token stands for more
    characters than the longest entry of the vocabulary (byte-level BPE spells each byte of the text
    as one character, SentencePiece each character as one). A text of up to 4 characters a token is
    tokenized and counted, and the vocabulary is read only for a longer one."""
    if len(text) <= 4 * context:
        return None
    longest = max(map(len, tokenizer.get_vocab()), default=1)
    if len(text) <= longest * context:
        return None
    return (
        f"has {len(text)} characters: more than {context} tokens of this tokenizer can hold (at most {longest} "
        f"characters a token), over the model's context of {context} tokens (refused before tokenizing)"
    )


def windows_of(tokens: Any, budgets: Sequence[Budget], max_new_tokens: int | None) -> list[int | None]:
    """The generation window each row asks for: `max_new_tokens`, else what a bounded budget allows."""
    if max_new_tokens:
        return [max_new_tokens] * len(budgets)
    bounded = [b.max_thinking_tokens is not None and b.max_answer_tokens is not None for b in budgets]
    return [default_max_new_tokens(tokens, b) if ok else None for b, ok in zip(budgets, bounded, strict=True)]
