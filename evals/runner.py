"""Run a recipe: generate every (problem, method, point, sample), grade it, and write the report.

Each finished generation is appended to `samples.jsonl` with its verdict, so an interrupted run
started again with the same recipe skips what is done. A run folder belongs to one set of
generation settings (model, format, sampling, ...): resuming with other settings is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from decode import Budget, Sampling, generate, get_format, load_model, load_tokenizer
from decode.dtype import resolve_dtype

from .benchmarks import Problem, load_problems
from .grading import Answer, Grader
from .methods import MethodSpec, Point
from .recipe import EvalRecipe
from .report import write_report

SAMPLES = "samples.jsonl"
RUN_INFO = "run.json"


class RunError(RuntimeError):
    """A run folder that cannot be resumed (other settings, a corrupt samples file)."""


@dataclass
class Job:
    """One generation: a problem asked through a method at one point of its sweep."""

    key: str
    problem: Problem
    method: MethodSpec
    point: Point
    sample: int
    text: str
    budget: Budget
    sampling: Sampling


def user_message(recipe: EvalRecipe, problem: Problem, suffix: str) -> str:
    """The question, the recipe's instruction for its kind, then the method's sentence (L1's layout)."""
    text = problem.question
    instruction = recipe.instruction.get(problem.kind, "")
    if instruction:
        text += "\n\n" + instruction
    if suffix:
        text += (" " if instruction else "\n\n") + suffix
    return text


def plan(recipe: EvalRecipe, problems: list[Problem]) -> list[Job]:
    """Every generation the recipe asks for. Majority vote draws max(k) samples once per budget;
    its points vote over the first k of them."""
    jobs = []
    for problem in problems:
        for method in recipe.methods:
            points = method.points()
            if method.method == "majority_vote":
                caps = {p.budget: replace(p, label=method.draw_label(p)) for p in points}
                draws = [(p, s) for p in caps.values() for s in range(max(method.votes))]
            else:
                draws = [(p, s) for p in points for s in range(recipe.samples)]
            for point, sample in draws:
                jobs.append(
                    Job(
                        key=f"{problem.benchmark}/{problem.id}/{method.label}/{point.label}/{sample}",
                        problem=problem,
                        method=method,
                        point=point,
                        sample=sample,
                        text=user_message(recipe, problem, method.suffix(point)),
                        budget=method.budget(point, recipe.max_answer_tokens),
                        sampling=method.sampling(recipe.sampling),
                    )
                )
    return jobs


def read_samples(path: Path) -> dict[str, dict[str, Any]]:
    """Records already written. A last line cut short by a crash is dropped; any other bad line is an error."""
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # an append interrupted mid-line
            raise RunError(f"{path}: line {number} is not valid JSON; delete the run folder to start over") from None
        records[record["key"]] = record
    return records


def drop_partial_line(path: Path) -> None:
    """Cut a last line left unfinished by a crash, so that new records start on a line of their own."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def check_run_folder(recipe: EvalRecipe, folder: Path) -> None:
    info_path = folder / RUN_INFO
    info = {"fingerprint": recipe.fingerprint(), "recipe": recipe.source, "model": recipe.model,
            "dtype": run_dtype(recipe)}  # fmt: skip
    if info_path.exists():
        old = json.loads(info_path.read_text())
        if old.get("fingerprint") != info["fingerprint"] or old.get("dtype", info["dtype"]) != info["dtype"]:
            raise RunError(
                f"{folder} holds a run with other generation settings (recipe {old.get('recipe')}, model "
                f"{old.get('model')}); use another output_dir or delete that folder"
            )
        return
    folder.mkdir(parents=True, exist_ok=True)
    info_path.write_text(json.dumps(info, indent=2))


def run_dtype(recipe: EvalRecipe) -> str | None:
    """The dtype the model runs in (`auto`: the checkpoint's own, as decode resolves it); None: a server's."""
    if recipe.backend == "openai":
        return None
    requested = recipe.engine_args.get("dtype", recipe.dtype) if recipe.backend == "vllm" else recipe.dtype
    try:
        return resolve_dtype(recipe.model, requested)
    except ValueError as err:
        raise RunError(f"{recipe.source}: dtype: {err}") from None


def engine_args(recipe: EvalRecipe) -> dict[str, Any] | None:
    """The engine's keyword arguments: for vLLM, the recipe's dtype unless the recipe sets one there."""
    if recipe.backend == "vllm":
        return {"dtype": recipe.dtype, **recipe.engine_args}
    return recipe.engine_args or None


def batches(jobs: list[Job], size: int) -> Iterator[list[Job]]:
    """Jobs grouped by what one decoder call shares (wait string, sampling, redraws), in chunks."""
    groups: dict[tuple[str, Sampling, bool], list[Job]] = {}
    for job in jobs:
        redraws = job.method.method == "rejection_sampling"
        groups.setdefault((job.method.wait, job.sampling, redraws), []).append(job)
    for group in groups.values():
        for start in range(0, len(group), size):
            yield group[start : start + size]


def run(recipe: EvalRecipe, *, progress: bool = True) -> Path:
    """Run (or resume) the recipe; returns the output folder."""
    folder = Path(recipe.output_dir)
    problems = [p for spec in recipe.benchmarks for p in load_problems(spec)]
    jobs = plan(recipe, problems)
    check_run_folder(recipe, folder)
    samples_path = folder / SAMPLES
    done = read_samples(samples_path)
    drop_partial_line(samples_path)
    pending = [job for job in jobs if job.key not in done]
    if pending:
        grading = {"workers": 2, "timeout_s": 5.0, "memory_mb": 4096, **recipe.grading}
        with Grader(**grading).start() as grader:  # workers start while the model loads and generates
            tokenizer = load_tokenizer(recipe.tokenizer or recipe.model)
            if recipe.backend == "hf":
                model = load_model(recipe.model, dtype=recipe.dtype, device=recipe.device)
            else:  # a model path for vLLM (the engine is built once per process), a URL for a server
                model = recipe.model
            _run_pending(recipe, model, tokenizer, grader, pending, samples_path, len(jobs), progress)
        done = read_samples(samples_path)
    records = [done[job.key] for job in jobs]
    write_report(recipe, folder, records)
    return folder


def _run_pending(
    recipe: EvalRecipe,
    model: Any,
    tokenizer: Any,
    grader: Grader,
    pending: list[Job],
    samples_path: Path,
    total: int,
    progress: bool,
) -> None:
    """Generate, grade and append the jobs not done yet, a chunk at a time (each chunk saved whole)."""
    fmt = get_format(recipe.format)
    bar = tqdm(total=total, initial=total - len(pending), desc="eval", unit="run", disable=not progress)
    with samples_path.open("a", encoding="utf-8") as out:
        for group in batches(pending, recipe.batch_size * 4):
            records = _generate(recipe, model, tokenizer, fmt.with_wait(group[0].method.wait), group)
            answers = [Answer(j.problem.kind, j.problem.gold, r["answer"], j.problem.letters or "ABCD")
                       for j, r in zip(group, records, strict=True)]  # fmt: skip
            for record, verdict in zip(records, grader.grade(answers), strict=True):
                record.update(extracted=verdict.extracted, correct=verdict.correct, reason=verdict.reason)
                if not record["fits"]:  # no draw fitted the budget: the question counts as failed
                    record.update(correct=False, reason=f"no draw fitted the budget in {record['attempts']} attempts")
                out.write(json.dumps(record) + "\n")
            out.flush()
            os.fsync(out.fileno())
            bar.update(len(group))
    bar.close()


def _generate(recipe: EvalRecipe, model: Any, tokenizer: Any, fmt: Any, group: list[Job]) -> list[dict[str, Any]]:
    """Completions for a group of jobs; rejection sampling redraws until the thinking fits."""
    results: dict[int, Any] = {}
    attempts = dict.fromkeys(range(len(group)), 0)
    todo = list(range(len(group)))
    for attempt in range(max(j.method.max_attempts for j in group)):
        todo = [i for i in todo if attempt < group[i].method.max_attempts]
        if not todo:
            break
        out = generate(
            model,
            tokenizer,
            [[{"role": "user", "content": group[i].text}] for i in todo],
            format=fmt,
            budget=[group[i].budget for i in todo],
            sampling=group[0].sampling,
            batch_size=recipe.batch_size,
            max_new_tokens=recipe.max_tokens,
            seed=recipe.seed + 7919 * attempt + sum(map(ord, group[todo[0]].key)),
            backend=recipe.backend,
            forcing=recipe.forcing,
            engine_args=engine_args(recipe),
        )
        for i, result in zip(todo, out, strict=True):
            results[i], attempts[i] = result, attempt + 1
        # Rejection sampling draws again where the thinking went past N (its forced end marks that).
        todo = [i for i in todo if group[i].method.method == "rejection_sampling" and results[i].forced_end]
    records = []
    for i, job in enumerate(group):
        result = results[i]
        fits = not (job.method.method == "rejection_sampling" and result.forced_end)
        records.append(
            {
                "key": job.key,
                "benchmark": job.problem.benchmark,
                "problem_id": job.problem.id,
                "method": job.method.label,
                "point": job.point.label,
                "budget": job.point.budget,
                "sample": job.sample,
                "prompt": job.text,
                "gold": job.problem.gold,
                **result.to_dict(),
                "attempts": attempts[i],
                "fits": fits,
            }
        )
    return records
