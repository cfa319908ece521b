"""The SFT run: a thin entry over trl's SFTTrainer, launched as is or under `accelerate launch`.

Everything that can be wrong with the data or the recipe is found before the model loads
(`build_dataset`, `SFTRecipe.check`); the trainer then does the training, checkpointing, resuming,
distribution (DDP / FSDP / DeepSpeed, from the accelerate config) and logging.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, set_seed
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig, SFTTrainer

from decode import get_format
from evals.inputs import check_argument

from .config import PACKING_SAFE_ATTENTION, RecipeError, SFTRecipe
from .data import build_dataset

log = logging.getLogger(__name__)

MODEL_FOLDER = "model"  # the finished model, inside output_dir, beside the checkpoints
FORMAT_FILE = "thinking_format.json"  # the format the model was trained in; decode.get_format reads it


def sft_config(recipe: SFTRecipe) -> SFTConfig:
    """trl's SFTConfig from the recipe; on a machine without a GPU, a CPU run in float32."""
    where = recipe.recipe_path or "recipe"
    values = dict(recipe.training)
    if values.get("packing_strategy", "bfd") == "wrapped":
        raise RecipeError(f"{where}: training.packing_strategy 'wrapped' cuts examples and joins them; use 'bfd'")
    if not torch.cuda.is_available():
        for mixed in ("bf16", "fp16"):
            if values.get(mixed):
                log.warning("%s: no GPU here, so training.%s is ignored (CPU runs in float32)", where, mixed)
        values.update(use_cpu=True, bf16=False, fp16=False)
    values.setdefault("report_to", "none")
    try:
        return SFTConfig(
            output_dir=recipe.output_dir,
            max_length=recipe.data.block_size,
            packing=recipe.packing,
            packing_strategy=values.pop("packing_strategy", "bfd"),
            completion_only_loss=True,
            seed=recipe.seed,
            **values,
        )
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{where}: invalid 'training' settings for trl's SFTConfig: {err}") from None


def check_packing(model: Any, recipe: SFTRecipe) -> None:
    """Refuse packing unless the loaded model's attention keeps the packed examples apart."""
    used = getattr(model.config, "_attn_implementation", None)
    if recipe.packing and used not in PACKING_SAFE_ATTENTION:
        raise RecipeError(
            f"{recipe.recipe_path or 'recipe'}: packing is on but the model runs attention with {used!r}, "
            f"which may let packed examples attend to each other; use one of {', '.join(PACKING_SAFE_ATTENTION)} "
            "or set packing: false"
        )


def resume_point(recipe: SFTRecipe) -> str | None:
    """The checkpoint to continue from, per `recipe.resume` ("auto", "never" or a folder)."""
    out = Path(recipe.output_dir)
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    if recipe.resume == "auto":
        return last
    if recipe.resume == "never":
        if last is not None:
            raise RecipeError(
                f"{recipe.recipe_path or 'recipe'}: resume is 'never' but {out} already holds {Path(last).name}; "
                "choose another output_dir or resume: auto"
            )
        return None
    return recipe.resume


def train(recipe: SFTRecipe, callbacks: list[TrainerCallback] | None = None) -> Path:
    """Run the recipe; returns the folder of the finished model (`output_dir/model`)."""
    check_argument("sft.train.train", "recipe", recipe, SFTRecipe, "an SFTRecipe (sft.load_recipe('recipe.yaml'))")
    set_seed(recipe.seed)
    fmt = get_format(recipe.data.format)
    tokenizer = AutoTokenizer.from_pretrained(recipe.tokenizer or recipe.model)
    dataset, report = build_dataset(tokenizer, recipe.data)
    args = sft_config(recipe)
    resume_from = resume_point(recipe)

    model = AutoModelForCausalLM.from_pretrained(
        recipe.model, dtype=recipe.dtype, attn_implementation=recipe.attn_implementation
    )
    check_packing(model, recipe)
    # Training never uses the KV cache (trl's compute_loss turns it off too: with a cache, transformers
    # does not build the packed-sequence mask). The saved model gets it back for decoding.
    model.config.use_cache = False
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks)
    if resume_from:
        log.info("resuming from %s", resume_from)
    outcome = trainer.train(resume_from_checkpoint=resume_from)

    # The finished model goes to a temporary folder first, then takes its name in one rename.
    final = Path(recipe.output_dir) / MODEL_FOLDER
    staging = final.with_name(MODEL_FOLDER + ".partial")
    model.config.use_cache = True
    if trainer.is_world_process_zero() and staging.exists():
        shutil.rmtree(staging)  # left by a save that was interrupted
    trainer.accelerator.wait_for_everyone()
    if trainer.is_fsdp_enabled:
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(staging))
    if trainer.is_world_process_zero():
        (staging / FORMAT_FILE).write_text(json.dumps(asdict(fmt), indent=2) + "\n")
        run = {
            "recipe": recipe.recipe_path,
            "world_size": trainer.args.world_size,
            "resumed_from": resume_from,
            "global_step": outcome.global_step,
            "train_loss": outcome.training_loss,
            "last_logged_loss": next((e["loss"] for e in reversed(trainer.state.log_history) if "loss" in e), None),
            "packing": recipe.packing,
            "attn_implementation": model.config._attn_implementation,
            "data": report.as_dict(),
        }
        (staging / "train_report.json").write_text(json.dumps(run, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        log.info("model saved to %s", final)
    trainer.accelerator.wait_for_everyone()
    return final
