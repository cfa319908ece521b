"""Does LCPO's length term teach length control? LCPO-Exact against plain GRPO, same start, seed and steps.

The task is small enough for a tiny model to learn on a CPU in minutes:

- a word-level tokenizer of 75 tokens (the numbers 0-64, "copy", "Think", "for", "tokens.",
  "\\boxed{", "}" and the special tokens), built here with `tokenizers`;
- a Qwen2 of 2 layers, hidden size 64, tied embeddings; the number tokens start with embeddings
  that vary smoothly with their value, so that what is learned about one budget carries over to
  its neighbours (pretrained models' number embeddings have that structure; random ones do not);
- questions "copy D" (D a digit, answer D) with L1's sentence "Think for N tokens.", N uniform in
  4..24 (`--high`); the model thinks by counting down "S S-1 ... 1" from a number S it picks, ends
  thinking with "</think>" and answers "\\boxed{ D }": S + 4 tokens in all (end-of-sequence not
  counted). Its length is one early choice that the reward must teach it to make from N. (A model
  that counts up and must stop at N, which is many decisions, one per token, learned far more slowly
  here: its choice of length collapsed to one value before it learned to read N);
- a warm start (supervised, a few hundred steps) teaches the format and the answer with S drawn
  uniformly from 1..N_max + 4, independently of N: the starting model answers correctly and ignores N;
- then two GRPO runs through `rl.train` (trl's GRPOTrainer, the LCPO reward, grading by
  `evals.Grader`): LCPO-Exact (`correct - alpha |N - n|`, alpha = 1 / N_max, n = the whole
  completion, as L1; `--length thinking` counts the thinking only) and plain GRPO with the
  correctness reward only. Same warm start, seed, data, settings and steps. Both use lr 1e-3 and
  trl's entropy bonus (`entropy_coef` 0.05), which L1 does not use: without it, the choice of length
  collapses within ~100 steps to the single length that best fits all budgets, before the model has
  learned to read N, and later steps have nothing left to compare (`--entropy-coef 0 --lr 5e-4`
  shows that run).

Length control is measured with the project's decoder (`decode.generate`) on held-out prompts
(every N in 4..N_max, several digits, sampled at the training temperature 1.0) for the warm start
and for each trained model: the mean of |n - N| / N (L1's length deviation), its median, the share
within 10% of N, and the accuracy (the answer as the grader extracts it). The trainer's logged
`lcpo/length_error` over the first and the last 10 steps is reported too.

    python bench/bench_rl.py [--steps 300] [--high 24] [--json bench/results/rl.json]
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

from decode import Sampling, ThinkingFormat, generate  # noqa: E402
from evals import extract_math  # noqa: E402
from rl import recipe_from_dict, train, user_message  # noqa: E402

SPECIALS = ["<pad>", "<eos>", "<think>", "</think>"]
WORDS = ["copy", "Think", "for", "tokens.", "\\boxed{", "}"]
MAX_NUMBER = 64
LOW = 4  # the smallest N; the largest is --high
FORMAT = ThinkingFormat(
    name="count", open="<think>", end=("</think>",), close="</think>", force="</think>", wait="copy"
)


def build_tokenizer(folder: Path):
    """A word-level tokenizer over the task's 75 tokens, saved so `AutoTokenizer` loads it. It is kept in a
    folder of its own: beside a Qwen2 config.json, `AutoTokenizer` would rebuild it as a Qwen2 BPE tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS + [str(k) for k in range(MAX_NUMBER + 1)])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_model(tokenizer, seed: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = Qwen2ForCausalLM(config)
    # Number tokens start with embeddings that vary smoothly with their value (sines and cosines of it,
    # as pretrained models' number embeddings do): 23 then resembles 22 and 24, so what the reward
    # teaches about one budget carries over to its neighbours. Other tokens keep their random rows.
    with torch.no_grad():
        first = tokenizer.convert_tokens_to_ids("0")
        values = torch.arange(MAX_NUMBER + 1, dtype=torch.float32)[:, None]
        periods = torch.logspace(0.6, 2.2, config.hidden_size // 2)[None, :]  # 4 to 160 values
        angles = 2 * torch.pi * values / periods
        smooth = torch.cat([angles.sin(), angles.cos()], dim=1) * model.model.embed_tokens.weight.std() * 1.0
        model.model.embed_tokens.weight[first : first + MAX_NUMBER + 1] = smooth
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def prompt(digit: int, budget: int) -> str:
    """What the model continues: L1's user message (no instruction), then the thinking opener."""
    return user_message(f"copy {digit}", budget, "exact", instruction="") + " <think>"


def warm_start(model, tokenizer, steps: int, seed: int, high: int) -> list[float]:
    """Supervised: the format and the answer, with a thinking length that ignores N (uniform 1..high+4)."""
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    model.train()
    for _ in range(steps):
        rows, masks = [], []
        for _ in range(64):
            digit, budget, length = rng.randrange(10), rng.randint(LOW, high), rng.randint(1, high + 4)
            head = tokenizer.encode(prompt(digit, budget))
            count = " ".join(str(k) for k in range(length, 0, -1))
            tail = tokenizer.encode(f"{count} </think> \\boxed{{ {digit} }}") + [tokenizer.eos_token_id]
            rows.append(head + tail)
            masks.append([0] * len(head) + [1] * len(tail))
        width = max(map(len, rows))
        ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
        labels = ids.clone()
        labels[torch.tensor([m + [0] * (width - len(m)) for m in masks]) == 0] = -100
        loss = model(input_ids=ids, attention_mask=(ids != tokenizer.pad_token_id).long(), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


def measure(model_dir: Path, tokenizer_dir: Path, args: argparse.Namespace) -> dict[str, float]:
    """Held-out length control with the project's decoder: every N in LOW..high, digits 0-9 in turn.
    n counts what the reward counts: the thinking, or every generated token but end-of-sequence."""
    samples, seed, high = args.samples, args.seed, args.high
    budgets = [n for n in range(LOW, high + 1) for _ in range(samples)]
    prompts = [prompt(i % 10, n) for i, n in enumerate(budgets)]
    results = generate(str(model_dir), str(tokenizer_dir), prompts, format=FORMAT, sampling=Sampling(temperature=1.0),
                       seed=seed, batch_size=64, max_new_tokens=high + 12)  # fmt: skip
    lengths = [r.thinking_tokens if args.length == "thinking" else len(r.completion_ids) - (r.finish_reason == "eos")
               for r in results]  # fmt: skip
    errors = [abs(length - n) / n for length, n in zip(lengths, budgets, strict=True)]
    correct = [extract_math(r.answer)[0] == str(i % 10) for i, r in enumerate(results)]  # as the grader reads it
    return {
        "length_error_mean": statistics.fmean(errors),
        "length_error_median": statistics.median(errors),
        "within_10pct": statistics.fmean(e <= 0.1 for e in errors),
        "accuracy": statistics.fmean(correct),
        "mean_length": statistics.fmean(lengths),
        # How much the length follows the budget: the least-squares slope of n on N (1 when n tracks N,
        # 0 when the length ignores it) and their correlation (None when every length is the same).
        "slope_n_on_N": statistics.linear_regression(budgets, lengths).slope,
        "correlation_n_N": statistics.correlation(budgets, lengths) if len(set(lengths)) > 1 else None,
        "cut_at_max_tokens": statistics.fmean(r.finish_reason == "length" for r in results),
        "runs": len(results),
    }


def logged(history: list[dict], key: str, first: bool, steps: int) -> float | None:
    values = [e[key] for e in history if e.get(key) is not None]
    part = values[:steps] if first else values[-steps:]
    return statistics.fmean(part) if part else None


def rl_run(name: str, start: Path, work: Path, args: argparse.Namespace, penalty: bool) -> dict:
    recipe = recipe_from_dict(
        {
            "model": str(start),
            "tokenizer": str(work / "tokenizer"),
            "output_dir": str(work / name),
            "dtype": "float32",
            "seed": args.seed,
            "data": [{"name": "copy", "path": str(work / "copy.jsonl"), "id": None}],
            "prompts": {
                "mode": "exact",
                "min_budget": LOW,
                "max_budget": args.high,
                "instruction": "",
                "format": str(work / "count.json"),
            },  # fmt: skip
            "reward": {"alpha": 1.0 / args.high, "length": args.length, "length_penalty": penalty},
            "grading": {"workers": 1},
            "trainer": {
                "use_cpu": True,
                "bf16": False,
                "max_steps": args.steps,
                "learning_rate": args.lr,
                "per_device_train_batch_size": args.prompts * args.generations,
                "num_generations": args.generations,
                "max_completion_length": args.high + 12,
                "temperature": 1.0,
                "beta": args.beta,
                "entropy_coef": args.entropy_coef,
                "gradient_checkpointing": False,
                "logging_steps": 1,
                "save_strategy": "no",
                "report_to": "none",
                "disable_tqdm": True,
                "lr_scheduler_type": "constant",
            },  # fmt: skip
            "resume": False,
        },
        f"bench:{name}",
    )
    began = time.perf_counter()
    final = train(recipe)
    seconds = time.perf_counter() - began
    history = json.loads((final.parent / "log_history.json").read_text())
    return {"final": final, "seconds": seconds, "history": history}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="GRPO steps per run")
    parser.add_argument("--warm-steps", type=int, default=400, help="supervised warm-start steps")
    parser.add_argument("--samples", type=int, default=6, help="held-out samples per N")
    parser.add_argument("--high", type=int, default=24, help="the largest N (N is uniform in 4..high)")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per GRPO step")
    parser.add_argument("--generations", type=int, default=16, help="completions per prompt")
    parser.add_argument("--beta", type=float, default=0.001, help="KL coefficient")
    parser.add_argument("--length", default="completion", help="what n counts: completion (L1) or thinking")
    parser.add_argument("--entropy-coef", type=float, default=0.05, help="trl's entropy bonus (L1: none)")
    parser.add_argument("--lr", type=float, default=1e-3, help="GRPO learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="lcpo_exact,correctness_only", help="which GRPO runs, comma-separated")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny ops: one thread is fastest, and fair to a shared machine

    with tempfile.TemporaryDirectory(prefix="bench_rl_") as tmp:
        work = Path(tmp)
        start_dir = work / "warm"
        tokenizer = build_tokenizer(work / "tokenizer")
        model = build_model(tokenizer, args.seed)
        began = time.perf_counter()
        losses = warm_start(model, tokenizer, args.warm_steps, args.seed, args.high)
        warm_seconds = time.perf_counter() - began
        model.save_pretrained(start_dir)
        (work / "count.json").write_text(json.dumps({"name": FORMAT.name, "open": FORMAT.open, "end": list(FORMAT.end),
                                   "close": FORMAT.close, "force": FORMAT.force}))  # fmt: skip
        rng = random.Random(args.seed)
        (work / "copy.jsonl").write_text("".join(json.dumps({"problem": f"copy {d}", "answer": str(d)}) + "\n"
                                for d in (rng.randrange(10) for _ in range(512))))  # fmt: skip
        print(f"warm start: {args.warm_steps} steps in {warm_seconds:.0f} s, final loss {losses[-1]:.3f}", flush=True)
        start = measure(start_dir, work / "tokenizer", args)
        print(f"start: {start}", flush=True)

        runs = {}
        for name, penalty in (("lcpo_exact", True), ("correctness_only", False)):
            if name not in args.runs.split(","):
                continue
            run = rl_run(name, start_dir, work, args, penalty)
            end = measure(run["final"], work / "tokenizer", args)
            history = run["history"]
            runs[name] = {
                "train_seconds": run["seconds"],
                "end": end,
                "logged_length_error_first10": logged(history, "lcpo/length_error", True, 10),
                "logged_length_error_last10": logged(history, "lcpo/length_error", False, 10),
                "logged_accuracy_first10": logged(history, "lcpo/accuracy", True, 10),
                "logged_accuracy_last10": logged(history, "lcpo/accuracy", False, 10),
                "history": [
                    {k: e.get(k) for k in ("step", "reward", "lcpo/length_error", "lcpo/accuracy", "kl")}
                    for e in history
                    if "lcpo/length_error" in e
                ],  # fmt: skip
            }
            print(f"{name}: {run['seconds']:.0f} s, end {end}", flush=True)

    figures = {
        "machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "steps": args.steps,
        "warm_steps": args.warm_steps,
        "warm_seconds": warm_seconds,
        "seed": args.seed,
        "start": start,
        "runs": runs,
    }
    header = "run | steps | mean abs rel. length error (start -> end) | median | within 10% | slope of n on N"
    print(f"\n| {header} | accuracy | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, result in runs.items():
        end = result["end"]
        print(f"| {name} | {args.steps} | {start['length_error_mean']:.3f} -> {end['length_error_mean']:.3f} | "
              f"{start['length_error_median']:.3f} -> {end['length_error_median']:.3f} | "
              f"{start['within_10pct']:.2f} -> {end['within_10pct']:.2f} | "
            f"{start['slope_n_on_N']:.2f} -> {end['slope_n_on_N']:.2f} | "
              f"{start['accuracy']:.2f} -> {end['accuracy']:.2f} | {result['train_seconds']:.0f} |")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1))
        print(f"raw figures: {args.json}")


if __name__ == "__main__":
    main()
