"""Recipes and a short GRPO run: the recipes load and check their settings, bad ones are refused with
the file and setting named, and two GRPO steps on a tiny Qwen2 (real Qwen2.5 vocabulary, real MATH
questions) log LCPO's rewards and metrics, score every completion as the reward says, and save a
model that the decoder loads and runs."""

import json
from pathlib import Path

import pandas as pd
import pytest

from decode import Budget, Sampling, generate, load_model, load_tokenizer
from evals import load_recipe as load_eval_recipe
from rl import RecipeError, RewardSettings, load_recipe, recipe_from_dict, train
from rl.__main__ import main as rl_main
from tests.conftest import SHARED, tokenizer_dir

ROOT = Path(__file__).resolve().parents[1]
MATH_TRAIN = SHARED / "data" / "pool" / "math_train_answers.json"


def test_cpu_recipe_trains_on_the_cpu():
    config = load_recipe(ROOT / "recipes/rl/cpu.yaml").grpo_config()
    assert config.use_cpu and not config.bf16 and not config.use_vllm


def test_l1_vs_s1_eval_recipe():
    recipe = load_eval_recipe(ROOT / "recipes/eval/l1_vs_s1.yaml")
    methods = {(m.method, m.mode if m.method == "length_prompt" else None): m.budgets for m in recipe.methods}
    budgets = (512, 1024, 2048, 3600)
    assert methods == {("length_prompt", "exact"): budgets, ("length_prompt", "max"): budgets,
                       ("budget_forcing", None): budgets}  # fmt: skip


def minimal(**changes):
    data = {"model": "m", "output_dir": "o", "data": [{"name": "d", "path": "d.jsonl"}], **changes}
    return recipe_from_dict(data, "r.yaml")


def test_bad_recipes_are_refused_with_the_setting_named(tmp_path):
    with pytest.raises(RecipeError, match=r"r.yaml: unknown setting\(s\) \['steps'\]"):
        minimal(steps=3)
    with pytest.raises(RecipeError, match="r.yaml: 'data' is required"):
        minimal(data=[])
    with pytest.raises(RecipeError, match=r"r.yaml: prompts: unknown setting\(s\) \['budget'\]"):
        minimal(prompts={"budget": 5})
    with pytest.raises(RecipeError, match="r.yaml: prompts: .*low <= high"):
        minimal(prompts={"min_budget": 50, "max_budget": 10})
    with pytest.raises(RecipeError, match="r.yaml: reward: .*max_formula"):
        minimal(reward={"max_formula": "both"})
    with pytest.raises(RecipeError, match=r"r.yaml: trainer: unknown GRPOConfig setting\(s\) \['kl_coef'\]"):
        minimal(trainer={"kl_coef": 0.1})
    with pytest.raises(RecipeError, match=r"r.yaml: data\[0\]: give a local 'path'"):
        minimal(data=[{"name": "d"}])
    with pytest.raises(RecipeError, match="r.yaml: grading"):
        minimal(grading={"threads": 2})
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)


def test_command_line_reports_bad_input_without_training(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    head = f"output_dir: {tmp_path}/out\ndata: [{{name: d, path: {tmp_path}/x.json}}]\n"
    recipe.write_text(head + f"model: {tmp_path}/nothing\n")
    assert rl_main([str(recipe)]) == 2
    assert "trainer: Your setup doesn't support bf16/gpu" in capsys.readouterr().err  # trl's own check, named
    cpu = "trainer: {use_cpu: true, bf16: false}\n"
    recipe.write_text(head + cpu + f"model: {tmp_path}/nothing\n")
    assert rl_main([str(recipe)]) == 2
    assert f"path '{tmp_path}/nothing' does not exist" in capsys.readouterr().err
    recipe.write_text(head + cpu + f"model: {tmp_path}\ntokenizer: {tokenizer_dir('qwen2.5')}\n")
    assert rl_main([str(recipe)]) == 2
    assert f"model folder {tmp_path} has no config.json" in capsys.readouterr().err  # read before anything
    (tmp_path / "config.json").write_text('{"model_type": "qwen2"}')
    (tmp_path / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")  # whole, and empty
    assert rl_main([str(recipe)]) == 2
    assert f"{tmp_path}/x.json does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_short_grpo_run_logs_rewards_and_saves_a_model_the_decoder_runs(s1_model_dir, tmp_path):
    if not MATH_TRAIN.exists():
        pytest.skip(f"real data {MATH_TRAIN} is absent")
    reward = {"alpha": 0.05, "delta": 0.5, "length": "completion"}
    recipe = recipe_from_dict(
        {
            "model": str(s1_model_dir),
            "output_dir": str(tmp_path / "run"),
            "dtype": "float32",
            "data": [{"name": "math_train", "path": str(MATH_TRAIN), "id": None, "limit": 8}],
            "prompts": {"mode": "mix", "min_budget": 4, "max_budget": 16, "format": "s1"},
            "reward": reward,
            "grading": {"workers": 1},
            "trainer": {
                "use_cpu": True,
                "bf16": False,
                "max_steps": 2,
                "per_device_train_batch_size": 4,
                "num_generations": 2,
                "max_completion_length": 12,
                "top_k": 50,
                "learning_rate": 1e-3,
                "beta": 0.0,
                "gradient_checkpointing": False,
                "logging_steps": 1,
                "save_strategy": "no",
                "report_to": "none",
                "disable_tqdm": True,
                "log_completions": True,
            },  # fmt: skip
        }
    )
    final = train(recipe)

    history = json.loads((tmp_path / "run" / "log_history.json").read_text())
    steps = [entry for entry in history if "rewards/lcpo/mean" in entry]
    assert len(steps) == 2
    for entry in steps:
        for key in ("lcpo/accuracy", "lcpo/length_error", "lcpo/length", "lcpo/within_budget", "reward"):
            assert entry[key] is not None, key
        assert entry["reward"] == pytest.approx(entry["rewards/lcpo/mean"])
    # trl's completions table holds, per completion, the reward it trained on and our columns:
    # every reward is what LCPO gives for the logged n, N, mode and correctness.
    table = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "run" / "completions").glob("*.parquet")))
    assert len(table) == 8
    settings = RewardSettings(**reward)
    for row in table.itertuples():
        assert row.lcpo == pytest.approx(settings.reward(row.correct, row.n, row.N, row.mode))
    assert table["n"].nunique() > 1  # lengths vary, so GRPO's advantages are not all zero
    assert any(abs(a) > 0 for a in table["advantage"])

    model = load_model(str(final), dtype="float32", device="cpu")
    tokenizer = load_tokenizer(str(final))
    (result,) = generate(model, tokenizer, ["What is 1+1? Think for 8 tokens."], format="s1",
                         budget=Budget(max_thinking_tokens=8, max_answer_tokens=4), sampling=Sampling())  # fmt: skip
    assert result.thinking_tokens <= 8 and len(result.completion_ids) > 0
