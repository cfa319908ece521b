"""Thinking formats: the one place that says how a model opens, ends and is forced out of thinking.

A format is given as strings (what a person reads in a chat transcript) and resolved against a
tokenizer into token ids (what the decoder acts on). SFT formatting, decoding, grading and token
counting all read the same `ThinkingFormat`, so the strings live nowhere else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class FormatError(ValueError):
    """A thinking format that is malformed or does not tokenize as the decoder needs."""


@dataclass(frozen=True)
class ThinkingFormat:
    """How a model thinks, as strings.

    Attributes:
        name: short label used in logs and outputs.
        open: appended to the prompt to start thinking (skipped if the prompt already ends with it).
        end: strings that end thinking when the model emits them; each must be exactly one token.
        close: emitted after the model stops with end-of-sequence inside its thinking, so that an
            answer still follows; must contain one of `end`.
        force: emitted when thinking reaches its maximum; must contain one of `end`.
        wait: emitted in place of an end of thinking that the budget does not yet allow; "" emits
            nothing (the end is refused and the model proposes again; s1's "without string").
        steps: for a model that counts its steps down, the marker it writes after the end token
            before each step, `{k}` standing for the steps left (s1's step-conditional model:
            "{k} steps left\n"); "" for none. With steps, an end token starts a marker and thinking
            goes on, unless the model follows it with the close string's rest ("answer"): that
            ends thinking (see decode/state.py for the step rules).
    """

    name: str
    open: str
    end: tuple[str, ...]
    close: str
    force: str
    wait: str = "Wait"
    steps: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.end, str):
            object.__setattr__(self, "end", (self.end,))
        for attr in ("open", "close", "force"):
            if not isinstance(getattr(self, attr), str) or not getattr(self, attr):
                raise FormatError(f"format {self.name!r}: {attr!r} must be a non-empty string")
        if not isinstance(self.wait, str):
            raise FormatError(f"format {self.name!r}: 'wait' must be a string (\"\" for none)")
        if not self.end or not all(isinstance(e, str) and e for e in self.end):
            raise FormatError(f"format {self.name!r}: 'end' must list at least one non-empty string")
        if not isinstance(self.steps, str) or (self.steps and "{k}" not in self.steps):
            raise FormatError(
                f"format {self.name!r}: 'steps' must be \"\" or a marker holding {{k}}, got {self.steps!r}"
            )

    def with_wait(self, wait: str) -> ThinkingFormat:
        """The same format with another wait string (s1 Table 4 compares "Wait", "Hmm", ...)."""
        return ThinkingFormat(self.name, self.open, self.end, self.close, self.force, wait, self.steps)

    def tokens(self, tokenizer: Any, eos_token_ids: list[int] | None = None) -> FormatTokens:
        """Resolve this format against `tokenizer`; see `FormatTokens`."""
        return FormatTokens.resolve(self, tokenizer, eos_token_ids)


S1 = ThinkingFormat(
    name="s1",
    open="<|im_start|>think\n",
    end=("<|im_start|>",),
    close="<|im_start|>answer\n",
    force="\n<|im_start|>answer\nFinal Answer:",
)
THINK = ThinkingFormat(
    name="think",
    open="<think>\n",
    end=("</think>",),
    close="</think>\n\n",
    force="\n</think>\n\nFinal Answer:",
)
# s1's step-conditional model (simplescaling/step-conditional-control): each step opens with
# `<|im_start|>{k} steps left\n` and the answer with `<|im_start|>answer\n`; thinking starts with the
# bare `<|im_start|>` (simplescaling/s1@77272c6:eval/commands.sh:70, `thinking_start=<|im_start|>`).
S1_STEPS = ThinkingFormat(
    name="s1_steps",
    open="<|im_start|>",
    end=("<|im_start|>",),
    close="<|im_start|>answer\n",
    force="\n<|im_start|>answer\nFinal Answer:",
    steps="{k} steps left\n",
)
PRESETS: dict[str, ThinkingFormat] = {"s1": S1, "think": THINK, "s1_steps": S1_STEPS}


def get_format(spec: str | ThinkingFormat) -> ThinkingFormat:
    """A preset by name (`s1`, `think`), a JSON file of `ThinkingFormat` fields, or a format as is."""
    if isinstance(spec, ThinkingFormat):
        return spec
    if spec in PRESETS:
        return PRESETS[spec]
    path = Path(spec)
    if path.suffix == ".json" and path.is_file():
        try:
            fields = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise FormatError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(fields, dict):
            raise FormatError(f"{path}: expected a JSON object of format fields")
        fields.setdefault("name", path.stem)
        if isinstance(fields.get("end"), list):
            fields["end"] = tuple(fields["end"])
        try:
            return ThinkingFormat(**fields)
        except TypeError as err:
            raise FormatError(f"{path}: {err} (fields: name, open, end, close, force, wait, steps)") from None
    raise FormatError(f"unknown thinking format {spec!r}: expected one of {sorted(PRESETS)} or a path to a .json file")


# Where a token of a forced string stands relative to the end of thinking.
BEFORE_END, AT_END, AFTER_END = "before_end", "end", "after_end"


@dataclass(frozen=True)
class FormatTokens:
    """A `ThinkingFormat` resolved to token ids for one tokenizer.

    `close` and `force` carry, for each token, whether it comes before, at or after the end of
    thinking, so the decoder knows exactly where thinking stops and the answer starts.
    """

    format: ThinkingFormat
    open: tuple[int, ...]
    end: frozenset[int]
    eos: frozenset[int]
    close: tuple[tuple[int, str], ...]
    force: tuple[tuple[int, str], ...]
    wait: tuple[int, ...]
    close_suffix: str = field(default="")
    step_zero: int | None = None  # first token of the marker of zero steps left (formats with steps)
    answer_head: int | None = None  # first token after the end token in `close` (formats with steps)

    @property
    def stops_thinking(self) -> frozenset[int]:
        """Tokens that are an attempt to end thinking: the end token(s) and end-of-sequence."""
        return self.end | self.eos

    @classmethod
    def resolve(cls, fmt: ThinkingFormat, tokenizer: Any, eos_token_ids: list[int] | None = None) -> FormatTokens:
        def encode(text: str) -> tuple[int, ...]:
            return tuple(tokenizer.encode(text, add_special_tokens=False))

        where = f"format {fmt.name!r} with tokenizer {getattr(tokenizer, 'name_or_path', '?')!r}"
        end_ids = []
        for text in fmt.end:
            ids = encode(text)
            if len(ids) != 1:
                raise FormatError(
                    f"{where}: end-of-thinking string {text!r} must be one token, got {len(ids)} {list(ids)} "
                    "(is it a special token of this tokenizer?)"
                )
            end_ids.append(ids[0])
        end = frozenset(end_ids)

        if eos_token_ids is None:
            eos_token_ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        eos = frozenset(int(i) for i in eos_token_ids)
        if not eos:
            raise FormatError(f"{where}: no end-of-sequence token id (pass eos_token_ids)")

        def with_end(attr: str) -> tuple[tuple[int, str], ...]:
            ids = encode(getattr(fmt, attr))
            hits = [i for i, t in enumerate(ids) if t in end]
            if not hits:
                raise FormatError(f"{where}: {attr} string {getattr(fmt, attr)!r} contains no end-of-thinking token")
            if any(t in eos for t in ids):
                raise FormatError(f"{where}: {attr} string {getattr(fmt, attr)!r} contains end-of-sequence")
            cut = hits[0]
            return tuple((t, BEFORE_END if i < cut else AT_END if i == cut else AFTER_END) for i, t in enumerate(ids))

        wait = encode(fmt.wait)
        if any(t in end or t in eos for t in wait):
            raise FormatError(f"{where}: wait string {fmt.wait!r} must not contain an end of thinking or sequence")
        if fmt.wait and not wait:
            raise FormatError(f"{where}: wait string {fmt.wait!r} encodes to no tokens")
        special = set(getattr(tokenizer, "all_special_ids", None) or ()) | set(_added_special_ids(tokenizer))
        if any(t in special for t in wait):
            raise FormatError(
                f"{where}: wait string {fmt.wait!r} holds a special token of this tokenizer "
                f"({[t for t in wait if t in special]}); the model reads it as a control token, not a word"
            )
        open_ids = encode(fmt.open)
        if not open_ids:
            raise FormatError(f"{where}: open string {fmt.open!r} encodes to no tokens")

        close = with_end("close")
        # The text the close string puts between the end token and the answer ("answer\n", "\n\n"):
        # stripped from the front of the answer text when present.
        close_tail = [t for t, pos in close if pos == AFTER_END]
        close_suffix = tokenizer.decode(close_tail) if close_tail else ""
        step_zero = answer_head = None
        if fmt.steps:
            zero, one = encode(fmt.steps.format(k=0)), encode(fmt.steps.format(k=1))
            if not close_tail or not zero or zero[0] == one[0] or close_tail[0] in (zero[0], one[0]):
                raise FormatError(
                    f"{where}: with steps, the first tokens of the zero-steps marker {fmt.steps.format(k=0)!r}, "
                    f"another marker and the close string's rest {close_suffix!r} must differ"
                )
            step_zero, answer_head = zero[0], close_tail[0]
        return cls(fmt, open_ids, end, eos, close, with_end("force"), wait, close_suffix, step_zero, answer_head)


def _added_special_ids(tokenizer: Any) -> list[int]:
    """Ids of the tokenizer's added tokens marked special (`<|im_start|>`, `<|endoftext|>`, ...)."""
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    return [int(i) for i, token in decoder.items() if getattr(token, "special", False)]
