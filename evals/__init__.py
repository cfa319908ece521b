"""Evaluation: benchmarks, answer extraction and grading, control methods, metrics and reports.

from evals import load_recipe, run
folder = run(load_recipe("recipes/eval/default.yaml"))   # samples.jsonl, summary.json, results.md, plots
"""

from .benchmarks import PRESETS, BenchmarkError, BenchmarkSpec, Problem, load_problems
from .extract import extract_choice, extract_math
from .grading import Answer, Grader, Verdict
from .methods import METHODS, MethodError, MethodSpec
from .metrics import control, length_deviation, performance, scaling
from .recipe import EvalRecipe, RecipeError, load_recipe
from .runner import RunError, run

__all__ = [
    "METHODS",
    "PRESETS",
    "Answer",
    "BenchmarkError",
    "BenchmarkSpec",
    "EvalRecipe",
    "Grader",
    "MethodError",
    "MethodSpec",
    "Problem",
    "RecipeError",
    "RunError",
    "Verdict",
    "control",
    "extract_choice",
    "extract_math",
    "length_deviation",
    "load_problems",
    "load_recipe",
    "performance",
    "run",
    "scaling",
]
