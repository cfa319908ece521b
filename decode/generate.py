"""One call from prompts to budget-forced completions, on transformers, vLLM or an OpenAI-compatible server."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .budget import Budget
from .formats import ThinkingFormat, get_format
from .hf import BudgetForcing, default_max_new_tokens
from .reprompt import hf_engine, reprompt_generate
from .result import BudgetResult, to_result
from .sampling import Sampling

Prompt = str | Sequence[dict[str, str]]
BACKENDS = ("hf", "vllm", "openai")
FORCING = ("processor", "reprompt")


class ModelLoadError(ValueError):
    """A model or tokenizer that cannot be found or loaded."""


def check_source(name_or_path: str, what: str) -> None:
    """Refuse a path that does not exist; a hub id ("org/name") is left for the hub to resolve."""
    path = Path(name_or_path)
    looks_like_path = name_or_path.startswith((".", "/", "~")) or os.sep + os.sep in name_or_path
    hub_id = name_or_path.count("/") <= 1 and not looks_like_path
    if not path.exists() and not hub_id:
        raise ModelLoadError(f"{what} path {name_or_path!r} does not exist")


def load_model(name_or_path: str, dtype: str | torch.dtype = "auto", device: str | None = None) -> Any:
    """A causal LM from a local folder or a hub id (the hub is only tried for ids, never for paths)."""
    check_source(name_or_path, "model")
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load model {name_or_path!r}: {err}") from None
    return model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()


def load_tokenizer(name_or_path: str) -> Any:
    check_source(name_or_path, "tokenizer")
    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load tokenizer {name_or_path!r}: {err}") from None


def prompt_text(tokenizer: Any, prompt: Prompt, fmt: ThinkingFormat) -> str:
    """The text the model continues: chat messages go through the chat template; then the opener."""
    if isinstance(prompt, str):
        text = prompt
    else:
        text = tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
    return text if text.endswith(fmt.open) else text + fmt.open


def prompt_ids(tokenizer: Any, prompt: Prompt, fmt: ThinkingFormat) -> list[int]:
    # Chat-template text already holds its special tokens; plain strings get the tokenizer's own.
    return tokenizer.encode(prompt_text(tokenizer, prompt, fmt), add_special_tokens=isinstance(prompt, str))


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
    format: str | ThinkingFormat = "s1",
    budget: Budget | Sequence[Budget] | None = None,
    sampling: Sampling | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    seed: int | None = None,
    on_batch: Callable[[int, list[BudgetResult]], None] | None = None,
    backend: str = "hf",
    forcing: str = "processor",
    engine_args: dict[str, Any] | None = None,
) -> list[BudgetResult]:
    """Budget-forced generation for a list of prompts.

    Args:
        model: backend "hf": a transformers causal LM, or a local path / hub id to load one from;
            "vllm": a `vllm.LLM` or a path / hub id (the engine is built once per process and kept);
            "openai": a `decode.openai_client.CompletionsClient` or the server's base URL
            ("http://host:8000/v1").
        tokenizer: its tokenizer, or a path / hub id (None: the model's path; required for "openai").
        prompts: strings (used as they are) or chat messages (rendered by the chat template);
            the format's opener is appended to each.
        format: "s1", "think", a path to a format JSON, or a `ThinkingFormat`.
        budget: one `Budget` for all prompts, or one per prompt (None: no budget).
        sampling: `Sampling(temperature=..., top_p=..., top_k=...)`; greedy by default.
        batch_size: prompts per `generate` call (left-padded).
        max_new_tokens: hard cap per completion; default: the longest the budget allows.
        seed: makes sampling reproducible (batch k is seeded with seed + its first index).
        on_batch: called with (first index, results) after each batch, e.g. to save progress.
        backend: "hf" (transformers, the default), "vllm" (offline vLLM engine) or "openai" (the
            /v1/completions endpoint of a server). The same inputs give the same outputs: token for
            token under greedy decoding, in distribution under sampling.
        forcing: "processor" (inside the engine's decoding loop; on a server this needs vLLM with
            `decode.vllm:VLLMBudgetForcingProcessor` loaded) or "reprompt" (s1's re-prompt loop on
            token ids, for engines where no logits processor can run).
        engine_args: backend "vllm": keyword arguments for `vllm.LLM` (dtype, max_model_len, ...);
            "openai": for `CompletionsClient` (timeout_s, max_retries, concurrency, api_key, ...).
    """
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
    if backend != "hf":
        return _generate_elsewhere(
            model, tokenizer, prompts, format, budgets, sampling, batch_size, max_new_tokens, seed, on_batch, backend,
            forcing, engine_args or {},
        )  # fmt: skip
    if engine_args:
        raise ValueError("engine_args apply to the 'vllm' and 'openai' backends; load the transformers model yourself")
    if isinstance(model, str | Path):
        tokenizer = tokenizer or str(model)
        model = load_model(str(model))
    if isinstance(tokenizer, str | Path):
        tokenizer = load_tokenizer(str(tokenizer))
    fmt = get_format(format)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = eos_ids(model, tokenizer)

    results: list[BudgetResult] = []
    if forcing == "reprompt":
        tokens = fmt.tokens(tokenizer, eos)
        engine = hf_engine(model, pad, sampling)
        for start in range(0, len(prompts), batch_size):
            rows = [prompt_ids(tokenizer, p, fmt) for p in prompts[start : start + batch_size]]
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
        rows = [prompt_ids(tokenizer, p, fmt) for p in prompts[start : start + batch_size]]
        generator = None
        if seed is not None:
            generator = torch.Generator(device=device).manual_seed(seed + start)
        processor = BudgetForcing(
            tokenizer,
            fmt,
            budgets[start : start + batch_size],
            sampling=sampling,
            eos_token_ids=eos,
            max_new_tokens=max_new_tokens,
            generator=generator,
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
) -> list[BudgetResult]:
    """The vLLM and HTTP backends (`generate` has checked the batch size and budgets): prompts are
    tokenized here and sent as token ids."""
    fmt = get_format(format)
    model_path = str(model) if isinstance(model, str | Path) else None
    if backend == "vllm":
        from .vllm import load_llm, vllm_generate

        if model_path is not None:
            check_source(model_path, "model")
            tokenizer = tokenizer or model_path
            model = load_llm(model_path, str(tokenizer) if isinstance(tokenizer, str | Path) else None,
                             forcing=forcing, **engine_args)  # fmt: skip
        elif engine_args:
            raise ValueError("engine_args apply when the vLLM engine is built here (model given as a path)")
        if tokenizer is None:
            tokenizer = model.get_tokenizer()
        config_path = model_path or model.llm_engine.model_config.model

        def run(rows: list[list[int]], chunk: list[Budget], caps: list[int], first: int) -> list:
            first_seed = None if seed is None else seed + first
            return vllm_generate(model, rows, tokens, chunk, caps, sampling=sampling, seed=first_seed, forcing=forcing)

    else:
        from .openai_client import CompletionsClient, server_generate

        if tokenizer is None:
            raise ValueError("backend 'openai' needs the model's tokenizer (a path or object): prompts go as token ids")
        if model_path is not None:
            model = CompletionsClient(model_path, **engine_args)
        elif engine_args:
            raise ValueError("engine_args apply when the client is built here (model given as a URL)")
        config_path = str(tokenizer) if isinstance(tokenizer, str | Path) else None  # a model folder holds both

        def run(rows: list[list[int]], chunk: list[Budget], caps: list[int], first: int) -> list:
            first_seed = None if seed is None else seed + first
            return server_generate(
                model, rows, tokens, chunk, caps, sampling=sampling, seed=first_seed, forcing=forcing,
                vocab_size=len(tokenizer),
            )  # fmt: skip

    if isinstance(tokenizer, str | Path):
        tokenizer = load_tokenizer(str(tokenizer))
    eos = sorted(set(eos_ids(None, tokenizer)) | set(_config_eos(config_path)))
    tokens = fmt.tokens(tokenizer, eos)
    results: list[BudgetResult] = []
    for start in range(0, len(prompts), batch_size):
        rows = [prompt_ids(tokenizer, p, fmt) for p in prompts[start : start + batch_size]]
        chunk = budgets[start : start + batch_size]
        caps = [max_new_tokens or default_max_new_tokens(tokens, b) for b in chunk]
        batch = [to_result(s, tokens, tokenizer) for s in run(rows, chunk, caps, start)]
        results.extend(batch)
        if on_batch is not None:
            on_batch(start, batch)
    return results


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
