"""What a real checkpoint's folder brings does not change a run unless asked for: its generation_config.json
(sampling defaults, a repetition penalty) reaches transformers only through `Sampling.from_generation_config`,
and `dtype="auto"` is the dtype its config.json states.

The models are tiny and random; their folders carry the real tokenizers and generation configs of
Qwen2.5-Instruct, DeepSeek-R1-Distill-Qwen and Qwen3 (tests/checkpoint_folders.py). The vLLM side of the
same checks is in tests/test_checkpoint_backends.py.
"""

import json

import pytest
import torch
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

from decode import Budget, BudgetForcing, Sampling, generate, get_format, load_model, load_tokenizer, prompt_ids
from decode.cli import main
from decode.hf.processor import explicit_generation_config
from decode.prepare.dtype import DtypeError, model_dtype, resolve_dtype
from decode.rules.reference import model_next_logits, reference_generate
from tests.checkpoint_folders import FAMILIES, save_checkpoint
from tests.test_hf_greedy import BUDGETS, CAP, PROMPTS, check

QWEN25 = FAMILIES["qwen2.5-instruct"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A float32 checkpoint folder per family (built on first use)."""
    made = {}

    def folder(name):
        if name not in made:
            made[name] = save_checkpoint(tmp_path_factory.mktemp(name), FAMILIES[name])
        return made[name]

    return folder


def reference_results(model, tokenizer, family, prompts, budgets, sampling=None):
    fmt = get_format(family.format)
    config_eos = model.generation_config.eos_token_id
    eos = sorted({tokenizer.eos_token_id, *([config_eos] if isinstance(config_eos, int) else config_eos)})
    tokens = fmt.tokens(tokenizer, eos)
    return [
        reference_generate(model_next_logits(model), prompt_ids(tokenizer, p, fmt), tokens, b, CAP, sampling)
        for p, b in zip(prompts, budgets, strict=True)
    ]


# -- the generation config does not leak ------------------------------------------------------------


def test_the_checkpoints_generation_config_does_not_reach_generate(folders):
    """transformers fills every setting left unset from model.generation_config (Qwen2.5-Instruct: penalty
    1.05, top_k 20, top_p 0.8, temperature 0.7): the configs given to generate leave none unset."""
    model = load_model(str(folders("qwen2.5-instruct")), device="cpu")
    assert model.generation_config.repetition_penalty == 1.05  # the real file is there
    tokenizer = load_tokenizer(str(folders("qwen2.5-instruct")))
    forcing = BudgetForcing(tokenizer, "s1", [Budget()])
    merged, _ = model._prepare_generation_config(forcing.generation_config())
    assert (merged.repetition_penalty, merged.do_sample, merged.num_beams) == (1.0, False, 1)
    sampled, _ = model._prepare_generation_config(explicit_generation_config(Sampling(temperature=0.5)))
    assert (sampled.temperature, sampled.top_k, sampled.top_p, sampled.min_p) == (0.5, 0, 1.0, 0.0)
    assert sampled.repetition_penalty == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_greedy_hf_runs_are_the_references_on_real_checkpoint_folders(family, folders):
    """Loaded from its folder (generation_config.json included), the adapter and the re-prompt engine give
    the reference loop's tokens: on Qwen2.5-Instruct's folder, no repetition penalty sneaks in."""
    folder = folders(family)
    model, tokenizer = load_model(str(folder), device="cpu"), load_tokenizer(str(folder))
    fmt = get_format(FAMILIES[family].format)
    budgets = BUDGETS[::2]
    expected = reference_results(model, tokenizer, FAMILIES[family], PROMPTS, budgets)
    kwargs = dict(format=fmt, budget=budgets, max_new_tokens=CAP)
    check(generate(str(folder), None, PROMPTS, **kwargs), expected)
    check(generate(model, tokenizer, PROMPTS, forcing="reprompt", **kwargs), expected)
    assert any(r.waits for r in expected) and any(r.forced_end for r in expected)


# -- a repetition penalty, when asked for, is transformers' -----------------------------------------


def test_penalty_on_padded_rows_is_transformers_penalty_on_each_row_alone():
    torch.manual_seed(0)
    rows = [torch.randint(0, 50, (n,)) for n in (7, 3, 5)]
    width = max(len(r) for r in rows)
    padded = torch.stack([torch.cat([torch.full((width - len(r),), 49), r]) for r in rows])
    scores = torch.randn(3, 50)
    sampling = Sampling(repetition_penalty=1.3)
    got = sampling.penalise(padded, scores.clone(), [width - len(r) for r in rows])
    for i, row in enumerate(rows):
        alone = RepetitionPenaltyLogitsProcessor(penalty=1.3)(row[None], scores[i : i + 1].clone())
        assert torch.equal(got[i], alone[0])
    assert not torch.equal(got, scores)
    assert Sampling().penalise(padded, scores) is scores


@pytest.mark.slow
def test_a_repetition_penalty_shapes_the_proposal_as_transformers_would(folders):
    """The adapter penalises inside its proposal; the re-prompt engine lets transformers' own processor
    do it (on each row's own tokens); both are the reference loop with the penalty."""
    folder = folders("qwen2.5-instruct")
    model, tokenizer = load_model(str(folder), device="cpu"), load_tokenizer(str(folder))
    budgets = BUDGETS[1::2]
    sampling = Sampling(repetition_penalty=1.3)
    expected = reference_results(model, tokenizer, QWEN25, PROMPTS, budgets, sampling)
    kwargs = dict(format="s1", budget=budgets, max_new_tokens=CAP, sampling=sampling)
    check(generate(model, tokenizer, PROMPTS, **kwargs), expected)
    check(generate(model, tokenizer, PROMPTS, forcing="reprompt", **kwargs), expected)
    plain = generate(model, tokenizer, PROMPTS, format="s1", budget=budgets, max_new_tokens=CAP)
    assert [r.completion_ids for r in plain] != [r.completion_ids for r in expected]  # the penalty acted


def test_a_backend_that_would_drop_the_penalty_refuses_it(folders):
    with pytest.raises(ValueError, match="repetition penalty"):
        generate("http://127.0.0.1:9/v1", str(folders("qwen2.5-instruct")), ["Hi"], backend="openai",
                 sampling=Sampling(repetition_penalty=1.05))  # fmt: skip


def test_settings_no_call_can_switch_off_are_refused(folders):
    model = load_model(str(folders("qwen2.5-instruct")), device="cpu")
    tokenizer = load_tokenizer(str(folders("qwen2.5-instruct")))
    model.generation_config.suppress_tokens = [13]
    with pytest.raises(ValueError, match="suppress_tokens"):
        generate(model, tokenizer, ["Hi"], max_new_tokens=2)


# -- the checkpoint's recommended settings, when asked for ------------------------------------------


@pytest.mark.parametrize(
    "family, expected",
    [
        ("qwen2.5-instruct", Sampling(temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05)),
        ("qwen3", Sampling(temperature=0.6, top_p=0.95, top_k=20)),
        # No top_k in the file: off, not transformers' library default of 50.
        ("r1-distill-qwen", Sampling(temperature=0.6, top_p=0.95, top_k=0)),
    ],
)
def test_from_generation_config_reads_the_real_files(family, expected):
    path = FAMILIES[family].generation_config
    assert Sampling.from_generation_config(path) == expected
    assert Sampling.from_generation_config(path.parent / path.name) == expected


def test_from_generation_config_of_a_folder_and_its_edge_cases(tmp_path, folders):
    assert Sampling.from_generation_config(folders("qwen2.5-instruct")).repetition_penalty == 1.05
    config = tmp_path / "generation_config.json"
    config.write_text(json.dumps({"temperature": 0.6, "repetition_penalty": 1.1}))  # no do_sample: greedy
    assert Sampling.from_generation_config(tmp_path) == Sampling(repetition_penalty=1.1)
    config.write_text(json.dumps({"do_sample": True, "min_p": 0.05}))
    assert Sampling.from_generation_config(config) == Sampling(temperature=1.0, min_p=0.05)
    config.write_text(json.dumps({"do_sample": True, "no_repeat_ngram_size": 3}))
    with pytest.raises(ValueError, match=r"generation_config.json: no_repeat_ngram_size=3"):
        Sampling.from_generation_config(config)
    config.write_text(json.dumps({"do_sample": True, "top_p": 1.5}))
    with pytest.raises(ValueError, match=r"generation_config.json: top_p"):
        Sampling.from_generation_config(config)
    config.write_text("{not json")
    with pytest.raises(ValueError, match="not a readable JSON file"):
        Sampling.from_generation_config(config)
    config.unlink()
    with pytest.raises(ValueError, match="has no generation_config.json"):
        Sampling.from_generation_config(tmp_path)


# -- dtype ------------------------------------------------------------------------------------------


def test_auto_dtype_is_the_checkpoints_own(tmp_path, folders):
    float32 = folders("r1-distill-qwen")
    bf16 = save_checkpoint(tmp_path / "bf16", FAMILIES["r1-distill-qwen"], torch.bfloat16)
    assert resolve_dtype(float32) == "float32" and resolve_dtype(bf16) == "bfloat16"
    assert model_dtype(load_model(str(bf16), device="cpu")) == "bfloat16"
    assert model_dtype(load_model(str(float32), device="cpu")) == "float32"
    assert resolve_dtype(float32, "bf16") == "bfloat16" and resolve_dtype(bf16, torch.float32) == "float32"
    # A config that names no dtype: the weights' own; no weights either: float32.
    config = json.loads((bf16 / "config.json").read_text())
    config.pop("dtype", None), config.pop("torch_dtype", None)
    (bf16 / "config.json").write_text(json.dumps(config))
    assert resolve_dtype(bf16) == "bfloat16"
    for weights in bf16.glob("*.safetensors"):
        weights.unlink()
    assert resolve_dtype(bf16) == "float32"
    with pytest.raises(DtypeError, match="dtype must be 'auto' or one of"):
        resolve_dtype(float32, "int8")


def test_the_cli_records_the_dtype_and_the_sampling_it_used(tmp_path, folders):
    folder = folders("qwen2.5-instruct")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Is 91 prime?"}) + "\n")
    out = tmp_path / "out.jsonl"
    common = ["--model", str(folder), "--input", str(prompts), "--output", str(out), "--max-new-tokens", "4"]
    assert main([*common, "--sampling", "model", "--device", "cpu"]) == 0
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["dtype"] == "float32"
    assert row["sampling"] == {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": None, "repetition_penalty": 1.05}
    assert main([*common, "--sampling", "model", "--temperature", "0.5"]) == 2


def test_an_eval_recipe_takes_the_checkpoints_sampling_and_records_its_dtype(tmp_path, folders):
    from evals.recipe import recipe_from_dict
    from evals.runner import check_run_folder

    folder = folders("qwen2.5-instruct")
    recipe = recipe_from_dict(
        {
            "model": str(folder),
            "sampling": "model",
            "benchmarks": [{"name": "local", "path": str(tmp_path / "questions.jsonl")}],
            "methods": [{"method": "budget_forcing", "budgets": [4]}],
            "output_dir": str(tmp_path / "run"),
        }
    )
    assert recipe.sampling == Sampling.from_generation_config(folder)
    check_run_folder(recipe, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["dtype"] == "float32"


def test_rl_and_curate_take_the_checkpoints_sampling(tmp_path, folders):
    from curate.generation import ModelSpec
    from rl.config import RecipeError as RLRecipeError
    from rl.config import model_sampling

    folder = str(folders("qwen2.5-instruct"))
    assert model_sampling(folder, "l1.yaml") == {
        "temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": None, "repetition_penalty": 1.05
    }  # fmt: skip
    with pytest.raises(RLRecipeError, match="l1.yaml: trainer: sampling"):
        model_sampling(str(tmp_path), "l1.yaml")  # a folder without generation_config.json
    # A curation model without the setting keys its cache as before it existed.
    assert "sampling" not in ModelSpec(name="m", model=folder).cache_settings()
    assert ModelSpec(name="m", model=folder, sampling="model").cache_settings()["sampling"] == "model"
