"""Cost of budget forcing against plain generation, the step-by-step reference and an s1-style
re-prompt loop, on the tiny test model, in one run.

Every method generates the same tokens for the same prompts (checked), so only the cost differs:
- plain:     `model.generate` with exactly N new tokens (min = max = N), no forcing;
- forced:    budget forcing inside one `generate` call (this project's transformers adapter);
- reprompt:  s1's harness on token ids: generate until an end of thinking, append the wait tokens,
             call `generate` again on the longer prompt (re-prefill), then generate the answer;
- reference: the definitional loop, recomputing the whole sequence at every step (no cache).

The model is biased so that it tries to end its thinking at every step; `num_ignore=W` turns the
first W attempts into waits, then thinking ends, and the answer runs to N tokens in all. The wait is
s1's "Wait" (one token) and, to show the other side, an 8-token sentence. Each run starts either
right after the question or after `--contexts` tokens of earlier thinking (where s1's waits come,
and what every re-prompt re-reads). Greedy decoding. Medians over repeats; ratios against plain.

    python bench/bench_decode.py [--repeats 7] [--tokens 160] [--contexts 0 2048] [--json bench/results/decode.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from decode import Budget, BudgetForcing, get_format, model_next_logits, prompt_ids, reference_generate  # noqa: E402
from tests.tiny_model import QWEN_EOS, build_tiny_model  # noqa: E402

IM_START = 151644
LONG_WAIT = "Wait, let me check that again."  # 8 tokens
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


def left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def plain(model, rows, n_tokens, pad):
    ids, mask = left_pad(rows, pad)
    # The biased model never emits end-of-sequence, so every method runs to the same length.
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=n_tokens,
        pad_token_id=pad,
        eos_token_id=QWEN_EOS,
        temperature=None,
        top_p=None,
        top_k=None,
    )
    return [r.tolist() for r in out[:, ids.shape[1] :]]


def forced(model, tokenizer, fmt, rows, budget, pad):
    forcing = BudgetForcing(tokenizer, fmt, [budget] * len(rows))
    ids, mask = left_pad(rows, pad)
    model.generate(input_ids=ids, attention_mask=mask, **forcing.generate_kwargs())
    return [r.completion_ids for r in forcing.results()]


def reprompt(model, tokens, rows, budget, pad):
    """s1's loop, on token ids: one generate call per round, each re-prefilling the grown prompt."""
    stops = sorted(tokens.stops_thinking)
    done = [[] for _ in rows]
    for _ in range(budget.num_ignore):
        ids, mask = left_pad([r + d for r, d in zip(rows, done, strict=True)], pad)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=64,
            eos_token_id=stops,
            pad_token_id=pad,
            temperature=None,
            top_p=None,
            top_k=None,
        )
        for i, new in enumerate(out[:, ids.shape[1] :].tolist()):
            cut = next(j for j, t in enumerate(new) if t in stops)  # the end attempt, dropped
            done[i] += new[:cut] + list(tokens.wait)
    # Thinking ends (the model's own end token), then the answer runs to its budget.
    ids, mask = left_pad([r + d for r, d in zip(rows, done, strict=True)], pad)
    n = budget.max_answer_tokens + 1
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=n,
        pad_token_id=pad,
        eos_token_id=QWEN_EOS,
        temperature=None,
        top_p=None,
        top_k=None,
    )
    return [d + new for d, new in zip(done, out[:, ids.shape[1] :].tolist(), strict=True)]


def reference(model, tokens, rows, budget, cap):
    next_logits = model_next_logits(model)
    return [reference_generate(next_logits, r, tokens, budget, cap).completion_ids for r in rows]


def interleaved(methods: dict, repeats: int) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Seconds per repeat and the last output of each method, run in rotation so that drifts in
    machine load fall on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    outputs: dict[str, object] = {}
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - start)
    return times, outputs


def paired_ratio(times: list[float], base: list[float]) -> float:
    """Median over repeats of (method / plain) timed side by side: steadier than a ratio of medians."""
    return statistics.median(t / b for t, b in zip(times, base, strict=True))


def thinking_so_far(tokenizer, n: int) -> list[int]:
    """n tokens of earlier reasoning: in s1, waits come after thousands of thinking tokens, and each
    re-prompt re-reads all of them."""
    text = " ".join(QUESTIONS) + " Let me work through each of these carefully, checking every step. "
    ids = tokenizer(text)["input_ids"]
    return (ids * (n // len(ids) + 1))[:n]


def measure(model, tokenizer, wait, waits, batch, context, n_tokens, repeats, ref_repeats):
    fmt = get_format("s1").with_wait(wait)
    tokens = fmt.tokens(tokenizer)
    pad = tokenizer.pad_token_id
    earlier = thinking_so_far(tokenizer, context)
    rows = [prompt_ids(tokenizer, [{"role": "user", "content": q}], fmt) + earlier for q in QUESTIONS[:batch]]
    budget = Budget(num_ignore=waits, max_answer_tokens=n_tokens - waits * len(tokens.wait) - 1)
    times, outputs = interleaved(
        {
            "plain": lambda: plain(model, rows, n_tokens, pad),
            "forced": lambda: forced(model, tokenizer, fmt, rows, budget, pad),
            "reprompt": lambda: reprompt(model, tokens, rows, budget, pad),
        },
        repeats,
    )
    ref_times, ref_outputs = interleaved(
        {
            "plain": lambda: plain(model, rows, n_tokens, pad),
            "reference": lambda: reference(model, tokens, rows, budget, n_tokens),
        },
        ref_repeats,
    )
    assert outputs["forced"] == outputs["reprompt"] == ref_outputs["reference"], "methods disagree"
    assert all(len(o) == n_tokens for o in outputs["forced"] + outputs["plain"])
    return dict(
        batch=batch,
        context=context,
        wait_tokens=len(tokens.wait),
        waits=waits,
        tokens=n_tokens,
        plain_s=statistics.median(times["plain"]),
        forced_ratio=paired_ratio(times["forced"], times["plain"]),
        reprompt_ratio=paired_ratio(times["reprompt"], times["plain"]),
        reference_ratio=paired_ratio(ref_times["reference"], ref_times["plain"]),
    )


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=160, help="generated tokens per sequence")
    parser.add_argument("--waits", type=int, nargs="+", default=[0, 2, 8, 32])
    parser.add_argument("--long-waits", type=int, nargs="*", default=[8], help="waits with the 8-token string")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--contexts", type=int, nargs="+", default=[0, 2048], help="tokens of earlier thinking before the measured run"
    )
    parser.add_argument("--reference-repeats", type=int, default=1, help="the reference is slow")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.manual_seed(0)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ROOT.parent / "shared" / "tokenizers" / "qwen2.5")
    model = build_tiny_model({IM_START: 30.0}, seed=0)  # always tries to end thinking
    figures = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"{args.tokens} generated tokens per sequence; times are medians, ratios medians of paired ratios to plain")
    print(
        f"{'batch':>5} {'context':>7} {'wait':>6} {'waits':>5} | {'plain s':>8} {'forced':>7} {'reprompt':>8} "
        f"{'reference':>9}"
    )
    configs = [("Wait", w) for w in args.waits] + [(LONG_WAIT, w) for w in args.long_waits]
    for context in args.contexts:
        for batch in args.batches:
            for wait, waits in configs:
                row = measure(
                    model, tokenizer, wait, waits, batch, context, args.tokens, args.repeats, args.reference_repeats
                )
                figures.append(row)
                print(
                    f"{batch:>5} {context:>7} {row['wait_tokens']:>4}tk {waits:>5} | {row['plain_s']:>8.3f} "
                    f"{row['forced_ratio']:>6.3f}x {row['reprompt_ratio']:>7.3f}x {row['reference_ratio']:>8.2f}x",
                    flush=True,
                )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
