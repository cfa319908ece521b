"""Budget forcing in vLLM (V1 engine): a logits processor, and the re-prompt loop as a fallback.

The processor runs the same `BudgetState` as the transformers adapter, one per request, inside
vLLM's own decoding loop. It sees each step's logits before vLLM's sampler, takes the model's
proposal there (the argmax, or a draw under the request's temperature, top-k, top-p and min-p made
exactly as the transformers adapter makes it), applies the rules, and leaves only the chosen token
possible: vLLM's sampler then picks that token whatever its own settings. So under sampling the
probability the model gives to ending thinking becomes the probability of a wait, and under greedy
decoding the output is the transformers adapter's, token for token.

A request opts in through `SamplingParams.extra_args` (over HTTP: `vllm_xargs`) with the keys of
`decode.request_args` (`bf_format`, `bf_max_thinking_tokens`, ...); requests without them are left
untouched, so one engine serves forced and plain requests in one batch. Load the processor by class
(`LLM(..., logits_processors=[VLLMBudgetForcingProcessor])`), by qualified name
(`vllm serve MODEL --logits-processors decode.vllm:VLLMBudgetForcingProcessor`), or through the
`vllm.logits_processors` entry point of this package.

vLLM refuses custom logits processors with speculative decoding; there, and on engines with no
processor hook, `forcing="reprompt"` runs `decode.reprompt` on the same engine instead.

The repetition, frequency and presence penalties are applied by vLLM after logits processors, so the
proposal could not include them: a budget-forced request with a penalty is refused, as is one that
also sets vLLM's own `thinking_token_budget`.
"""

from __future__ import annotations

import logging
import random
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from .budget import Budget
from .formats import FormatTokens, ThinkingFormat
from .hf import DEFAULT_MAX_NEW_TOKENS
from .replay import replay
from .reprompt import Continuation, Engine, reprompt_generate
from .request_args import from_request_args, to_request_args
from .sampling import Sampling, first_argmax
from .state import BudgetState, BudgetSummary

logger = logging.getLogger(__name__)

QUALIFIED_NAME = "decode.vllm:VLLMBudgetForcingProcessor"
GREEDY_EPS = 1e-5  # vLLM decodes greedily below this temperature
MAX_PARKED = 4096  # states of preempted requests kept until they resume

# vLLM builds an engine's processors once, from the entry points and from the engine's own list, so
# the processor installed through this package's entry point *and* named in `logits_processors`
# would run twice, the second reading the first one's forced token as the model's proposal (and
# counting a forced answer header as answer tokens). Only the first one built for an engine acts.
_acting: dict[int, weakref.ReferenceType] = {}


def eos_token_ids(model_path: str | None, tokenizer: Any) -> list[int]:
    """End-of-sequence ids vLLM stops at: the tokenizer's and the model's generation config's."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    if model_path:
        try:
            from transformers import GenerationConfig

            config_eos = GenerationConfig.from_pretrained(model_path).eos_token_id
        except (OSError, ValueError):
            config_eos = None
        ids.update([config_eos] if isinstance(config_eos, int) else config_eos or [])
    return sorted(ids)


def sampling_of(params: SamplingParams) -> Sampling:
    """The request's sampling settings as the proposal uses them."""
    if params.temperature < GREEDY_EPS:
        return Sampling()
    return Sampling(
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=max(0, params.top_k or 0),
        min_p=params.min_p or None,
    )


@dataclass
class _Row:
    """One budget-forced request in the batch."""

    params: SamplingParams
    output: list[int]  # vLLM's live list of the request's generated tokens
    tokens: FormatTokens | None
    budget: Budget
    state: BudgetState | None  # None: a refused request, ended at once
    sampling: Sampling
    seed: int
    generator: torch.Generator | None
    deferred: bool = False  # emitted vLLM's own argmax; the state reads it at the next step

    def restart(self, device: torch.device) -> None:
        """Forget a choice vLLM discarded (a step that only finished a chunk of the prompt)."""
        assert self.state is not None and self.tokens is not None
        self.state = BudgetState(self.tokens, self.budget, self.state.max_new_tokens)
        self.deferred = False
        if self.generator is not None:
            self.generator = torch.Generator(device=device).manual_seed(self.seed)


class VLLMBudgetForcingProcessor(LogitsProcessor):
    """vLLM V1 logits processor: budget forcing for the requests whose `extra_args` ask for it."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        parsed = from_request_args(sampling_params.extra_args)  # raises on malformed arguments
        if parsed is None:
            return
        penalties = {
            "repetition_penalty": (sampling_params.repetition_penalty, 1.0),
            "frequency_penalty": (sampling_params.frequency_penalty, 0.0),
            "presence_penalty": (sampling_params.presence_penalty, 0.0),
        }
        used = [name for name, (value, off) in penalties.items() if value != off]
        if used:
            raise ValueError(
                f"budget forcing cannot be combined with {', '.join(used)}: vLLM applies penalties after logits "
                "processors, so the model's proposal would not include them"
            )
        if getattr(sampling_params, "thinking_token_budget", None) is not None:
            raise ValueError("budget forcing (bf_* arguments) and thinking_token_budget cannot be combined")

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool):
        if getattr(vllm_config, "speculative_config", None) is not None:
            raise ValueError(
                "budget forcing's logits processor cannot run with speculative decoding; "
                "use the re-prompt loop (forcing='reprompt') instead"
            )
        self.vllm_config = vllm_config  # kept alive with this processor, so its id is not reused meanwhile
        first = _acting.get(id(vllm_config))
        self.duplicate = first is not None and first() is not None
        if self.duplicate:
            logger.info("budget forcing: processor loaded twice for one engine; the second copy stays idle")
        else:
            _acting[id(vllm_config)] = weakref.ref(self)
        self.device = device
        model_config = vllm_config.model_config
        self.model_path = model_config.model
        self.tokenizer_path = model_config.tokenizer or model_config.model
        self._tokenizer: Any = None
        self._eos: list[int] | None = None
        self._resolved: dict[ThinkingFormat, FormatTokens] = {}
        self._stops: dict[FormatTokens, torch.Tensor] = {}
        self.rows: dict[int, _Row] = {}
        self.parked: OrderedDict[int, _Row] = OrderedDict()  # by id(SamplingParams): preempted requests

    def is_argmax_invariant(self) -> bool:
        return self.duplicate  # it decides the token, greedy included (an idle duplicate changes nothing)

    # -- batch bookkeeping -------------------------------------------------------------------

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if not batch_update or self.duplicate:
            return
        for index in batch_update.removed:
            row = self.rows.pop(index, None)
            if row is not None and row.state is not None and not row.state.done:
                self._park(row)
        for index, params, _prompt, output in batch_update.added:
            row = self._row_for(params, output)
            if row is None:
                self.rows.pop(index, None)
            else:
                self.rows[index] = row
        for a, b, direction in batch_update.moved:
            row_a, row_b = self.rows.pop(a, None), self.rows.pop(b, None)
            if row_a is not None:
                self.rows[b] = row_a
            if row_b is not None and direction == MoveDirectionality.SWAP:
                self.rows[a] = row_b

    def _park(self, row: _Row) -> None:
        self.parked[id(row.params)] = row  # the row holds params, so the id stays unique
        while len(self.parked) > MAX_PARKED:
            self.parked.popitem(last=False)

    def _row_for(self, params: SamplingParams, output: list[int]) -> _Row | None:
        parked = self.parked.pop(id(params), None)
        if parked is not None and parked.params is params:
            parked.output = output  # resumed after preemption
            return parked
        try:
            parsed = from_request_args(params.extra_args)
            if parsed is None:
                return None
            fmt, budget = parsed
            tokens = self._tokens(fmt)
        except ValueError as err:  # a request that bypassed validate_params: end it rather than the engine
            logger.error("budget forcing: request refused: %s", err)
            return self._refused(params, output)
        if output:
            logger.error("budget forcing: a request resumed with no state (%d tokens); ending it", len(output))
            return self._refused(params, output)
        seed = params.seed if params.seed is not None else random.getrandbits(63)
        sampling = sampling_of(params)
        generator = None if sampling.greedy else torch.Generator(device=self.device).manual_seed(seed)
        cap = params.max_tokens or DEFAULT_MAX_NEW_TOKENS
        state = BudgetState(tokens, budget, cap)
        return _Row(params, output, tokens, budget, state, sampling, seed, generator)

    def _refused(self, params: SamplingParams, output: list[int]) -> _Row:
        """A row that emits end-of-sequence at once (the client sees an empty answer and the log says why)."""
        return _Row(params, output, None, Budget(), None, Sampling(), 0, None)

    def _eos_ids(self) -> list[int]:
        if self._eos is None:
            self._eos = eos_token_ids(self.model_path, self._load_tokenizer())
        return self._eos

    def _load_tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path)
        return self._tokenizer

    def _tokens(self, fmt: ThinkingFormat) -> FormatTokens:
        if fmt not in self._resolved:
            self._resolved[fmt] = fmt.tokens(self._load_tokenizer(), self._eos_ids())
        return self._resolved[fmt]

    # -- the step ------------------------------------------------------------------------------

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:  # (always so for an idle duplicate)
            return logits
        chosen: dict[int, int] = {}
        greedy: list[int] = []
        for index, row in self.rows.items():
            state = row.state
            if state is None:
                chosen[index] = min(self._eos_ids())
                continue
            if not self._catch_up(index, row):
                state = row.state
            if state.done:  # answer budget spent: end-of-sequence makes vLLM stop the request
                chosen[index] = min(state.tokens.eos)
            elif not state.needs_proposal():
                chosen[index] = state.advance()
            elif row.sampling.greedy:
                greedy.append(index)
            else:
                proposal = row.sampling.propose(logits[index : index + 1], row.generator)
                chosen[index] = state.advance(int(proposal[0]))
        if greedy:
            self._greedy(logits, greedy, chosen)
        if chosen:
            rows = torch.tensor(list(chosen), device=logits.device)
            tokens = torch.tensor(list(chosen.values()), device=logits.device)
            logits[rows] = float("-inf")
            logits[rows, tokens] = 0.0
        return logits

    def _catch_up(self, index: int, row: _Row) -> bool:
        """Bring the state level with vLLM's output; False if it had to start over."""
        state = row.state
        assert state is not None
        done, emitted = len(state.completion), len(row.output)
        if state.done:  # only the end-of-sequence that stops the request comes after this
            return True
        if row.deferred:
            row.deferred = False
            if emitted == done + 1:  # the model's own greedy choice, which the rules pass through
                state.advance(row.output[-1])
                return True
            if emitted == done == 0:  # the step only finished a chunk of the prompt
                return True
        elif emitted == done:
            return True
        elif emitted == 0:  # a forced choice vLLM discarded (a chunk of the prompt): start over
            row.restart(self.device)
            return False
        raise RuntimeError(
            f"budget forcing: request at batch row {index} has {emitted} tokens where its state emitted {done}; "
            "another component changed the forced choice"
        )

    def _greedy(self, logits: torch.Tensor, greedy: list[int], chosen: dict[int, int]) -> None:
        """Greedy rows that need the model's choice. Where the argmax cannot be an end of thinking the
        rules pass it through: vLLM's own argmax emits it and the state reads it back at the next step
        (`_catch_up`), so no argmax is computed here. Only rows whose maximum is reached by a token that
        stops thinking (or in the answer, none) need the exact first-index argmax."""
        if greedy == list(range(logits.shape[0])):
            row_max = logits.amax(dim=-1).tolist()
        else:
            row_max = logits[torch.tensor(greedy, device=logits.device)].amax(dim=-1).tolist()
        exact: list[int] = []
        for position, row_index in enumerate(greedy):
            row = self.rows[row_index]
            state = row.state
            assert state is not None and row.tokens is not None
            if state.thinking_phase:
                stops = self._stop_index(row.tokens)
                stop_max = float(logits[row_index, stops].amax())
                if stop_max >= row_max[position]:
                    exact.append(row_index)
                    continue
            row.deferred = True
        if exact:
            best = first_argmax(logits[torch.tensor(exact, device=logits.device)]).tolist()
            for row_index, proposal in zip(exact, best, strict=True):
                token = self.rows[row_index].state.advance(proposal)  # type: ignore[union-attr]
                if token != proposal:  # vLLM's own argmax picks an unchanged proposal
                    chosen[row_index] = token

    def _stop_index(self, tokens: FormatTokens) -> torch.Tensor:
        if tokens not in self._stops:
            self._stops[tokens] = torch.tensor(sorted(tokens.stops_thinking), device=self.device)
        return self._stops[tokens]


# -- the backend: from token-id prompts to budget summaries, on an LLM ------------------------------

_engines: dict[tuple, LLM] = {}


def load_llm(model: str, tokenizer: str | None = None, *, forcing: str = "processor", **engine_args: Any) -> LLM:
    """A `vllm.LLM` with the budget-forcing processor loaded, cached per settings in this process.

    The processor is loaded whatever `forcing` is (it leaves requests without budget arguments alone),
    so one engine serves both ways, except with speculative decoding, where vLLM refuses custom
    processors: there only `forcing="reprompt"` is possible. On a machine without CUDA (the CPU build),
    `gpu_memory_utilization` defaults to 0.3: vLLM's default asks for most of the memory. Prefix
    caching is on (the re-prompt loop relies on it).
    """
    tokenizer = None if tokenizer in (None, model) else tokenizer  # one engine per model, however named
    speculative = bool(engine_args.get("speculative_config"))
    if speculative and forcing == "processor":
        raise ValueError(
            "vLLM cannot run custom logits processors with speculative decoding; use forcing='reprompt', "
            "which budget-forces through the re-prompt loop on the same engine"
        )
    args = {"enable_prefix_caching": True, **engine_args}
    if not torch.cuda.is_available():
        args.setdefault("gpu_memory_utilization", 0.3)
    if not speculative:
        args["logits_processors"] = [*args.get("logits_processors", []), VLLMBudgetForcingProcessor]
    key = (model, tokenizer, repr(sorted(args.items(), key=lambda kv: kv[0])))
    if key not in _engines:
        _engines[key] = LLM(model=model, tokenizer=tokenizer, **args)
    return _engines[key]


def release_llms() -> None:
    """Shut down the engines `load_llm` built (their processes and memory) and forget them."""
    while _engines:
        _, llm = _engines.popitem()
        llm.llm_engine.engine_core.shutdown()


def has_processor(llm: LLM) -> bool:
    """Whether `llm` runs the budget-forcing processor (given by class, by name, or by entry point)."""
    from importlib.metadata import entry_points

    given = llm.llm_engine.model_config.logits_processors or []
    names = {p if isinstance(p, str) else f"{p.__module__}:{p.__qualname__}" for p in given}
    names |= {e.value for e in entry_points(group="vllm.logits_processors")}
    return QUALIFIED_NAME in names


def vllm_sampling_params(sampling: Sampling, max_tokens: int, seed: int | None, **extra: Any) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        min_p=sampling.min_p or 0.0,
        seed=None if sampling.greedy else seed,
        detokenize=False,
        **extra,
    )


def vllm_engine(llm: LLM, sampling: Sampling) -> Engine:
    """The re-prompt loop's engine on an LLM: one `generate` call per round, all sequences batched."""

    def run(requests: list[Continuation]) -> list[list[int]]:
        params = [
            vllm_sampling_params(sampling, r.max_tokens, r.seed, stop_token_ids=list(r.stop_token_ids))
            for r in requests
        ]
        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in requests]
        outputs = llm.generate(prompts, params, use_tqdm=False)
        return [list(out.outputs[0].token_ids) for out in outputs]

    return run


def vllm_generate(
    llm: LLM,
    prompts: Sequence[Sequence[int]],
    tokens: FormatTokens,
    budgets: Sequence[Budget],
    max_new_tokens: Sequence[int],
    *,
    sampling: Sampling | None = None,
    seed: int | None = None,
    forcing: str = "processor",
) -> list[BudgetSummary]:
    """Budget-forced completions of token-id prompts (ending with the opener) on `llm`.

    `forcing="processor"` needs the LLM built with `VLLMBudgetForcingProcessor` (see `load_llm`);
    `forcing="reprompt"` runs the re-prompt loop and works on any LLM.
    Prompt i is seeded with `seed + i` (sampling only).
    """
    sampling = sampling or Sampling()
    if forcing == "reprompt":
        return reprompt_generate(vllm_engine(llm, sampling), prompts, tokens, budgets, max_new_tokens, seed=seed)
    if forcing != "processor":
        raise ValueError(f"forcing must be 'processor' or 'reprompt', got {forcing!r}")
    if not has_processor(llm):  # its requests would run unforced
        raise ValueError(
            "this LLM does not run the budget-forcing processor: build it with decode.vllm.load_llm or "
            f"LLM(..., logits_processors=['{QUALIFIED_NAME}']), or use forcing='reprompt'"
        )
    params = [
        vllm_sampling_params(
            sampling,
            cap,
            None if seed is None else seed + i,
            extra_args=to_request_args(tokens.format, budget),
            # Greedy: the rank of each emitted token tells whether it was the model's own choice.
            logprobs=0 if sampling.greedy else None,
        )
        for i, (budget, cap) in enumerate(zip(budgets, max_new_tokens, strict=True))
    ]
    outputs = llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False)
    summaries = []
    for i, (out, budget, cap) in enumerate(zip(outputs, budgets, max_new_tokens, strict=True)):
        completion = out.outputs[0]
        ids = list(completion.token_ids)
        own = None
        if sampling.greedy:
            if completion.logprobs is None:
                raise RuntimeError(f"prompt {i}: vLLM returned no log-probabilities")
            own = [lp[t].rank == 1 for lp, t in zip(completion.logprobs, ids, strict=True)]
        summaries.append(replay(tokens, budget, cap, ids, own))
    return summaries
