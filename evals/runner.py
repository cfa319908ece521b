"""Run a recipe: generate every (problem, method, point, sample), grade it, and write the report.

Each finished generation is appended to `samples.jsonl` with its verdict, so an interrupted run
started again with the same recipe skips what is done. A run folder belongs to one set of
generation settings (model, format, sampling, ...): resuming with other settings is refused.

Every record also keeps the settings that made it (`settings`): the benchmark's source and fields,
the question, gold answer and prompt, the method's wait string, minimum, attempts and instruction,
the budget, the sampling and the grading limits. A rerun whose job has the key of a saved record
but other settings is refused, with the settings that differ named, so that records made with
different settings are never mixed; benchmarks, methods, points, samples and questions (a larger
`limit`) may be added, and run as new records.

A model is known by what it is, not where it lives: `decode.prepare.preflight.model_fingerprint` of its files
(config, tokenizer, index and the weights' sizes, headers and samples) is in `run.json` and in every
record's settings (`model`), so weights replaced under the same path are refused by name on resume.
Everything that can be checked without the model (the device, the model folder's files, the output
folder, the tokenizer against the model's embedding, the chat template's arguments, the thinking cap)
is checked before anything is written or loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from decode import Budget, PromptError, Sampling, generate, get_format, load_model, load_tokenizer
from decode.prepare.dtype import resolve_dtype
from decode.prepare.loading import check_source
from decode.prepare.model_config import read_model_config
from decode.prepare.preflight import (
    device_problem,
    folder_writable_problem,
    model_fingerprint,
    model_folder_problem,
    template_kwargs_problem,
    vocabulary_problem,
)

from .benchmarks import BenchmarkSpec, Problem, load_problems
from .grading import Answer, Grader
from .inputs import check_argument
from .judge import Judge, JudgeSettings
from .methods import MethodSpec, Point, record_settings, with_answer_room
from .recipe import EvalRecipe
from .report import vote_equivalence, vote_pairs, write_report

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
    settings: dict[str, Any]
    max_tokens: int = 0  # the generation window of this job


def user_message(recipe: EvalRecipe, problem: Problem, suffix: str) -> str:
    """The question, the recipe's instruction for its kind, then the method's sentence (L1's layout).
    The instruction follows a blank line, or, when it starts with white space itself, that white space
    (L1's math prompts: "{question} Let's think step by step ...")."""
    text = problem.question
    instruction = recipe.instruction.get(problem.kind, "")
    if instruction:
        text += instruction if instruction[0].isspace() else "\n\n" + instruction
    if suffix:
        text += (" " if instruction else "\n\n") + suffix
    return text


def grading_settings(recipe: EvalRecipe) -> dict[str, Any]:
    return {"workers": 2, "timeout_s": 5.0, "memory_mb": 4096, **recipe.grading}


def plan(recipe: EvalRecipe, problems: list[Problem], model: str | None = None) -> list[Job]:
    """Every generation the recipe asks for. Majority vote draws max(k) samples once per budget;
    its points vote over the first k of them. `model`: the model's fingerprint, kept in every record."""
    specs = {spec.name: spec for spec in recipe.benchmarks}
    grading = grading_settings(recipe)
    limits = {"timeout_s": grading["timeout_s"], "memory_mb": grading["memory_mb"]}
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
                text = user_message(recipe, problem, method.suffix(point))
                budget = method.budget(point, recipe.max_answer_tokens)
                sampling = method.sampling(recipe.sampling)
                settings = {
                    "benchmark": benchmark_settings(specs[problem.benchmark]),
                    "question": problem.question,
                    "gold": problem.gold,
                    "kind": problem.kind,
                    "letters": problem.letters,
                    "prompt": text,
                    **record_settings(method, point),
                    # end_at_zero_steps only when set, so runs made before it existed still resume
                    "budget": {k: v for k, v in asdict(budget).items() if k != "end_at_zero_steps" or v},
                    "sampling": asdict(sampling),
                    "grading": limits,
                }
                if model is not None:
                    settings["model"] = model
                if recipe.judge:  # only when set, so runs made before the setting existed still resume
                    settings["judge"] = JudgeSettings(**recipe.judge).record()
                jobs.append(
                    Job(
                        key=f"{problem.benchmark}/{problem.id}/{method.label}/{point.label}/{sample}",
                        problem=problem,
                        method=method,
                        point=point,
                        sample=sample,
                        text=text,
                        budget=budget,
                        sampling=sampling,
                        settings=json.loads(json.dumps(settings)),  # as it reads back from samples.jsonl
                        max_tokens=method.max_tokens(point, recipe.max_tokens),
                    )
                )
    return jobs


def benchmark_settings(spec: BenchmarkSpec) -> dict[str, Any]:
    """The benchmark's source and fields; `limit` only chooses which questions, each checked by its text."""
    return {k: v for k, v in asdict(spec).items() if k not in ("name", "limit")}


def check_settings(jobs: list[Job], done: dict[str, dict[str, Any]], path: Path) -> None:
    """Refuse to resume where a saved record was made with settings other than its job's, naming them."""
    for job in jobs:
        record = done.get(job.key)
        if record is None or record.get("settings") == job.settings:
            continue
        old, new = _flatten(record.get("settings") or {}), _flatten(job.settings)
        changed = [
            f"{name}: {_short(old.get(name, '(not recorded)'))} -> {_short(new.get(name, '(absent)'))}"
            for name in sorted(old.keys() | new.keys())
            if old.get(name) != new.get(name)
        ]
        raise RunError(
            f"{path} holds {job.key} made with other settings ({'; '.join(changed[:4])}"
            f"{'; ...' if len(changed) > 4 else ''}); give the method or benchmark a new label or name, "
            "or use another output_dir"
        )


def _flatten(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[prefix + name] = value
    return flat


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_samples(path: Path) -> dict[str, dict[str, Any]]:
    """Records already written. A last line cut short by a crash is dropped; any other bad line is an error."""
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    lines = path.read_bytes().splitlines()
    for number, raw in enumerate(lines, start=1):
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if number == len(lines):
                break  # an append interrupted mid-line
            raise RunError(f"{path}: line {number} is not valid JSON; delete the run folder to start over") from None
        if not isinstance(record, dict) or not isinstance(record.get("key"), str):
            raise RunError(f"{path}: line {number} is not a sample record (it has no 'key'); delete the run folder")
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


def check_run_folder(recipe: EvalRecipe, folder: Path, model: str | None = None, write: bool = True) -> None:
    """Refuse a run folder made with other settings or another model (`model`: its fingerprint); with
    `write`, record this run's description there when there is none yet."""
    info_path = folder / RUN_INFO
    info = {"fingerprint": recipe.fingerprint(), "recipe": recipe.source, "model": recipe.model,
            "dtype": run_dtype(recipe)}  # fmt: skip
    if model is not None:
        info["model_fingerprint"] = model
    if info_path.exists():
        try:
            old = json.loads(info_path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            old = None
        if not isinstance(old, dict):
            raise RunError(f"{info_path}: not a valid run description (a JSON object); delete the run folder")
        if old.get("fingerprint") != info["fingerprint"] or old.get("dtype", info["dtype"]) != info["dtype"]:
            raise RunError(
                f"{folder} holds a run with other generation settings (recipe {old.get('recipe')}, model "
                f"{old.get('model')}); use another output_dir or delete that folder"
            )
        if model is not None and old.get("model_fingerprint") != model:
            raise RunError(
                f"{folder} holds a run of model {old.get('model')} with files fingerprint "
                f"{old.get('model_fingerprint', '(not recorded)')}; model {recipe.model} now has {model} (other "
                "weights, config or tokenizer): its records would mix two models; use another output_dir"
            )
        return
    if not write:
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
    """Jobs grouped by what one decoder call shares (wait string, sampling, redraws, window), in chunks."""
    groups: dict[tuple[str, Sampling, bool, int], list[Job]] = {}
    for job in jobs:
        redraws = job.method.method == "rejection_sampling"
        groups.setdefault((job.method.wait, job.sampling, redraws, job.max_tokens), []).append(job)
    for group in groups.values():
        for start in range(0, len(group), size):
            yield group[start : start + size]


def preflight(recipe: EvalRecipe) -> str:
    """What can be checked before anything is written or loaded: the model and tokenizer are found,
    the device is on this machine, the model folder's files are whole, the output folder is writable.
    Returns the model's fingerprint (for a server, its tokenizer folder's: its weights cannot be read)."""
    if recipe.backend != "openai":
        check_source(recipe.model, "model")
    if recipe.tokenizer:
        check_source(recipe.tokenizer, "tokenizer")
    problem = device_problem(recipe.device) if recipe.backend == "hf" else None
    if recipe.backend != "openai":
        problem = problem or model_folder_problem(recipe.model, tokenizer_needed=not recipe.tokenizer)
    problem = problem or folder_writable_problem(recipe.output_dir, "output_dir")
    if problem:
        raise RunError(f"{recipe.source}: {problem}")
    folders = [recipe.tokenizer] if recipe.backend == "openai" else [recipe.model, recipe.tokenizer]
    return " ".join(model_fingerprint(f) for f in folders if f)


def check_tokenizer(recipe: EvalRecipe, tokenizer: Any, needs_cap: bool) -> int | None:
    """The tokenizer against the model's embedding and the recipe's chat template arguments; returns the
    thinking cap when a budget sets no maximum (`needs_cap`; None: no cap), all before the model loads."""
    config = read_model_config(recipe.tokenizer if recipe.backend == "openai" else recipe.model)
    problem = vocabulary_problem(tokenizer, config)
    problem = problem or template_kwargs_problem(tokenizer, recipe.chat_template_kwargs)
    if problem:
        raise RunError(f"{recipe.source}: {problem}")
    if not needs_cap:  # only budgets with no maximum take the cap, so only they need the window to hold one
        return None
    force = get_format(recipe.format).force
    return recipe.thinking_cap(len(tokenizer.encode(force, add_special_tokens=False)))


def run(recipe: EvalRecipe, *, progress: bool = True) -> Path:
    """Run (or resume) the recipe; returns the output folder.

    A run that fails before its first record is saved leaves no trace: the run description and the
    empty samples file it made are removed again (and the folder, if it made it and it is empty)."""
    check_argument("evals.run", "recipe", recipe, EvalRecipe, "an EvalRecipe (evals.load_recipe('recipe.yaml'))")
    check_argument("evals.run", "progress", progress, bool, "True or False")
    folder = Path(recipe.output_dir)
    new_folder, new_run = not folder.exists(), not (folder / RUN_INFO).exists()
    try:
        return _run(recipe, folder, progress)
    except BaseException:
        samples = folder / SAMPLES
        if new_run and (folder / RUN_INFO).exists() and not (samples.exists() and samples.stat().st_size):
            samples.unlink(missing_ok=True)
            (folder / RUN_INFO).unlink()
            if new_folder and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _run(recipe: EvalRecipe, folder: Path, progress: bool) -> Path:
    problems = [p for spec in recipe.benchmarks for p in load_problems(spec)]
    model_id = preflight(recipe)
    jobs = plan(recipe, problems, model_id)
    check_run_folder(recipe, folder, model_id, write=False)
    samples_path = folder / SAMPLES
    done = read_samples(samples_path)
    check_settings(jobs, done, samples_path)
    pending = [job for job in jobs if job.key not in done]
    tokenizer = cap = None
    if pending:
        tokenizer = load_tokenizer(recipe.tokenizer or recipe.model)
        cap = check_tokenizer(recipe, tokenizer, any(job.budget.max_thinking_tokens is None for job in pending))
    check_run_folder(recipe, folder, model_id)
    drop_partial_line(samples_path)
    with Grader(**grading_settings(recipe)) as grader:
        if pending:
            grader.start()  # workers start while the model loads and generates
            if recipe.backend == "hf":
                model = load_model(recipe.model, dtype=recipe.dtype, device=recipe.device)
            else:  # a model path for vLLM (the engine is built once per process), a URL for a server
                model = recipe.model
            _run_pending(recipe, model, tokenizer, grader, pending, samples_path, len(jobs), progress, cap)
            done = read_samples(samples_path)
        records = [done[job.key] for job in jobs]
        pairs = vote_pairs(recipe, records)  # majority vote's answers, compared by math-verify
        equivalent = vote_equivalence(pairs, grader.equivalent(pairs)) if pairs else None
    write_report(recipe, folder, records, equivalent)
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
    cap: int | None,
) -> None:
    """Generate, grade and append the jobs not done yet, a chunk at a time (each chunk saved whole);
    `cap` is the thinking maximum given to budgets that set none."""
    fmt = get_format(recipe.format)
    judge = Judge(JudgeSettings(**recipe.judge)) if recipe.judge else None
    bar = tqdm(total=total, initial=total - len(pending), desc="eval", unit="run", disable=not progress)
    with samples_path.open("a", encoding="utf-8") as out:
        for group in batches(pending, recipe.batch_size * 4):
            records = _generate(recipe, model, tokenizer, fmt.with_wait(group[0].method.wait), group, cap)
            answers = [Answer(j.problem.kind, j.problem.gold, r["answer"], j.problem.letters or "ABCD")
                       for j, r in zip(group, records, strict=True)]  # fmt: skip
            judged = judge_records(judge, group, records)
            for job, record, verdict, judged_one in zip(group, records, grader.grade(answers), judged, strict=True):
                record.update(extracted=verdict.extracted, correct=verdict.correct, reason=verdict.reason)
                record["judge"] = judged_one
                if judged_one is not None:  # s1's grading decides; math-verify's verdict is kept beside it
                    record.update(math_verify_correct=verdict.correct, extracted=judged_one["extracted"],
                                  correct=judged_one["correct"], reason=judged_one["reason"])  # fmt: skip
                if not record["fits"]:  # no draw fitted the budget: the question counts as failed
                    record.update(correct=False, reason=f"no draw fitted the budget in {record['attempts']} attempts")
                elif record["unanswered"] and not record["correct"]:
                    record["reason"] = f"no answer: thinking reached the generation window ({job.max_tokens} tokens)"
                elif record["truncated"] and not record["correct"]:
                    where = "max_answer_tokens" if record["finish_reason"] == "max_answer" else "the generation window"
                    record["reason"] = f"answer truncated at {where}; {verdict.reason}"
                out.write(json.dumps(record) + "\n")
            out.flush()
            os.fsync(out.fileno())
            bar.update(len(group))
    bar.close()


def judge_records(judge: Judge | None, group: list[Job], records: list[dict[str, Any]]) -> list[dict | None]:
    """s1's judge on each record's answer (None per record when the recipe has no judge)."""
    if judge is None:
        return [None] * len(records)
    items = [(j.problem.kind, j.problem.gold, r["answer"], j.problem.question)
             for j, r in zip(group, records, strict=True)]  # fmt: skip
    out = []
    for v in judge.verdicts(items):
        reason = f"s1's judge replied {v.reply!r}" if v.asked else "s1's rule, without the judge"
        out.append({**judge.settings.record(), "asked": v.asked, "reply": v.reply, "extracted": v.extracted,
                    "correct": v.correct, "reason": reason})  # fmt: skip
    return out


def _generate(
    recipe: EvalRecipe, model: Any, tokenizer: Any, fmt: Any, group: list[Job], cap: int | None
) -> list[dict[str, Any]]:
    """Completions for a group of jobs; rejection sampling redraws until the thinking fits.

    A budget without a maximum gets `cap`, which keeps room for the answer."""
    budgets = [with_answer_room(job.budget, cap) for job in group]
    results: dict[int, Any] = {}
    attempts = dict.fromkeys(range(len(group)), 0)
    todo = list(range(len(group)))
    for attempt in range(max(j.method.max_attempts for j in group)):
        todo = [i for i in todo if attempt < group[i].method.max_attempts]
        if not todo:
            break
        try:
            out = generate(
                model,
                tokenizer,
                [[{"role": "user", "content": group[i].text}] for i in todo],
                format=fmt,
                budget=[budgets[i][0] for i in todo],
                sampling=group[0].sampling,
                batch_size=recipe.batch_size,
                max_new_tokens=group[0].max_tokens,
                seed=recipe.seed + 7919 * attempt + sum(map(ord, group[todo[0]].key)),
                backend=recipe.backend,
                forcing=recipe.forcing,
                engine_args=engine_args(recipe),
                chat_template_kwargs=recipe.chat_template_kwargs,
            )
        except PromptError as err:  # raised before this call generates anything
            problem = group[todo[err.index]].problem
            raise RunError(f"problem {problem.benchmark}/{problem.id}: its prompt {err.detail}") from None
        for i, result in zip(todo, out, strict=True):
            results[i], attempts[i] = result, attempt + 1
        # Rejection sampling draws again where the thinking went past N (its forced end marks that).
        todo = [i for i in todo if group[i].method.method == "rejection_sampling" and results[i].forced_end]
    records = []
    for i, job in enumerate(group):
        result = results[i]
        fits = not (job.method.method == "rejection_sampling" and result.forced_end)
        # The whole completion, as L1 counts n: every generated token but the final end-of-sequence.
        completion_tokens = len(result.completion_ids) - (result.finish_reason == "eos")
        unanswered = result.finish_reason == "length" and not result.answer.strip()
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
                "kind": job.problem.kind,
                **result.to_dict(),
                "completion_tokens": completion_tokens,
                "forced_for_answer": budgets[i][1] and result.forced_end,
                "truncated": result.finish_reason in ("max_answer", "length") and not unanswered,
                "unanswered": unanswered,
                "attempts": attempts[i],
                "fits": fits,
                "settings": job.settings,
            }
        )
    return records
