"""`python -m decode`: inputs that used to be accepted silently or end in a traceback are refused by
name (file, row, setting), before the model loads wherever the check does not need it."""

import dataclasses
import json
import re

import pytest
from transformers import AutoModelForCausalLM

import decode.cli as cli_module
from decode import Budget, PromptError, Sampling, generate, load_tokenizer
from decode.cli import _fingerprint, _sampling, build_parser, main
from decode.prepare.dtype import resolve_dtype
from tests.conftest import tokenizer_without_template


def run_cli(model_dir, prompts, out, *extra):
    return main(["--model", str(model_dir), "--input", str(prompts), "--output", str(out), *extra])


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if the model is loaded: the error must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was refused")

    monkeypatch.setattr(cli_module, "load_model", refuse)


@pytest.mark.parametrize(
    "lines, args, message",
    [
        (
            [b'{"prompt": "ok"}', b'{"prompt": "caf\xe9"}'],
            [],
            r"prompts.jsonl:2: not valid UTF-8 \(byte 0xe9 at column 16\)",
        ),
        (
            [b'{"prompt": "x", "max_tinking_tokens": 8}'],
            [],
            r"row 1: unknown budget key 'max_tinking_tokens' \(did you mean 'max_thinking_tokens'\?\); "
            r"per-row budget keys: max_thinking_tokens, min_thinking_tokens, num_ignore, max_answer_tokens",
        ),
        (
            [b'{"prompt": "x", "min_thinking": 8}'],
            [],
            r"unknown budget key 'min_thinking' \(did you mean 'min_thinking",
        ),
        ([b'{"prompt": "x"}'], ["--max-answer", "0"], r"--max-answer 0 leaves every answer empty"),
        ([b'{"prompt": "x"}', b'{"prompt": "y", "max_answer_tokens": 0}'], [], r"row 2: max_answer_tokens is 0"),
        (
            [b'{"prompt": "x", "max_thinking_tokens": "8"}'],
            [],
            r"row 1: max_thinking_tokens must be an integer: expected a whole number of tokens or None",
        ),
        (
            [b'{"prompt": "x", "min_thinking_tokens": 100, "max_thinking_tokens": 8}'],
            [],
            r"row 1: min_thinking_tokens \(100\) is above",
        ),
    ],
)
def test_bad_rows_are_refused_by_name_before_the_model_loads(
    s1_model_dir, tmp_path, capsys, no_model_load, lines, args, message
):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(b"".join(line + b"\n" for line in lines))
    assert run_cli(s1_model_dir, prompts, tmp_path / "out.jsonl", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.jsonl"]


def test_other_row_fields_still_pass_through(s1_model_dir, tmp_path):
    # Ids, gold answers and the fields of an earlier output are not budget keys: they are copied.
    prompts = tmp_path / "prompts.jsonl"
    row = {"prompt": "x", "id": 7, "answer": "42", "thinking_tokens": 3, "solution": "s"}
    prompts.write_text(json.dumps(row) + "\n")
    out = tmp_path / "out.jsonl"
    assert run_cli(s1_model_dir, prompts, out, "--max-thinking", "3", "--max-answer", "2") == 0
    assert json.loads(out.read_text())["id"] == 7


def test_chat_messages_need_a_chat_template_and_are_refused_before_the_model_loads(
    s1_model_dir, tmp_path, capsys, no_model_load
):
    plain = tokenizer_without_template(tmp_path / "no-template")
    assert load_tokenizer(str(plain)).chat_template is None
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "plain text"}, {"prompt": [{"role": "user", "content": "hi"}]}]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run_cli(s1_model_dir, prompts, tmp_path / "out.jsonl", "--tokenizer", str(plain)) == 2
    err = capsys.readouterr().err
    assert "prompts.jsonl: row 2: 'prompt' is a list of chat messages, but tokenizer" in err
    assert "has no chat template" in err and err.count("\n") == 1
    # The Python API (and so the evaluation) says the same, naming the prompt.
    model = AutoModelForCausalLM.from_pretrained(s1_model_dir)
    with pytest.raises(PromptError, match="prompt 1: is a list of chat messages"):
        generate(model, load_tokenizer(str(plain)), [r["prompt"] for r in rows])


def test_a_prompt_longer_than_the_context_is_refused_before_the_model_loads(
    s1_model_dir, tmp_path, capsys, monkeypatch, no_model_load
):
    # The tiny model has 4,096 positions. Row 2 fits alone but not with a 200-token window; the last never fits.
    rows = [{"prompt": "short"}, {"prompt": "seven " * 4000}, {"prompt": "seven " * 50_000}]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))

    assert run_cli(s1_model_dir, prompts, tmp_path / "out.jsonl", "--max-new-tokens", "200") == 2
    err = capsys.readouterr().err
    message = r"prompts.jsonl: row 2: 'prompt' has (\d+) tokens, plus up to 200 generated tokens: over the model's"
    tokens = int(re.search(message, err).group(1))
    assert 3896 < tokens < 4096 and "context of 4096 tokens" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.jsonl"]
    # With no window asked for (an open budget), a prompt must still leave room for one token.
    prompts.write_text("".join(json.dumps(r) + "\n" for r in (rows[0], rows[2])))
    assert run_cli(s1_model_dir, prompts, tmp_path / "out.jsonl") == 2
    assert re.search(r"row 2: 'prompt' has \d+ tokens, leaves no room for a generated token", capsys.readouterr().err)

    # The Python API (and so the evaluation) refuses it too, naming the prompt, before generating anything.
    def refuse(*args, **kwargs):
        raise AssertionError("generation started before the long prompt was refused")

    monkeypatch.setattr("transformers.GenerationMixin.generate", refuse)
    model = AutoModelForCausalLM.from_pretrained(s1_model_dir)
    with pytest.raises(PromptError, match="prompt 1: has"):
        generate(model, load_tokenizer(str(s1_model_dir)), [r["prompt"] for r in rows], max_new_tokens=200)


def test_settings_of_the_wrong_type_say_what_was_expected():
    with pytest.raises(
        ValueError, match=r"temperature must be a number: expected a number >= 0 \(0: greedy\), got 'hot'"
    ):
        Sampling(temperature="hot")
    with pytest.raises(ValueError, match=r"top_p must be a number: expected a number in \(0, 1\], got '0.9'"):
        Sampling(temperature=1.0, top_p="0.9")
    with pytest.raises(ValueError, match=r"top_k must be an integer: expected a whole number >= 0"):
        Sampling(top_k=2.5)
    with pytest.raises(ValueError, match=r"min_p must be a number"):
        Sampling(min_p="low")
    with pytest.raises(ValueError, match=r"num_ignore must be an integer: expected a whole number of tokens, got '2'"):
        Budget(num_ignore="2")


ROWS = [{"id": i, "prompt": f"Count {i} apples."} for i in range(10)]
SAMPLED = ["--temperature", "1.0", "--seed", "3", "--max-thinking", "8", "--max-answer", "4", "--batch-size", "4"]


@pytest.mark.parametrize("saved", [3, 4, 6])
def test_a_sampled_resume_equals_the_uninterrupted_run_wherever_the_partial_ends(s1_model_dir, tmp_path, saved):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    full = tmp_path / "full.jsonl"
    assert run_cli(s1_model_dir, prompts, full, *SAMPLED) == 0
    expected = full.read_text().splitlines()
    assert len({json.dumps(json.loads(line)["completion_ids"]) for line in expected}) > 5  # it does sample

    # A run killed after `saved` rows (mid-batch for 3 and 6) leaves them in OUTPUT.partial.
    out = tmp_path / "out.jsonl"
    argv = ["--model", str(s1_model_dir), "--input", str(prompts), "--output", str(out), *SAMPLED]
    args = build_parser().parse_args(argv)
    # What the run resolves `auto` dtype and its sampling to, as the command line records them.
    resolved = {"dtype": resolve_dtype(s1_model_dir), "sampling": dataclasses.asdict(_sampling(args))}
    header = json.dumps({"fingerprint": _fingerprint(args, resolved)})
    kept = [json.dumps({"row": i, "output": json.loads(line)}) for i, line in enumerate(expected[:saved])]
    (tmp_path / "out.jsonl.partial").write_text("\n".join([header, *kept]) + "\n")
    assert main(argv) == 0
    assert out.read_text().splitlines() == expected
