"""The LCPO stage's questions: a training set and a validation set, both kept apart from the held-out set.

`python -m demo.splits DATA_DIR` reads the pool and the held-out set that the data stage wrote and
writes `rl_train.jsonl` and `rl_val.jsonl` beside them. A pool row is used when it is clean (none of
the flaws planted for curation, an answer present), appears once, and shares no word n-gram with a
held-out question (the curation recipe's decontamination test, with its n). The held-out set is
left for the final evaluation only; settings of the LCPO recipe are chosen on `rl_val.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

from curate.decontaminate import word_ngrams, words
from curate.pipeline import write_jsonl_atomically

FIELDS = ("id", "question", "answer", "domain", "level", "trace")  # the trace: for demo.warmup


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number}: not a JSON object ({err.msg})") from None
    return rows


def split(
    pool: list[dict[str, Any]], heldout: list[dict[str, Any]], validation: float, seed: int, ngram: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training rows, validation rows): the usable pool rows, shuffled with `seed`, the first
    `validation` share of them (at least one) for validation."""
    if not 0 < validation < 1:
        raise ValueError(f"--validation is the share of questions for validation, in (0, 1); got {validation}")
    held = {gram for row in heldout for gram in word_ngrams(words(row["question"]), ngram)}
    seen: set[str] = set()
    usable = []
    for row in pool:
        key = " ".join(words(row["question"]))
        clean = not row.get("flaw") and str(row.get("answer", "")).strip()
        if clean and key not in seen and not word_ngrams(words(row["question"]), ngram) & held:
            usable.append({k: row[k] for k in FIELDS})
        seen.add(key)
    count = max(1, round(validation * len(usable)))
    if len(usable) <= count:
        raise ValueError(f"only {len(usable)} usable pool questions: too few for a training and a validation set")
    random.Random(f"splits:{seed}").shuffle(usable)
    return usable[count:], usable[:count]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.splits", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("data_dir", help="the data stage's folder (data/demo)")
    parser.add_argument("--validation", type=float, default=0.06, help="share of the questions in rl_val.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ngram", type=int, default=20, help="the decontamination n-gram (curation: 20)")
    args = parser.parse_args(argv)
    folder = Path(args.data_dir)
    try:
        pool, heldout = read_jsonl(folder / "pool.jsonl"), read_jsonl(folder / "heldout.jsonl")
        train, val = split(pool, heldout, args.validation, args.seed, args.ngram)
    except (OSError, ValueError) as err:
        print(f"error: {folder}: {err}", file=sys.stderr)
        return 2
    except KeyError as err:
        expected = ", ".join(FIELDS)
        print(f"error: {folder}: a pool or held-out row has no {err} field (expected {expected})", file=sys.stderr)
        return 2
    write_jsonl_atomically(folder / "rl_val.jsonl", val)
    write_jsonl_atomically(folder / "rl_train.jsonl", train)
    print(f"{len(pool)} pool rows -> {len(train)} training and {len(val)} validation questions for LCPO "
          f"(none shares a {args.ngram}-gram with the {len(heldout)} held-out questions)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
