"""Cost of budget forcing in vLLM against plain generation, vLLM's built-in maximum thinking budget
and the re-prompt loop, on the tiny test model, in one run.

Every method generates the same number of tokens for the same prompts (checked), so only the cost
differs. Two engines, one per model:

- a model that never ends its thinking by itself (no bias), for the maximum: thinking is cut at T
  tokens and the answer runs on to N tokens in all:
    plain      N tokens, no forcing (the baseline);
    builtin    vLLM's `thinking_token_budget=T` (its reasoning config forces the same answer prefix);
    processor  this project's logits processor, `max_thinking_tokens=T`;
- a model that tries to end its thinking at every step, for the minimum: `num_ignore=W` turns the
  first W attempts into "Wait", then thinking ends and the answer runs to N tokens:
    plain      N tokens, no forcing;
    processor  the logits processor;
    reprompt   the re-prompt loop on token ids (one `generate` call per wait, prefix caching on).

"context" is the number of tokens of earlier thinking already in the prompt (s1's waits come after
thousands of thinking tokens, and each re-prompt must find them in the prefix cache). Greedy
decoding; times are medians over repeats, ratios medians of paired ratios to plain in the same repeat.

    python bench/bench_vllm.py [--repeats 5] [--tokens 160] [--json bench/results/vllm.json]
    python bench/bench_vllm.py --apply-only    # the processor's own cost per step, V1 and V2, batch 1-256
    python bench/bench_vllm.py --no-maximum --repeats 3   # whole steps, plain vs forced, batch 1-256
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

IM_START = 151644
IM_END = 151645  # Qwen2.5's end-of-sequence, which a forced request turns into the closing string in thinking
QUESTIONS = [
    "What is 17 * 23?",
    "How many positive divisors does 360 have?",
    "Solve for x: 3x + 7 = 22.",
    "What is the remainder when 2^20 is divided by 13?",
    "A rectangle has perimeter 30 and area 56. What are its sides?",
    "What is the sum of the first 50 odd numbers?",
    "How many ways can 5 books be arranged on a shelf?",
    "Convert 255 to base 2.",
]


def interleaved(methods: dict, repeats: int) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Seconds per repeat and the last output of each method, in rotation so load drifts fall alike;
    each method runs once untimed first (prefix cache, first-call costs)."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    outputs: dict[str, object] = {name: fn() for name, fn in methods.items()}
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - start)
    return times, outputs


def paired_ratio(times: list[float], base: list[float]) -> float:
    return statistics.median(t / b for t, b in zip(times, base, strict=True))


def find(seq: list[int], sub: list[int]) -> int:
    return next((i for i in range(len(seq) - len(sub) + 1) if seq[i : i + len(sub)] == sub), -1)


def earlier_thinking(tokenizer, n: int) -> list[int]:
    text = " ".join(QUESTIONS) + " Let me work through each of these carefully, checking every step. "
    ids = tokenizer(text)["input_ids"]
    return (ids * (n // len(ids) + 1))[:n]


def apply_cost(batch: int, runner: str, steps: int = 200, competitive: bool = False) -> tuple[float, float, float]:
    """Median CPU milliseconds of one `apply` call of the processor (Model Runner `runner`, "V1" or "V2")
    on a batch of greedy rows in thinking, of the argmax vLLM's sampler takes of the same logits
    (the same-run baseline: the work a plain greedy step does there), and of one full `first_argmax`
    of them (the pass the processor makes where it needs the argmax itself). No engine: the processor alone,
    on logits of the real vocabulary size, driven as the runner drives it. CPU time of one thread, not
    wall time: on a shared machine a sub-millisecond call's wall time measures the scheduler.
    `competitive`: the end-of-sequence token's logit is just below each row's maximum at every step
    (where a CPU processor must take the full argmax of every row)."""
    from types import SimpleNamespace

    import numpy as np
    import torch
    from vllm import SamplingParams

    from decode import Budget, get_format
    from decode.rules.request_args import to_request_args
    from decode.rules.sampling import first_argmax
    from decode.vllm import VLLMBudgetForcingProcessor

    tokenizer = str(ROOT.parent / "shared" / "tokenizers" / "qwen2.5")
    config = SimpleNamespace(
        speculative_config=None, model_config=SimpleNamespace(model=tokenizer, tokenizer=tokenizer)
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thread_time counts this thread only
    budget = Budget(max_thinking_tokens=10**6)
    params = SamplingParams(temperature=0, max_tokens=10**7, extra_args=to_request_args(get_format("s1"), budget))
    outputs: list[list[int]] = [[] for _ in range(batch)]
    if runner == "V1":
        from vllm.v1.sample.logits_processor import BatchUpdate

        processor = VLLMBudgetForcingProcessor(config, torch.device("cpu"), False)
        processor.update_state(BatchUpdate(batch, [], [(i, params, [1], outputs[i]) for i in range(batch)], []))

        def call(scores):
            return processor.apply(scores)

    else:
        import vllm.v1.worker.gpu.buffer_utils as buffer_utils
        from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsContext, LogitsProcRequestState
        from vllm.v1.worker.gpu.states import RequestState

        buffer_utils.is_uva_available = lambda: False  # no pinned memory on a CPU: vLLM's own fallback
        states = RequestState(batch, 64, 64, 0, 151936, torch.device("cpu"))
        processor = VLLMBudgetForcingProcessor(config, LogitsProcRequestState.from_request_state(states))
        for i in range(batch):
            states.add_request(f"r{i}", 1, [1], 0, 10**7)
            processor.add_request(states.req_id_to_index[f"r{i}"], params)
        states.prompt_len.copy_to_uva()
        states.prefill_len.copy_to_uva()
        slots = np.array([states.req_id_to_index[f"r{i}"] for i in range(batch)], dtype=np.int32)
        mapping = torch.from_numpy(slots)
        seq_lens = np.full(batch, 2, dtype=np.int32)

        def call(scores):
            seq_lens[:] += 1
            ctx = LogitsContext(
                mapping, mapping, slots, torch.zeros(batch), torch.zeros(batch), torch.zeros(batch), seq_lens
            )
            return processor.apply(scores, ctx)

    logits = torch.randn(batch, 151936, generator=torch.Generator().manual_seed(0))
    times, baseline, passes = [], [], []
    for step in range(steps + 100):
        scores = logits.roll(step, dims=1)
        if competitive:
            scores[:, IM_END] = scores.amax(dim=1) - 1e-3
        start = time.thread_time()
        first_argmax(scores)
        before = time.thread_time()
        scores = call(scores)
        middle = time.thread_time()
        chosen = scores.argmax(dim=-1).tolist()  # vLLM's sampler: the baseline
        if step >= 100:  # the first calls load the tokenizer and warm the allocator
            passes.append(before - start)
            times.append(middle - before)
            baseline.append(time.thread_time() - middle)
        for row, token in enumerate(chosen):
            outputs[row].append(token)
    torch.set_num_threads(threads)
    return statistics.median(times) * 1e3, statistics.median(baseline) * 1e3, statistics.median(passes) * 1e3


def build_engine(folder: Path, fmt, max_len: int):
    from vllm import LLM
    from vllm.config import ReasoningConfig

    from decode.vllm import VLLMBudgetForcingProcessor

    # The built-in budget forces the same answer prefix as this project's processor.
    reasoning = ReasoningConfig(reasoning_start_str=fmt.open, reasoning_end_str=fmt.force)
    return LLM(
        model=str(folder),
        dtype="float32",
        max_model_len=max_len,
        enforce_eager=True,
        gpu_memory_utilization=0.3,
        enable_prefix_caching=True,
        seed=0,
        logits_processors=[VLLMBudgetForcingProcessor],
        reasoning_config=reasoning,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=160, help="generated tokens per sequence")
    parser.add_argument("--max-thinking", type=int, default=64, help="the maximum in the maximum-only comparison")
    parser.add_argument("--waits", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--apply-batches", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument(
        "--step-batches", type=int, nargs="*", default=[1, 8, 64, 256], help="whole steps: plain vs forced"
    )
    parser.add_argument("--step-tokens", type=int, default=24, help="generated tokens per sequence, whole steps")
    parser.add_argument("--no-maximum", action="store_true", help="stop after the whole-step comparison")
    parser.add_argument("--contexts", type=int, nargs="+", default=[0, 2048])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--apply-only", action="store_true", help="only the processor's own cost per step")
    parser.add_argument("--no-waits", action="store_true", help="skip the waits comparison (second engine)")
    args = parser.parse_args()

    import torch
    import vllm
    from transformers import AutoTokenizer
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from decode import Budget, get_format, prompt_ids
    from decode.rules.request_args import to_request_args
    from decode.vllm import vllm_generate
    from tests.tiny_model import save_tiny_model

    tokenizer_dir = ROOT.parent / "shared" / "tokenizers" / "qwen2.5"
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    fmt = get_format("s1")
    tokens = fmt.tokens(tokenizer)
    n = args.tokens
    max_len = max(args.contexts) + n + 256
    print(f"vllm {vllm.__version__}, torch {torch.__version__}, {os.cpu_count()} cpus, {platform.machine()}")
    print(f"{n} generated tokens per sequence; medians over {args.repeats} repeats; ratios to plain, paired")
    figures: list[dict] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-vllm-"))

    def rows_for(batch: int, context: int) -> list[list[int]]:
        earlier = earlier_thinking(tokenizer, context)
        return [prompt_ids(tokenizer, [{"role": "user", "content": q}], fmt) + earlier for q in QUESTIONS[:batch]]

    def run(llm, rows, params) -> list[list[int]]:
        outputs = llm.generate([TokensPrompt(prompt_token_ids=r) for r in rows], params, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outputs]

    plain = SamplingParams(temperature=0, max_tokens=n, ignore_eos=True, detokenize=False)

    print("\nthe processor alone (greedy rows in thinking, 151,936-token vocabulary, one thread):")
    print(f"{'runner':>6} {'batch':>5} | {'apply ms':>8} {'argmax ms':>9} {'apply/argmax':>12} {'full pass ms':>12}")
    from decode.vllm.admission import has_v1_runner

    runners = [("V1", False), ("V1", True), ("V2", False)] if has_v1_runner() else [("V2", False)]
    if not has_v1_runner():
        print("V1: skipped, this vLLM has no Model Runner V1 (removed in 0.34)")
    for runner, competitive in runners:
        for batch in args.apply_batches:
            ms, base, full = apply_cost(batch, runner, competitive=competitive)
            name = runner + ("*" if competitive else "")
            figures.append(dict(kind="apply", runner=name, batch=batch, apply_ms=ms, argmax_ms=base, pass_ms=full))
            print(f"{name:>6} {batch:>5} | {ms:>8.3f} {base:>9.3f} {ms / base:>11.3f}x {full:>12.3f}", flush=True)
    print("(V1*: the end-of-sequence token's logit just below every row's maximum at every step)")
    if args.apply_only:
        write(args.json, figures)
        return

    # -- the maximum: built-in thinking_token_budget against the processor -------------------------
    folder = save_tiny_model(workdir / "free", tokenizer_dir, {}, seed=0)
    llm = build_engine(folder, fmt, max_len)
    if args.step_batches:
        # -- whole steps at GPU batch sizes: greedy rows thinking freely, plain against forced --------
        m = args.step_tokens
        free = Budget(max_thinking_tokens=10**6)
        forced_params = SamplingParams(
            temperature=0, max_tokens=m, ignore_eos=True, detokenize=False, extra_args=to_request_args(fmt, free)
        )
        plain_params = SamplingParams(temperature=0, max_tokens=m, ignore_eos=True, detokenize=False)
        print(f"\nwhole steps ({m} tokens a sequence, greedy, thinking throughout):")
        print(f"{'batch':>5} | {'plain ms/step':>13} {'forced ms/step':>14} {'forced/plain':>12}")
        for batch in args.step_batches:
            rows = [
                prompt_ids(tokenizer, [{"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} ({i})"}], fmt)
                for i in range(batch)
            ]
            times, out = interleaved(
                {
                    "plain": lambda rows=rows: run(llm, rows, plain_params),
                    "forced": lambda rows=rows: run(llm, rows, forced_params),
                },
                args.repeats,
            )
            assert out["plain"] == out["forced"], "a freely thinking forced row must follow the model"
            row = dict(
                kind="step",
                batch=batch,
                tokens=m,
                plain_ms_per_step=statistics.median(times["plain"]) / m * 1e3,
                forced_ms_per_step=statistics.median(times["forced"]) / m * 1e3,
                forced_ratio=paired_ratio(times["forced"], times["plain"]),
            )
            figures.append(row)
            print(
                f"{batch:>5} | {row['plain_ms_per_step']:>13.2f} {row['forced_ms_per_step']:>14.2f} "
                f"{row['forced_ratio']:>11.3f}x",
                flush=True,
            )
        if args.no_maximum:
            llm.llm_engine.engine_core.shutdown()
            write(args.json, figures)
            return

    t = args.max_thinking
    builtin = SamplingParams(temperature=0, max_tokens=n, ignore_eos=True, detokenize=False, thinking_token_budget=t)
    budget = Budget(max_thinking_tokens=t, max_answer_tokens=n - t - len(tokens.force))
    ours = SamplingParams(temperature=0, max_tokens=n, detokenize=False, extra_args=to_request_args(fmt, budget))
    print(f"\nmaximum only (T={t}):")
    print(f"{'batch':>5} {'context':>7} | {'plain s':>8} {'builtin':>8} {'processor':>9} {'proc/builtin':>12}")
    for context in args.contexts:
        for batch in args.batches:
            rows = rows_for(batch, context)
            times, out = interleaved(
                {
                    "plain": lambda rows=rows: run(llm, rows, plain),
                    "builtin": lambda rows=rows: run(llm, rows, builtin),
                    "processor": lambda rows=rows: run(llm, rows, ours),
                },
                args.repeats,
            )
            assert all(len(o) == n for name in out for o in out[name]), "methods generated different lengths"
            forced = [o[t : t + len(tokens.force)] for o in out["processor"]]
            assert all(f == [tok for tok, _ in tokens.force] for f in forced), "processor did not force at T"
            same = out["builtin"] == out["processor"]
            force_ids = [tok for tok, _ in tokens.force]
            builtin_at = sorted({find(o, force_ids) for o in out["builtin"]})  # thinking tokens it allowed
            row = dict(
                kind="maximum",
                batch=batch,
                context=context,
                max_thinking=t,
                tokens=n,
                plain_s=statistics.median(times["plain"]),
                builtin_ratio=paired_ratio(times["builtin"], times["plain"]),
                processor_ratio=paired_ratio(times["processor"], times["plain"]),
                processor_vs_builtin=paired_ratio(times["processor"], times["builtin"]),
                same_tokens_as_builtin=same,
                builtin_forced_at=builtin_at,
            )
            figures.append(row)
            print(
                f"{batch:>5} {context:>7} | {row['plain_s']:>8.3f} {row['builtin_ratio']:>7.3f}x "
                f"{row['processor_ratio']:>8.3f}x {row['processor_vs_builtin']:>11.3f}x"
                + ("" if same else f"  (built-in forces after {builtin_at} thinking tokens)"),
                flush=True,
            )
    llm.llm_engine.engine_core.shutdown()

    # -- the minimum: waits through the processor and through the re-prompt loop ---------------------
    if args.no_waits:
        write(args.json, figures)
        return
    folder = save_tiny_model(workdir / "ending", tokenizer_dir, {IM_START: 30.0}, seed=0)
    llm = build_engine(folder, fmt, max_len)
    print("\nwaits (num_ignore=W, 1-token 'Wait'):")
    print(
        f"{'batch':>5} {'context':>7} {'waits':>5} | {'plain s':>8} {'processor':>9} {'reprompt':>8} "
        f"{'reprompt extra ms/wait':>22}"
    )
    for context in args.contexts:
        for batch in args.batches:
            rows = rows_for(batch, context)
            for waits in args.waits:
                budget = Budget(num_ignore=waits, max_answer_tokens=n - waits * len(tokens.wait) - 1)
                kwargs = dict(budgets=[budget] * batch, max_new_tokens=[n] * batch)
                forced = SamplingParams(
                    temperature=0, max_tokens=n, detokenize=False, extra_args=to_request_args(fmt, budget)
                )
                times, out = interleaved(
                    {
                        "plain": lambda rows=rows: run(llm, rows, plain),
                        "processor": lambda rows=rows, p=forced: run(llm, rows, p),
                        "reprompt": lambda rows=rows, kw=kwargs: vllm_generate(
                            llm, rows, tokens, forcing="reprompt", **kw
                        ),
                    },
                    args.repeats,
                )
                assert out["processor"] == [s.completion_ids for s in out["reprompt"]], "methods disagree"
                assert all(len(s.completion_ids) == n and s.waits == waits for s in out["reprompt"])
                pairs = zip(times["reprompt"], times["processor"], strict=True)
                extra_ms = statistics.median((r - p) / waits * 1e3 for r, p in pairs)  # paired, per wait
                row = dict(
                    kind="waits",
                    batch=batch,
                    context=context,
                    waits=waits,
                    tokens=n,
                    plain_s=statistics.median(times["plain"]),
                    processor_ratio=paired_ratio(times["processor"], times["plain"]),
                    reprompt_ratio=paired_ratio(times["reprompt"], times["plain"]),
                    reprompt_extra_ms_per_wait=extra_ms,
                )
                figures.append(row)
                print(
                    f"{batch:>5} {context:>7} {waits:>5} | {row['plain_s']:>8.3f} {row['processor_ratio']:>8.3f}x "
                    f"{row['reprompt_ratio']:>7.3f}x {extra_ms:>22.1f}",
                    flush=True,
                )
    llm.llm_engine.engine_core.shutdown()
    write(args.json, figures)


def write(path: Path | None, figures: list[dict]) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(figures, indent=2))
        os.replace(tmp, path)


if __name__ == "__main__":
    main()
