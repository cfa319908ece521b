"""`python -m decode`: budget-forced generation over a JSONL file of prompts.

Each input line is a JSON object with a `prompt` (a string, or a list of chat messages) and,
optionally, per-row budget fields (`max_thinking_tokens`, `min_thinking_tokens`, `num_ignore`,
`max_answer_tokens`) that override the command line. Each output line repeats the input and adds
`completion_ids`, `thinking`, `answer`, `thinking_tokens`, `answer_tokens`, `waits`, `forced_end`,
`finish_reason`.

Everything is checked before the model loads; bad input writes nothing. Progress goes to
`OUTPUT.partial` after every batch, so an interrupted run started again with the same arguments
resumes where it stopped; the output file appears, whole, only at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .budget import Budget, BudgetError
from .formats import FormatError, get_format
from .generate import ModelLoadError, check_source, generate, load_model, load_tokenizer
from .openai_client import ClientSettingsError, ServerError
from .sampling import Sampling

BUDGET_FIELDS = ("max_thinking_tokens", "min_thinking_tokens", "num_ignore", "max_answer_tokens")


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
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling (default: 0)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
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
    return parser


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"input file {path} does not exist")
    rows = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
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
    budgets = []
    for number, row in enumerate(rows, start=1):
        values = {name: getattr(default, name) for name in BUDGET_FIELDS}
        values.update({name: row[name] for name in BUDGET_FIELDS if name in row})
        try:
            budgets.append(Budget(**values))
        except BudgetError as err:
            raise InputError(f"{path}: row {number}: {err}") from None
    return budgets


def _fingerprint(args: argparse.Namespace) -> str:
    skip = ("output", "device", "engine_args")
    settings = {k: str(v) for k, v in sorted(vars(args).items()) if k not in skip}
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
        sampling = Sampling() if args.temperature in (None, 0) else Sampling(args.temperature, args.top_p, args.top_k)
    except (BudgetError, ValueError) as err:
        raise InputError(str(err)) from None
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
    fmt.tokens(tokenizer)  # refuse a format this tokenizer cannot express before loading the model
    engine_args = dict(args.engine_args or {})
    if args.backend == "hf":
        model = load_model(args.model, args.dtype, args.device)
    else:
        model = args.model  # the backend builds its engine or client once
        if args.backend == "vllm" and args.dtype != "auto":
            engine_args.setdefault("dtype", args.dtype)

    partial = args.output.with_name(args.output.name + ".partial")
    fingerprint = _fingerprint(args)
    done = _resume(partial, fingerprint)
    with partial.open("w", encoding="utf-8") as out:
        out.write(json.dumps({"fingerprint": fingerprint}) + "\n")
        out.writelines(line + "\n" for line in done)
        out.flush()
        start = len(done)
        progress = tqdm(total=len(rows), initial=start, desc="decode", unit="prompt", disable=None)

        def save(offset: int, results: list) -> None:
            for row, result in zip(rows[start + offset :], results, strict=False):
                out.write(json.dumps({**row, **result.to_dict()}, ensure_ascii=False) + "\n")
            out.flush()
            progress.update(len(results))

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
        )
        progress.close()
    lines = partial.read_text(encoding="utf-8").split("\n")[1:]
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text("\n".join(line for line in lines if line) + "\n", encoding="utf-8")
    os.replace(tmp, args.output)
    partial.unlink()


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
