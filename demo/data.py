"""The demo's data stage: the question pool, the held-out set, the base model's training set, the
tokenizer and the untrained model, all generated from one recipe (recipes/data/demo.yaml).

The pool plays s1's 59K pool. Beside the clean questions it holds rows that each curation filter
must catch, so every filter has real work: questions that copy a held-out question (decontamination),
exact and near duplicates (deduplication), figure and image references and a missing answer
(quality rules), and a missing teacher trace (s1's "API errors"). `manifest.json` counts each kind.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from curate.pipeline import write_jsonl_atomically

from .model import ModelSettings, init_model
from .tasks import DOMAINS, Task, generate_tasks, make_drill
from .tokenizer import train_tokenizer


@dataclass
class FlawSettings:
    """How many deliberately flawed rows go into the pool, per kind."""

    leaked: int = 40  # copies of held-out questions
    exact_duplicates: int = 40
    near_duplicates: int = 40  # a copy with a word added
    asymptote: int = 20  # an [asy] figure in the question
    image: int = 20  # a markdown image reference in the question
    no_answer: int = 20  # a clean row's reference answer is blanked
    no_trace: int = 20  # a clean row's teacher trace is blanked


@dataclass
class DataSettings:
    """Settings of the data stage.

    Attributes:
        out_dir: where the pool, held-out set and base training set go (JSONL files).
        model_dir: where the tokenizer and the untrained model go (one folder, loadable as a model).
        pool_size: questions generated for the pool (the blanked flawed rows are among them).
        heldout_size: questions of the held-out evaluation set.
        drills: one-step questions in the base model's training set (see `tasks.make_drill`).
        base_questions: pool-like questions with their one-line answers in that set.
        check_rate: share of teacher traces that end with a check after "Wait".
        vocab_size: the tokenizer's vocabulary.
        seed: seeds everything; pool, held-out set and base set use disjoint streams.
        flaws: see `FlawSettings`.
        model: see `demo.model.ModelSettings`.
    """

    out_dir: str = "data/demo"
    model_dir: str = "runs/demo/init"
    pool_size: int = 8000
    heldout_size: int = 200
    drills: int = 10000
    base_questions: int = 8000
    check_rate: float = 0.35
    vocab_size: int = 512
    seed: int = 0
    flaws: FlawSettings = field(default_factory=FlawSettings)
    model: ModelSettings = field(default_factory=ModelSettings)

    def __post_init__(self) -> None:
        for name in ("pool_size", "heldout_size", "drills", "base_questions", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.check_rate <= 1:
            raise ValueError(f"check_rate must be between 0 and 1, got {self.check_rate!r}")
        for name, count in asdict(self.flaws).items():
            limit = self.heldout_size if name == "leaked" else self.pool_size
            if not isinstance(count, int) or not 0 <= count <= limit:
                raise ValueError(f"flaws.{name} must be an integer from 0 to {limit}, got {count!r}")
        planted = sum(asdict(self.flaws).values()) - self.flaws.leaked
        if planted > self.pool_size:
            raise ValueError(f"the flaws need {planted} clean rows but pool_size is {self.pool_size}")

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def load_settings(path: str | Path) -> DataSettings:
    """The data recipe; unknown or mistyped settings are named with the file."""
    from evals.recipe import read_settings

    values = read_settings(path, ValueError)
    try:
        flaws = FlawSettings(**values.pop("flaws", {}) or {})
        model = ModelSettings(**values.pop("model", {}) or {})
        return DataSettings(**values, flaws=flaws, model=model)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


def pool_row(task: Task, index: int) -> dict[str, Any]:
    """A pool row: the question, its reference answer, and the teacher's trace and attempt."""
    return {
        "id": f"demo-{index}",
        "question": task.question,
        "answer": task.answer,
        "domain": task.domain,
        "level": task.level,
        "trace": task.trace,
        "attempt": task.answer,
        "flaw": "",
    }


def add_flaws(rows: list[dict[str, Any]], heldout: list[Task], flaws: FlawSettings, rng: random.Random) -> None:
    """Plant the flawed rows in `rows`: copies of clean rows (duplicates, figures) and held-out questions
    are added; a missing answer or trace is blanked in a clean row itself, so no deduplication can
    remove it before the filter meant for it. No clean row serves two flaws."""
    copies = (flaws.exact_duplicates, flaws.near_duplicates, flaws.asymptote, flaws.image)
    # Blanked rows must reach the quality stage: their question appears once in the pool and not in
    # the held-out set (deduplication and decontamination run first).
    counts = Counter(row["question"] for row in rows)
    held_out = {task.question for task in heldout}
    unique = [i for i, row in enumerate(rows) if counts[row["question"]] == 1 and row["question"] not in held_out]
    blanked = rng.sample(unique, flaws.no_answer + flaws.no_trace)
    others = sorted(set(range(len(rows))) - set(blanked))
    picked = iter(rng.sample(others, sum(copies)) + blanked)
    added = []

    def copy_of(row: dict[str, Any], flaw: str, **changes: Any) -> dict[str, Any]:
        return {**row, **changes, "id": f"{row['id']}-{flaw}-{len(rows) + len(added)}", "flaw": flaw}

    for task in rng.sample(heldout, flaws.leaked):
        added.append(copy_of(pool_row(task, len(rows) + len(added)), "leaked"))
    figure = "\n[asy]\ndraw((0,0)--(4,0)--(4,3)--cycle);\n[/asy]"
    for flaw, count, change in (
        ("exact duplicate", flaws.exact_duplicates, {}),
        ("near duplicate", flaws.near_duplicates, {"question": " Thanks."}),
        ("asymptote figure", flaws.asymptote, {"question": figure}),
        ("image reference", flaws.image, {"question": "\n![the numbers](numbers.png)"}),
    ):
        for _ in range(count):
            row = rows[next(picked)]
            added.append(copy_of(row, flaw, **{k: row[k] + v for k, v in change.items()}))
    for flaw, count, blank in (
        ("no answer", flaws.no_answer, ("answer",)),
        ("no trace", flaws.no_trace, ("trace", "attempt")),
    ):
        for _ in range(count):
            row = rows[next(picked)]
            row.update({field: "" for field in blank}, flaw=flaw)
    rows.extend(added)
    rng.shuffle(rows)


def chat_text(question: str, thinking: str, answer: str) -> str:
    """A whole conversation in the s1 format, as the tokenizer will see it (its training text)."""
    return (
        f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
        f"<|im_start|>think\n{thinking}\n<|im_start|>answer\nFinal Answer: {answer}<|im_end|>\n"
    )


def build(settings: DataSettings) -> dict[str, Any]:
    """Generate everything; returns the manifest (also written to out_dir/manifest.json)."""
    out, model_dir = Path(settings.out_dir), Path(settings.model_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = random.Random(settings.seed)
    pool_seed, heldout_seed, base_seed, flaw_seed = (seeds.randrange(2**31) for _ in range(4))

    progress = tqdm(total=5, desc="data", unit="step")
    pool_tasks = generate_tasks(settings.pool_size, pool_seed, check_rate=settings.check_rate)
    unique: dict[str, Task] = {}  # the held-out questions are distinct (some domains have few questions)
    for task in generate_tasks(4 * settings.heldout_size, heldout_seed, check_rate=settings.check_rate):
        unique.setdefault(task.question, task)
    heldout = list(unique.values())[: settings.heldout_size]
    held_out = {t.question for t in heldout}
    base_tasks = [
        t
        for t in generate_tasks(settings.base_questions, base_seed, check_rate=settings.check_rate)
        if t.question not in held_out  # the base model never sees an evaluation question
    ]
    drill_rng = random.Random(base_seed + 1)
    drills = [make_drill(drill_rng) for _ in range(settings.drills)]
    progress.update()

    pool = [pool_row(task, i) for i, task in enumerate(pool_tasks)]
    add_flaws(pool, heldout, settings.flaws, random.Random(flaw_seed))
    write_jsonl_atomically(out / "pool.jsonl", pool)
    heldout_rows = [
        {"id": f"heldout-{i}", "question": t.question, "answer": t.answer, "domain": t.domain, "level": t.level}
        for i, t in enumerate(heldout)
    ]
    write_jsonl_atomically(out / "heldout.jsonl", heldout_rows)
    base_rows = [{"question": t.question, "short": t.short, "answer": t.answer} for t in base_tasks]
    base_rows += [{"question": q, "short": short, "answer": a} for q, short, a in drills]
    random.Random(base_seed + 2).shuffle(base_rows)
    write_jsonl_atomically(out / "base_train.jsonl", base_rows)
    progress.update()

    # The tokenizer learns from the whole conversations (chat and format strings included), so the
    # template's words ("user", "think", "answer") are tokens too.
    texts = [chat_text(r["question"], r["trace"] or "", r["answer"]) for r in pool]
    texts += [chat_text(r["question"], r["short"], r["answer"]) for r in base_rows[:2000]]
    staging = model_dir.with_name(model_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer = train_tokenizer(texts, settings.vocab_size, staging)
    progress.update()
    init_model(tokenizer, settings.model, staging)
    progress.update()
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(staging, model_dir)

    flaws = {}
    for row in pool:
        flaws[row["flaw"] or "clean"] = flaws.get(row["flaw"] or "clean", 0) + 1
    manifest = {
        "fingerprint": settings.fingerprint(),
        "settings": asdict(settings),
        "pool": {
            "rows": len(pool),
            "by_flaw": flaws,
            "by_domain": {d: sum(r["domain"] == d for r in pool) for d in DOMAINS},
        },
        "heldout": len(heldout_rows),
        "base_train": len(base_rows),
        "tokenizer": {"vocab": len(tokenizer), "folder": str(model_dir)},
    }
    staged = out / "manifest.json.tmp"  # written last, in one rename: it marks the stage done
    staged.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(staged, out / "manifest.json")
    progress.update()
    progress.close()
    return manifest


def main(argv: list[str] | None = None) -> int:
    """`python -m demo.data RECIPE`: run the data stage."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m demo.data", description=main.__doc__)
    parser.add_argument("recipe", help="a data recipe (recipes/data/demo.yaml)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.recipe)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    manifest = build(settings)
    pool = manifest["pool"]
    print(f"pool: {pool['rows']} rows {pool['by_flaw']} -> {settings.out_dir}/pool.jsonl")
    print(f"held-out: {manifest['heldout']} questions; base training set: {manifest['base_train']} rows")
    print(f"tokenizer ({manifest['tokenizer']['vocab']} tokens) and untrained model -> {settings.model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
