"""The model's proposal of its next token, under the user's sampling settings.

Budget forcing replaces a proposed end of thinking by the wait string, so the decoder must know the
token the model would have chosen. It draws that token exactly as `transformers` plain generation
does: the same warpers (temperature, top-k, top-p, min-p, in the same order), then argmax or a draw
from the softmax. The probability the model gives to ending thinking therefore becomes the
probability of a wait, instead of being spread over the other tokens as masking would do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from .json_files import read_json_object

# generation_config.json fields that change which token is chosen but that `Sampling` cannot express,
# with the value at which each does nothing. A checkpoint that sets one otherwise is refused.
_INEXPRESSIBLE = {
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "top_h": None,
    "no_repeat_ngram_size": 0,
    "encoder_repetition_penalty": 1.0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "sequence_bias": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "exponential_decay_length_penalty": None,
    "guidance_scale": 1.0,
    "num_beams": 1,
    "penalty_alpha": None,
    "diversity_penalty": 0.0,
    "min_length": 0,
    "min_new_tokens": 0,
    "watermarking_config": None,
}


def first_argmax(scores: torch.Tensor, block: int = 512) -> torch.Tensor:
    """`scores.argmax(dim=-1)`, the same index (ties go to the first), several times faster on CPU.

    On the CPU, PyTorch's argmax over a long last dimension is not vectorised: on a 150K vocabulary
    it costs about 0.3 ms a row, a few percent of a small model's decoding step. Block
    maxima (`amax`, vectorised) find the first block holding the row's maximum, and argmax runs only
    inside that block.
    """
    rows, vocab = scores.shape
    if vocab <= 4 * block or scores.device.type != "cpu":  # GPU argmax is already parallel
        return scores.argmax(dim=-1)
    full = vocab // block * block
    maxima = scores[:, :full].view(rows, -1, block).amax(dim=-1)
    if full < vocab:
        maxima = torch.cat([maxima, scores[:, full:].amax(dim=-1, keepdim=True)], dim=1)
    start = maxima.argmax(dim=-1) * block
    window = (start[:, None] + torch.arange(block, device=scores.device)).clamp_max(vocab - 1)
    # Clamping repeats the last index in a short final block; argmax keeps the first of equal values.
    return start + scores.gather(1, window).argmax(dim=-1)


@dataclass(frozen=True)
class Sampling:
    """Sampling settings. `temperature=0` means greedy (argmax), as in vLLM and s1's evaluation.

    These are all the settings a run uses, on every backend: a checkpoint's own recommendations
    (its generation_config.json) apply only when asked for, with `Sampling.from_generation_config`.
    `repetition_penalty` is transformers' (and vLLM's): the logit of every token already in the
    sequence, prompt included, is divided by it (multiplied when negative); 1.0 is off.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float | None = None
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        # Checked first, so that a string from a config file is named, not met by a failed comparison.
        numbers = [("temperature", "a number >= 0 (0: greedy)"), ("top_p", "a number in (0, 1]")]
        if self.min_p is not None:
            numbers.append(("min_p", "a number in [0, 1], or None"))
        for name, expected in numbers:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number: expected {expected}, got {value!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int):
            raise ValueError(f"top_k must be an integer: expected a whole number >= 0 (0: off), got {self.top_k!r}")
        for name in ("temperature", "repetition_penalty"):
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):  # nan passes every comparison below
                raise ValueError(f"{name} must be a finite number, got {value}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0: off), got {self.top_k}")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0 (1.0: off), got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalised(self) -> bool:
        return self.repetition_penalty != 1.0

    @classmethod
    def from_generation_config(cls, path: str | Path) -> Sampling:
        """The sampling a checkpoint recommends in its generation_config.json (a folder, the file, or a hub id).

        Read as transformers reads the file, with one difference: a field the file leaves out is off
        (top_k 0, top_p 1, no min_p, no penalty), where transformers would add its library defaults
        (top_k 50 when sampling); vLLM leaves them out too, so every backend gets the same values.
        `do_sample` false or absent means greedy, whatever temperature the file names. Settings that
        change the chosen token but have no `Sampling` field (no_repeat_ngram_size, suppress_tokens,
        beams, ...) are refused rather than dropped.
        """
        file, config = _read_generation_config(path)
        for name, off in _INEXPRESSIBLE.items():
            value = config.get(name)
            if value not in (None, off, [], {}):
                raise ValueError(f"{file}: {name}={value!r} changes the chosen tokens and has no Sampling setting")
        values: dict[str, Any] = {"repetition_penalty": config.get("repetition_penalty") or 1.0}
        temperature = config.get("temperature")
        temperature = 1.0 if temperature is None else temperature
        if config.get("do_sample") and temperature > 0:
            values.update(temperature=temperature, top_p=config.get("top_p") or 1.0, top_k=config.get("top_k") or 0)
            if config.get("min_p") is not None:
                values["min_p"] = config["min_p"]
        try:
            return cls(**values)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{file}: {err}") from None

    def penalise(
        self, input_ids: torch.Tensor | None, scores: torch.Tensor, padding: Sequence[int] | None = None
    ) -> torch.Tensor:
        """`scores` with the repetition penalty applied as transformers' RepetitionPenaltyLogitsProcessor
        applies it, on each row's own tokens: `padding[r]` leading positions of row r are padding, which
        transformers' own processor would penalise too (so a batched row would differ from the same
        prompt alone). Returns `scores` itself when there is no penalty."""
        if not self.penalised:
            return scores
        if input_ids is None:
            raise ValueError("a repetition penalty needs the sequence so far (input_ids)")
        if padding is not None and any(padding):
            input_ids = input_ids.clone()
            for row, pad in enumerate(padding):
                # The row's last token is one of its own: penalising it twice is penalising it once.
                input_ids[row, :pad] = input_ids[row, -1]
        return RepetitionPenaltyLogitsProcessor(penalty=self.repetition_penalty)(input_ids, scores)

    def warpers(self) -> LogitsProcessorList:
        """The warpers plain `generate(do_sample=True, ...)` builds for these settings, in its order."""
        warpers = LogitsProcessorList()
        if self.greedy:
            return warpers
        if self.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(self.temperature))
        if self.top_k:
            warpers.append(TopKLogitsWarper(top_k=self.top_k))
        if self.top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=self.top_p))
        if self.min_p is not None:
            warpers.append(MinPLogitsWarper(min_p=self.min_p))
        return warpers

    def propose(
        self, scores: torch.Tensor, generator: torch.Generator | None = None, input_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One proposed token per row of `scores` (rows x vocabulary), as plain generation picks it.

        With a repetition penalty, `input_ids` (the rows' sequences so far, unpadded) are required.
        """
        scores = self.penalise(input_ids, scores)
        if self.greedy:
            return first_argmax(scores)
        probs = torch.softmax(self.warpers()(input_ids, scores.float()).double(), dim=-1)
        # Inverse-CDF draw: exact like torch.multinomial, and about 20x faster on a 150K vocabulary.
        # right=True never lands on a zero-probability token (its CDF step is flat).
        cdf = probs.cumsum(dim=-1)
        u = torch.rand(probs.shape[0], 1, dtype=cdf.dtype, device=cdf.device, generator=generator) * cdf[:, -1:]
        return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_max(probs.shape[-1] - 1)

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """The distribution `propose` draws from (one-hot on the argmax when greedy); for tests and tools."""
        if self.greedy:
            return torch.nn.functional.one_hot(scores.argmax(dim=-1), scores.shape[-1]).to(scores.dtype)
        return torch.softmax(self.warpers()(None, scores.float()), dim=-1)


def _read_generation_config(path: str | Path) -> tuple[str, dict[str, Any]]:
    """(where it came from, the parsed generation_config.json) of a folder, the file itself, or a hub id."""
    path = Path(path)
    if path.is_dir():
        path = path / "generation_config.json"
        if not path.is_file():
            raise ValueError(f"{path.parent} has no generation_config.json: the checkpoint recommends no sampling")
    elif not path.is_file():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(str(path), "generation_config.json"))
        except Exception as err:  # the hub's many errors: not found, offline, gated
            raise ValueError(f"no generation_config.json found for {str(path)!r}: {err}") from None
    return str(path), read_json_object(path)
