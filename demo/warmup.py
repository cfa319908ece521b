"""Length-labelled rows: a warm-up before LCPO, so that the fine-tuned model has seen a length sentence.

L1 trains with LCPO from DeepScaleR, a model that already reads its prompt; the demo's fine-tuned
model was trained on bare questions only, and "Think for N tokens." is text it has never seen. The
"length-labelled warm-up" (our variant, not L1's recipe, and not part of `make demo`: docs/demo.md
gives what it did on the validation questions) shows it what the sentence asks for. Each LCPO
training question is asked with an N drawn from LCPO's range, and its answer turn is made of whole
lines of the teacher's trace, followed by as many checks as needed ("Wait, let me check.", the
steps again, "It matches."), so that the whole completion comes as close to N tokens as whole
lines can: a short budget stops the trace early (the answer is then a guess, as after budget
forcing), a long one adds checks. (Cutting on a token, to hit N exactly, was tried as well.)

n is counted as the LCPO reward counts it (`length: completion`): every token the model writes
after the thinking opener, the end of thinking and the answer included, end of sequence excluded.

    python -m demo.warmup recipes/rl/demo.yaml runs/demo/init     # data/demo/rl_warmup.jsonl
    python -m sft recipes/sft/demo-warmup.yaml                     # runs/demo/warmup/model
    python -m rl recipes/rl/demo.yaml --model runs/demo/warmup/model --output-dir runs/demo/rl-warmup

The first reads the LCPO recipe's questions (`rl_train.jsonl`, from `python -m demo.splits`) and
range of N, and writes `rl_warmup.jsonl` beside the questions: one row per question, with
`question` (the question, a blank line and the length sentence, the layout of the evaluation
harness and of LCPO), `trace`, `answer` and `budget`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from transformers import AutoTokenizer

from curate.pipeline import write_jsonl_atomically
from decode import get_format
from rl.prompts import EXACT, draw_budgets, user_message
from sft.data import assistant_text

from .splits import read_jsonl

CHECK = "Wait, let me check."
MATCHES = "It matches."


def steps_of(trace: str) -> list[str]:
    """The numbered step lines of a trace's last pass: the steps a check writes again."""
    lines = trace.splitlines()
    if CHECK in lines:
        lines = lines[lines.index(CHECK) + 1 :]
    return [line for line in lines if line[:1].isdigit()]


def fit(trace: str, budget: int, length: Callable[[str], int]) -> str:
    """The whole lines of the trace, followed by checks as needed, whose completion is closest to
    `budget` tokens (`length(text)`); the shorter on a tie, and at least the first line."""
    check = [CHECK, *steps_of(trace), MATCHES]
    lines = trace.splitlines()
    while length("\n".join(lines)) < budget:
        lines += check
    best, best_gap = lines[0], abs(length(lines[0]) - budget)
    for end in range(2, len(lines) + 1):
        text = "\n".join(lines[:end])
        gap = abs(length(text) - budget)
        if gap < best_gap:
            best, best_gap = text, gap
    return best


def warmup_rows(rows: list[dict[str, Any]], tokenizer: Any, low: int, high: int, seed: int,
                answer_prefix: str = "Final Answer: ", format_name: str = "s1") -> list[dict[str, Any]]:  # fmt: skip
    """One length-labelled row per question, N uniform in low..high (seeded)."""
    fmt = get_format(format_name)

    def length(trace: str, answer: str) -> int:
        text = assistant_text(fmt, trace, answer, answer_prefix)[len(fmt.open) :]
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    budgets = draw_budgets(len(rows), low, high, seed)
    out = []
    for number, (row, budget) in enumerate(zip(rows, budgets, strict=True), 1):
        trace, answer = row.get("trace"), str(row.get("answer", "")).strip()
        if not isinstance(trace, str) or not trace.strip() or not answer:
            raise ValueError(f"row {number} ({row.get('id')}): a question with its trace and answer is needed")
        text = fit(trace, budget, lambda t, a=answer: length(t, a))
        out.append({
            "id": row["id"],
            "question": user_message(row["question"], budget, EXACT, instruction="", separator="\n\n"),
            "trace": text,
            "answer": answer,
            "budget": budget,
        })  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.warmup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("recipe", help="the LCPO recipe (recipes/rl/demo.yaml): its questions and its range of N")
    parser.add_argument("tokenizer", help="the demo model's tokenizer (runs/demo/init)")
    # LCPO draws its budgets with its own seed: another seed here gives each question another N
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        recipe = yaml.safe_load(Path(args.recipe).read_text(encoding="utf-8"))
        source = Path(recipe["data"][0]["path"])
        low, high = recipe["prompts"]["min_budget"], recipe["prompts"]["max_budget"]
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError) as err:
        print(f"error: {args.recipe}: expected an LCPO recipe with data[0].path and prompts.min_budget/max_budget "
              f"({type(err).__name__}: {err})", file=sys.stderr)  # fmt: skip
        return 2
    try:
        rows = read_jsonl(source)
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        out = warmup_rows(rows, tokenizer, low, high, args.seed)
    except (OSError, ValueError) as err:
        print(f"error: {source}: {err}", file=sys.stderr)
        return 2
    target = source.with_name("rl_warmup.jsonl")
    write_jsonl_atomically(target, out)
    print(f"{len(out)} length-labelled rows, N in {low}..{high} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
