"""`python -m curate RECIPE [--output-dir DIR] [--cache-dir DIR] [--stop-after STAGE]`."""

from __future__ import annotations

import argparse
import sys

import datasets

from .pipeline import run
from .recipe import load_recipe
from .schema import CurateError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m curate", description="Run a curation recipe (recipes/curate/*.yaml)."
    )
    parser.add_argument("recipe")
    parser.add_argument("--output-dir", help="override the recipe's output_dir")
    parser.add_argument("--cache-dir", help="override the recipe's cache_dir")
    parser.add_argument("--stop-after", help="run up to and including this stage, then stop (no final output)")
    args = parser.parse_args(argv)
    datasets.disable_progress_bars()  # the pipeline logs one line per stage
    overrides = {k: v for k, v in (("output_dir", args.output_dir), ("cache_dir", args.cache_dir)) if v}
    try:
        recipe = load_recipe(args.recipe, overrides)
        names = ["ingest", *(s.name for s in recipe.stages)]
        if args.stop_after and args.stop_after not in names:
            raise CurateError(f"--stop-after {args.stop_after!r}: the recipe's stages are {names}")
        run(recipe, stop_after=args.stop_after)
    except CurateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
