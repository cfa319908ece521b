"""LCPO (L1, arXiv 2503.04697): reinforcement learning that teaches a model to obey a budget in its prompt.

from rl import load_recipe, train
final_model_dir = train(load_recipe("recipes/rl/cpu.yaml"))
"""

from .config import LCPORecipe, RecipeError, load_recipe, recipe_from_dict
from .prompts import (
    EXACT,
    INSTRUCTION,
    MAX,
    MIX,
    PromptError,
    PromptSettings,
    build_dataset,
    draw_budgets,
    draw_modes,
    length_sentence,
    load_questions,
    user_message,
)
from .rewards import (
    CODE,
    COMPLETION,
    PAPER,
    THINKING,
    CompletionReader,
    LCPOReward,
    RewardError,
    RewardSettings,
    Scored,
    exact_reward,
    max_reward,
)
from .train import train

__all__ = [
    "CODE",
    "COMPLETION",
    "EXACT",
    "INSTRUCTION",
    "MAX",
    "MIX",
    "PAPER",
    "THINKING",
    "CompletionReader",
    "LCPORecipe",
    "LCPOReward",
    "PromptError",
    "PromptSettings",
    "RecipeError",
    "RewardError",
    "RewardSettings",
    "Scored",
    "build_dataset",
    "draw_budgets",
    "draw_modes",
    "exact_reward",
    "length_sentence",
    "load_questions",
    "load_recipe",
    "max_reward",
    "recipe_from_dict",
    "train",
    "user_message",
]
