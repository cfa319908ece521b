"""Budget forcing inside one `transformers` `model.generate(...)` call.

A logits processor runs the per-sequence `BudgetState` of every row: it takes the model's proposal
(argmax, or a draw under the sampling settings), applies the rules, and leaves only the chosen
token possible. `generate` then emits exactly that token and keeps its KV cache: a wait string or
the forced answer prefix costs one ordinary decoding step per token, with no re-tokenising and no
re-prefill. A stopping criterion ends rows whose answer budget is spent.

Because the chosen token is the only one left, anything `generate` applies after the processor
(temperature, top-p, ...) cannot change it. What runs before it would shape the model's proposal, so
the generation config given to `generate` switches every such setting off explicitly: transformers
fills each setting left unset from the model's generation_config.json (a Qwen2.5-Instruct checkpoint
would add repetition_penalty 1.05 to a "greedy" run). The `Sampling` is the whole truth; its
repetition penalty is applied by the processor itself, to the proposal.

    forcing = BudgetForcing(tokenizer, "s1", [Budget(max_thinking_tokens=512)] * len(prompts))
    model.generate(**batch, **forcing.generate_kwargs())
    results = forcing.results()
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from ..rules.budget import Budget, default_max_new_tokens
from ..rules.formats import ThinkingFormat, get_format
from ..rules.result import BudgetResult, to_result
from ..rules.sampling import Sampling, first_argmax
from ..rules.state import BudgetState

# Every transformers generation setting that changes the chosen token and has a value that does
# nothing, at that value. transformers 5 fills a setting left None from the model's generation config.
NEUTRAL_GENERATION = {
    "num_beams": 1,
    "num_return_sequences": 1,
    "do_sample": False,
    "temperature": 1.0,
    "top_k": 50,  # unused without sampling; 50 is the value transformers does not warn about there
    "top_p": 1.0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "length_penalty": 1.0,
    "guidance_scale": 1.0,
    "diversity_penalty": 0.0,
    "num_beam_groups": 1,
    "min_new_tokens": 0,  # takes precedence over a min_length from the model (giving it to both warns)
    "remove_invalid_values": False,
    "renormalize_logits": False,
    "use_cache": True,
}
# Settings whose only "off" is None, which transformers reads as "unset" and fills from the model.
# They cannot be switched off from the call, so a model whose generation config sets one is refused.
UNSET_ONLY_OFF = (
    "sequence_bias",
    "bad_words_ids",
    "suppress_tokens",
    "begin_suppress_tokens",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "exponential_decay_length_penalty",
    "watermarking_config",
    "top_h",
    "penalty_alpha",
    "constraints",
    "force_words_ids",
    "stop_strings",
)


def explicit_generation_config(sampling: Sampling | None = None, **fields: Any) -> GenerationConfig:
    """A `GenerationConfig` with every token-choosing setting given, so none comes from the model.

    With a sampling `sampling`, transformers samples with its temperature, top-k, top-p and min-p (the
    warpers `Sampling.warpers` lists); otherwise it is greedy. The repetition penalty is always off here:
    the callers apply `Sampling.penalise` themselves, on each row's own tokens (transformers' processor
    would also penalise a row's padding). `fields` (max_new_tokens, eos_token_id, ...) are added.
    """
    values: dict[str, Any] = dict(NEUTRAL_GENERATION)
    if sampling is not None and not sampling.greedy:
        values.update(
            do_sample=True,
            temperature=sampling.temperature,
            top_k=sampling.top_k,  # 0: off
            top_p=sampling.top_p,
            min_p=0.0 if sampling.min_p is None else sampling.min_p,  # min-p 0 removes nothing
        )
    values.update(fields)
    return GenerationConfig(**values)


def check_generation_defaults(model: Any) -> None:
    """Refuse a model whose generation config sets what no call can switch off (see UNSET_ONLY_OFF)."""
    config = getattr(model, "generation_config", None)
    found = {name: getattr(config, name, None) for name in UNSET_ONLY_OFF}
    found = {name: value for name, value in found.items() if value is not None}
    if found:
        settings = ", ".join(f"{name}={value!r}" for name, value in found.items())
        raise ValueError(
            f"the model's generation config sets {settings}: transformers would apply it on top of the sampling "
            "settings and no generate() argument switches it off; set it to None on model.generation_config"
        )


class RowPenalty(LogitsProcessor):
    """The repetition penalty of `sampling` on each row's own tokens (`padding[r]` leading pads left out)."""

    def __init__(self, sampling: Sampling, padding: Sequence[int] | None = None):
        self.sampling = sampling
        self.padding = list(padding) if padding is not None else None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self.sampling.penalise(input_ids, scores, self.padding)


class BudgetForcingLogitsProcessor(LogitsProcessor):
    """Chooses every token of every unfinished row; one instance serves one `generate` call.

    `padding[r]` is the number of left-padding tokens of row r, kept out of the repetition penalty.
    """

    def __init__(
        self,
        states: Sequence[BudgetState],
        sampling: Sampling,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        padding: Sequence[int] | None = None,
    ):
        self.states = list(states)
        self.penalty = RowPenalty(sampling, padding)
        # The penalty is applied once, before the proposal; the draw itself is penalty-free.
        self.sampling = dataclasses.replace(sampling, repetition_penalty=1.0)
        self.generator = generator
        if isinstance(generator, list | tuple) and len(generator) != len(self.states):
            raise ValueError(f"got {len(generator)} generators for {len(self.states)} rows: give one per row")
        self._length: int | None = None
        self._chosen: list[tuple[int, int]] = []  # (row, token) forced at the previous step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._check_alignment(input_ids, scores)
        live = [row for row, state in enumerate(self.states) if not state.done]
        if not live:
            return scores
        asking = [row for row in live if self.states[row].needs_proposal()]
        # Penalised scores are both the proposal's and, under greedy decoding, what generate picks from.
        scores = self.penalty(input_ids, scores)
        if self.sampling.greedy:
            # One argmax over the batch serves as every row's proposal, and as what generate will pick.
            best = first_argmax(scores).tolist()
            proposals = {row: best[row] for row in asking}
        else:
            proposals = self._sample(asking, input_ids, scores)
        again = [row for row in asking if self.states[row].suppresses_end(proposals[row])]
        if again:  # an empty wait string: the end is refused and the model proposes again without it
            for row in again:
                self.states[row].suppress_end()
            ends = torch.tensor(sorted(self.states[again[0]].tokens.stops_thinking), device=scores.device)
            rows = torch.tensor(again, device=scores.device)
            scores[rows.unsqueeze(1), ends.unsqueeze(0)] = float("-inf")
            if self.sampling.greedy:
                best = first_argmax(scores).tolist()
                proposals.update({row: best[row] for row in again})
            else:
                proposals.update(self._sample(again, input_ids, scores))
        chosen = [self.states[row].advance(proposals.get(row)) for row in live]
        self._chosen = list(zip(live, chosen, strict=True))
        # Leave only the chosen token possible. Under greedy decoding a row whose choice is already
        # its argmax needs nothing: generate's own argmax picks it from the untouched scores.
        force = [(r, t) for r, t in self._chosen if not self.sampling.greedy or t != best[r]]
        if force:
            rows = torch.tensor([r for r, _ in force], device=scores.device)
            tokens = torch.tensor([t for _, t in force], device=scores.device)
            scores[rows] = float("-inf")
            scores[rows, tokens] = 0.0
        return scores

    def _sample(self, asking: list[int], input_ids: torch.LongTensor, scores: torch.FloatTensor) -> dict[int, int]:
        if not asking:
            return {}
        if isinstance(self.generator, list | tuple):
            # One generator per row: a row's draws do not depend on which rows share its batch.
            picked = [
                self.sampling.propose(scores[row : row + 1], self.generator[row], input_ids[row : row + 1]).item()
                for row in asking
            ]
            return dict(zip(asking, picked, strict=True))
        if len(asking) == scores.shape[0]:
            picked = self.sampling.propose(scores, self.generator, input_ids)
        else:
            index = torch.tensor(asking, device=scores.device)
            picked = self.sampling.propose(scores[index], self.generator, input_ids[index])
        return dict(zip(asking, picked.tolist(), strict=True))

    def _check_alignment(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> None:
        if scores.shape[0] != len(self.states):
            raise ValueError(
                f"budget forcing was set up for {len(self.states)} sequences but generate runs {scores.shape[0]} "
                "rows: beam search and num_return_sequences>1 need one Budget per expanded row"
            )
        length = input_ids.shape[1]
        if self._length is not None and length != self._length + 1:
            raise RuntimeError("a BudgetForcing object serves a single generate() call; create a new one per call")
        self._length = length
        if self._chosen:
            last = input_ids[:, -1].tolist()
            for row, token in self._chosen:
                if last[row] != token:
                    raise RuntimeError(
                        f"row {row}: generate emitted token {last[row]} where budget forcing chose {token}; "
                        "another processor or sampler overrides the forced choice"
                    )


class BudgetStoppingCriteria(StoppingCriteria):
    """Reports the rows whose budget state is finished (answer budget spent, or end-of-sequence)."""

    def __init__(self, states: Sequence[BudgetState]):
        self.states = list(states)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.tensor([state.done for state in self.states], dtype=torch.bool, device=input_ids.device)


class BudgetForcing:
    """Budget forcing for one batched `generate` call, one `Budget` per row.

    Args:
        tokenizer: the model's tokenizer; token ids of the format are read from it.
        format: a preset name ("s1", "think"), a path to a format JSON, or a `ThinkingFormat`.
        budgets: one per row of the batch (rows are the prompts, already ending with the opener).
        sampling: how the model's proposals are drawn (greedy by default).
        eos_token_ids: tokens that end a sequence; default: the tokenizer's end-of-sequence token.
        max_new_tokens: a hard cap on each completion; default: the longest each budget allows.
        generator: random generator for sampling (for reproducible draws), or one per row, so that
            each row's draws are the same whatever rows share its batch.
        padding: per row, how many left-padding tokens precede its prompt (kept out of the repetition
            penalty); default: none.
    """

    def __init__(
        self,
        tokenizer: Any,
        format: str | ThinkingFormat,
        budgets: Sequence[Budget],
        *,
        sampling: Sampling | None = None,
        eos_token_ids: Sequence[int] | None = None,
        max_new_tokens: int | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        padding: Sequence[int] | None = None,
    ):
        if isinstance(budgets, Budget):
            raise TypeError("budgets must be a sequence with one Budget per row")
        self.tokenizer = tokenizer
        self.tokens = get_format(format).tokens(tokenizer, list(eos_token_ids) if eos_token_ids else None)
        self.sampling = sampling or Sampling()
        caps = [max_new_tokens or default_max_new_tokens(self.tokens, b) for b in budgets]
        self.states = [BudgetState(self.tokens, b, cap) for b, cap in zip(budgets, caps, strict=True)]
        self.max_new_tokens = max(caps)
        self.processor = BudgetForcingLogitsProcessor(self.states, self.sampling, generator, padding)
        self.stopping = BudgetStoppingCriteria(self.states)

    def generation_config(self) -> GenerationConfig:
        """Greedy selection over the processor's one-hot choice; sampling happens in the processor.

        Every other setting is given explicitly (off), so nothing comes from the model's generation config.
        """
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = min(self.tokens.eos)
        return explicit_generation_config(
            max_new_tokens=self.max_new_tokens, eos_token_id=sorted(self.tokens.eos), pad_token_id=pad
        )

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `model.generate(input_ids=..., attention_mask=..., **these)`."""
        return {
            "generation_config": self.generation_config(),
            "logits_processor": LogitsProcessorList([self.processor]),
            "stopping_criteria": StoppingCriteriaList([self.stopping]),
        }

    def results(self) -> list[BudgetResult]:
        """Per row: completion ids, thinking and answer text, counts, and how it ended."""
        return [to_result(state.summary(), self.tokens, self.tokenizer) for state in self.states]
