"""`python -m sft RECIPE [--model PATH] [--output-dir DIR] [--resume auto|never|CHECKPOINT]`.

Under several processes: `accelerate launch --config_file recipes/accelerate/fsdp.yaml -m sft RECIPE`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from decode import ModelLoadError
from decode.prepare.loading import check_source

from .config import RecipeError, load_recipe
from .data import DataError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sft", description="Fine-tune a model on reasoning traces.")
    parser.add_argument("recipe", help="a YAML recipe (recipes/sft/*.yaml)")
    parser.add_argument("--model", help="override the recipe's model")
    parser.add_argument("--output-dir", dest="output_dir", help="override the recipe's output_dir")
    parser.add_argument("--resume", help="auto (default: the newest checkpoint in output_dir), never, or a folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        recipe = load_recipe(args.recipe, {"model": args.model, "output_dir": args.output_dir, "resume": args.resume})
        try:  # the model and tokenizer must be found before the data is read
            check_source(recipe.model, "model")
            if recipe.tokenizer:
                check_source(recipe.tokenizer, "tokenizer")
        except ModelLoadError as err:
            raise RecipeError(f"{recipe.recipe_path}: {err}") from None
        from .train import train  # imports trl and torch: only once the recipe is known to be good

        final = train(recipe)
    except (RecipeError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"model saved to {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
