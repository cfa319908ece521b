"""`python -m decode`: budget-forced generation over a JSONL file of prompts.

Each input line is a JSON object with a `prompt` (a string, or a list of chat messages) and,
optionally, per-row budget fields (`max_thinking_tokens`, `min_thinking_tokens`, `num_ignore`,
`max_answer_tokens`) that override the command line. Each output line repeats the input and adds
`completion_ids`, `thinking`, `answer`, `thinking_tokens`, `answer_tokens`, `waits`, `forced_end`,
`finish_reason`, and the run's `dtype` (what `--dtype auto` resolved to; null with --backend openai,
where the server decides) and `sampling` (the settings used, `--sampling model` resolved).

Everything is checked before the model loads; bad input writes nothing. Progress goes to
`OUTPUT.partial` after every batch, so an interrupted run started again with the same arguments
resumes where it stopped; the output file appears, whole, only at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .budget import Budget, BudgetError
from .dtype import model_dtype, resolve_dtype
from .formats import FormatError, get_format
from .generate import (
    ModelLoadError,
    PromptError,
    check_source,
    context_length,
    generate,
    load_model,
    load_tokenizer,
    read_model_config,
    tokenize_prompts,
    windows_of,
)
from .openai_client import ClientSettingsError, ServerError
from .result import BudgetResult
from .sampling import Sampling

BUDGET_FIELDS = ("max_thinking_tokens", "min_thinking_tokens", "num_ignore", "max_answer_tokens")
OUTPUT_FIELDS = tuple(BudgetResult.__dataclass_fields__)  # an output file read back as input holds these


class InputError(ValueError):
    """Bad command-line input, with the file and line it came from."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m decode", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", required=True, help="local folder or hub id of a causal LM; --backend openai: the server's URL"
    )
    parser.add_argument("--tokenizer", help="tokenizer folder or hub id (default: the model's)")
    parser.add_argument("--input", required=True, type=Path, help="JSONL file, one {'prompt': ...} per line")
    parser.add_argument("--output", required=True, type=Path, help="JSONL file to write")
    parser.add_argument("--format", default="s1", help="s1, think, or a path to a format .json (default: s1)")
    parser.add_argument("--wait", help="wait string (default: the format's, 'Wait')")
    parser.add_argument("--max-thinking", type=int, help="maximum thinking tokens (default: none)")
    parser.add_argument("--min-thinking", type=int, default=0, help="minimum thinking tokens")
    parser.add_argument("--num-ignore", type=int, default=0, help="ends of thinking to replace with the wait")
    parser.add_argument("--max-answer", type=int, help="maximum answer tokens (default: until end-of-sequence)")
    parser.add_argument("--max-new-tokens", type=int, help="hard cap per completion")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--greedy", action="store_true", help="argmax decoding (the default)")
    mode.add_argument("--temperature", type=float, help="sample at this temperature")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--repetition-penalty", type=float, default=1.0, help="transformers' penalty (1.0: off)")
    parser.add_argument(
        "--sampling",
        choices=["explicit", "model"],
        default="explicit",
        help="explicit: the options above (default); model: the checkpoint's generation_config.json "
        "(the --model folder, or --tokenizer's with --backend openai), on every backend",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling (default: 0)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--dtype",
        default="auto",
        help="auto (the checkpoint's own, as its config.json states it, on every backend), float32, bfloat16, float16",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument(
        "--backend",
        choices=["hf", "vllm", "openai"],
        default="hf",
        help="hf: transformers (default); vllm: offline vLLM engine; openai: a server's /v1/completions at --model",
    )
    parser.add_argument(
        "--forcing",
        choices=["processor", "reprompt"],
        default="processor",
        help="processor: inside the decoding loop (default); reprompt: s1's re-prompt loop on token ids",
    )
    parser.add_argument(
        "--engine-args",
        type=json.loads,
        default=None,
        help="JSON object: vllm.LLM arguments (--backend vllm, e.g. '{\"max_model_len\": 8192}') or client "
        "settings (--backend openai: timeout_s, max_retries, concurrency, api_key, model)",
    )
    parser.add_argument(
        "--chat-template-kwargs",
        type=json.loads,
        default=None,
        help="JSON object passed to the chat template when chat prompts are rendered "
        "(e.g. '{\"enable_thinking\": true}' for Qwen3)",
    )
    return parser


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"input file {path} does not exist")
    rows = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(
                    f"{path}:{number}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict) or "prompt" not in row:
                raise InputError(f"{path}:{number}: expected a JSON object with a 'prompt' field")
            prompt = row["prompt"]
            is_messages = isinstance(prompt, list) and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in prompt
            )
            if not (isinstance(prompt, str) or (is_messages and prompt)):
                raise InputError(
                    f"{path}:{number}: 'prompt' must be a string or a list of {{'role', 'content'}} messages"
                )
            rows.append(row)
    if not rows:
        raise InputError(f"input file {path} has no rows")
    return rows


def row_budgets(rows: list[dict[str, Any]], default: Budget, path: Path) -> list[Budget]:
    """Each row's budget: the command line's, with the row's own budget fields over it.

    Rows may carry any other fields (ids, gold answers: they are copied to the output), so only a key
    that looks like a misspelt budget field is refused: ignoring it would silently drop its budget."""
    budgets = []
    for number, row in enumerate(rows, start=1):
        for key in row:
            if key in BUDGET_FIELDS or key in OUTPUT_FIELDS or key == "prompt":
                continue
            close = difflib.get_close_matches(key, BUDGET_FIELDS, n=1, cutoff=0.75)
            if close:
                raise InputError(
                    f"{path}: row {number}: unknown budget key {key!r} (did you mean {close[0]!r}?); "
                    f"per-row budget keys: {', '.join(BUDGET_FIELDS)}"
                )
        values = {name: getattr(default, name) for name in BUDGET_FIELDS}
        values.update({name: row[name] for name in BUDGET_FIELDS if name in row})
        if values["max_answer_tokens"] == 0:
            raise InputError(
                f"{path}: row {number}: max_answer_tokens is 0, which leaves every answer empty; give >= 1"
            )
        try:
            budgets.append(Budget(**values))
        except BudgetError as err:
            raise InputError(f"{path}: row {number}: {err}") from None
    return budgets


def _fingerprint(args: argparse.Namespace, resolved: dict[str, Any]) -> str:
    """Of the settings, the input and what `auto` and `--sampling model` resolved to (a resume never mixes them)."""
    skip = ("output", "device", "engine_args")
    settings = {k: str(v) for k, v in sorted(vars(args).items()) if k not in skip}
    if args.chat_template_kwargs is None:  # unset: the same fingerprint as before the option existed
        settings.pop("chat_template_kwargs", None)
    settings["resolved"] = json.dumps(resolved, sort_keys=True)
    digest = hashlib.sha256(json.dumps(settings).encode())
    digest.update(args.input.read_bytes())
    return digest.hexdigest()


def _resume(partial: Path, fingerprint: str) -> list[str]:
    """Completed output lines of an earlier interrupted run with the same settings, if any."""
    if not partial.exists():
        return []
    lines = partial.read_text(encoding="utf-8").split("\n")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        return []
    if header.get("fingerprint") != fingerprint:
        return []
    done = []
    for line in lines[1:]:
        try:
            json.loads(line)
        except json.JSONDecodeError:
            break  # the line being written when the run stopped
        done.append(line)
    return done


def run(args: argparse.Namespace) -> None:
    try:
        budget = Budget(args.max_thinking, args.min_thinking, args.num_ignore, args.max_answer)
        sampling = _sampling(args)
    except (BudgetError, ValueError) as err:
        raise InputError(str(err)) from None
    if args.max_answer == 0:
        raise InputError("--max-answer 0 leaves every answer empty: give >= 1, or leave it out for no limit")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if not args.output.parent.is_dir():
        raise InputError(f"output folder {args.output.parent} does not exist")
    fmt = get_format(args.format)
    if args.wait is not None:
        fmt = fmt.with_wait(args.wait)
    if args.engine_args is not None and not isinstance(args.engine_args, dict):
        raise InputError(f"--engine-args must be a JSON object, got {args.engine_args!r}")
    if args.backend == "hf" and args.engine_args:
        raise InputError("--engine-args applies to --backend vllm and openai")
    if args.backend == "openai" and not args.tokenizer:
        raise InputError("--backend openai needs --tokenizer (prompts are sent as token ids)")
    rows = read_rows(args.input)
    budgets = row_budgets(rows, budget, args.input)
    if args.backend != "openai":
        check_source(args.model, "model")
    tokenizer = load_tokenizer(args.tokenizer or args.model)
    tokens = fmt.tokens(tokenizer)  # refuse a format this tokenizer cannot express before loading the model
    template_kwargs = args.chat_template_kwargs
    if template_kwargs is not None and not isinstance(template_kwargs, dict):
        raise InputError(f"--chat-template-kwargs must be a JSON object, got {template_kwargs!r}")
    # Chat messages need a chat template, and every prompt must fit the model's context with its
    # window: both are checked on the tokenizer and the model's config, before the model loads.
    engine_limit = (args.engine_args or {}).get("max_model_len") if args.backend == "vllm" else None
    config = read_model_config(args.model) if args.backend != "openai" else read_model_config(args.tokenizer)
    try:
        tokenize_prompts(
            tokenizer,
            [row["prompt"] for row in rows],
            fmt,
            windows_of(tokens, budgets, args.max_new_tokens),
            context_length(config, tokenizer, engine_limit if isinstance(engine_limit, int) else None),
            template_kwargs,
        )
    except PromptError as err:
        raise InputError(f"{args.input}: row {err.index + 1}: 'prompt' {err.detail}") from None
    engine_args = dict(args.engine_args or {})
    if args.backend == "hf":
        model = load_model(args.model, args.dtype, args.device)
        dtype = model_dtype(model)
    else:
        model = args.model  # the backend builds its engine or client once
        dtype = None  # the server's
        if args.backend == "vllm":
            try:
                dtype = resolve_dtype(args.model, engine_args.get("dtype", args.dtype))
            except ValueError as err:
                raise InputError(str(err)) from None
            engine_args["dtype"] = dtype
    used = {"dtype": dtype, "sampling": dataclasses.asdict(sampling)}

    partial = args.output.with_name(args.output.name + ".partial")
    fingerprint = _fingerprint(args, used)
    done = _resume(partial, fingerprint)
    with partial.open("w", encoding="utf-8") as out:
        out.write(json.dumps({"fingerprint": fingerprint}) + "\n")
        out.writelines(line + "\n" for line in done)
        out.flush()
        start = len(done)
        progress = tqdm(total=len(rows), initial=start, desc="decode", unit="prompt", disable=None)

        def save(offset: int, results: list) -> None:
            for row, result in zip(rows[start + offset :], results, strict=False):
                out.write(json.dumps({**row, **result.to_dict(), **used}, ensure_ascii=False) + "\n")
            out.flush()
            progress.update(len(results))

        try:
            generate(
                model,
                tokenizer if args.backend == "hf" else args.tokenizer or args.model,  # a folder also gives the eos ids
                [row["prompt"] for row in rows[start:]],
                format=fmt,
                budget=budgets[start:],
                sampling=sampling,
                batch_size=args.batch_size,
                max_new_tokens=args.max_new_tokens,
                seed=args.seed + start,
                on_batch=save,
                backend=args.backend,
                forcing=args.forcing,
                engine_args=engine_args or None,
                chat_template_kwargs=template_kwargs,
            )
        except PromptError as err:  # checked before anything is generated: rows saved earlier stay
            progress.close()
            if not done:
                out.close()
                partial.unlink()  # nothing to resume: leave nothing behind
            raise InputError(f"{args.input}: row {start + err.index + 1}: 'prompt' {err.detail}") from None
        progress.close()
    lines = partial.read_text(encoding="utf-8").split("\n")[1:]
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text("\n".join(line for line in lines if line) + "\n", encoding="utf-8")
    os.replace(tmp, args.output)
    partial.unlink()


def _sampling(args: argparse.Namespace) -> Sampling:
    """The run's sampling: the options given, or (`--sampling model`) the checkpoint's recommendation."""
    if args.sampling == "model":
        options = {
            "--temperature": args.temperature is not None,
            "--greedy": args.greedy,
            "--top-p": args.top_p != 1.0,
            "--top-k": args.top_k != 0,
            "--repetition-penalty": args.repetition_penalty != 1.0,
        }
        given = [flag for flag, set_ in options.items() if set_]
        if given:
            raise InputError(f"--sampling model takes the checkpoint's settings; drop {', '.join(given)}")
        source = (args.tokenizer or args.model) if args.backend == "openai" else args.model
        return Sampling.from_generation_config(source)
    if args.temperature in (None, 0):
        return Sampling(repetition_penalty=args.repetition_penalty)
    return Sampling(args.temperature, args.top_p, args.top_k, repetition_penalty=args.repetition_penalty)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (InputError, FormatError, ModelLoadError, BudgetError, ClientSettingsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ServerError as err:  # the server failed or answered something unusable: progress is kept
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
