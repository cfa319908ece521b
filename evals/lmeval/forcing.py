"""The one method both model types change: `generate_until`, with budget-forced requests run by the decoder.

lm-eval batches a whole run's generation requests into one `generate_until` call. Requests without
budget keys go to the parent class unchanged (lm-eval's own code, stop strings, caching). Requests
with them are grouped by their generation kwargs, as lm-eval groups them, and each group is one
`decode.generate` call on the model or engine lm-eval has loaded, with one `Budget` per request.

The task's stop strings (`until`) cut the answer only: a trace holding "\\n\\n" or "Question:" is not
ended by it. What lm-eval receives is the answer (after the end of thinking) by default, or with
`output=completion` the whole completion from the opener on, as s1's fork returns it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from decode import BudgetResult, get_format, prompt_ids
from decode.prepare.prompts import context_length

from .kwargs import AUTO, ForcedRequest, GenKwargsError, is_forced, parse, resolve_auto
from .stats import StatsLog, stats_row

OUTPUTS = ("answer", "completion")
FORCING = ("processor", "reprompt")


class BudgetForcingMixin:
    """Budget forcing for an lm-eval model class; the class provides `_decode` (its engine's call).

    Model arguments (`--model_args`) it reads: `format` (s1, think, or a path to a format JSON),
    `output` (answer or completion), `stats` (a JSONL file for per-sample statistics), `forcing`
    (processor or reprompt, s1's re-prompt loop).
    """

    tokenizer: Any
    max_gen_toks: int
    max_length: int
    cache_hook: Any

    def _setup_budget(self, format: str, output: str, stats: str | None, forcing: str, seed: int | None) -> None:
        self.thinking_format = get_format(format)
        if output not in OUTPUTS:
            raise ValueError(f"model argument output must be one of {OUTPUTS}, got {output!r}")
        if forcing not in FORCING:
            raise ValueError(f"model argument forcing must be one of {FORCING}, got {forcing!r}")
        self.output = output
        self.forcing = forcing
        self.seed = seed
        world, rank = getattr(self, "world_size", 1), getattr(self, "rank", 0)
        if stats and world > 1:  # each process answers its own share of the requests: one file each
            stats = str(Path(stats).with_name(f"{Path(stats).stem}.rank{rank}{Path(stats).suffix}"))
        self.stats = StatsLog(stats)

    def _decode(self, prompts: list[str], request: ForcedRequest, budgets: list, max_new_tokens: int) -> list:
        raise NotImplementedError

    def _model_config(self) -> Any:
        raise NotImplementedError

    def _budget_generate_until(
        self, requests: Sequence[Any], disable_tqdm: bool, plain: Callable[[list[Any], bool], list[str]]
    ) -> list[str]:
        forced: dict[int, ForcedRequest] = {}
        for i, request in enumerate(requests):  # every request is checked before anything runs
            context, gen_kwargs = request.args
            if is_forced(gen_kwargs):
                try:
                    forced[i] = parse(gen_kwargs, self.thinking_format)
                except GenKwargsError as err:
                    raise GenKwargsError(f"task {request.task_name!r}, doc {request.doc_id}: {err}") from None
        out: list[str | None] = [None] * len(requests)
        plain_index = [i for i in range(len(requests)) if i not in forced]
        if plain_index:
            texts = plain([requests[i] for i in plain_index], disable_tqdm)
            for i, text in zip(plain_index, texts, strict=True):
                out[i] = text
        groups: dict[str, list[int]] = {}
        for i in forced:
            key = json.dumps(requests[i].args[1], sort_keys=True, default=str)
            groups.setdefault(key, []).append(i)
        rows = []
        for index in groups.values():
            texts, group_rows = self._forced_group([requests[i] for i in index], forced[index[0]])
            for i, text in zip(index, texts, strict=True):
                out[i] = text
            rows.extend(group_rows)
        if rows:
            self.stats.add(rows)
        return [text if text is not None else "" for text in out]

    def _forced_group(self, requests: list[Any], request: ForcedRequest) -> tuple[list[str], list[dict]]:
        """One group of requests with equal generation kwargs, through the decoder."""
        from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

        gen_kwargs = requests[0].args[1]
        kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
        max_gen_toks = int(kwargs["max_gen_toks"])
        until = handle_stop_sequences(kwargs.get("until"), eos=None)
        contexts = [r.args[0] for r in requests]
        tokenizer, fmt = self.tokenizer, request.format
        prompts = [prompt_ids(tokenizer, c, fmt) for c in contexts]
        # max_gen_toks counts every generated token; where it would run past the model's context it is
        # cut to what the longest prompt of the group leaves (vLLM cuts each request there, as it did
        # under s1's fork, whose commands ask for 32768 tokens on a 32768-token model).
        context = context_length(self._model_config(), tokenizer, self.max_length)
        longest = max(len(p) for p in prompts)
        cap = max_gen_toks if context is None else min(max_gen_toks, context - longest)
        if cap < 1:
            doc = requests[[len(p) for p in prompts].index(longest)].doc_id
            raise GenKwargsError(
                f"task {requests[0].task_name!r}, doc {doc}: its prompt ({longest} tokens with the opener) "
                f"leaves no room to generate in the model's context of {context} tokens"
            )
        auto = None
        if request.max_thinking == AUTO:
            bare = max(len(prompt_ids(tokenizer, c, None)) for c in contexts)
            encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
            # on a model whose context is shorter than max_gen_toks, the context is the window `auto` fills,
            # so the maximum it gives is always reached before the window ends
            window = max_gen_toks if context is None else min(max_gen_toks, context)
            auto = resolve_auto(window, bare, len(encode(fmt.open)), len(encode(fmt.force)))
        budgets = [request.budget(auto)] * len(requests)
        results: list[BudgetResult] = self._decode(contexts, request, budgets, cap)
        texts, rows = [], []
        for req, result, budget in zip(requests, results, budgets, strict=True):
            text = self._text(result, fmt, until, postprocess_generated_text)
            texts.append(text)
            rows.append(stats_row(req.task_name, req.doc_id, req.idx, budget, result))
            self.cache_hook.add_partial("generate_until", req.args, text)
        return texts, rows

    def _text(self, result: BudgetResult, fmt: Any, until: list[str], cut: Callable[..., str]) -> str:
        """What lm-eval grades: the answer cut at the first stop string, after the thinking and the
        strings that closed it when `output=completion`."""
        if self.output == "answer":
            return cut(result.answer, until, None)
        ids = result.completion_ids
        end = len(ids) - (1 if result.finish_reason == "eos" else 0)  # an end-of-sequence ends the answer
        start = end - result.answer_tokens
        raw_answer = self.tokenizer.decode(ids[start:end]) if result.answer_tokens else ""
        return fmt.open + self.tokenizer.decode(ids[:start]) + cut(raw_answer, until, None)
