"""Budget forcing: control how long a reasoning model thinks, inside the engine's own decoding loop.

from decode import Budget, Sampling, generate
results = generate(model, tokenizer, ["What is 2+2?"], format="s1",
                   budget=Budget(max_thinking_tokens=512, min_thinking_tokens=128))
"""

from .generate import ModelLoadError, PromptError, generate, load_model, load_tokenizer, prompt_ids, prompt_text
from .hf.processor import BudgetForcing, BudgetForcingLogitsProcessor, BudgetStoppingCriteria
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
