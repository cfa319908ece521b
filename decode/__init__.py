"""Budget forcing: control how long a reasoning model thinks, inside the engine's own decoding loop.

from decode import Budget, Sampling, generate
results = generate(model, tokenizer, ["What is 2+2?"], format="s1",
                   budget=Budget(max_thinking_tokens=512, min_thinking_tokens=128))
"""

from .generate import generate
from .hf.processor import BudgetForcing, BudgetForcingLogitsProcessor, BudgetStoppingCriteria
from .prepare.loading import ModelLoadError, load_model, load_tokenizer
from .prepare.prompts import PromptError, prompt_ids, prompt_text
from .rules.budget import Budget, BudgetError
from .rules.formats import PRESETS, FormatError, FormatTokens, ThinkingFormat, get_format
from .rules.reference import model_next_logits, reference_generate
from .rules.result import BudgetResult
from .rules.sampling import Sampling
from .rules.state import BudgetState, BudgetSummary

__all__ = [
    "PRESETS",
    "Budget",
    "BudgetError",
    "BudgetForcing",
    "BudgetForcingLogitsProcessor",
    "BudgetResult",
    "BudgetState",
    "BudgetStoppingCriteria",
    "BudgetSummary",
    "FormatError",
    "FormatTokens",
    "ModelLoadError",
    "PromptError",
    "Sampling",
    "ThinkingFormat",
    "generate",
    "get_format",
    "load_model",
    "load_tokenizer",
    "model_next_logits",
    "prompt_ids",
    "prompt_text",
    "reference_generate",
]
