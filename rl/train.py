"""Run a recipe: budget-conditioned prompts, the LCPO reward, and trl's GRPOTrainer.

A thin entry over trl: the trainer generates, computes group-relative advantages, the KL term
(`beta`) and the clipped policy loss; vLLM generation, multi-GPU and multi-node come from trl and
accelerate (`accelerate launch --config_file recipes/accelerate/... -m rl RECIPE`). What LCPO adds
is the data (rl.prompts) and the reward (rl.rewards), graded by the evaluation harness's workers,
which start once for the whole run and are closed at its end.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from transformers import GenerationConfig
from transformers.trainer_utils import get_last_checkpoint

from decode import load_tokenizer
from evals import Grader
from evals.inputs import check_argument

from .config import LCPORecipe
from .prompts import build_dataset, load_questions
from .rewards import LCPOReward

FINAL = "final"
LOG_HISTORY = "log_history.json"
logger = logging.getLogger(__name__)


def generation_eos_ids(model: str) -> list[int]:
    """End-of-sequence ids of the model's generation config (trl stops completions at any of them)."""
    try:
        config = GenerationConfig.from_pretrained(model)
    except (OSError, ValueError):
        return []
    eos = config.eos_token_id
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)


def train(recipe: LCPORecipe) -> Path:
    """Train (or resume) the recipe; returns the folder of the final model (`output_dir/final`).

    The final model and its tokenizer are written to `final.partial/` and renamed to `final/` when
    complete, so a folder named `final` is always whole. The trainer's log history (rewards,
    `lcpo/accuracy`, `lcpo/length_error`, KL, ...) is written to `log_history.json` beside it.
    """
    check_argument("rl.train", "recipe", recipe, LCPORecipe, "an LCPORecipe (rl.load_recipe('recipe.yaml'))")
    from trl import GRPOTrainer

    output = Path(recipe.output_dir)
    args = recipe.grpo_config()  # checks the trainer settings before anything heavy starts
    tokenizer = load_tokenizer(recipe.tokenizer or recipe.model)
    dataset = build_dataset(load_questions(recipe.data), tokenizer, recipe.prompts)
    grading = {"workers": 2, "timeout_s": 5.0, "memory_mb": 4096, **recipe.grading}
    with Grader(**grading).start() as grader:  # its workers start while the model loads
        reward = LCPOReward(tokenizer, grader, recipe.reward, recipe.prompts.format, generation_eos_ids(recipe.model))
        trainer = GRPOTrainer(
            model=recipe.model, reward_funcs=[reward], args=args, train_dataset=dataset, processing_class=tokenizer
        )
        last = get_last_checkpoint(str(output)) if recipe.resume and output.is_dir() else None
        if last:
            logger.info("resuming from %s", last)
        trainer.train(resume_from_checkpoint=last)
    if trainer.accelerator.is_main_process:
        write_json(output / LOG_HISTORY, trainer.state.log_history)
    final = output / FINAL
    save_final(trainer, final)
    return final


def save_final(trainer: Any, folder: Path) -> None:
    """Save the trained model and tokenizer under a temporary name, then rename (all processes
    take part in gathering a sharded model; only the main one writes)."""
    partial = folder.with_name(folder.name + ".partial")
    if trainer.accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    trainer.save_model(str(partial))
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.is_main_process:
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(partial, folder)


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)
