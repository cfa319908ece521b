"""The transformers engine: budget forcing inside one `model.generate(...)` call."""

from .processor import BudgetForcing, BudgetForcingLogitsProcessor, BudgetStoppingCriteria

__all__ = ["BudgetForcing", "BudgetForcingLogitsProcessor", "BudgetStoppingCriteria"]
