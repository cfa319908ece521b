"""Bad input to the evals, curate, sft and rl command lines, tried as a new user would: each is refused
with one line naming the file, line or setting and what was expected, before any model loads.

No test here loads a model: the model given is a folder with a config, a one-tensor weights file and
a real tokenizer (`model_folder`), and the loaders are replaced by functions that fail the test if they
are reached."""

import importlib
import json
import shutil
import struct
from pathlib import Path

import pytest
import yaml

from curate import CurateError
from curate import load_recipe as load_curate_recipe
from curate.__main__ import main as curate_main
from curate.ingest import SourceSpec, ingest
from evals import BenchmarkError, BenchmarkSpec, RecipeError, load_problems, load_recipe, run
from evals.__main__ import main as evals_main
from evals.runner import RunError
from rl import RecipeError as RLRecipeError
from rl import recipe_from_dict as rl_recipe
from rl.prompts import load_questions
from sft import DataConfig, DataError
from sft import RecipeError as SFTRecipeError
from sft import recipe_from_dict as sft_recipe
from sft.__main__ import main as sft_main
from sft.data import load_rows

loading_module = importlib.import_module("decode.prepare.loading")
NOT_UTF8 = b"\xff\xfe bad \xe9"


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch):
    """Every refusal here must come before a model (or tokenizer) is loaded."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.setattr("evals.runner.load_model", refuse)
    monkeypatch.setattr("evals.runner.load_tokenizer", refuse)
    monkeypatch.setattr("decode.load_model", refuse)
    monkeypatch.setattr("decode.cli.load_model", refuse)


_TOKENIZERS: dict[bytes, object] = {}


@pytest.fixture(autouse=True)
def tokenizers_loaded_once(monkeypatch):
    """The command line loads the tokenizer of each test's model folder, a copy of one real tokenizer:
    it is read once for the module (the same files give the same tokenizer), so each case stays fast."""
    import hashlib

    from decode import load_tokenizer

    def cached(path: str):
        files = [Path(path) / name for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")]
        if not all(f.is_file() for f in files):
            return load_tokenizer(path)
        key = hashlib.sha256(b"".join(f.read_bytes() for f in files)).digest()
        if key not in _TOKENIZERS:
            _TOKENIZERS[key] = load_tokenizer(path)
        return _TOKENIZERS[key]

    monkeypatch.setattr("decode.cli.load_tokenizer", cached)


def model_folder(folder: Path, vocab_size: int = 151936, tokenizer: bool = True) -> Path:
    """A model folder that passes every check made before loading (config, whole weights, a real
    tokenizer), with a weights file of one tensor: loading it would fail, and no test gets that far."""
    from tests.conftest import tokenizer_dir

    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "vocab_size": vocab_size,
              "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
              "intermediate_size": 16, "max_position_embeddings": 4096, "dtype": "float32"}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    if tokenizer:
        for file in tokenizer_dir("qwen2.5").iterdir():
            shutil.copy(file, folder / file.name)
    return folder


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- evals -----------------------------------------------------------------------------------------


@pytest.fixture
def eval_recipe(tmp_path):
    """A valid evaluation recipe (as a dict) on a two-question local benchmark; the model is a folder."""
    model_folder(tmp_path / "model")
    bench = write_jsonl(tmp_path / "bench.jsonl", [{"id": 1, "problem": "1+1?", "answer": "2"},
                                                    {"id": 2, "problem": "2+2?", "answer": 4}])  # fmt: skip
    return {
        "model": str(tmp_path / "model"),
        "output_dir": str(tmp_path / "out"),
        "benchmarks": [{"name": "tiny", "path": str(bench)}],
        "methods": [{"method": "budget_forcing", "budgets": [8, 16]}],
        "grading": {"workers": 1},
    }


def eval_error(tmp_path, recipe: dict, capsys) -> str:
    """Run `python -m evals` on the recipe; it must exit 2 with one error line, which is returned."""
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert evals_main([str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert str(path) in err  # every evals error names the recipe file
    return err


def test_evals_recipe_that_is_not_utf8_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(b"model: m\noutput_dir: o\n# " + NOT_UTF8 + b"\n")
    assert evals_main([str(path)]) == 2
    assert f"{path}: line 3: not UTF-8 (byte 0xff" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_evals_benchmark_file_that_is_not_utf8_names_file_and_line(tmp_path, eval_recipe, capsys, suffix):
    bench = tmp_path / f"b{suffix}"
    if suffix == ".jsonl":
        bench.write_bytes(b'{"problem": "a", "answer": "1"}\n{"problem": "' + NOT_UTF8 + b'", "answer": "2"}\n')
    else:
        bench.write_bytes(b'[{"problem": "a", "answer": "1"},\n {"problem": "' + NOT_UTF8 + b'", "answer": "2"}]\n')
    eval_recipe["benchmarks"] = [{"name": "b", "path": str(bench)}]
    assert f"{bench}: line 2: not UTF-8" in eval_error(tmp_path, eval_recipe, capsys)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"limit": "x"}, r"benchmark 'tiny': limit expects an integer or null, got 'x'"),
        ({"limit": -1}, r"benchmark 'tiny': limit expects an integer >= 1 \(the first rows\) or null, got -1"),
        ({"limit": 0}, r"limit expects an integer >= 1"),
    ],
)
def test_evals_benchmark_limit_must_be_a_positive_integer(tmp_path, eval_recipe, capsys, change, message):
    eval_recipe["benchmarks"][0].update(change)
    with pytest.raises(RecipeError, match=message):
        load_recipe(write_yaml(tmp_path / "r.yaml", eval_recipe))
    assert "limit" in eval_error(tmp_path, eval_recipe, capsys)


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dtype": "float7"}, "dtype expects 'auto' or a torch dtype name (float32, bfloat16, float16), got 'float7'"),
        ({"grading": {"workers": 0}}, "grading.workers expects an integer >= 1 (worker processes), got 0"),
        ({"grading": {"timeout_s": -1}}, "grading.timeout_s expects a number of seconds > 0, got -1"),
        ({"grading": {"memory_mb": "lots"}}, "grading.memory_mb expects an integer >= 1 (MiB per worker) or null"),
        ({"samples": True}, "samples expects an integer, got True"),
        ({"batch_size": "8"}, "batch_size expects an integer, got '8'"),
        ({"max_answer_tokens": 0}, "max_answer_tokens expects an integer >= 1"),
        ({"sampling": {"temperature": "hot"}}, "sampling.temperature expects a number, got 'hot'"),
        ({"sampling": {"top_p": "1e-1"}}, "sampling.top_p expects a number, got '1e-1' (YAML reads a number such as"),
        ({"methods": [{"method": "budget_forcing", "budgets": ["8"]}]},
         "methods[0].budgets expects a list of integers, got ['8']"),
        ({"methods": [{"method": "budget_forcing", "budgets": 100}]},
         "methods[0].budgets expects a list of integers, got 100"),
        ({"methods": [{"method": "majority_vote", "votes": 4}]}, "methods[0].votes expects a list of integers, got 4"),
        ({"methods": [{"method": "rejection_sampling", "budgets": [8], "temperature": "warm"}]},
         "methods[0].temperature expects a number, got 'warm'"),
        ({"methods": [{"method": "budget_forcing", "budgets": [8], "min_thinking": 100}]},
         "min_thinking (100) is above the budget 8"),
    ],
)  # fmt: skip
def test_evals_settings_of_the_wrong_kind_say_what_was_expected(tmp_path, eval_recipe, capsys, change, message):
    eval_recipe.update(change)
    assert message in eval_error(tmp_path, eval_recipe, capsys)


def test_evals_misspelt_instruction_kind_and_shared_benchmark_names_are_refused(tmp_path, eval_recipe, capsys):
    eval_recipe["instruction"] = {"maths": "Box it."}
    assert "instruction: unknown problem kind(s) ['maths']; known: math, choice" in eval_error(
        tmp_path, eval_recipe, capsys
    )
    del eval_recipe["instruction"]
    eval_recipe["benchmarks"] = eval_recipe["benchmarks"] * 2  # the same name twice: their samples would mix
    assert "benchmarks: two benchmarks share a name ['tiny', 'tiny']" in eval_error(tmp_path, eval_recipe, capsys)


def test_evals_format_and_device_are_checked_before_the_model_loads(tmp_path, eval_recipe, capsys):
    eval_recipe["format"] = "nosuch"  # was found only after the model had loaded
    assert "format: unknown thinking format 'nosuch'" in eval_error(tmp_path, eval_recipe, capsys)
    eval_recipe["format"] = str(tmp_path / "missing-format.json")
    assert "format: unknown thinking format" in eval_error(tmp_path, eval_recipe, capsys)
    eval_recipe["format"] = "s1"
    eval_recipe["device"] = "gpu"
    assert "device expects a torch device such as 'cpu', 'cuda' or 'cuda:1', got 'gpu'" in eval_error(
        tmp_path, eval_recipe, capsys
    )


def test_evals_device_this_machine_lacks_is_refused_before_the_model_loads(tmp_path, eval_recipe, capsys):
    import torch

    eval_recipe["device"] = f"cuda:{torch.cuda.device_count()}"  # one past the last device
    load_recipe(write_yaml(tmp_path / "r.yaml", eval_recipe))  # a recipe may be read anywhere
    assert f"device is 'cuda:{torch.cuda.device_count()}', but torch sees" in eval_error(tmp_path, eval_recipe, capsys)


def test_evals_output_dir_that_is_a_file_is_refused(tmp_path, eval_recipe, capsys):
    (tmp_path / "taken").write_text("a file")
    eval_recipe["output_dir"] = str(tmp_path / "taken")
    assert f"output_dir '{tmp_path}/taken': {tmp_path}/taken is a file, not a folder" in eval_error(
        tmp_path, eval_recipe, capsys
    )
    eval_recipe["output_dir"] = str(tmp_path / "taken" / "run")
    assert "is a file, not a folder" in eval_error(tmp_path, eval_recipe, capsys)


@pytest.mark.parametrize("blank", ["", "\n\n  \n"])
def test_evals_empty_benchmark_file_is_refused(tmp_path, eval_recipe, capsys, blank):
    empty = tmp_path / "empty.jsonl"
    empty.write_text(blank)
    eval_recipe["benchmarks"] = [{"name": "empty", "path": str(empty)}]
    assert f"benchmark 'empty': {empty} has no rows" in eval_error(tmp_path, eval_recipe, capsys)
    assert not (tmp_path / "out" / "summary.json").exists()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"value": 3}, "field 'answer' expects text, a number or a list of them, got {\"value\": 3}"),
        ([{"a": 1}], "field 'answer' expects text, a number or a list of them"),
        (True, "field 'answer' expects text, a number or a list of them, got true"),
    ],
)
def test_gold_answer_that_is_not_text_is_refused_naming_the_line(tmp_path, answer, message):
    bench = write_jsonl(tmp_path / "b.jsonl", [{"problem": "q", "answer": "1"}, {"problem": "q2", "answer": answer}])
    with pytest.raises(BenchmarkError, match="b.jsonl: line 2: ") as caught:
        load_problems(BenchmarkSpec("b", path=str(bench), id=None))
    assert message in str(caught.value)
    bench = write_jsonl(tmp_path / "c.jsonl", [{"problem": {"text": "q"}, "answer": "1"}])
    with pytest.raises(BenchmarkError, match="c.jsonl: line 1: field 'problem' expects text or a number"):
        load_problems(BenchmarkSpec("c", path=str(bench), id=None))


def test_corrupt_parquet_and_gpqa_without_options_are_refused(tmp_path, eval_recipe, capsys):
    broken = tmp_path / "b.parquet"
    broken.write_text("not parquet")
    with pytest.raises(BenchmarkError, match=f"{broken}: not a readable parquet file"):  # was a pyarrow traceback
        load_problems(BenchmarkSpec("b", path=str(broken)))
    with pytest.raises(CurateError, match=f"{broken}: not a readable parquet file"):
        ingest([SourceSpec("b", path=str(broken))])
    eval_recipe["benchmarks"][0]["kind"] = "gpqa"  # was asked as a question with one option, A
    assert "benchmark 'tiny': kind gpqa needs 'options'" in eval_error(tmp_path, eval_recipe, capsys)
    with pytest.raises(RLRecipeError, match=r"data\[0\]: benchmark 'd': kind gpqa needs 'options'"):
        rl_minimal(tmp_path, data=[{"name": "d", "path": "d.jsonl", "kind": "gpqa"}])


def test_lists_of_answers_and_numbers_still_read(tmp_path):
    bench = write_jsonl(tmp_path / "b.jsonl", [{"problem": "q", "answer": [1, "2"]}, {"problem": "r", "answer": 27.0}])
    problems = load_problems(BenchmarkSpec("b", path=str(bench), id=None))
    assert [p.gold for p in problems] == ["1, 2", "27"]


def test_a_byte_order_mark_is_not_an_error(tmp_path):
    rows = [{"problem": "q", "answer": "1"}]
    (tmp_path / "b.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(rows[0]).encode() + b"\n")
    (tmp_path / "b.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(rows).encode())
    for name in ("b.jsonl", "b.json"):
        assert [p.gold for p in load_problems(BenchmarkSpec("b", path=str(tmp_path / name), id=None))] == ["1"]


def test_a_json_string_holding_a_line_separator_stays_one_row(tmp_path):
    bench = tmp_path / "b.jsonl"
    rows = [{"problem": "first\u2028part", "answer": "1"}, {"problem": "second", "answer": "2"}]
    bench.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert [p.question for p in load_problems(BenchmarkSpec("b", path=str(bench), id=None))] == [
        "first\u2028part",
        "second",
    ]


def test_evals_samples_line_without_its_key_is_refused(tmp_path, eval_recipe, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "samples.jsonl").write_text('{"key": "x"}\n{"benchmark": "tiny", "correct": true}\n{"key": "y"}\n')
    message = eval_error(tmp_path, eval_recipe, capsys)
    assert f"{out}/samples.jsonl: line 2 is not a sample record (it has no 'key')" in message
    with pytest.raises(RunError, match="line 2 is not a sample record"):
        run(load_recipe(write_yaml(tmp_path / "r.yaml", eval_recipe)), progress=False)
    (out / "samples.jsonl").write_bytes(b'{"key": "x"}\n' + NOT_UTF8 + b"\n{}\n")
    assert f"{out}/samples.jsonl: line 2 is not valid JSON" in eval_error(tmp_path, eval_recipe, capsys)


@pytest.mark.parametrize("content", [b'{"fingerprint": "abc"', b"[1, 2]", NOT_UTF8])
def test_evals_corrupt_run_json_is_refused(tmp_path, eval_recipe, capsys, content):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "run.json").write_bytes(content)
    message = eval_error(tmp_path, eval_recipe, capsys)
    assert f"{tmp_path}/out/run.json: not a valid run description (a JSON object)" in message


def test_evals_errors_from_the_run_name_the_recipe(tmp_path, eval_recipe, capsys):
    eval_recipe["benchmarks"] = [{"name": "gone", "path": str(tmp_path / "gone.jsonl")}]
    message = eval_error(tmp_path, eval_recipe, capsys)
    assert message.startswith(f"error: {tmp_path}/recipe.yaml: benchmark 'gone': file ")


# --- a hub id that is neither a local folder nor reachable -----------------------------------------


@pytest.fixture
def hub_unreachable(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # restored (removed) after the test
    monkeypatch.setattr(loading_module, "_hub_answers", lambda: False)
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    return constants


def test_missing_hub_id_is_refused_at_once_when_the_hub_is_out_of_reach(hub_unreachable, monkeypatch):
    monkeypatch.setattr(loading_module, "_in_hub_cache", lambda repo_id: False)
    message = "model 'runs/nosuch' is not a local folder nor in the local hub cache, and the hub cannot be reached"
    with pytest.raises(loading_module.ModelLoadError, match=message):
        loading_module.check_source("runs/nosuch", "model")


def test_hub_switched_off_refuses_an_uncached_id_without_asking_it(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def asked():
        raise AssertionError("the hub was asked although HF_HUB_OFFLINE is set")

    monkeypatch.setattr(loading_module, "_hub_answers", asked)
    with pytest.raises(loading_module.ModelLoadError, match="is not a local folder nor in the local hub cache"):
        loading_module.check_source("org/not-cached-anywhere", "tokenizer")


def test_cached_hub_id_is_read_from_the_cache_when_the_hub_is_out_of_reach(hub_unreachable, monkeypatch):
    monkeypatch.setattr(loading_module, "_in_hub_cache", lambda repo_id: repo_id == "org/cached")
    loading_module.check_source("org/cached", "model")
    assert hub_unreachable.HF_HUB_OFFLINE is True  # transformers then reads the cache without retries
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"  # and so do the processes the run starts


def test_hub_id_with_the_hub_reachable_is_left_to_the_hub(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(loading_module, "_hub_answers", lambda: True)
    loading_module.check_source("org/name", "model")  # no error: from_pretrained downloads it


def test_evals_command_line_refuses_an_unreachable_hub_id_before_anything(tmp_path, eval_recipe, capsys,
                                                                           hub_unreachable, monkeypatch):  # fmt: skip
    monkeypatch.setattr(loading_module, "_in_hub_cache", lambda repo_id: False)
    eval_recipe["model"] = "org/missing-model"
    assert "model 'org/missing-model' is not a local folder" in eval_error(tmp_path, eval_recipe, capsys)
    assert not (tmp_path / "out").exists()


def test_hub_datasets_fail_at_once_when_the_hub_is_out_of_reach(hub_unreachable):
    import datasets

    with pytest.raises(BenchmarkError, match="benchmark 'x': could not load org/no-such-dataset .*give a local 'path'"):
        load_problems(BenchmarkSpec("x", hub="org/no-such-dataset"))
    assert datasets.config.HF_HUB_OFFLINE is True  # read from the cache only: no retries
    with pytest.raises(CurateError, match="source 'x': could not load org/no-such-dataset"):
        ingest([SourceSpec("x", hub="org/no-such-dataset")])
    with pytest.raises(DataError, match="data.source org/no-such-dataset: could not load it from the hub"):
        load_rows(DataConfig(source="org/no-such-dataset"))


# --- curate ----------------------------------------------------------------------------------------


@pytest.fixture
def curate_recipe(tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"question": f"q{i}", "answer": str(i)} for i in range(3)])
    model = model_folder(tmp_path / "model")
    return {
        "output_dir": str(tmp_path / "out"),
        "cache_dir": str(tmp_path / "cache"),
        "sources": [{"name": "pool", "path": str(pool)}],
        "stages": [{"difficulty": {"models": [{"name": "ref", "model": str(model)}]}}, {"select": {"size": 2}}],
    }


def curate_error(tmp_path, recipe: dict) -> str:
    path = write_yaml(tmp_path / "curate.yaml", recipe)
    with pytest.raises(CurateError) as caught:
        load_curate_recipe(path)
    return str(caught.value)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"format": "s1", "max_thinking_tokens": -3}, "model 'ref': max_thinking_tokens must be >= 0, got -3"),
        ({"format": "nosuch"}, "model 'ref': unknown thinking format 'nosuch'"),
        ({"max_thinking_tokens": "many"}, "max_thinking_tokens expects an integer or null, got 'many'"),
        ({"temperature": -1}, "model 'ref': temperature must be >= 0"),
        ({"backend": "tgi"}, "model 'ref': backend must be one of ['hf', 'vllm', 'openai'], got 'tgi'"),
        ({"batch_size": 0}, "model 'ref': batch_size expects an integer >= 1, got 0"),
        ({"max_answer_tokens": 0}, "model 'ref': max_answer_tokens expects an integer >= 1 or null"),
        ({"dtype": "float7"}, "model 'ref': dtype expects 'auto' or a torch dtype name"),
    ],
)
def test_curate_difficulty_model_settings_are_checked_when_the_recipe_is_read(tmp_path, curate_recipe, model,
                                                                               message):  # fmt: skip
    curate_recipe["stages"][0]["difficulty"]["models"][0].update(model)
    error = curate_error(tmp_path, curate_recipe)
    assert error.startswith(f"{tmp_path}/curate.yaml: stages[0] (difficulty): models[0]: ") and message in error


def test_curate_grading_and_select_size_of_the_wrong_kind(tmp_path, curate_recipe):
    curate_recipe["stages"][0]["difficulty"]["grading"] = {"workers": 0}
    assert "stages[0] (difficulty): grading.workers expects an integer >= 1" in curate_error(tmp_path, curate_recipe)
    del curate_recipe["stages"][0]["difficulty"]["grading"]
    curate_recipe["stages"][1]["select"]["size"] = "1000"
    assert "stages[1] (select): size expects an integer, got '1000'" in curate_error(tmp_path, curate_recipe)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"grade": "answers"}, "grade must be 'full' (thinking and answer) or 'answer', got 'answers'"),
        ({"prompts": {"maths": "{question}"}}, "prompts: unknown question kind(s) ['maths']; known: math, choice"),
        ({"prompts": {"math": "Solve it."}}, "prompts.math must hold {question}, where the question goes"),
        ({"prompts": {"math": "{question} in \\boxed{}"}}, "prompts.math: braces other than {question} must be"),
    ],
)
def test_curate_difficulty_settings_read_wrong_without_a_word_are_refused(tmp_path, curate_recipe, settings,
                                                                          message):  # fmt: skip
    curate_recipe["stages"][0]["difficulty"].update(settings)
    assert f"stages[0] (difficulty): {message}" in curate_error(tmp_path, curate_recipe)


@pytest.mark.parametrize(
    ("limit", "message"), [(-1, "limit expects an integer >= 1 or null, got -1"), ("x", "limit expects an integer")]
)
def test_curate_source_limit_must_be_a_positive_integer(tmp_path, curate_recipe, limit, message):
    curate_recipe["sources"][0]["limit"] = limit
    assert message in curate_error(tmp_path, curate_recipe)


def test_curate_recipe_and_source_that_are_not_utf8_name_file_and_line(tmp_path, curate_recipe):
    recipe = tmp_path / "bad.yaml"
    recipe.write_bytes(b"output_dir: o\n" + NOT_UTF8 + b": 1\n")
    with pytest.raises(CurateError, match=f"{recipe}: line 2: not UTF-8"):
        load_curate_recipe(recipe)
    pool = tmp_path / "pool.jsonl"
    pool.write_bytes(b'{"question": "a"}\n{"question": "' + NOT_UTF8 + b'"}\n{"question": "c"}\n')
    with pytest.raises(CurateError, match=f"{pool}: line 2: not UTF-8"):
        ingest([SourceSpec("pool", path=str(pool))])
    data, info = ingest([SourceSpec("pool", path=str(pool), on_error="skip")])  # skipped and counted
    assert len(data) == 2 and info["sources"]["pool"]["skipped"] == 1
    assert "line 2: not UTF-8" in info["sources"]["pool"]["errors"][0]


def test_curate_empty_source_file_is_refused(tmp_path):
    full = write_jsonl(tmp_path / "full.jsonl", [{"question": "a"}])
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(CurateError, match=f"source 'empty': {tmp_path}/empty.jsonl has no rows"):
        ingest([SourceSpec("full", path=str(full)), SourceSpec("empty", path=str(tmp_path / "empty.jsonl"))])


def test_curate_command_line_refuses_a_missing_model_before_any_stage(tmp_path, curate_recipe, capsys):
    curate_recipe["stages"][0]["difficulty"]["models"][0]["model"] = str(tmp_path / "no" / "such" / "model")
    path = write_yaml(tmp_path / "curate.yaml", curate_recipe)
    assert curate_main([str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: stage 'difficulty': model 'ref': model path '{tmp_path}/no/such/model' does not exist" in err
    assert not (tmp_path / "cache").exists()  # ingest did not run


def test_curate_command_line_refuses_missing_tokenizers_and_embedding_models(tmp_path, curate_recipe, capsys):
    curate_recipe["stages"] = [
        {"domains": {"model": str(tmp_path / "no" / "embedder")}},
        {"traces": {"from_metadata": {"trace": "t", "attempt": "a"}, "target_tokenizer": str(tmp_path / "no/tok")}},
    ]
    path = write_yaml(tmp_path / "curate.yaml", curate_recipe)
    assert curate_main([str(path)]) == 2
    assert f"stage 'domains': embedding model path '{tmp_path}/no/embedder' does not exist" in capsys.readouterr().err
    curate_recipe["stages"].pop(0)
    path = write_yaml(tmp_path / "curate.yaml", curate_recipe)
    assert curate_main([str(path)]) == 2
    assert f"stage 'traces': target_tokenizer path '{tmp_path}/no/tok' does not exist" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


# --- sft -------------------------------------------------------------------------------------------


def sft_minimal(tmp_path, **changes):
    data = {"model": "m", "output_dir": str(tmp_path / "out"), "data": {"source": "rows.jsonl"}, **changes}
    return sft_recipe(data, "s.yaml")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"data": {"source": "x.jsonl", "format": "nosuch"}}, "s.yaml: data.format: unknown thinking format 'nosuch'"),
        ({"training": {"learning_rate": -1}}, "s.yaml: training.learning_rate expects a number > 0"),
        ({"training": {"learning_rate": "1e-5"}}, "training.learning_rate expects a number > 0"),
        ({"training": {"per_device_train_batch_size": 0}}, "training.per_device_train_batch_size expects an integer"),
        ({"training": {"num_train_epochs": 0}}, "training.num_train_epochs expects a number of epochs > 0"),
        ({"packing": "no"}, "s.yaml: packing expects true or false, got 'no'"),
        ({"seed": "42"}, "s.yaml: seed expects an integer, got '42'"),
        ({"data": {"source": "x.jsonl", "block_size": "4k"}}, "s.yaml: data.block_size expects an integer, got '4k'"),
        ({"dtype": "float7"}, "s.yaml: dtype expects 'auto' or a torch dtype name"),
    ],
)
def test_sft_settings_are_refused_by_name(tmp_path, changes, message):
    with pytest.raises(SFTRecipeError) as caught:
        sft_minimal(tmp_path, **changes)
    assert message in str(caught.value)


def test_sft_command_line_refuses_a_missing_model_path(tmp_path, capsys):
    recipe = write_yaml(tmp_path / "s.yaml", {"model": "runs/sft/nothing/model", "output_dir": str(tmp_path / "o"),
                                              "data": {"source": str(tmp_path / "rows.jsonl")}})  # fmt: skip
    assert sft_main([str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "model path 'runs/sft/nothing/model' does not exist" in err and "Repo id" not in err


def test_sft_recipe_that_is_not_utf8_is_named(tmp_path):
    from sft import load_recipe as load_sft_recipe

    path = tmp_path / "s.yaml"
    path.write_bytes(b"model: m\n" + NOT_UTF8 + b"\n")
    with pytest.raises(SFTRecipeError, match=f"{path}: line 2: not UTF-8"):
        load_sft_recipe(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"q": "a", "t": "b", "ans": "c"}\n{"q": "a", "t": \n', r"rows.jsonl: line 2: not valid JSON"),
        (b'{"q": "a", "t": "b", "ans": "c"}\n\n{"q": "' + NOT_UTF8 + b'"}\n', r"rows.jsonl: line 3: not UTF-8"),
        (b'{"q": "a", "t": "b", "ans": "c"}\n[1, 2]\n', r"rows.jsonl: line 2, row 1: expected a JSON object"),
        (b'{"q": "a", "t": "b", "ans": "c"}\n{"q": "a", "t": "b"}\n', r"rows.jsonl: line 2, row 1: no field for "
         r"data.answer='ans' \(fields: q, t\)"),
        (b'{"q": "a", "t": "b", "ans": "c"}\n\n{"q": "a", "t": 5, "ans": "c"}\n',
         r"rows.jsonl: line 3, row 1: field 't' must be text, got int"),
        (b"", r"data.source .*rows.jsonl: no rows"),
    ],
)  # fmt: skip
def test_sft_jsonl_errors_name_the_line(tmp_path, content, message):
    (tmp_path / "rows.jsonl").write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_rows(DataConfig(source=str(tmp_path / "rows.jsonl"), question="q", trace="t", answer="ans"))


def test_sft_json_file_of_lines_or_of_a_list_still_loads(tmp_path):
    rows = [{"q": "a", "t": ["b", "c"], "ans": "d"}, {"q": "e", "t": "f", "ans": "g"}]
    (tmp_path / "list.json").write_text(json.dumps(rows))
    (tmp_path / "lines.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("list.json", "lines.json"):
        loaded = load_rows(DataConfig(source=str(tmp_path / name), question="q", trace="t", answer="ans"))
        assert loaded["q"] == ["a", "e"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([rows[0], {"q": "e", "t": "", "ans": "g"}]))
    with pytest.raises(DataError, match=r"bad.json: item 2, row 1: field 't' is empty"):
        load_rows(DataConfig(source=str(bad), question="q", trace="t", answer="ans"))


# --- rl --------------------------------------------------------------------------------------------


def rl_minimal(tmp_path, **changes):
    data = {"model": "m", "output_dir": str(tmp_path / "out"), "data": [{"name": "d", "path": "d.jsonl"}], **changes}
    return rl_recipe(data, "r.yaml")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"grading": {"workers": 0}}, "r.yaml: grading.workers expects an integer >= 1 (worker processes), got 0"),
        ({"grading": {"timeout_s": 0}}, "r.yaml: grading.timeout_s expects a number of seconds > 0"),
        ({"reward": {"alpha": "3e-4"}}, "r.yaml: reward.alpha expects a number, got '3e-4' (YAML reads a number"),
        ({"reward": {"length_penalty": "off"}}, "r.yaml: reward.length_penalty expects true or false, got 'off'"),
        ({"prompts": {"min_budget": "100"}}, "r.yaml: prompts.min_budget expects an integer, got '100'"),
        ({"data": [{"name": "d", "path": "d.jsonl", "limit": -1}]}, "r.yaml: data[0]: benchmark 'd': limit expects"),
        ({"data": [{"name": "d", "path": "d.jsonl", "limit": "x"}]}, "r.yaml: data[0].limit expects an integer"),
        ({"trainer": {"learning_rate": -1}}, "r.yaml: trainer.learning_rate expects a number > 0"),
        ({"dtype": "float7"}, "r.yaml: dtype expects 'auto' or a torch dtype name"),
        ({"resume": "no"}, "r.yaml: resume expects true or false, got 'no'"),
    ],
)
def test_rl_settings_are_refused_by_name(tmp_path, changes, message):
    with pytest.raises(RLRecipeError) as caught:
        rl_minimal(tmp_path, **changes)
    assert message in str(caught.value)


def test_rl_data_file_that_is_not_utf8_or_empty_is_named(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_bytes(b'{"problem": "a", "answer": "1"}\n{"problem": "' + NOT_UTF8 + b'", "answer": "1"}\n')
    with pytest.raises(BenchmarkError, match=f"{data}: line 2: not UTF-8"):
        load_questions([BenchmarkSpec("d", path=str(data), id=None)])
    data.write_text("")
    with pytest.raises(BenchmarkError, match=f"benchmark 'd': {data} has no rows"):
        load_questions([BenchmarkSpec("d", path=str(data), id=None)])


def test_rl_command_line_refuses_a_missing_model_when_a_tokenizer_is_given(tmp_path, capsys):
    from rl.__main__ import main as rl_main

    (tmp_path / "tok").mkdir()
    recipe = write_yaml(tmp_path / "r.yaml", {
        "model": str(tmp_path / "no" / "model"), "tokenizer": str(tmp_path / "tok"), "output_dir": str(tmp_path / "o"),
        "data": [{"name": "d", "path": str(tmp_path / "d.jsonl")}], "trainer": {"use_cpu": True, "bf16": False},
    })  # fmt: skip
    assert rl_main([str(recipe)]) == 2
    err = capsys.readouterr().err
    assert f"error: {recipe}: model path '{tmp_path}/no/model' does not exist" in err


# --- python -m decode: everything checked before the model loads, nothing written ------------------


def decode_error(tmp_path, capsys, rows: list | None = None, *flags: str, model: Path | None = None) -> str:
    """Run `python -m decode` on rows (or the --input given in flags); it must exit 2 with one error line,
    write no output (nor a .partial), and load no model."""
    from decode.cli import main as decode_main

    model = model or tmp_path / "model"
    if not model.exists():
        model_folder(model)
    argv = ["--model", str(model), *flags]
    if "--input" not in flags:
        argv += ["--input", str(write_jsonl(tmp_path / "prompts.jsonl", rows or [{"prompt": "2+2?"}]))]
    if "--output" not in flags:
        argv += ["--output", str(tmp_path / "out.jsonl")]
    assert decode_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    out = Path(argv[argv.index("--output") + 1])
    assert not out.with_name(out.name + ".partial").exists()
    if out.name == "out.jsonl":
        assert not out.exists()
    return err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--temperature", "nan"], "temperature must be a finite number, got nan"),
        (["--temperature", "inf"], "temperature must be a finite number, got inf"),
        (["--temperature", "0.7", "--top-p", "nan"], "top_p must be in (0, 1], got nan"),
        (["--temperature", "0.7", "--repetition-penalty", "inf"], "repetition_penalty must be a finite number"),
        (["--greedy", "--top-p", "0.9"], "--top-p only shape sampling, and --greedy decodes greedily"),
        (["--top-k", "20"], "--top-k only shape sampling, and no --temperature decodes greedily"),
        (["--temperature", "0", "--top-p", "0.5"], "--top-p only shape sampling, and --temperature 0.0 decodes"),
        (["--max-thinking", "64", "--max-new-tokens", "32"],
         "--max-thinking 64 cannot bind: --max-new-tokens 32 ends every completion first"),
        (["--min-thinking", "40", "--max-new-tokens", "40"], "--min-thinking 40 cannot bind"),
        (["--wait", "<|endoftext|>"], "wait string '<|endoftext|>' holds a special token of this tokenizer"),
        (["--chat-template-kwargs", '{"enable_thinkng": true}'],
         "chat_template_kwargs key 'enable_thinkng' is not read by the tokenizer's chat template"),
    ],
)  # fmt: skip
def test_decode_numbers_and_contradicting_settings_are_refused(tmp_path, capsys, flags, message):
    assert message in decode_error(tmp_path, capsys, None, *flags)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "a", "prompt": "b"}', "prompts.jsonl:1: not valid JSON (duplicate key 'prompt')"),
        ('{"prompt": "a", "max_thinking_tokens": 8, "max_thinking_tokens": 800}',
         "duplicate key 'max_thinking_tokens'"),
        ('{"prompt": "a", "max_tokens": 8}', "row 1: 'max_tokens' is a generation setting, which a row cannot set (use "
                                             "--max-new-tokens)"),
        ('{"prompt": "a", "temperature": 0.7}', "row 1: 'temperature' is a generation setting"),
        ('{"prompt": "a", "seed": 3}', "row 1: 'seed' is a generation setting"),
        ('{"prompt": "a", "max_thinking_tokens": 100}',
         "row 1: max_thinking_tokens 100 cannot bind: --max-new-tokens 50"),
        ('{"prompt": [{"role": "human", "content": "hi"}]}',
         "row 1: 'prompt' message 0 has role 'human', which the chat template drops (the roles it names: "
         "assistant, system, tool, user)"),
    ],
)  # fmt: skip
def test_decode_rows_that_cannot_mean_what_they_say_are_refused(tmp_path, capsys, line, message):
    (tmp_path / "prompts.jsonl").write_text(line + "\n")
    flags = ["--input", str(tmp_path / "prompts.jsonl"), "--max-new-tokens", "50"]
    assert message in decode_error(tmp_path, capsys, None, *flags)


def test_decode_output_paths_are_checked_before_anything(tmp_path, capsys):
    rows = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "2+2?"}])
    before = rows.read_bytes()
    (tmp_path / "folder").mkdir()
    message = decode_error(tmp_path, capsys, None, "--input", str(rows), "--output", str(tmp_path / "folder"))
    assert f"output {tmp_path}/folder is a folder; give a file path" in message
    message = decode_error(tmp_path, capsys, None, "--input", str(rows), "--output", str(rows))
    assert f"output {rows} is the input file {rows}; writing it would destroy the input" in message
    assert rows.read_bytes() == before
    (tmp_path / "file").write_text("x")
    message = decode_error(tmp_path, capsys, None, "--input", str(rows), "--output", str(tmp_path / "file" / "o.jsonl"))
    assert f"{tmp_path}/file is a file, not a folder" in message


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="root writes through file modes")
def test_decode_read_only_output_and_folder_are_refused(tmp_path, capsys):
    rows = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "2+2?"}])
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        message = decode_error(tmp_path, capsys, None, "--input", str(rows), "--output", str(locked / "o.jsonl"))
        assert f"output folder {locked} is not writable" in message
    finally:
        locked.chmod(0o700)
    (tmp_path / "ro.jsonl").write_text("")
    (tmp_path / "ro.jsonl").chmod(0o400)
    message = decode_error(tmp_path, capsys, None, "--input", str(rows), "--output", str(tmp_path / "ro.jsonl"))
    assert "ro.jsonl exists and is read-only" in message


def test_decode_device_this_machine_lacks_is_refused(tmp_path, capsys):
    import torch

    device = f"cuda:{torch.cuda.device_count()}"  # one past the last; "cuda" itself on a machine without one
    if torch.cuda.device_count() == 0:
        device = "cuda"
    assert f"device is '{device}', but torch sees {torch.cuda.device_count()} CUDA device(s) here" in decode_error(
        tmp_path, capsys, None, "--device", device
    )
    assert "device expects a torch device" in decode_error(tmp_path, capsys, None, "--device", "gpu")
    message = decode_error(tmp_path, capsys, None, "--device", "cuda", "--backend", "vllm")
    assert "--device applies to --backend hf; --backend vllm places the model itself" in message


def broken_model(folder: Path, damage: str) -> Path:
    model_folder(folder)
    weights = folder / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-3])
    elif damage == "no header":
        weights.write_bytes(b"\x01\x02")
    elif damage == "huge header":
        weights.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    elif damage == "config":
        (folder / "config.json").write_text('{"model_type": "qwen2",')
    elif damage == "config list":
        (folder / "config.json").write_text("[1]")
    elif damage == "no weights":
        weights.unlink()
    elif damage == "index":
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "model-2.safetensors"}}))
    elif damage == "no tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            (folder / name).unlink(missing_ok=True)
    return folder


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncated", "model.safetensors: cut short (74 bytes, its tensors need 77); copy it again"),
        ("no header", "model.safetensors: not a safetensors file (2 bytes: no header)"),
        ("huge header", "model.safetensors: cut short (10 bytes, its header alone claims 1000000008)"),
        ("config", "config.json: not valid JSON (Expecting"),
        ("config list", "config.json: expected a JSON object, got list"),
        ("no weights", "holds no weights file"),
        ("index", "model.safetensors.index.json names weights files that are not in the folder: model-2.safetensors"),
        ("no tokenizer", "has no tokenizer files (tokenizer.json, "),
    ],
)
def test_decode_model_folder_files_are_read_before_loading(tmp_path, capsys, damage, message):
    model = broken_model(tmp_path / "model", damage)
    assert message in decode_error(tmp_path, capsys, None, model=model)


def test_tokenizer_larger_than_the_embedding_is_refused_before_loading(tmp_path, capsys, eval_recipe, monkeypatch):
    model = model_folder(tmp_path / "small", vocab_size=1000)
    message = decode_error(tmp_path, capsys, None, model=model)
    assert "has 151665 tokens, but the model's embedding has 1000 rows (config vocab_size)" in message
    monkeypatch.setattr("evals.runner.load_tokenizer", importlib.import_module("decode").load_tokenizer)
    eval_recipe["model"] = str(model)
    assert "but the model's embedding has 1000 rows" in eval_error(tmp_path, eval_recipe, capsys)
    assert not (tmp_path / "out").exists()  # nothing written: not even run.json


# --- resumes that verify what they find ------------------------------------------------------------


def saved_partial(tmp_path, lines: list) -> tuple[list[str], Path]:
    """A decode run's argv and a .partial under this run's own header holding `lines` after it."""
    import dataclasses

    from decode.cli import _fingerprint, _sampling, build_parser
    from decode.prepare.dtype import resolve_dtype

    model = model_folder(tmp_path / "model")
    rows = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "a", "id": 1}, {"prompt": "b", "id": 2}])
    out = tmp_path / "out.jsonl"
    argv = ["--model", str(model), "--input", str(rows), "--output", str(out)]
    args = build_parser().parse_args(argv)
    used = {"dtype": resolve_dtype(model), "sampling": dataclasses.asdict(_sampling(args))}
    partial = tmp_path / "out.jsonl.partial"
    header = json.dumps({"fingerprint": _fingerprint(args, used)})
    partial.write_text("\n".join([header, *(json.dumps(x) for x in lines)]) + "\n")
    return argv, partial


def saved_row(index: int, prompt: str, **changes) -> dict:
    result = {"completion_ids": [1, 2], "thinking": "t", "answer": "4", "thinking_tokens": 1, "answer_tokens": 1,
              "waits": 0, "forced_end": False, "finish_reason": "eos", "dtype": "float32",
              "sampling": {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "min_p": None,
                           "repetition_penalty": 1.0}}  # fmt: skip
    return {"row": index, "output": {"prompt": prompt, "id": index + 1, **result, **changes}}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([{}], "line 2: not a saved result (expected {'row': N, 'output': {...}})"),
        (["just text"], "line 2: not a saved result"),
        ([saved_row(0, "a"), saved_row(0, "a")], "line 3: holds input row 0 where row 1 comes next"),
        ([saved_row(1, "b")], "line 2: holds input row 1 where row 0 comes next (rows out of order or twice)"),
        ([saved_row(0, "b")], "line 2: row 0's result does not repeat input row 1 ('prompt' differs)"),
        ([saved_row(0, "a", dtype="bfloat16")],
         "line 2: row 0 was made with dtype 'bfloat16'; this run uses 'float32'"),
        ([saved_row(0, "a", completion_ids="12")], "line 2: row 0's result is not a whole result"),
        ([{"row": 0, "output": {"prompt": "a"}}], "line 2: row 0's result has other fields than a result of this run"),
        ([saved_row(0, "a"), saved_row(1, "b"), saved_row(2, "c")], "line 4: holds row 2, but the input has 2 rows"),
    ],
)  # fmt: skip
def test_decode_resume_refuses_saved_lines_that_are_not_their_rows(tmp_path, capsys, lines, message):
    from decode.cli import main as decode_main

    argv, partial = saved_partial(tmp_path, lines)
    before = partial.read_bytes()
    assert decode_main(argv) == 2
    err = capsys.readouterr().err
    assert f"error: {partial}: {message}" in err and "delete" in err
    assert partial.read_bytes() == before  # refused before the model loads: nothing rewritten


def test_decode_resume_keeps_good_lines_and_drops_a_last_line_cut_short(tmp_path, monkeypatch):
    """The other side of the check: good saved rows are kept (only the rest reach the model)."""
    from decode import cli

    argv, partial = saved_partial(tmp_path, [saved_row(0, "a")])
    partial.write_text(partial.read_text() + '{"row": 1, "outp')
    asked = []
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: type("M", (), {"parameters": lambda self: iter([])})())
    monkeypatch.setattr(cli, "model_dtype", lambda model: "float32")
    monkeypatch.setattr(cli, "generate", lambda model, tok, prompts, **kw: asked.append(prompts) or [])
    assert cli.main(argv) == 0
    assert asked == [["b"]]  # row 0 kept, the cut line dropped and asked again


def test_decode_weights_replaced_under_the_same_path_start_over(tmp_path, capsys):
    """Other weights at the same path are another model: the header's fingerprint differs, nothing is kept."""
    from decode.cli import _fingerprint, build_parser

    model = model_folder(tmp_path / "model")
    args = build_parser().parse_args(["--model", str(model), "--input", str(write_jsonl(tmp_path / "p.jsonl", [{}])),
                                      "--output", str(tmp_path / "o.jsonl")])  # fmt: skip
    before = _fingerprint(args, {})
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + bytes([1] * 8))  # same size, same header, other values
    assert _fingerprint(args, {}) != before


# --- evals: the model by what it is; budgets that cannot bind --------------------------------------


def test_evals_resume_with_other_weights_at_the_model_path_is_refused(tmp_path, eval_recipe, capsys):
    from evals.runner import check_run_folder, preflight

    recipe = load_recipe(write_yaml(tmp_path / "r.yaml", eval_recipe))
    check_run_folder(recipe, tmp_path / "out", preflight(recipe))  # a run's description, as a run writes it
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + bytes([1] * 8))  # new weights, same size and header
    message = eval_error(tmp_path, eval_recipe, capsys)
    assert f"{tmp_path}/out holds a run of model {tmp_path}/model with files fingerprint" in message
    assert "(other weights, config or tokenizer): its records would mix two models" in message


def test_evals_records_name_their_model(tmp_path, eval_recipe):
    from evals.runner import plan, preflight

    recipe = load_recipe(write_yaml(tmp_path / "r.yaml", eval_recipe))
    jobs = plan(recipe, load_problems(recipe.benchmarks[0]), preflight(recipe))
    assert {job.settings["model"] for job in jobs} == {preflight(recipe)}  # checked per record on resume


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_tokens": 100, "methods": [{"method": "budget_forcing", "budgets": [50, 100]}]},
         "method 'budget_forcing' asks 100 thinking tokens, but max_tokens 100 ends every completion first: that "
         "budget can never bind (Control would read 100%)"),
        ({"max_tokens": 64, "methods": [{"method": "length_prompt", "budgets": [512]}]}, "asks 512 thinking tokens"),
        ({"max_tokens": 64, "methods": [{"method": "budget_forcing", "num_ignore": [1], "min_thinking": 64}]},
         "asks 64 thinking tokens, but max_tokens 64"),
        ({"sampling": {"temperature": float("nan")}}, "sampling.temperature expects a number, got nan (a finite one)"),
        ({"sampling": {"temperature": float("inf")}}, "sampling.temperature expects a number, got inf"),
        ({"grading": {"timeout_s": float("inf")}}, "grading.timeout_s expects a number of seconds > 0, got inf"),
        ({"chat_template_kwargs": {"enable_thinkng": True}}, "chat_template_kwargs key 'enable_thinkng' is not read"),
    ],
)  # fmt: skip
def test_evals_budgets_that_cannot_bind_and_numbers_that_mean_nothing(tmp_path, eval_recipe, capsys, change, message,
                                                                      monkeypatch):  # fmt: skip
    monkeypatch.setattr("evals.runner.load_tokenizer", importlib.import_module("decode").load_tokenizer)
    eval_recipe.update(change)
    assert message in eval_error(tmp_path, eval_recipe, capsys)
    assert not (tmp_path / "out").exists()


def test_evals_model_folder_and_output_dir_are_checked_before_anything(tmp_path, eval_recipe, capsys):
    broken_model(tmp_path / "model", "truncated")
    assert "model.safetensors: cut short" in eval_error(tmp_path, eval_recipe, capsys)
    assert not (tmp_path / "out").exists()


# --- recipes and data files: keys given twice ------------------------------------------------------


def test_a_key_given_twice_in_a_recipe_is_refused_in_every_stage(tmp_path):
    text = (
        "model: a\noutput_dir: o\nbenchmarks: [aime24]\nmethods: [{method: budget_forcing, budgets: [8]}]\nmodel: b\n"
    )
    (tmp_path / "r.yaml").write_text(text)
    message = "r.yaml: line 5: key 'model' given twice (first on line 1); the last would silently win"
    with pytest.raises(RecipeError, match=__import__("re").escape(message)):
        load_recipe(tmp_path / "r.yaml")
    with pytest.raises(SFTRecipeError, match="line 5: key 'model' given twice"):
        importlib.import_module("sft").load_recipe(tmp_path / "r.yaml")
    with pytest.raises(RLRecipeError, match="line 5: key 'model' given twice"):
        importlib.import_module("rl").load_recipe(tmp_path / "r.yaml")
    (tmp_path / "c.yaml").write_text("output_dir: o\nsources:\n  - {name: a, path: p.jsonl, name: b}\n")
    with pytest.raises(CurateError, match="line 3: key 'name' given twice"):
        load_curate_recipe(tmp_path / "c.yaml")


def test_a_key_given_twice_in_a_data_row_is_refused(tmp_path):
    (tmp_path / "b.jsonl").write_text(
        '{"problem": "q", "answer": "1"}\n{"problem": "q", "answer": "1", "answer": "2"}\n'
    )
    with pytest.raises(BenchmarkError, match="b.jsonl: line 2: not valid JSON \\(duplicate key 'answer'\\)"):
        load_problems(BenchmarkSpec("b", path=str(tmp_path / "b.jsonl"), id=None))
    (tmp_path / "b.json").write_text('[{"problem": "q", "problem": "r", "answer": "1"}]')
    with pytest.raises(BenchmarkError, match="b.json: not valid JSON \\(duplicate key 'problem'\\)"):
        load_problems(BenchmarkSpec("b", path=str(tmp_path / "b.json"), id=None))
    with pytest.raises(CurateError, match="b.jsonl: line 2: not valid JSON \\(duplicate key 'answer'\\)"):
        ingest([SourceSpec("b", path=str(tmp_path / "b.jsonl"), question="problem")])
    with pytest.raises(DataError, match="b.jsonl: line 2: not valid JSON \\(duplicate key 'answer'\\)"):
        load_rows(DataConfig(source=str(tmp_path / "b.jsonl"), question="problem", trace="answer", answer="answer"))


# --- sft and rl: numbers that mean nothing ---------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"training": {"max_steps": -5}}, "training.max_steps expects an integer >= 1 (or -1: train for "
                                          "num_train_epochs), got -5"),
        ({"training": {"max_steps": 0}}, "training.max_steps expects an integer >= 1"),
        ({"training": {"learning_rate": float("inf")}}, "training.learning_rate expects a number > 0"),
        ({"training": {"learning_rate": float("nan")}}, "training.learning_rate expects a number > 0"),
        ({"training": {"adam_beta2": float("nan")}}, "training.adam_beta2 expects a finite number, got nan"),
    ],
)  # fmt: skip
def test_sft_trainer_numbers_that_mean_nothing_are_refused(tmp_path, changes, message):
    with pytest.raises(SFTRecipeError, match=__import__("re").escape(message)):
        sft_minimal(tmp_path, **changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"trainer": {"max_steps": -5}},
         "trainer.max_steps expects an integer >= 1 (or -1: train for num_train_epochs)"),
        ({"reward": {"delta": -3}}, "reward.delta expects a number in [0, 1]"),
        ({"reward": {"delta": 1.5}}, "reward.delta expects a number in [0, 1]"),
        ({"reward": {"alpha": float("nan")}}, "reward.alpha expects a number, got nan (a finite one)"),
        ({"trainer": {"learning_rate": float("nan")}}, "trainer.learning_rate expects a finite number, got nan"),
        ({"trainer": {"temperature": float("inf")}}, "trainer.temperature expects a finite number, got inf"),
    ],
)  # fmt: skip
def test_rl_numbers_that_mean_nothing_are_refused(tmp_path, changes, message):
    with pytest.raises(RLRecipeError, match=__import__("re").escape(message)):
        rl_minimal(tmp_path, **changes)


def test_rl_command_line_max_steps_is_checked(tmp_path):
    rl = importlib.import_module("rl")
    write_jsonl(tmp_path / "d.jsonl", [{"problem": "q", "answer": "1"}])
    path = write_yaml(tmp_path / "r.yaml", {"model": "m", "output_dir": str(tmp_path / "o"),
                                            "data": [{"name": "d", "path": str(tmp_path / "d.jsonl")}]})  # fmt: skip
    with pytest.raises(RLRecipeError, match="trainer.max_steps expects an integer >= 1"):
        rl.load_recipe(path, {"max_steps": -5})


# --- the Python API names its arguments ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"prompts": "What is 2+2?"}, TypeError, "prompts expects a list of prompts, got a single string; wrap it"),
        ({"prompts": [{"role": "user", "content": "hi"}]}, TypeError, "prompts is one chat (a list of messages)"),
        ({"prompts": ["a", 5]}, TypeError, "prompts[1] expects a string or a non-empty list of chat messages, got 5"),
        ({"prompts": [[{"role": "user"}]]}, TypeError, "prompts[0] message 0 expects text 'role' and 'content'"),
        ({"sampling": {"temperature": 0.7}}, TypeError, "sampling expects a decode.Sampling or None (e.g. Sampling("),
        ({"seed": "0"}, TypeError, "seed expects an integer or None, got '0'"),
        ({"budget": [None, None]}, TypeError, "budget[0] expects a Budget (Budget() for none), got None"),
        ({"budget": {"max_thinking_tokens": 8}}, TypeError, "budget expects a Budget or a list of Budgets"),
        ({"batch_size": 1.5}, TypeError, "batch_size expects an integer >= 1, got 1.5"),
        ({"batch_size": 0}, ValueError, "batch_size expects an integer >= 1, got 0"),
        ({"max_new_tokens": "64"}, TypeError, "max_new_tokens expects an integer >= 1 or None, got '64'"),
        ({"format": 1}, TypeError, "format expects 's1', 'think', a path or a ThinkingFormat, got 1"),
        ({"on_batch": "save"}, TypeError, "on_batch expects a function"),
        ({"chat_template_kwargs": "x"}, TypeError, "chat_template_kwargs expects a dict or None, got 'x'"),
        ({"max_new_tokens": 32, "budget": "max"}, TypeError, "budget expects a Budget or a list of Budgets"),
    ],
)  # fmt: skip
def test_generate_names_the_argument_that_is_wrong(tmp_path, kwargs, error, message):
    from decode import generate

    kwargs = {"prompts": ["2+2?", "3+3?"], **kwargs}
    prompts = kwargs.pop("prompts")
    with pytest.raises(error, match=__import__("re").escape("generate(): " + message)):
        generate(str(tmp_path / "never-read"), None, prompts, **kwargs)


def test_generate_refuses_a_budget_that_cannot_bind(tmp_path):
    from decode import Budget, generate

    with pytest.raises(ValueError, match=r"budget\[1\].max_thinking_tokens 64 cannot bind: max_new_tokens 64"):
        generate("m", None, ["a", "b"], budget=[Budget(), Budget(max_thinking_tokens=64)], max_new_tokens=64)


def test_entry_points_name_the_argument_that_is_wrong(tmp_path, eval_recipe):
    curate = importlib.import_module("curate")
    with pytest.raises(TypeError, match=r"evals.run\(\): recipe expects an EvalRecipe .*got str"):
        run("recipes/eval/default.yaml")
    with pytest.raises(TypeError, match=r"evals.run\(\): recipe expects an EvalRecipe .*got dict"):
        run(eval_recipe)
    recipe = load_recipe(write_yaml(tmp_path / "r.yaml", eval_recipe))
    with pytest.raises(TypeError, match=r"evals.run\(\): progress expects True or False, got str 'no'"):
        run(recipe, progress="no")
    with pytest.raises(TypeError, match=r"load_recipe\(\): path expects the path of a YAML recipe, got dict"):
        load_recipe(eval_recipe)
    with pytest.raises(TypeError, match=r"evals.load_recipe\(\): overrides expects a dict of settings or None"):
        load_recipe(tmp_path / "r.yaml", ["model=x"])
    with pytest.raises(TypeError, match=r"curate.run\(\): recipe expects a CurateRecipe"):
        curate.run("recipes/curate/default.yaml")
    with pytest.raises(TypeError, match=r"rl.train\(\): recipe expects an LCPORecipe"):
        importlib.import_module("rl").train({"model": "m"})


# --- curate: budgets that cannot bind, model files, the model by what it is -------------------------


def test_curate_budget_that_cannot_bind_and_damaged_model_are_refused_before_any_stage(tmp_path, curate_recipe,
                                                                                       capsys):  # fmt: skip
    curate_recipe["stages"][0]["difficulty"]["models"][0].update(format="s1", max_thinking_tokens=4096, max_tokens=4096)
    message = "model 'ref': max_thinking_tokens 4096 cannot bind: max_tokens 4096 ends every completion first"
    assert message in curate_error(tmp_path, curate_recipe)
    curate_recipe["stages"][0]["difficulty"]["models"][0].update(max_thinking_tokens=None)
    broken_model(tmp_path / "model", "config")
    path = write_yaml(tmp_path / "curate.yaml", curate_recipe)
    assert curate_main([str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: stage 'difficulty': model 'ref': {tmp_path}/model/config.json: not valid JSON" in err
    assert not (tmp_path / "out").exists()


def test_curate_misspelt_chat_template_kwargs_are_refused_before_any_stage(tmp_path, curate_recipe, capsys):
    curate_recipe["stages"][0]["difficulty"]["models"][0]["chat_template_kwargs"] = {"enable_thinkng": False}
    path = write_yaml(tmp_path / "curate.yaml", curate_recipe)
    assert curate_main([str(path)]) == 2
    message = "model 'ref': chat_template_kwargs key 'enable_thinkng' is not read by the tokenizer's chat template"
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_curate_cache_keys_name_the_model_by_its_files(tmp_path):
    from curate.generation import ModelSpec

    model = model_folder(tmp_path / "model")
    before = ModelSpec(name="m", model=str(model)).cache_settings()
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + bytes([1] * 8))  # other weights at the same path
    assert ModelSpec(name="m", model=str(model)).cache_settings()["model_fingerprint"] != before["model_fingerprint"]


@pytest.mark.parametrize("fmt", ["s1", None])
def test_a_role_the_template_drops_is_refused_with_or_without_a_thinking_format(tokenizers, fmt):
    """Qwen2.5's template writes only the roles it names: a `human` turn would vanish from the prompt."""
    from decode import generate
    from tests.tiny_model import build_tiny_model

    chat = [{"role": "system", "content": "Be brief."}, {"role": "human", "content": "What is 2+2?"}]
    with pytest.raises(ValueError, match="message 1 has role 'human', which the chat template drops"):
        generate(build_tiny_model(), tokenizers["s1"], [chat], format=fmt, max_new_tokens=4)
