"""`python -m rl RECIPE.yaml`: train a model with LCPO to obey the thinking budget in its prompt."""

from __future__ import annotations

import argparse
import json
import sys

from decode import FormatError, ModelLoadError
from decode.prepare.loading import check_source
from evals import BenchmarkError

from .config import RecipeError, load_recipe
from .prompts import PromptError
from .rewards import RewardError
from .train import LOG_HISTORY, train


def last_values(history: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    """The last logged value of each key (the trainer logs every `logging_steps`)."""
    found: dict[str, float] = {}
    for entry in history:
        found.update({k: entry[k] for k in keys if k in entry and entry[k] is not None})
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rl", description=__doc__)
    parser.add_argument("recipe", help="a YAML recipe (recipes/rl/*.yaml)")
    parser.add_argument("--model", help="override the recipe's model")
    parser.add_argument("--output-dir", help="override the recipe's output_dir")
    parser.add_argument("--max-steps", type=int, help="override trainer.max_steps")
    args = parser.parse_args(argv)
    overrides = {"model": args.model, "output_dir": args.output_dir, "max_steps": args.max_steps}
    try:
        recipe = load_recipe(args.recipe, {k: v for k, v in overrides.items() if v is not None})
        recipe.grpo_config()  # the trainer's own checks come first, as in `train`
        check_source(recipe.model, "model")  # before the data is read and the grading workers start
        if recipe.tokenizer:
            check_source(recipe.tokenizer, "tokenizer")
        final = train(recipe)
    except (RecipeError, PromptError, RewardError, BenchmarkError, ModelLoadError, FormatError) as err:
        message = str(err)
        print(f"error: {message if args.recipe in message else f'{args.recipe}: {message}'}", file=sys.stderr)
        return 2
    history_path = final.parent / LOG_HISTORY
    if history_path.exists():
        keys = ("reward", "lcpo/accuracy", "lcpo/length_error", "lcpo/length", "kl")
        last = last_values(json.loads(history_path.read_text()), keys)
        print("last logged: " + ", ".join(f"{k} {v:.4g}" for k, v in last.items()))
    print(f"model: {final}\nlog history: {history_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
