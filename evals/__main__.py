"""`python -m evals RECIPE.yaml`: run an evaluation recipe and print where its report is."""

from __future__ import annotations

import argparse
import json
import sys

from decode import BudgetError, FormatError, ModelLoadError
from decode.prepare.loading import check_source
from decode.prepare.preflight import device_problem

from .benchmarks import BenchmarkError
from .recipe import EvalRecipe, RecipeError, load_recipe
from .report import SUMMARY, TABLE, headline
from .runner import RunError, run


def check_sources(recipe: EvalRecipe) -> None:
    """The model, tokenizer and device must be found before anything starts (a server's URL is not checked)."""
    if recipe.backend != "openai":
        check_source(recipe.model, "model")
    if recipe.tokenizer:
        check_source(recipe.tokenizer, "tokenizer")
    problem = device_problem(recipe.device, here=recipe.backend == "hf")
    if problem:
        raise RecipeError(f"{recipe.source}: {problem}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals", description=__doc__)
    parser.add_argument("recipe", help="a YAML recipe (recipes/eval/*.yaml)")
    parser.add_argument("--model", help="override the recipe's model")
    parser.add_argument("--output-dir", help="override the recipe's output_dir")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"model": args.model, "output_dir": args.output_dir}.items() if v}
    try:
        recipe = load_recipe(args.recipe, overrides)
        check_sources(recipe)
        folder = run(recipe, progress=not args.no_progress)
    except (RecipeError, BenchmarkError, RunError, ModelLoadError, FormatError, BudgetError) as err:
        message = str(err)
        if args.recipe not in message:  # every message names the recipe it came from
            message = f"{args.recipe}: {message}"
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(headline(json.loads((folder / SUMMARY).read_text())))
    print(f"report: {folder / TABLE}\nsummary: {folder / SUMMARY}, samples and plots in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
