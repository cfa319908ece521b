"""Training for real on the CPU: a run killed after a checkpoint resumes to the same weights and loss as
an uninterrupted one, and the finished folder loads in the decoder and generates in the s1 format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, Qwen2ForCausalLM

from decode import Budget, generate, load_model, load_tokenizer
from sft import recipe_from_dict
from tests.conftest import tokenizer_dir
from tests.test_sft_data import short_s1k_rows
from tests.tiny_model import tiny_config

ROOT = Path(__file__).resolve().parents[1]

# Runs `python -m sft`'s training with one extra callback that SIGKILLs the process right after the
# checkpoint of step 2 is written: no clean shutdown, as when a node dies.
KILL_AFTER_CHECKPOINT = """
import os, signal, sys
from transformers import TrainerCallback
from sft import load_recipe
from sft.train import train

class Kill(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 2:
            os.kill(os.getpid(), signal.SIGKILL)

train(load_recipe(sys.argv[1]), callbacks=[Kill()])
"""


def tiny_sft_model(folder: Path) -> Path:
    """A tiny random Qwen2 (hidden 32) with the real Qwen2.5 tokenizer beside it."""
    torch.manual_seed(0)
    Qwen2ForCausalLM(tiny_config(hidden_size=32, intermediate_size=64)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir("qwen2.5")).save_pretrained(folder)
    return folder


def write_recipe(path: Path, model: Path, rows: Path, output_dir: Path, **changes) -> Path:
    values = {
        "model": str(model),
        "output_dir": str(output_dir),
        "data": {"source": str(rows), "question": "q", "trace": "trace", "answer": "ans", "block_size": 1024},
        "training": {
            "max_steps": 4,
            "per_device_train_batch_size": 2,
            "learning_rate": 1e-3,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 1,
            "adam_beta2": 0.95,
            "weight_decay": 1e-4,
            "logging_steps": 1,
            "save_steps": 2,
        },
    }
    values.update(changes)
    recipe_from_dict(values, str(path))  # the recipe is valid before anything runs
    path.write_text(json.dumps(values))  # JSON is YAML
    return path


def final_loss(model_dir: Path) -> float:
    return json.loads((model_dir / "train_report.json").read_text())["last_logged_loss"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights_and_loss_and_decodes(tmp_path):
    from sft import load_recipe
    from sft.train import train

    model = tiny_sft_model(tmp_path / "base")
    rows = short_s1k_rows(tmp_path / "rows.jsonl", trace_chars=150, answer_chars=60, question_chars=150)
    whole = train(load_recipe(write_recipe(tmp_path / "whole.yaml", model, rows, tmp_path / "whole")))

    interrupted = write_recipe(tmp_path / "cut.yaml", model, rows, tmp_path / "cut")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_CHECKPOINT, str(interrupted)], cwd=ROOT, env=env, capture_output=True
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert (tmp_path / "cut/checkpoint-2/trainer_state.json").is_file()
    assert not (tmp_path / "cut/checkpoint-4").exists() and not (tmp_path / "cut/model").exists()

    resumed = train(load_recipe(interrupted))  # resume: auto finds checkpoint-2
    report = json.loads((resumed / "train_report.json").read_text())
    assert report["resumed_from"].endswith("checkpoint-2") and report["global_step"] == 4
    a, b = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)
    assert final_loss(resumed) == pytest.approx(final_loss(whole), abs=1e-6)
    before = load_file(model / "model.safetensors")
    assert not torch.equal(before["lm_head.weight"], a["lm_head.weight"])  # it did train

    # The finished folder is a model the decoder loads as it is, tokenizer and chat template included.
    lm, tokenizer = load_model(str(resumed), device="cpu"), load_tokenizer(str(resumed))
    assert tokenizer.chat_template and (resumed / "thinking_format.json").is_file()
    results = generate(
        lm,
        tokenizer,
        [[{"role": "user", "content": "What is 2 + 2?"}]],
        format=str(resumed / "thinking_format.json"),
        budget=Budget(max_thinking_tokens=6, max_answer_tokens=4),
    )
    assert results[0].thinking_tokens == 6 and results[0].forced_end
    assert generate(
        str(resumed), None, ["2+2?"], format="s1", budget=Budget(max_thinking_tokens=3, max_answer_tokens=2)
    )


def test_resume_never_refuses_a_folder_with_checkpoints(tmp_path):
    from sft import RecipeError, load_recipe
    from sft.train import resume_point

    (tmp_path / "out/checkpoint-3").mkdir(parents=True)
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tmp_path, tmp_path / "rows.jsonl", tmp_path / "out"))
    assert resume_point(recipe).endswith("checkpoint-3")
    recipe.resume = "never"
    with pytest.raises(RecipeError, match="already holds checkpoint-3"):
        resume_point(recipe)
