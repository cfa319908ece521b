"""`python -m decode`: budget-forced generation over a JSONL file of prompts.

Each input line is a JSON object with a `prompt` (a string, or a list of chat messages) and,
optionally, per-row budget fields (`max_thinking_tokens`, `min_thinking_tokens`, `num_ignore`,
`max_answer_tokens`) that override the command line. Each output line repeats the input and adds
`completion_ids`, `thinking`, `answer`, `thinking_tokens`, `answer_tokens`, `waits`, `forced_end`,
`finish_reason`, and the run's `dtype` (what `--dtype auto` resolved to; null with --backend openai,
where the server decides) and `sampling` (the settings used, `--sampling model` resolved).

Row keys: `prompt` and the budget fields are read; the fields of an output row (so an output file
can be read back) are replaced; a key that names a generation setting (`max_tokens`, `temperature`,
`seed`, ...) is refused, since settings are the command line's and a row cannot change them; any
other key is data, copied to the output unread. A key given twice in one row is refused.

Everything is checked before the model loads (the device, the output path, the model folder's files,
the tokenizer against the model's embedding, every number, the prompts); bad input writes nothing.
Progress goes to `OUTPUT.partial` after every batch, so an interrupted run started again with the same
arguments resumes where it stopped; the output file appears, whole, only at the end. A resume keeps a
saved row only if it is the input row it names, in order, once, made with this run's settings,
input and weights (the header's fingerprint); any other saved line is refused, naming its line.
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

from .generate import generate
from .openai_client.client import ClientSettingsError, ServerError
from .prepare.dtype import model_dtype, resolve_dtype
from .prepare.loading import ModelLoadError, check_source, load_model, load_tokenizer
from .prepare.model_config import read_model_config
from .prepare.preflight import (
    device_problem,
    loads_unique,
    model_fingerprint,
    model_folder_problem,
    output_problem,
    template_kwargs_problem,
    vocabulary_problem,
)
from .prepare.prompts import PromptError, context_length, tokenize_prompts, windows_of
from .rules.budget import Budget, BudgetError
from .rules.formats import FormatError, get_format
from .rules.result import BudgetResult
from .rules.sampling import Sampling

BUDGET_FIELDS = ("max_thinking_tokens", "min_thinking_tokens", "num_ignore", "max_answer_tokens")
OUTPUT_FIELDS = tuple(BudgetResult.__dataclass_fields__)  # an output file read back as input holds these
RUN_FIELDS = ("dtype", "sampling")  # what every output row records of the run
# Generation settings of this and other engines (vLLM, transformers, OpenAI): on a row they would look
# like they apply to it, and they do not; each is refused, with where the setting goes instead.
SETTING_KEYS = {
    "max_tokens": "--max-new-tokens",
    "max_new_tokens": "--max-new-tokens",
    "max_completion_tokens": "--max-new-tokens",
    "max_length": "--max-new-tokens",
    "min_tokens": "min_thinking_tokens (per row) or --min-thinking",
    "min_new_tokens": "min_thinking_tokens (per row) or --min-thinking",
    "temperature": "--temperature",
    "top_p": "--top-p",
    "top_k": "--top-k",
    "min_p": "--sampling model",
    "repetition_penalty": "--repetition-penalty",
    "do_sample": "--temperature",
    "greedy": "--greedy",
    "seed": "--seed",
    "n": "one row per completion",
    "stop": "the format's strings (--format)",
    "wait": "--wait",
    "format": "--format",
    "budget": "max_thinking_tokens, min_thinking_tokens, num_ignore, max_answer_tokens",
    "chat_template_kwargs": "--chat-template-kwargs",
}


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
                row = loads_unique(line)
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
            if key in BUDGET_FIELDS or key in OUTPUT_FIELDS or key in RUN_FIELDS or key == "prompt":
                continue
            if key in SETTING_KEYS:
                raise InputError(
                    f"{path}: row {number}: {key!r} is a generation setting, which a row cannot set "
                    f"(use {SETTING_KEYS[key]}); per-row budget keys: {', '.join(BUDGET_FIELDS)}"
                )
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
    """Of the settings, the input, what `auto` and `--sampling model` resolved to, and the model's files
    (`model_fingerprint`: other weights at the same path are another model): a resume never mixes them."""
    skip = ("output", "device", "engine_args")
    settings = {k: str(v) for k, v in sorted(vars(args).items()) if k not in skip}
    if args.chat_template_kwargs is None:  # unset: the same fingerprint as before the option existed
        settings.pop("chat_template_kwargs", None)
    settings["resolved"] = json.dumps(resolved, sort_keys=True)
    folders = [args.tokenizer] if args.backend == "openai" else [args.model, args.tokenizer]  # not a server's
    settings["model_files"] = " ".join(model_fingerprint(f) for f in folders if f)
    digest = hashlib.sha256(json.dumps(settings).encode())
    digest.update(args.input.read_bytes())
    return digest.hexdigest()


def _resume(partial: Path, fingerprint: str, rows: list[dict[str, Any]], used: dict[str, Any]) -> list[str]:
    """Saved lines of an earlier interrupted run with the same settings, input and weights, each checked.

    A partial file made with other settings (or whose header was cut short) is started over: nothing
    of it is kept. Under the right header, each line must be `{"row": i, "output": ...}` for the next
    input row i, repeat that row and hold a whole result made with this run's dtype and sampling; a
    line that is not is refused by its line number, never skipped. Only the last line may be cut short
    (the one being written when the run stopped); it is dropped."""
    if not partial.exists():
        return []
    lines = partial.read_bytes().split(b"\n")
    try:
        header = json.loads(lines[0])
    except (UnicodeDecodeError, json.JSONDecodeError):
        return []
    if not isinstance(header, dict) or header.get("fingerprint") != fingerprint:
        print(f"note: {partial} was made with other settings, input or weights; starting over", file=sys.stderr)
        return []
    done = []
    for number, raw in enumerate(lines[1:-1], start=2):  # lines[-1] follows the last newline: cut short or empty
        problem = _saved_line_problem(raw, len(done), rows, used)
        if problem:
            raise InputError(f"{partial}: line {number}: {problem}; delete {partial} to start over")
        done.append(raw.decode("utf-8"))
    return done


def _saved_line_problem(raw: bytes, index: int, rows: list[dict[str, Any]], used: dict[str, Any]) -> str | None:
    """What keeps a saved line from being the result of input row `index` made with these settings."""
    try:
        saved = loads_unique(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"not a saved result ({getattr(err, 'msg', err)})"
    if not isinstance(saved, dict) or set(saved) != {"row", "output"} or not isinstance(saved["output"], dict):
        return "not a saved result (expected {'row': N, 'output': {...}})"
    if saved["row"] != index:
        return f"holds input row {saved['row']!r} where row {index} comes next (rows out of order or twice)"
    if index >= len(rows):
        return f"holds row {index}, but the input has {len(rows)} rows"
    output, row = saved["output"], rows[index]
    expected = set(row) | set(OUTPUT_FIELDS) | set(used)
    if set(output) != expected:
        wrong = sorted(set(output) ^ expected)
        return f"row {index}'s result has other fields than a result of this run ({', '.join(wrong[:4])})"
    for key, value in row.items():
        if key not in OUTPUT_FIELDS and key not in used and output[key] != value:
            return f"row {index}'s result does not repeat input row {index + 1} ({key!r} differs)"
    for key, value in used.items():
        if output[key] != json.loads(json.dumps(value)):
            return f"row {index} was made with {key} {output[key]!r}; this run uses {value!r}"
    try:
        BudgetResult(**{k: output[k] for k in OUTPUT_FIELDS})
        ok = all(isinstance(t, int) and not isinstance(t, bool) for t in output["completion_ids"])
        ok = ok and all(isinstance(output[k], int) for k in ("thinking_tokens", "answer_tokens", "waits"))
        ok = ok and isinstance(output["thinking"], str) and isinstance(output["answer"], str)
    except TypeError:
        ok = False
    return None if ok else f"row {index}'s result is not a whole result (ids, texts, counts)"


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
    problem = output_problem(args.output, args.input) or output_problem(_partial_path(args.output), args.input)
    if args.backend == "hf":
        problem = problem or device_problem(args.device)
    elif args.device is not None:
        problem = problem or f"--device applies to --backend hf; --backend {args.backend} places the model itself"
    if problem:
        raise InputError(problem)
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
    check_windows(budget, budgets, args.max_new_tokens, args.input)
    if args.backend != "openai":
        check_source(args.model, "model")
        problem = model_folder_problem(args.model, tokenizer_needed=args.tokenizer is None)
        if problem:
            raise InputError(problem)
    tokenizer = load_tokenizer(args.tokenizer or args.model)
    tokens = fmt.tokens(tokenizer)  # refuse a format this tokenizer cannot express before loading the model
    template_kwargs = args.chat_template_kwargs
    if template_kwargs is not None and not isinstance(template_kwargs, dict):
        raise InputError(f"--chat-template-kwargs must be a JSON object, got {template_kwargs!r}")
    # Chat messages need a chat template, and every prompt must fit the model's context with its
    # window: both are checked on the tokenizer and the model's config, before the model loads.
    engine_limit = (args.engine_args or {}).get("max_model_len") if args.backend == "vllm" else None
    config = read_model_config(args.model) if args.backend != "openai" else read_model_config(args.tokenizer)
    problem = vocabulary_problem(tokenizer, config) or template_kwargs_problem(tokenizer, template_kwargs)
    if problem:
        raise InputError(problem)
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
    dtype = None  # the server's
    if args.backend != "openai":  # the dtype the model will run in, as load_model and the vLLM engine take it
        try:
            dtype = resolve_dtype(args.model, engine_args.get("dtype", args.dtype))
        except ValueError as err:
            raise InputError(str(err)) from None
    used = {"dtype": dtype, "sampling": dataclasses.asdict(sampling)}
    partial = _partial_path(args.output)
    fingerprint = _fingerprint(args, used)
    done = _resume(partial, fingerprint, rows, used)  # checked before the model loads
    if args.backend == "hf":
        model = load_model(args.model, args.dtype, args.device)
        if model_dtype(model) != dtype:
            raise ModelLoadError(f"model {args.model!r} loaded in {model_dtype(model)}, not the {dtype} asked for")
    else:
        model = args.model  # the backend builds its engine or client once
        if args.backend == "vllm":
            engine_args["dtype"] = dtype
    with partial.open("w", encoding="utf-8") as out:
        out.write(json.dumps({"fingerprint": fingerprint}) + "\n")
        out.writelines(line + "\n" for line in done)
        out.flush()
        start = len(done)
        progress = tqdm(total=len(rows), initial=start, desc="decode", unit="prompt", disable=None)

        def save(offset: int, results: list) -> None:
            for index, result in enumerate(results, start=start + offset):
                output = {**rows[index], **result.to_dict(), **used}
                out.write(json.dumps({"row": index, "output": output}, ensure_ascii=False) + "\n")
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
    outputs = [json.dumps(json.loads(line)["output"], ensure_ascii=False) for line in lines if line]
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text("\n".join(outputs) + "\n", encoding="utf-8")
    os.replace(tmp, args.output)
    partial.unlink()


def _partial_path(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def check_windows(default: Budget, budgets: list[Budget], max_new_tokens: int | None, path: Path) -> None:
    """Refuse a budget that cannot bind: a thinking maximum (or minimum) at or past `--max-new-tokens`
    is never reached, since the completion ends first; the run would report every row within budget."""
    if max_new_tokens is None:
        return
    for flag, value in (
        ("--max-thinking", default.max_thinking_tokens),
        ("--min-thinking", default.min_thinking_tokens),
    ):
        if value is not None and value > 0 and value >= max_new_tokens:
            raise InputError(
                f"{flag} {value} cannot bind: --max-new-tokens {max_new_tokens} ends every completion first; "
                f"raise --max-new-tokens above {value} (with room for the answer) or lower {flag}"
            )
    for number, budget in enumerate(budgets, start=1):
        for name in ("max_thinking_tokens", "min_thinking_tokens"):
            value = getattr(budget, name)
            if value is not None and value > 0 and value >= max_new_tokens:
                raise InputError(
                    f"{path}: row {number}: {name} {value} cannot bind: --max-new-tokens {max_new_tokens} ends "
                    f"every completion first; raise --max-new-tokens above {value} (with room for the answer) "
                    "or lower the budget"
                )


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
        ignored = [flag for flag, set_ in (("--top-p", args.top_p != 1.0), ("--top-k", args.top_k != 0)) if set_]
        if ignored:
            how = "--greedy" if args.greedy else "no --temperature"
            if args.temperature is not None:
                how = f"--temperature {args.temperature}"
            raise InputError(
                f"{', '.join(ignored)} only shape sampling, and {how} decodes greedily; give --temperature > 0 "
                f"to sample, or drop {', '.join(ignored)}"
            )
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
