"""The offline vLLM backend: an `LLM` built once per process with the budget-forcing processor loaded, and
token-id prompts run on it by the processor (`decode.vllm.processor`) or by the re-prompt loop."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt

from ..reprompt.loop import Continuation, Engine, reprompt_generate
from ..rules.budget import Budget
from ..rules.formats import FormatTokens
from ..rules.replay import ReplayError, replay
from ..rules.request_args import to_request_args
from ..rules.sampling import Sampling
from ..rules.state import BudgetSummary
from .processor import QUALIFIED_NAME, VLLMBudgetForcingProcessor

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
        try:
            summaries.append(replay(tokens, budget, cap, ids, own))
        except ReplayError as err:
            raise ReplayError(
                f"prompt {i}: {err}; the engine's budget-forcing processor ends a request this way when it "
                "fails on it, and then logs the reason on the 'decode.vllm' logger"
            ) from err
    return summaries
