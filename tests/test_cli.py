"""`python -m decode`: outputs, resume, and a clear error with no output file for every bad input."""

import json
import re
import subprocess
import sys

import pytest

from decode import Budget, generate, load_model, load_tokenizer
from decode.cli import main

ROWS = [
    {"id": "a", "prompt": "What is 3 + 4?"},
    {"id": "b", "prompt": [{"role": "user", "content": "Name a prime above 50."}]},
    {"id": "c", "prompt": "Is 91 prime?", "max_thinking_tokens": 2, "min_thinking_tokens": 0},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def prompts(tmp_path):
    return write_jsonl(tmp_path / "prompts.jsonl", ROWS)


def cli(model_dir, prompts, output, *extra):
    return main(
        [
            "--model",
            str(model_dir),
            "--input",
            str(prompts),
            "--output",
            str(output),
            "--max-answer",
            "6",
            "--batch-size",
            "2",
            *extra,
        ]
    )


def test_cli_writes_one_row_per_prompt_with_the_budget_applied(s1_model_dir, prompts, tmp_path):
    out = tmp_path / "out.jsonl"
    assert cli(s1_model_dir, prompts, out, "--max-thinking", "12", "--min-thinking", "4", "--num-ignore", "1") == 0
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    for row in rows:
        assert {"completion_ids", "thinking", "answer", "thinking_tokens", "waits", "forced_end"} <= row.keys()
    assert 4 <= rows[0]["thinking_tokens"] <= 12
    assert rows[2]["thinking_tokens"] <= 2  # per-row budget overrides the command line
    # Same as the Python API with the same settings.
    model, tok = load_model(str(s1_model_dir)), load_tokenizer(str(s1_model_dir))
    expected = generate(
        model,
        tok,
        [r["prompt"] for r in ROWS],
        batch_size=2,
        budget=[Budget(12, 4, 1, 6), Budget(12, 4, 1, 6), Budget(2, 0, 1, 6)],
    )
    assert [r["completion_ids"] for r in rows] == [e.completion_ids for e in expected]
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("*.tmp"))


def test_cli_sampling_and_think_format_errors(s1_model_dir, prompts, tmp_path):
    out = tmp_path / "out.jsonl"
    assert (
        cli(s1_model_dir, prompts, out, "--temperature", "0.8", "--top-p", "0.9", "--seed", "5", "--max-thinking", "8")
        == 0
    )
    first = read_jsonl(out)
    out.unlink()
    assert (
        cli(s1_model_dir, prompts, out, "--temperature", "0.8", "--top-p", "0.9", "--seed", "5", "--max-thinking", "8")
        == 0
    )
    assert read_jsonl(out) == first  # seeded sampling is reproducible


def test_cli_resumes_an_interrupted_run(s1_model_dir, prompts, tmp_path, monkeypatch):
    full = tmp_path / "full.jsonl"
    assert cli(s1_model_dir, prompts, full, "--max-thinking", "10") == 0

    out = tmp_path / "out.jsonl"
    import decode.cli as cli_module

    real_generate = cli_module.generate

    def crash_after_first_batch(*args, on_batch, **kwargs):
        def save_then_crash(start, results):
            on_batch(start, results)
            raise KeyboardInterrupt

        return real_generate(*args, on_batch=save_then_crash, **kwargs)

    monkeypatch.setattr(cli_module, "generate", crash_after_first_batch)
    with pytest.raises(KeyboardInterrupt):
        cli(s1_model_dir, prompts, out, "--max-thinking", "10")
    assert not out.exists()  # nothing that looks whole
    partial = tmp_path / "out.jsonl.partial"
    assert len(partial.read_text().splitlines()) == 1 + 2  # header + the first batch

    calls = []

    def record(*args, **kwargs):
        calls.append(len(args[2]))
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(cli_module, "generate", record)
    assert cli(s1_model_dir, prompts, out, "--max-thinking", "10") == 0
    assert calls == [1]  # only the prompt that was missing
    assert read_jsonl(out) == read_jsonl(full)
    assert not partial.exists()


@pytest.mark.parametrize(
    "lines, args, message",
    [
        (None, [], "input file .*missing.jsonl does not exist"),
        (['{"prompt": "ok"}', "{oops"], [], r"prompts.jsonl:2: not valid JSON"),
        (['{"text": "no prompt"}'], [], r"prompts.jsonl:1: expected a JSON object with a 'prompt' field"),
        (['{"prompt": 5}'], [], r"prompts.jsonl:1: 'prompt' must be a string or a list"),
        (['{"prompt": [{"role": "user"}]}'], [], r"prompts.jsonl:1: 'prompt' must be a string or a list"),
        ([], [], "has no rows"),
        (['{"prompt": "x"}'], ["--format", "r1"], "unknown thinking format 'r1'"),
        (['{"prompt": "x"}'], ["--format", "think"], "'</think>' must be one token"),
        (['{"prompt": "x"}'], ["--min-thinking", "9", "--max-thinking", "3"], r"min_thinking_tokens \(9\) is above"),
        (['{"prompt": "x"}'], ["--max-thinking", "-1"], "max_thinking_tokens must be >= 0"),
        (['{"prompt": "x"}'], ["--num-ignore", "-2"], "num_ignore must be >= 0"),
        (['{"prompt": "x", "min_thinking_tokens": -4}'], [], r"row 1: min_thinking_tokens must be >= 0"),
        (['{"prompt": "x"}'], ["--temperature", "0.5", "--top-p", "1.5"], "top_p must be in"),
        (['{"prompt": "x"}'], ["--batch-size", "0"], "--batch-size must be >= 1"),
        (['{"prompt": "x"}'], ["--model", "/nonexistent/model"], "model path '/nonexistent/model' does not exist"),
    ],
)
def test_bad_input_gets_a_clear_error_and_no_output(s1_model_dir, tmp_path, capsys, lines, args, message):
    prompts = tmp_path / ("missing.jsonl" if lines is None else "prompts.jsonl")
    if lines is not None:
        prompts.write_text("".join(line + "\n" for line in lines))
    out = tmp_path / "out.jsonl"
    argv = ["--model", str(s1_model_dir), "--input", str(prompts), "--output", str(out), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert re.search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if lines is None else ["prompts.jsonl"])


def test_output_folder_must_exist(s1_model_dir, prompts, tmp_path, capsys):
    assert cli(s1_model_dir, prompts, tmp_path / "nowhere" / "out.jsonl") == 2
    assert "output folder" in capsys.readouterr().err


def test_python_dash_m_entry_point(s1_model_dir, prompts, tmp_path):
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "decode",
            "--model",
            str(s1_model_dir),
            "--input",
            str(prompts),
            "--output",
            str(out),
            "--max-thinking",
            "4",
            "--max-answer",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert [r["thinking_tokens"] <= 4 for r in read_jsonl(out)] == [True, True, True]
    bad = subprocess.run(
        [sys.executable, "-m", "decode", "--model", str(s1_model_dir), "--input", "nope.jsonl", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "error: input file nope.jsonl does not exist" in bad.stderr
