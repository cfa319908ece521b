"""SFT throughput: padded batches (as s1 trained) against padding-free packing, in one run.

The lengths are those of real reasoning traces: the five s1K-1.1 rows (Gemini traces, s1 format,
Qwen2.5 tokenizer and chat template) resampled with replacement to 1,000 examples. Each length is
divided by `--scale` (default 32) and the block size with it (32,768 / 32 = 1,024), so that a 2-core
CPU gets through enough steps in a few minutes; the shape of the distribution is unchanged. The
model is a small Qwen2 whose cost per token is mostly in its layers, as in real models (a 151,936-word
LM head would dominate a model this small), so token ids are folded into `--vocab` (default 1,024).

- share of real tokens: over all 1,000 examples, the tokens each plan computes that are not padding
  (padded: batches of `--batch` examples in random order, each padded to its longest; packed: trl's
  best-fit-decreasing packing into rows of the block size, padding-free);
- tokens/s: real (non-padding) tokens per second of a training step's forward and backward through
  trl's SFTTrainer (its collator and its compute_loss), on a small Qwen2 built from a config:
  `--pairs` pairs of one padded and one packed batch (drawn at random from each plan) timed back to
  back, the speedup being the median of the pairs' ratios (the optimizer step is left out: it costs
  the same per step, and packing takes fewer steps).

    python bench/bench_sft.py [--scale 32] [--batch 8] [--pairs 12] [--json bench/results/sft.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sft import DataConfig, build_dataset  # noqa: E402
from tests.tiny_model import tiny_config  # noqa: E402

SHARED = ROOT.parent / "shared"
S1K = SHARED / "data/pool/s1k-1.1_head5.parquet"
TOKENIZER = SHARED / "tokenizers/qwen2.5"
S1_BLOCK = 32768


def real_rows(tokenizer) -> list[list[int]]:
    """The five s1K-1.1 rows as s1-format training sequences (token ids), at full length."""
    config = DataConfig(
        source=str(S1K), question="question", trace="gemini_thinking_trajectory", answer="gemini_attempt"
    )
    dataset, _ = build_dataset(tokenizer, config)
    return dataset["input_ids"]


def resampled(rows: list[list[int]], n: int, scale: int, vocab: int, seed: int) -> list[dict]:
    """`n` examples drawn from `rows`, each cut to its length / scale, ids folded into `vocab`
    (labels on all but the first 10%)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ids = rng.choice(rows)
        ids = [t % vocab for t in ids[: max(2, len(ids) // scale)]]
        prompt = max(1, len(ids) // 10)
        out.append({"input_ids": ids, "completion_mask": [0] * prompt + [1] * (len(ids) - prompt)})
    return out


def trainer_for(model, tokenizer, dataset, packing: bool, batch: int, block: int, folder: str):
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    args = SFTConfig(
        output_dir=folder,
        use_cpu=True,
        bf16=False,
        report_to="none",
        max_length=block,
        packing=packing,
        completion_only_loss=True,
        per_device_train_batch_size=1 if packing else batch,
        seed=0,
    )
    # trl's own collator; padded batches pad with id 0 (the folded vocabulary has no Qwen pad id),
    # packed rows are never padded.
    collator = None if packing else DataCollatorForLanguageModeling(pad_token_id=0)
    return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, data_collator=collator)


def plan(trainer) -> list[dict]:
    return list(trainer.get_train_dataloader())


def computed_and_real(batch: dict) -> tuple[int, int]:
    computed = batch["input_ids"].numel()
    if "attention_mask" in batch:
        return computed, int(batch["attention_mask"].sum())
    return computed, computed  # padding-free, no pad_to_multiple_of: every computed token is real


def timed_steps(trainer, batches: list[dict]) -> tuple[float, int]:
    model = trainer.model
    model.train()
    real = 0
    start = time.perf_counter()
    for batch in batches:
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        model.zero_grad(set_to_none=True)
        real += computed_and_real(batch)[1]
    return time.perf_counter() - start, real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--scale", type=int, default=32, help="lengths and the block size are divided by this")
    parser.add_argument("--batch", type=int, default=8, help="examples per padded batch")
    parser.add_argument("--pairs", type=int, default=12, help="padded/packed step pairs timed")
    parser.add_argument("--warmup", type=int, default=2, help="pairs run first and not counted")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1024, help="token ids are folded into this vocabulary")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not S1K.is_file():
        raise SystemExit(f"error: {S1K} not found (../shared beside the project)")

    from datasets import Dataset
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    rows = real_rows(tokenizer)
    examples = resampled(rows, args.examples, args.scale, args.vocab, seed=0)
    dataset = Dataset.from_list(examples)
    block = S1_BLOCK // args.scale
    heads = max(1, args.hidden // 64)
    config = tiny_config(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        eos_token_id=args.vocab - 1,
        pad_token_id=0,
    )
    model = Qwen2ForCausalLM(config)

    figures: dict[str, object] = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "real_lengths": sorted(len(r) for r in rows),
        "examples": args.examples,
        "scale": args.scale,
        "block": block,
        "padded_batch": args.batch,
        "model": f"Qwen2 from a config: hidden {args.hidden}, {args.layers} layers, vocabulary {args.vocab}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters (random weights)",
        "mean_length": statistics.mean(len(e["input_ids"]) for e in examples),
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        plans = {}
        for name, packing in (("padded", False), ("packed", True)):
            trainer = trainer_for(model, tokenizer, dataset, packing, args.batch, block, f"{tmp}/{name}")
            batches = plan(trainer)
            counts = [computed_and_real(b) for b in batches]
            computed, real = sum(c for c, _ in counts), sum(r for _, r in counts)
            plans[name] = (trainer, batches)
            results[name] = {"batches": len(batches), "computed_tokens": computed, "real_tokens": real,
                             "real_share": real / computed, "seconds": [], "tokens_per_s": []}  # fmt: skip
        # Paired, step by step: a padded batch and a packed batch timed back to back (in alternating
        # order), so that load from other work on the machine hits both alike; the first pairs warm up.
        rng = random.Random(1)
        paired = []
        for pair in range(args.warmup + args.pairs):
            for name in ("padded", "packed") if pair % 2 else ("packed", "padded"):
                trainer, batches = plans[name]
                seconds, real = timed_steps(trainer, [rng.choice(batches)])
                if pair >= args.warmup:
                    results[name]["seconds"].append(seconds)
                    results[name]["tokens_per_s"].append(real / seconds)
            if pair >= args.warmup:
                paired.append(results["packed"]["tokens_per_s"][-1] / results["padded"]["tokens_per_s"][-1])
                print(f"pair {pair - args.warmup + 1}: packed/padded {paired[-1]:.2f}x", flush=True)
    for r in results.values():
        r["median_tokens_per_s"] = statistics.median(r["tokens_per_s"])
    figures["plans"] = results
    figures["speedup_packed_over_padded"] = (
        results["packed"]["median_tokens_per_s"] / results["padded"]["median_tokens_per_s"]
    )
    figures["paired_speedups"] = paired
    figures["median_paired_speedup"] = statistics.median(paired)
    figures["share_ratio_packed_over_padded"] = results["packed"]["real_share"] / results["padded"]["real_share"]
    print(f"real lengths (full): {figures['real_lengths']}; block {block} after scale 1/{args.scale}")
    for name, r in results.items():
        print(f"{name:7s} batches {r['batches']:4d}  real share {r['real_share']:.3f}  "
              f"median {r['median_tokens_per_s']:.0f} real tokens/s")  # fmt: skip
    print(f"packed / padded: {figures['speedup_packed_over_padded']:.2f}x median tokens/s, "
          f"{figures['median_paired_speedup']:.2f}x median of {len(paired)} paired steps, "
          f"{figures['share_ratio_packed_over_padded']:.2f}x real share")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
