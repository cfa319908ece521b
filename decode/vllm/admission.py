"""What both vLLM logits processors (Model Runner V1 and V2) share: reading a request's budget-forcing
arguments, deciding at admission whether the runner can honour them, and the per-request record.

vLLM calls `validate_params` in the front end, where it does not say which model runner the engine
uses; the runner-specific refusals are therefore made twice: here, when the runner is certain from
the environment (no Triton, or `VLLM_USE_V2_MODEL_RUNNER` set; from vLLM 0.34, which removed V1,
always V2), and by the processor itself when it admits the request (it logs why and ends the request
at once), never by raising inside the engine. The same holds for our own failures: a request the
processor fails on is ended the same way (`Admission.fail`).
"""

from __future__ import annotations

import logging
import random
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from vllm import SamplingParams

from ..prepare.model_config import folder_eos_ids
from ..rules.budget import DEFAULT_MAX_NEW_TOKENS, Budget
from ..rules.formats import FormatTokens, ThinkingFormat
from ..rules.request_args import from_request_args
from ..rules.sampling import Sampling
from ..rules.state import BudgetState

logger = logging.getLogger("decode.vllm")

GREEDY_EPS = 1e-5  # vLLM decodes greedily below this temperature
FORCED_LOGIT = 1.0e9  # a forced token's logit: it wins argmax and takes all the probability mass
PENALTIES = {"repetition_penalty": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0}

# vLLM builds an engine's processors once, from the entry points and from the engine's own list, so
# the processor installed through this package's entry point *and* named in `logits_processors`
# would run twice, the second reading the first one's forced token as the model's proposal. Only the
# first one built for an engine acts.
_acting: dict[int, weakref.ReferenceType] = {}


def claim_engine(vllm_config: Any, processor: object) -> bool:
    """Whether `processor` is the first one built for this engine (False: it must stay idle)."""
    first = _acting.get(id(vllm_config))
    if first is not None and first() is not None:
        logger.info("budget forcing: processor loaded twice for one engine; the second copy stays idle")
        return False
    _acting[id(vllm_config)] = weakref.ref(processor)
    return True


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


def penalties_used(params: SamplingParams) -> list[str]:
    return [name for name, off in PENALTIES.items() if getattr(params, name) != off]


def has_v1_runner() -> bool:
    """Whether the installed vLLM still has Model Runner V1, read from what it ships: vLLM 0.34 removed
    V1 together with its logits-processor interface (`vllm.v1.sample.logits_processor`)."""
    try:
        import vllm.v1.sample.logits_processor  # noqa: F401
    except ImportError:
        return False
    return True


def certainly_v1_runner() -> bool:
    """Whether this process's engines run Model Runner V1 whatever their settings (vLLM picks V2 by
    default when Triton is present and the engine's features allow it; from 0.34 there is only V2)."""
    if not has_v1_runner():
        return False
    try:
        import vllm.envs as envs
        from vllm.triton_utils import HAS_TRITON
    except ImportError:  # an older vLLM: V1 only
        return True
    chosen = getattr(envs, "VLLM_USE_V2_MODEL_RUNNER", None)  # the switch went with V1 in 0.34
    return chosen is False or (chosen is None and not HAS_TRITON)


def v1_refusal(params: SamplingParams) -> str | None:
    """Why Model Runner V1 cannot budget-force this request, or None."""
    used = penalties_used(params)
    if used:
        return (
            f"budget forcing cannot be combined with {', '.join(used)} under vLLM's Model Runner V1: it applies "
            "penalties after logits processors, so the model's proposal would not include them "
            "(Model Runner V2 applies them first and supports this)"
        )
    return None


def validate(params: SamplingParams) -> None:
    """Admission check of `validate_params`: malformed arguments, and settings no runner can honour.
    Only a `ValueError` leaves it (vLLM turns that into a refusal of the request, an HTTP 400): an
    unexpected failure of the check refuses the request too, saying so."""
    try:
        _validate(params)
    except ValueError:
        raise
    except Exception as err:
        raise ValueError(f"budget forcing could not check this request ({type(err).__name__}: {err})") from err


def _validate(params: SamplingParams) -> None:
    if from_request_args(params.extra_args) is None:  # raises on malformed arguments
        return
    if getattr(params, "thinking_token_budget", None) is not None:
        raise ValueError("budget forcing (bf_* arguments) and thinking_token_budget cannot be combined")
    if certainly_v1_runner():
        reason = v1_refusal(params)
        if reason:
            raise ValueError(reason)


@dataclass
class ForcedRequest:
    """One budget-forced request as a processor holds it. `state` None: refused (ended at once)."""

    params: SamplingParams
    tokens: FormatTokens | None
    budget: Budget
    state: BudgetState | None
    sampling: Sampling
    generator: torch.Generator | None

    @property
    def refused(self) -> bool:
        return self.state is None


class Admission:
    """Turns a request's `SamplingParams` into a `ForcedRequest` (or None for a plain request), with the
    model's tokenizer loaded once per processor."""

    def __init__(self, vllm_config: Any, device: torch.device, runner: str):
        model_config = vllm_config.model_config
        self.model_path = model_config.model
        self.tokenizer_path = model_config.tokenizer or model_config.model
        self.device = device
        self.runner = runner
        self._tokenizer: Any = None
        self._eos: list[int] | None = None
        self._resolved: dict[ThinkingFormat, FormatTokens] = {}
        self._eos_unknown = False

    def admit(self, params: SamplingParams, refusal: str | None = None) -> ForcedRequest | None:
        """The request's record; a refused one (logged, ended at once) if its arguments or `refusal` say so."""
        try:
            parsed = from_request_args(params.extra_args)
            if parsed is None:
                return None
            fmt, budget = parsed
            tokens = self.tokens(fmt)
        except ValueError as err:  # a request that bypassed validate_params: end it rather than the engine
            return self.refuse(params, str(err))
        if getattr(params, "thinking_token_budget", None) is not None:
            return self.refuse(params, "budget forcing (bf_* arguments) and thinking_token_budget cannot be combined")
        if refusal:
            return self.refuse(params, refusal)
        sampling = sampling_of(params)
        generator = None
        if not sampling.greedy:
            seed = params.seed if params.seed is not None else random.getrandbits(63)
            generator = torch.Generator(device=self.device).manual_seed(seed)
        state = BudgetState(tokens, budget, params.max_tokens or DEFAULT_MAX_NEW_TOKENS)
        return ForcedRequest(params, tokens, budget, state, sampling, generator)

    def refuse(self, params: SamplingParams, reason: str) -> ForcedRequest:
        logger.error("budget forcing (Model Runner %s): request refused, ending it: %s", self.runner, reason)
        return ForcedRequest(params, None, Budget(), None, Sampling(), None)

    def fail(self, params: SamplingParams | None, where: str, err: BaseException) -> ForcedRequest:
        """The record of a request our code failed on: ended at once, with one log line naming the
        request (its place in the batch and its budget arguments) and the error. The traceback goes
        to the debug log."""
        args = {k: v for k, v in ((params.extra_args or {}) if params is not None else {}).items() if k[:3] == "bf_"}
        logger.error(
            "budget forcing (Model Runner %s): internal error on the request at %s %s; ending it: %s: %s",
            self.runner,
            where,
            args or "(no budget arguments)",
            type(err).__name__,
            err,
        )
        logger.debug("budget forcing: the error's traceback", exc_info=err)
        return ForcedRequest(params, None, Budget(), None, Sampling(), None)  # type: ignore[arg-type]

    def end_token(self, request: ForcedRequest) -> int | None:
        """The end-of-sequence a processor forces to end `request` (refused, failed, or its answer budget
        spent); None where even that cannot be known (the model's tokenizer cannot be read)."""
        if request.tokens is not None:
            return min(request.tokens.eos)
        try:
            return min(self.eos_ids())
        except Exception as err:
            if not self._eos_unknown:
                self._eos_unknown = True
                logger.error("budget forcing: the end-of-sequence id is unknown (%s); failed requests run on", err)
            return None

    def eos_ids(self) -> list[int]:
        if self._eos is None:
            self._eos = folder_eos_ids(self.model_path, self.tokenizer())
        return self._eos

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path)
        return self._tokenizer

    def tokens(self, fmt: ThinkingFormat) -> FormatTokens:
        if fmt not in self._resolved:
            self._resolved[fmt] = fmt.tokens(self.tokenizer(), self.eos_ids())
        return self._resolved[fmt]


def replayed(request: ForcedRequest, output: list[int]) -> BudgetState | None:
    """A state rebuilt from tokens vLLM already committed (a request resumed with no state kept), or
    None if those tokens cannot come from the rules. Each unforced token is taken as the model's own
    proposal, so under sampling a wait the processor injected counts as one the model wrote."""
    assert request.state is not None and request.tokens is not None
    state = BudgetState(request.tokens, request.budget, request.state.max_new_tokens)
    for token in output:
        if state.done:
            return None
        if state.advance(None if not state.needs_proposal() else token) != token:
            return None
    return state
