"""Supervised fine-tuning on long reasoning traces in a thinking format (s1's training), over trl's SFTTrainer.

    from sft import load_recipe
    from sft.train import train
    model_folder = train(load_recipe("recipes/sft/cpu.yaml"))

`sft.train` imports trl and torch; this package's top level (recipes, data) does not.
"""

from .config import DataConfig, RecipeError, SFTRecipe, load_recipe, recipe_from_dict
from .data import DataError, LengthReport, assistant_text, build_dataset

__all__ = [
    "DataConfig",
    "DataError",
    "LengthReport",
    "RecipeError",
    "SFTRecipe",
    "assistant_text",
    "build_dataset",
    "load_recipe",
    "recipe_from_dict",
]
