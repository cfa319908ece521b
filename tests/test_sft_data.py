"""SFT data: the loss falls exactly on the assistant turn, and bad input stops before any training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from decode import get_format, prompt_ids
from sft import DataConfig, DataError, RecipeError, assistant_text, build_dataset, load_recipe, recipe_from_dict
from tests.conftest import SHARED

S1K = SHARED / "data/pool/s1k-1.1_head5.parquet"
GEMINI = {"question": "question", "trace": "gemini_thinking_trajectory", "answer": "gemini_attempt"}


def s1k_rows() -> Path:
    if not S1K.is_file():
        pytest.skip(f"real s1K-1.1 rows {S1K} are absent (../shared is not beside the project)")
    return S1K


def loss_text(tokenizer, example: dict) -> str:
    return tokenizer.decode([t for t, m in zip(example["input_ids"], example["completion_mask"], strict=True) if m])


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_s1_loss_tokens_are_exactly_the_assistant_turn(tokenizers):
    import pandas as pd

    tokenizer = tokenizers["s1"]
    dataset, report = build_dataset(tokenizer, DataConfig(source=str(s1k_rows()), **GEMINI, block_size=16384))
    frame = pd.read_parquet(S1K)
    assert report.rows == len(dataset) == 5 and report.overlong == 0
    for i, row in frame.iterrows():
        # s1 stripped the trace and the attempt (these rows' traces end with a newline); every one of these
        # attempts has "Answer:" in its text, so s1 put no prefix before any of them.
        trace, attempt = row.gemini_thinking_trajectory.strip(), s1_tokenization_answer(row.gemini_attempt)
        expected = f"<|im_start|>think\n{trace}\n<|im_start|>answer\n{attempt}"
        assert expected == assistant_text(
            get_format("s1"), row.gemini_thinking_trajectory, row.gemini_attempt, "Answer: "
        )
        example = dataset[int(i)]
        assert loss_text(tokenizer, example) == expected + "<|im_end|>"
        # Everything before the loss is the chat template's prompt, which the decoder uses as is.
        start = example["completion_mask"].index(1)
        assert 0 not in example["completion_mask"][start:]
        messages = [{"role": "user", "content": row.question}]
        opener = len(tokenizer.encode("<|im_start|>think\n"))
        assert example["input_ids"][: start + opener] == prompt_ids(tokenizer, messages, get_format("s1"))
    assert report.loss_tokens == sum(sum(m) for m in dataset["completion_mask"])


def test_think_format_and_s1k_list_traces(tokenizers, tmp_path):
    tokenizer = tokenizers["think"]
    rows = [
        {"question": "Is 7 prime?", "thinking_trajectories": ["Divisors of 7:", "only 1 and 7."], "attempt": "Yes."}
    ]
    config = DataConfig(
        source=str(write_jsonl(tmp_path / "s1k.jsonl", rows)), format="think", system_prompt="Be brief."
    )
    dataset, _ = build_dataset(tokenizer, config)
    assert (
        loss_text(tokenizer, dataset[0])
        == "<think>\nDivisors of 7:\nonly 1 and 7.\n</think>\n\nYes." + tokenizer.eos_token
    )
    prompt = tokenizer.decode(
        [t for t, m in zip(dataset[0]["input_ids"], dataset[0]["completion_mask"], strict=True) if not m]
    )
    assert "Be brief." in prompt and prompt.endswith("Is 7 prime?<|im_end|>\n<|im_start|>assistant\n")


def test_save_to_disk_folder_is_a_source(tokenizers, tmp_path):
    import datasets

    datasets.Dataset.from_parquet(str(s1k_rows())).select(range(2)).save_to_disk(str(tmp_path / "ds"))
    dataset, report = build_dataset(
        tokenizers["s1"], DataConfig(source=str(tmp_path / "ds"), **GEMINI, block_size=16384)
    )
    assert len(dataset) == 2 and report.rows == 2


def test_overlong_error_names_rows_drop_and_truncate_count(tokenizers):
    tokenizer, source = tokenizers["s1"], str(s1k_rows())
    whole, _ = build_dataset(tokenizer, DataConfig(source=source, **GEMINI, block_size=16384))
    lengths = [len(x) for x in whole["input_ids"]]
    with pytest.raises(DataError, match=r"4 of 5 examples are longer than data.block_size=4000: row 0 \(8164 tokens\)"):
        build_dataset(tokenizer, DataConfig(source=source, **GEMINI, block_size=4000))
    dropped, report = build_dataset(tokenizer, DataConfig(source=source, **GEMINI, block_size=4000, overlong="drop"))
    assert len(dropped) == 1 and report.dropped == 4 and report.overlong_rows == [0, 1, 3, 4]
    cut, report = build_dataset(tokenizer, DataConfig(source=source, **GEMINI, block_size=4000, overlong="truncate"))
    assert len(cut) == 5 and report.truncated == 4 and max(len(x) for x in cut["input_ids"]) == 4000
    assert report.tokens_cut == sum(n - 4000 for n in lengths if n > 4000) and "truncated (4" in report.summary()


@pytest.mark.parametrize(
    ("rows", "settings", "message"),
    [
        ([{"q": "a", "t": "b"}], {}, r"no field for data.answer='ans' \(fields: q, t\)"),
        ([{"q": "a", "t": "b", "ans": "c"}, {"q": "a", "t": "  ", "ans": "c"}], {}, r"row 1: field 't' is empty"),
        ([{"q": "a", "t": None, "ans": "c"}], {}, r"row 0: field 't' must be text, got NoneType"),
        ([{"q": "a", "t": "x <|im_start|> y", "ans": "c"}], {}, r"row 0: field 't' contains the format's end"),
        ([{"q": "a " * 300, "t": "b", "ans": "c"}], {"block_size": 200}, r"row 0: the prompt alone is \d+ tokens"),
        ([{"q": "a", "t": "b", "ans": "c"}], {"format": "think"}, r"data.format 'think' does not fit this tokenizer"),
        ([{"q": "a", "t": "b", "ans": "c"}], {"chat_template_kwargs": {"enable_thinkin": True}}, r"not read by the"),
    ],
)
def test_bad_data_is_refused_naming_row_or_setting(tokenizers, tmp_path, rows, settings, message):
    source = str(write_jsonl(tmp_path / "rows.jsonl", rows))
    with pytest.raises(DataError, match=message):
        build_dataset(tokenizers["s1"], DataConfig(source=source, question="q", trace="t", answer="ans", **settings))


def test_missing_source_and_tokenizer_without_template(tokenizers, tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        build_dataset(tokenizers["s1"], DataConfig(source=str(tmp_path / "absent.jsonl")))
    tokenizer = type(tokenizers["s1"]).from_pretrained(tokenizers["s1"].name_or_path)
    tokenizer.chat_template = None
    source = str(write_jsonl(tmp_path / "r.jsonl", [{"question": "a", "thinking_trajectories": "b", "attempt": "c"}]))
    with pytest.raises(DataError, match="no chat template"):
        build_dataset(tokenizer, DataConfig(source=source))


def recipe(**changes) -> dict:
    values = {"model": "m", "output_dir": "out", "data": {"source": "d.jsonl"}, "training": {"max_steps": 1}}
    values.update(changes)
    return values


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (recipe(epochs=3), r"unknown setting 'epochs'"),
        (recipe(data={"source": "d", "trace_field": "t"}), r"unknown setting data.'trace_field'"),
        (recipe(data={"question": "q"}), r"missing required setting 'data.source'"),
        (recipe(data={"source": "d", "overlong": "cut"}), r"data.overlong must be one of"),
        (recipe(data={"source": "d", "block_size": 1}), r"data.block_size must be an integer >= 2"),
        (recipe(packing=True, attn_implementation="paged|sdpa"), r"packing needs an attention implementation"),
        (recipe(training={"max_length": 10}), r"training.max_length is set from the recipe's top level"),
        (recipe(resume="sometimes"), r"resume must be one of"),
        ({"output_dir": "o", "data": {"source": "d"}}, r"missing required setting 'model'"),
    ],
)
def test_bad_recipes_are_refused(values, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(values, "r.yaml")


def test_shipped_recipes_load():
    root = Path(__file__).resolve().parents[1] / "recipes/sft"
    names = sorted(p.name for p in root.glob("*.yaml"))
    assert "cpu.yaml" in names and len(names) >= 4
    for path in root.glob("*.yaml"):
        loaded = load_recipe(path)
        assert loaded.data.block_size >= 256 and loaded.training


def short_s1k_rows(
    path: Path, rows: int = 5, trace_chars: int = 600, answer_chars: int = 200, question_chars: int = 300
) -> Path:
    """The real s1K-1.1 rows with their traces and answers cut short, for tests that train on them."""
    import pandas as pd

    frame = pd.read_parquet(s1k_rows()).head(rows)
    records = [
        {
            "q": r.question[:question_chars],
            "trace": r.gemini_thinking_trajectory[:trace_chars],
            "ans": r.gemini_attempt[:answer_chars],
        }
        for r in frame.itertuples()
    ]
    return write_jsonl(path, records)


@pytest.mark.parametrize("name", ["ddp", "fsdp", "fsdp_2nodes", "deepspeed_zero3", "cpu_fsdp", "cpu_ddp"])
def test_accelerate_configs_are_read_by_accelerate(name):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(Path(__file__).resolve().parents[1] / f"recipes/accelerate/{name}.yaml"))
    assert config.num_processes >= 2 and config.num_machines == (2 if "2nodes" in name else 1)
    if "fsdp" in name:
        assert config.fsdp_config["fsdp_version"] == 2 and config.fsdp_config["fsdp_reshard_after_forward"] is True


def s1_tokenization_answer(answer: str) -> str:
    """s1's rule, from simplescaling/s1@77272c6 data/tokenization.py:26 (then stripped, line 31)."""
    return ("Answer: " + answer if "Answer:" not in answer else answer).strip()


def test_answer_prefix_follows_s1s_rule_on_answer_anywhere_in_the_attempt():
    fmt = get_format("s1")
    attempts = [
        "The sum is 12.",  # no "Answer:": prefixed
        "Answer: 12",  # starts with it: left alone
        "We add the terms.\n\nFinal Answer: The final answer is $12$",  # mid-text: s1 leaves it alone
        "So the Answer: is 12, as shown.",
        "  answer: 12  ",  # lower case is not "Answer:": prefixed
    ]
    for attempt in attempts:
        text = assistant_text(fmt, "trace", attempt, "Answer: ")
        assert text == f"<|im_start|>think\ntrace\n<|im_start|>answer\n{s1_tokenization_answer(attempt)}", attempt
