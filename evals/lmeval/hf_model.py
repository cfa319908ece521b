"""`hf-budget`: lm-eval's own `HFLM` with budget-forced generation requests run by `decode.generate`."""

from __future__ import annotations

from typing import Any

from lm_eval.models.huggingface import HFLM

from decode import generate

from .forcing import BudgetForcingMixin
from .kwargs import ForcedRequest

DEFAULT_BATCH_SIZE = 8  # forced requests under batch_size=auto (lm-eval sizes batches for loglikelihood)


class HFBudgetLM(BudgetForcingMixin, HFLM):
    """HFLM; `generate_until` budget-forces the requests that ask for it, on the model HFLM loaded.

    Model arguments besides HFLM's: `format`, `output`, `stats`, `forcing` (see `BudgetForcingMixin`)
    and `seed`: forced request i of a group is sampled with seed + i (None: torch's global generator,
    which lm-eval seeds).
    """

    def __init__(
        self,
        pretrained: Any,
        format: str = "s1",
        output: str = "answer",
        stats: str | None = None,
        forcing: str = "processor",
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(pretrained=pretrained, **kwargs)
        self._setup_budget(format, output, stats, forcing, seed)

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        return self._budget_generate_until(requests, disable_tqdm, super().generate_until)

    def _model_config(self) -> Any:
        return self.model.config

    def _decode(self, prompts: list[str], request: ForcedRequest, budgets: list, max_new_tokens: int) -> list:
        batch = self.batch_size if isinstance(self.batch_size, int) else DEFAULT_BATCH_SIZE
        return generate(
            self.model,
            self.tokenizer,
            prompts,
            format=request.format,
            budget=budgets,
            sampling=request.sampling,
            batch_size=batch,
            max_new_tokens=max_new_tokens,
            seed=self.seed,
            forcing=self.forcing,
        )
