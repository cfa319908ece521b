"""One call from prompts to budget-forced completions, on transformers, vLLM or an OpenAI-compatible server."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .hf.processor import BudgetForcing, check_generation_defaults, default_max_new_tokens
from .prepare.dtype import DtypeError, resolve_dtype, torch_dtype
from .prepare.preflight import model_folder_problem, role_problem, template_kwargs_problem
from .reprompt.loop import hf_engine, reprompt_generate
from .reprompt.plain import check_plain_budget, plain_generate
from .rules.arguments import check_generate_arguments
from .rules.budget import Budget
from .rules.formats import ThinkingFormat, get_format
from .rules.result import BudgetResult, to_result
from .rules.sampling import Sampling

Prompt = str | Sequence[dict[str, str]]
BACKENDS = ("hf", "vllm", "openai")
FORCING = ("processor", "reprompt")


class ModelLoadError(ValueError):
    """A model or tokenizer that cannot be found or loaded."""


def check_source(name_or_path: str, what: str) -> None:
    """Refuse a path that does not exist; a hub id ("org/name") is left for the hub to resolve.

    A hub id that is not a local folder needs the hub or a cached copy. When the hub cannot be reached
    (offline, or HF_HUB_OFFLINE set), an id that is not in the cache is refused here at once, instead
    of after a minute of download retries; one that is cached is loaded from the cache, with the hub
    switched off so that nothing waits on it.
    """
    path = Path(name_or_path)
    looks_like_path = name_or_path.startswith((".", "/", "~")) or os.sep + os.sep in name_or_path
    hub_id = name_or_path.count("/") <= 1 and not looks_like_path
    if not path.exists() and not hub_id:
        raise ModelLoadError(f"{what} path {name_or_path!r} does not exist")
    if what == "model" and path.is_dir():  # its files are read now, not after minutes of loading
        problem = model_folder_problem(path, tokenizer_needed=False)
        if problem:
            raise ModelLoadError(problem)
    if path.exists() or hub_online():
        return
    if _in_hub_cache(name_or_path):
        go_offline()
        return
    raise ModelLoadError(
        f"{what} {name_or_path!r} is not a local folder nor in the local hub cache, and the hub cannot be "
        "reached to download it (offline, or HF_HUB_OFFLINE is set); give the path of a model folder"
    )


def hub_online() -> bool:
    """Whether the hub may be used: not switched off, and it answers."""
    from huggingface_hub import constants

    return not constants.HF_HUB_OFFLINE and _hub_answers()


@functools.cache
def _hub_answers() -> bool:
    """Whether the hub answers at all (any HTTP status counts), asked once per process, with a short timeout."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=5)
    except Exception:  # no route, no name resolution, refused, timed out: the hub is out of reach
        return False
    return True


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for filename in ("config.json", "tokenizer_config.json"):
        try:
            if isinstance(try_to_load_from_cache(repo_id, filename), str):
                return True
        except ValueError:  # not a valid repo id
            return False
    return False


def go_offline() -> None:
    """Read hub ids from the cache only, in this process and the ones it starts (vLLM, grading workers)."""
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True


def load_model(name_or_path: str, dtype: str | torch.dtype = "auto", device: str | None = None) -> Any:
    """A causal LM from a local folder or a hub id (the hub is only tried for ids, never for paths).

    `dtype="auto"` is the checkpoint's own dtype, resolved by `decode.dtype.resolve_dtype` as for vLLM.
    """
    check_source(name_or_path, "model")
    try:
        resolved = torch_dtype(resolve_dtype(name_or_path, dtype))
    except DtypeError as err:
        raise ModelLoadError(f"could not load model {name_or_path!r}: {err}") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=resolved)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load model {name_or_path!r}: {err}") from None
    return model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()


def load_tokenizer(name_or_path: str) -> Any:
    check_source(name_or_path, "tokenizer")
    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load tokenizer {name_or_path!r}: {err}") from None


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


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """End-of-sequence ids of the tokenizer and the model's generation config, merged."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.add(config_eos)
    elif config_eos:
        ids.update(config_eos)
    return sorted(ids)


def _left_pad(rows: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    *,
    format: str | ThinkingFormat | None = "s1",
    budget: Budget | Sequence[Budget] | None = None,
    sampling: Sampling | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    seed: int | None = None,
    on_batch: Callable[[int, list[BudgetResult]], None] | None = None,
    backend: str = "hf",
    forcing: str = "processor",
    engine_args: dict[str, Any] | None = None,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> list[BudgetResult]:
    """Budget-forced generation for a list of prompts.

    Args:
        model: backend "hf": a transformers causal LM, or a local path / hub id to load one from;
            "vllm": a `vllm.LLM` or a path / hub id (the engine is built once per process and kept);
            "openai": a `decode.openai_client.CompletionsClient` or the server's base URL
            ("http://host:8000/v1").
        tokenizer: its tokenizer, or a path / hub id (None: the model's path; required for "openai").
        prompts: strings (used as they are) or chat messages (rendered by the chat template);
            the format's opener is appended to each unless it already ends with it (see `prompt_text`).
        format: "s1", "think", a path to a format JSON, or a `ThinkingFormat`; None: no thinking
            format (an instruct model answering the plain prompt until its end-of-sequence; the
            budget may cap only the answer).
        budget: one `Budget` for all prompts, or one per prompt (None: no budget).
        sampling: `Sampling(temperature=..., top_p=..., top_k=...)`; greedy by default.
        batch_size: prompts per `generate` call (left-padded).
        max_new_tokens: hard cap per completion; default: the longest the budget allows.
        seed: makes sampling reproducible: prompt i is seeded with seed + i, so its completion does not
            depend on the batch it falls in (a resumed run draws what an uninterrupted one did).
        on_batch: called with (first index, results) after each batch, e.g. to save progress.
        backend: "hf" (transformers, the default), "vllm" (offline vLLM engine) or "openai" (the
            /v1/completions endpoint of a server). The same inputs give the same outputs: token for
            token under greedy decoding, in distribution under sampling.
        forcing: "processor" (inside the engine's decoding loop; on a server this needs vLLM with
            `decode.vllm:VLLMBudgetForcingProcessor` loaded) or "reprompt" (s1's re-prompt loop on
            token ids, for engines where no logits processor can run).
        engine_args: backend "vllm": keyword arguments for `vllm.LLM` (dtype, max_model_len, ...);
            "openai": for `CompletionsClient` (timeout_s, max_retries, concurrency, api_key, ...).
        chat_template_kwargs: passed to the chat template (e.g. `{"enable_thinking": True}` for Qwen3).

    A model given as a path is loaded in the checkpoint's own dtype on "hf" and "vllm" alike
    (`decode.dtype`; engine_args' "dtype" chooses another). Only `sampling` decides how tokens are
    drawn: the model's generation config is not applied (`Sampling.from_generation_config` asks for it).
    """
    check_generate_arguments(prompts, format, budget, sampling, batch_size, max_new_tokens, seed, on_batch,
                             engine_args, chat_template_kwargs)  # fmt: skip
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if forcing not in FORCING:
        raise ValueError(f"forcing must be one of {FORCING}, got {forcing!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    budget = Budget() if budget is None else budget
    budgets = [budget] * len(prompts) if isinstance(budget, Budget) else list(budget)
    if len(budgets) != len(prompts):
        raise ValueError(f"got {len(budgets)} budgets for {len(prompts)} prompts")
    if format is None:
        for b in budgets:
            check_plain_budget(b)
    template_kwargs = dict(chat_template_kwargs or {})
    if backend != "hf":
        return _generate_elsewhere(
            model, tokenizer, prompts, format, budgets, sampling, batch_size, max_new_tokens, seed, on_batch, backend,
            forcing, engine_args or {}, template_kwargs,
        )  # fmt: skip
    if engine_args:
        raise ValueError("engine_args apply to the 'vllm' and 'openai' backends; load the transformers model yourself")
    if isinstance(model, str | Path):
        tokenizer = tokenizer or str(model)
        model = load_model(str(model))
    if isinstance(tokenizer, str | Path):
        tokenizer = load_tokenizer(str(tokenizer))
    check_generation_defaults(model)
    fmt = None if format is None else get_format(format)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = eos_ids(model, tokenizer)
    if fmt is None:
        check_chats(tokenizer, prompts, template_kwargs)
        rows = [prompt_ids(tokenizer, p, None, template_kwargs) for p in prompts]
        return plain_generate(hf_engine(model, pad, sampling), rows, eos, budgets, tokenizer, batch_size=batch_size,
                              max_new_tokens=max_new_tokens, seed=seed, on_batch=on_batch)  # fmt: skip

    results: list[BudgetResult] = []
    tokens = fmt.tokens(tokenizer, eos)
    context = context_length(getattr(model, "config", None), tokenizer)
    all_rows = tokenize_prompts(
        tokenizer, prompts, fmt, windows_of(tokens, budgets, max_new_tokens), context, template_kwargs
    )
    if forcing == "reprompt":
        engine = hf_engine(model, pad, sampling)
        for start in range(0, len(prompts), batch_size):
            rows = all_rows[start : start + batch_size]
            chunk = budgets[start : start + batch_size]
            caps = [max_new_tokens or default_max_new_tokens(tokens, b) for b in chunk]
            first_seed = None if seed is None else seed + start
            summaries = reprompt_generate(engine, rows, tokens, chunk, caps, seed=first_seed)
            batch = [to_result(s, tokens, tokenizer) for s in summaries]
            results.extend(batch)
            if on_batch is not None:
                on_batch(start, batch)
        return results
    for start in range(0, len(prompts), batch_size):
        rows = all_rows[start : start + batch_size]
        generator = None
        if seed is not None:  # prompt i draws from its own generator, seeded seed + i, like the other backends
            generator = [torch.Generator(device=device).manual_seed(seed + start + i) for i in range(len(rows))]
        width = max(len(row) for row in rows)
        processor = BudgetForcing(
            tokenizer,
            fmt,
            budgets[start : start + batch_size],
            sampling=sampling,
            eos_token_ids=eos,
            max_new_tokens=max_new_tokens,
            generator=generator,
            padding=[width - len(row) for row in rows],
        )
        input_ids, attention_mask = _left_pad(rows, pad, device)
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **processor.generate_kwargs())
        batch = processor.results()
        for row, result in enumerate(batch):  # the engine emitted exactly what the states chose
            emitted = out[row, input_ids.shape[1] : input_ids.shape[1] + len(result.completion_ids)]
            if emitted.tolist() != result.completion_ids:
                raise RuntimeError(f"prompt {start + row}: generate's output differs from the forced choices")
        results.extend(batch)
        if on_batch is not None:
            on_batch(start, batch)
    return results


def _generate_elsewhere(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    format: str | ThinkingFormat,
    budgets: list[Budget],
    sampling: Sampling | None,
    batch_size: int,
    max_new_tokens: int | None,
    seed: int | None,
    on_batch: Callable[[int, list[BudgetResult]], None] | None,
    backend: str,
    forcing: str,
    engine_args: dict[str, Any],
    template_kwargs: dict[str, Any],
) -> list[BudgetResult]:
    """The vLLM and HTTP backends (`generate` has checked the batch size and budgets): prompts are
    tokenized here and sent as token ids."""
    fmt = None if format is None else get_format(format)
    model_path = str(model) if isinstance(model, str | Path) else None
    sampling = sampling or Sampling()
    if sampling.penalised and not _honours_penalty(backend):
        raise ValueError(
            f"backend {backend!r} does not pass a repetition penalty to its engine "
            f"(repetition_penalty={sampling.repetition_penalty}); use backend 'hf', or a Sampling without it"
        )
    if backend == "vllm":
        from .vllm.engine import load_llm, vllm_engine, vllm_generate

        if model_path is not None:
            check_source(model_path, "model")
            tokenizer = tokenizer or model_path
            # vLLM's own "auto" would cast a float32 checkpoint to 16 bits; give it the checkpoint's dtype.
            try:
                engine_args = {**engine_args, "dtype": resolve_dtype(model_path, engine_args.get("dtype", "auto"))}
            except DtypeError as err:
                raise ModelLoadError(f"could not load model {model_path!r}: {err}") from None
            model = load_llm(model_path, str(tokenizer) if isinstance(tokenizer, str | Path) else None,
                             forcing=forcing, **engine_args)  # fmt: skip
        elif engine_args:
            raise ValueError("engine_args apply when the vLLM engine is built here (model given as a path)")
        if tokenizer is None:
            tokenizer = model.get_tokenizer()
        config_path = model_path or model.llm_engine.model_config.model
        engine_limit = model.llm_engine.model_config.max_model_len
        plain_engine = vllm_engine(model, sampling or Sampling()) if fmt is None else None

        def run(rows: list[list[int]], chunk: list[Budget], caps: list[int], first: int) -> list:
            first_seed = None if seed is None else seed + first
            return vllm_generate(model, rows, tokens, chunk, caps, sampling=sampling, seed=first_seed, forcing=forcing)

    else:
        from .openai_client.client import CompletionsClient, client_engine, server_generate

        if tokenizer is None:
            raise ValueError("backend 'openai' needs the model's tokenizer (a path or object): prompts go as token ids")
        if model_path is not None:
            model = CompletionsClient(model_path, **engine_args)
        elif engine_args:
            raise ValueError("engine_args apply when the client is built here (model given as a URL)")
        config_path = str(tokenizer) if isinstance(tokenizer, str | Path) else None  # a model folder holds both
        engine_limit = None  # the server's own limit is not known here
        plain_engine = client_engine(model, sampling or Sampling()) if fmt is None else None

        def run(rows: list[list[int]], chunk: list[Budget], caps: list[int], first: int) -> list:
            first_seed = None if seed is None else seed + first
            return server_generate(
                model, rows, tokens, chunk, caps, sampling=sampling, seed=first_seed, forcing=forcing,
                vocab_size=len(tokenizer),
            )  # fmt: skip

    if isinstance(tokenizer, str | Path):
        tokenizer = load_tokenizer(str(tokenizer))
    eos = folder_eos_ids(config_path, tokenizer)
    if fmt is None:
        check_chats(tokenizer, prompts, template_kwargs)
        rows = [prompt_ids(tokenizer, p, None, template_kwargs) for p in prompts]
        return plain_generate(plain_engine, rows, eos, budgets, tokenizer, batch_size=batch_size,
                              max_new_tokens=max_new_tokens, seed=seed, on_batch=on_batch)  # fmt: skip
    tokens = fmt.tokens(tokenizer, eos)
    context = context_length(read_model_config(config_path), tokenizer, engine_limit)
    all_rows = tokenize_prompts(
        tokenizer, prompts, fmt, windows_of(tokens, budgets, max_new_tokens), context, template_kwargs
    )
    results: list[BudgetResult] = []
    for start in range(0, len(prompts), batch_size):
        rows = all_rows[start : start + batch_size]
        chunk = budgets[start : start + batch_size]
        caps = [max_new_tokens or default_max_new_tokens(tokens, b) for b in chunk]
        batch = [to_result(s, tokens, tokenizer) for s in run(rows, chunk, caps, start)]
        results.extend(batch)
        if on_batch is not None:
            on_batch(start, batch)
    return results


def _honours_penalty(backend: str) -> bool:
    """Whether the backend applies `Sampling.repetition_penalty` to the proposals (it must never drop it)."""
    if backend != "vllm":
        return False  # the HTTP client sends no penalty
    from .vllm.engine import vllm_sampling_params

    # The adapter passes it on (vLLM then refuses it where its engine cannot put it into the proposal).
    return vllm_sampling_params(Sampling(repetition_penalty=2.0), 1, None).repetition_penalty == 2.0


def folder_eos_ids(model_path: str | None, tokenizer: Any) -> list[int]:
    """End-of-sequence ids of a model folder: the tokenizer's and its generation config's (those vLLM
    stops at, and those an HTTP client must agree on with a server)."""
    return sorted(set(eos_ids(None, tokenizer)) | set(_config_eos(model_path)))


def _config_eos(model_path: str | None) -> list[int]:
    """End-of-sequence ids in a model folder's generation config (vLLM stops at them too)."""
    if not model_path:
        return []
    from transformers import GenerationConfig

    try:
        config_eos = GenerationConfig.from_pretrained(model_path).eos_token_id
    except (OSError, ValueError):
        return []
    return [config_eos] if isinstance(config_eos, int) else list(config_eos or [])


def read_model_config(model_path: str | None) -> Any:
    """A model folder's config (for its number of positions), or None where there is none."""
    if not model_path or not (Path(model_path) / "config.json").is_file():
        return None
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError):
        return None
