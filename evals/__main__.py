"""`python -m evals RECIPE.yaml`: run an evaluation recipe and print where its report is."""

from __future__ import annotations

import argparse
import json
import sys

from decode import BudgetError, FormatError, ModelLoadError

from .benchmarks import BenchmarkError
from .recipe import RecipeError, load_recipe
from .report import SUMMARY, TABLE, headline
from .runner import RunError, run


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
        folder = run(recipe, progress=not args.no_progress)
    except (RecipeError, BenchmarkError, RunError, ModelLoadError, FormatError, BudgetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(headline(json.loads((folder / SUMMARY).read_text())))
    print(f"report: {folder / TABLE}\nsummary: {folder / SUMMARY}, samples and plots in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
