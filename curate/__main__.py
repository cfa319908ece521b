"""`python -m curate RECIPE [--output-dir DIR] [--cache-dir DIR] [--stop-after STAGE]`."""

from __future__ import annotations

import argparse
import sys

import datasets

from decode import ModelLoadError, load_tokenizer
from decode.prepare.loading import check_source
from decode.prepare.preflight import template_kwargs_problem

from .domains import DomainSettings
from .generation import ModelSpec
from .pipeline import run
from .recipe import CurateRecipe, load_recipe
from .schema import CurateError
from .traces import TracesSettings


def check_models(recipe: CurateRecipe, stop_after: str | None) -> None:
    """Every model the stages to run will load must be found now, not after the stages before it."""
    for stage in recipe.stages:
        settings = stage.settings
        try:
            if isinstance(settings, TracesSettings) and settings.target_tokenizer:
                check_source(settings.target_tokenizer, "target_tokenizer")
            for domains in (settings, getattr(settings, "domains", None)):
                if isinstance(domains, DomainSettings) and domains.method == "embedding" and domains.model:
                    check_source(domains.model, "embedding model")
        except ModelLoadError as err:
            raise CurateError(f"{recipe.source}: stage {stage.name!r}: {err}") from None
        for value in vars(settings).values():
            for spec in value if isinstance(value, list) else [value]:
                if not isinstance(spec, ModelSpec):
                    continue
                try:
                    if spec.backend != "openai":  # a server's model is a URL
                        check_source(spec.model, "model")
                    if spec.tokenizer:
                        check_source(spec.tokenizer, "tokenizer")
                    if spec.chat_template_kwargs:  # a misspelt key would be dropped by the template in silence
                        tokenizer = load_tokenizer(spec.tokenizer or spec.model)
                        problem = template_kwargs_problem(tokenizer, spec.chat_template_kwargs)
                        if problem:
                            raise ModelLoadError(problem)
                except ModelLoadError as err:
                    raise CurateError(f"{recipe.source}: stage {stage.name!r}: model {spec.name!r}: {err}") from None
        if stage.name == stop_after:
            return


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
        check_models(recipe, args.stop_after)
        run(recipe, stop_after=args.stop_after)
    except CurateError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
