"""Training examples in a thinking format: rows -> token ids with a loss mask on the assistant turn.

An example is the conversation the decoder will later continue, made whole:

    chat template (system?, user: question, assistant header)      no loss
    format.open + trace + "\\n" + format.close + prefix + answer    loss
    end-of-sequence token                                           loss

For the s1 format that assistant turn is `<|im_start|>think\\n{trace}\\n<|im_start|>answer\\nAnswer: {answer}`,
as s1 trained; for `think` it is `<think>\\n{trace}\\n</think>\\n\\n{answer}`. As in s1's data script
(data/tokenization.py), the trace and the answer are stripped and the prefix is put only before an answer
in which it appears nowhere ("Answer:" in the middle of an attempt is enough to leave it out). The
delimiters are read from `decode`'s `ThinkingFormat`, never spelled here, and the context is
`decode.prompt_ids`'s, token for token: a template that opens thinking itself (DeepSeek-R1-Distill's) gets
no second opener, and its opener is part of the prompt (no loss), since the decoder never asks the model
to write it. Rendered text is tokenized with no special tokens added, so the template's BOS stays the only one.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets

from decode import FormatError, ThinkingFormat, get_format, prompt_ids
from decode.prepare.preflight import role_problem, template_kwargs_problem
from evals.benchmarks import read_file_rows, read_json_lines
from evals.inputs import prepare_hub_datasets, read_utf8

from .config import DataConfig
from .steps import step_assistant_text, step_question

log = logging.getLogger(__name__)

FILE_LOADERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
# What s1 put between the end of thinking and the answer (its training strings); other formats: nothing.
DEFAULT_ANSWER_PREFIX = {"s1": "Answer: ", "s1_steps": "Answer: "}
TRACE_SEPARATOR = "\n"  # between the trace and the format's close string, in both presets


class DataError(ValueError):
    """Training data that cannot be used as asked; the message names the source, row or setting."""


@dataclass
class LengthReport:
    """What the block size did to the data (written into train_report.json beside the model)."""

    rows: int
    block_size: int
    policy: str
    overlong: int = 0
    dropped: int = 0
    truncated: int = 0
    tokens_cut: int = 0
    longest: int = 0
    tokens: int = 0
    loss_tokens: int = 0
    overlong_rows: list[int] = field(default_factory=list)

    def summary(self) -> str:
        affected = f"{self.overlong} of {self.rows} examples longer than block_size {self.block_size}"
        if self.dropped:
            affected += f", dropped ({self.dropped})"
        if self.truncated:
            affected += f", truncated ({self.truncated}, {self.tokens_cut} tokens cut)"
        return f"{affected}; longest {self.longest} tokens; {self.tokens} tokens, {self.loss_tokens} with loss"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_rows(config: DataConfig) -> datasets.Dataset:
    """The rows named by `config.source`: a data file, a `save_to_disk` folder, or a hub dataset id."""
    source = config.source
    path = Path(source).expanduser()
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except FileNotFoundError as err:
            raise DataError(f"data.source {source}: not a folder written by datasets.save_to_disk ({err})") from None
        if isinstance(loaded, datasets.DatasetDict):
            if config.split not in loaded:
                raise DataError(f"data.source {source}: no split {config.split!r} (has {sorted(loaded)})")
            loaded = loaded[config.split]
    elif path.is_file():
        kind = FILE_LOADERS.get(path.suffix)
        if kind is None:
            raise DataError(
                f"data.source {source}: unknown file type {path.suffix!r} (expected {sorted(FILE_LOADERS)})"
            )
        if kind == "json":
            check_json_rows(path, config)
        try:
            loaded = datasets.load_dataset(kind, data_files=str(path), split="train")
        except Exception as err:  # datasets raises many kinds for an unreadable file
            raise DataError(f"data.source {source}: could not read it as {kind} ({err})") from None
    elif source.startswith((".", "/", "~")) or source.count("/") > 1 or path.suffix in FILE_LOADERS:
        raise DataError(f"data.source {source}: no such file or folder")
    else:
        prepare_hub_datasets()
        try:
            loaded = datasets.load_dataset(source, split=config.split)
        except Exception as err:  # offline, gated, or missing: say which, and the way around it
            raise DataError(
                f"data.source {source}: could not load it from the hub ({type(err).__name__}: {err}); "
                "offline? give a local file"
            ) from None
    if config.limit is not None:
        loaded = loaded.select(range(min(config.limit, len(loaded))))
    return loaded


def check_json_rows(path: Path, config: DataConfig) -> None:
    """Read a JSON lines file (or a JSON list) row by row first, so that a line that is not UTF-8, not
    JSON, not an object, or lacks a text field is named by its line (datasets' reader names none)."""
    is_list = path.suffix == ".json" and read_utf8(path, DataError).lstrip().startswith("[")
    # A .json file may hold JSON lines too (datasets reads both).
    rows = read_file_rows(path, DataError) if is_list else read_json_lines(path, DataError)
    if not rows:
        raise DataError(f"data.source {config.source}: no rows")
    for index, (where, row) in enumerate(rows[: config.limit]):
        where = f"{where}, row {index}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        for setting in ("question", "trace", "answer"):
            name = getattr(config, setting)
            if name not in row:
                raise DataError(f"{where}: no field for data.{setting}={name!r} (fields: {', '.join(row)})")
            value = row[name]
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                value = "\n".join(value)
            if not isinstance(value, str):
                raise DataError(f"{where}: field {name!r} must be text, got {type(value).__name__}")
            if not value.strip():
                raise DataError(f"{where}: field {name!r} is empty")


def answer_prefix(config: DataConfig, fmt: ThinkingFormat) -> str:
    if config.answer_prefix is not None:
        return config.answer_prefix
    return DEFAULT_ANSWER_PREFIX.get(fmt.name, "")


def assistant_text(fmt: ThinkingFormat, trace: str, answer: str, prefix: str = "") -> str:
    """The assistant turn the model learns to write, from the format's own strings, as s1 wrote it:
    trace and answer stripped, the prefix only where the answer does not contain it anywhere
    (s1: `"Answer: " + answer if "Answer:" not in answer else answer`)."""
    if prefix and prefix.strip() not in answer:
        answer = prefix + answer  # then stripped, as s1 did: an attempt's leading spaces go too
    return f"{fmt.open}{trace.strip()}{TRACE_SEPARATOR}{fmt.close}{answer.strip()}"


def chat(question: str, system_prompt: str | None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    return [*messages, {"role": "user", "content": question}]


def check_tokenizer(tokenizer: Any, fmt: ThinkingFormat, where: str) -> None:
    """The tokenizer must have a chat template, an end-of-sequence token and the format's delimiters."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"{where}: the tokenizer has no chat template (set 'tokenizer' to one that has)")
    if tokenizer.eos_token is None:
        raise DataError(f"{where}: the tokenizer has no end-of-sequence token, so the model could not learn to stop")
    try:
        fmt.tokens(tokenizer)
    except FormatError as err:
        raise DataError(f"{where}: data.format {fmt.name!r} does not fit this tokenizer: {err}") from None


def _text(row: dict[str, Any], name: str, index: int, source: str) -> str:
    value = row[name]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = "\n".join(value)  # s1K keeps a trace as a list of strings; s1 joined them with newlines
    if not isinstance(value, str):
        raise DataError(f"{source} row {index}: field {name!r} must be text, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{source} row {index}: field {name!r} is empty")
    return value


def tokenize_rows(rows: datasets.Dataset, tokenizer: Any, config: DataConfig) -> tuple[list[list[int]], list[int]]:
    """Per row, the token ids and where the loss starts (everything before it is the prompt)."""
    fmt = get_format(config.format)
    source = f"data.source {config.source}"
    check_tokenizer(tokenizer, fmt, source)
    # a misspelt template argument or a role the template does not know would be dropped without a word
    problem = template_kwargs_problem(tokenizer, config.chat_template_kwargs)
    problem = problem or role_problem(tokenizer, chat("q", config.system_prompt))
    if problem:
        raise DataError(f"{source}: {problem}")
    missing = [name for name in ("question", "trace", "answer") if getattr(config, name) not in rows.column_names]
    if missing:
        names = ", ".join(f"data.{m}={getattr(config, m)!r}" for m in missing)
        raise DataError(f"{source}: no field for {names} (fields: {', '.join(rows.column_names)})")
    if len(rows) == 0:
        raise DataError(f"{source}: no rows")

    prefix = answer_prefix(config, fmt)
    prompts, completions = [], []
    for index, row in enumerate(rows):
        question = _text(row, config.question, index, source)
        trace = _text(row, config.trace, index, source)
        answer = _text(row, config.answer, index, source)
        for end in fmt.end:
            if end in trace:
                raise DataError(
                    f"{source} row {index}: field {config.trace!r} contains the format's end of thinking {end!r}, "
                    "so the model would learn to stop thinking in the middle of its trace"
                )
        if fmt.steps:  # steps-left markers (sft/steps.py): the question asks for the trace's number of steps
            if prefix and prefix.strip() not in answer:
                answer = prefix + answer
            text, steps = step_assistant_text(fmt, trace, answer)
            question = step_question(question, steps)
        else:
            text = assistant_text(fmt, trace, answer, prefix)
        messages = chat(question, config.system_prompt)
        prompts.append(messages)
        # The opener is tokenized with the prompt (see below): the completion text starts after it.
        completions.append(text[len(fmt.open) :] + tokenizer.eos_token)

    # The decoder's prompt is `decode.prompt_ids`: the chat template, then the opener unless the
    # template already wrote it, tokenized as one string with no special tokens added. Training
    # sequences start with exactly those ids, so the model learns the context it will see: the
    # opener's tokens never merge with the start of the trace. The loss starts where the template
    # ends: an opener the format appends is learnt, one the template writes is not.
    kwargs = config.chat_template_kwargs
    completion_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
    ids, prompt_lengths = [], []
    for index, (messages, rest) in enumerate(zip(prompts, completion_ids, strict=True)):
        try:
            at_inference = prompt_ids(tokenizer, messages, fmt, kwargs)
        except ValueError as err:
            raise DataError(f"{source} row {index}: {err}") from None
        template = prompt_ids(tokenizer, messages, None, kwargs)
        if at_inference[: len(template)] != template:
            raise DataError(
                f"{source} row {index}: the chat template followed by the format's opener {fmt.open!r} "
                "tokenizes differently as one string (as the decoder does) than in two parts; use a format "
                "whose opener starts at a token boundary"
            )
        ids.append(at_inference + rest)
        prompt_lengths.append(len(template))
    return ids, prompt_lengths


def build_dataset(tokenizer: Any, config: DataConfig) -> tuple[datasets.Dataset, LengthReport]:
    """Rows -> a tokenized dataset (`input_ids`, `completion_mask`) that trl's SFTTrainer takes as is.

    Every check runs here, before any model is loaded: missing fields, empty texts, a tokenizer
    without the format's delimiters, prompts that do not fit the block, and (unless the recipe
    says to drop or truncate them) examples longer than the block.
    """
    rows = load_rows(config)
    ids, prompt_lengths = tokenize_rows(rows, tokenizer, config)
    source = f"data.source {config.source}"
    report = LengthReport(rows=len(ids), block_size=config.block_size, policy=config.overlong)
    report.longest = max(len(x) for x in ids)
    for index, (row_ids, prompt_length) in enumerate(zip(ids, prompt_lengths, strict=True)):
        if prompt_length >= config.block_size:
            raise DataError(
                f"{source} row {index}: the prompt alone is {prompt_length} tokens, not less than "
                f"data.block_size={config.block_size}, so nothing of the answer would be trained"
            )
        if len(row_ids) > config.block_size:
            report.overlong_rows.append(index)
    report.overlong = len(report.overlong_rows)

    if report.overlong and config.overlong == "error":
        shown = ", ".join(f"row {i} ({len(ids[i])} tokens)" for i in report.overlong_rows[:5])
        more = f" and {report.overlong - 5} more" if report.overlong > 5 else ""
        raise DataError(
            f"{source}: {report.overlong} of {len(ids)} examples are longer than data.block_size="
            f"{config.block_size}: {shown}{more}. Raise data.block_size, or set data.overlong to 'drop' or "
            "'truncate' (s1 used 32,768 so that nothing was cut; truncating traces costs accuracy)"
        )
    input_ids, masks = [], []
    for row_ids, prompt_length in zip(ids, prompt_lengths, strict=True):
        if len(row_ids) > config.block_size:
            if config.overlong == "drop":
                report.dropped += 1
                continue
            report.truncated += 1
            report.tokens_cut += len(row_ids) - config.block_size
            row_ids = row_ids[: config.block_size]
        input_ids.append(row_ids)
        masks.append([0] * prompt_length + [1] * (len(row_ids) - prompt_length))
    if not input_ids:
        raise DataError(f"{source}: every example was dropped as longer than data.block_size={config.block_size}")
    report.tokens = sum(len(x) for x in input_ids)
    report.loss_tokens = sum(sum(m) for m in masks)
    if report.overlong:
        log.warning("%s: %s", source, report.summary())
    else:
        log.info("%s: %s", source, report.summary())
    return datasets.Dataset.from_dict({"input_ids": input_ids, "completion_mask": masks}), report
