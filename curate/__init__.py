"""Curation: from a pool of questions to a small, hard, diverse training set like s1K (s1 §2).

from curate import load_recipe, run
folder = run(load_recipe("recipes/curate/default.yaml"))   # curated/, report.md, report.json, plots

Stages (each `Dataset -> Dataset`, cached on disk by input and settings): ingest, decontaminate,
quality, cap, difficulty, traces, domains, select; the recipe sets their order and settings.
"""

from .pipeline import run
from .recipe import CurateRecipe, StageSpec, load_recipe, recipe_from_dict
from .schema import POOL_FEATURES, S1K_COLUMNS, CurateError

__all__ = [
    "POOL_FEATURES",
    "S1K_COLUMNS",
    "CurateError",
    "CurateRecipe",
    "StageSpec",
    "load_recipe",
    "recipe_from_dict",
    "run",
]
