"""Grading model answers: extraction and math-verify, both in worker processes, under one deadline.

Model output is untrusted, and math-verify parses it with sympy: a crafted or unlucky answer can
hang the parser or exhaust memory. math-verify's own timeouts rely on `signal.alarm`, which only
works in a process's main thread. So everything done to an answer (finding it in the text, parsing
and comparing it) runs in the main thread of a worker process that has an address-space limit,
under math-verify's timeout, and under a hard deadline here: a worker that overruns it is killed and
replaced, and its answer is marked wrong with the reason. An answer math-verify gives up on is
reported as timed out, never as "not equivalent". Nothing in a model output is ever executed.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product
from multiprocessing.connection import Connection, wait
from typing import Any

from .extract import extract_choice, extract_math

GRACE_S = 2.0  # beyond math-verify's own timeout, before a worker is killed


@dataclass(frozen=True)
class Verdict:
    """Whether an answer is right, what was read from it, and why."""

    correct: bool
    extracted: str | None
    reason: str


@dataclass(frozen=True)
class Answer:
    """One answer to grade: `kind` is "math" (gold is an expression) or "choice" (gold is a letter)."""

    kind: str
    gold: str
    text: str
    letters: str = "ABCD"


def wrap_math(text: str) -> str:
    """Give math-verify a delimited expression: bare LaTeX such as `\\frac{1}{2}` is boxed."""
    text = text.strip()
    if any(mark in text for mark in ("$", "\\(", "\\[", "\\boxed")):
        return text
    return "\\boxed{" + text.rstrip(".") + "}"


def verify_math(gold: str, candidate: str, timeout_s: float) -> tuple[bool, str]:
    """math-verify, gold first. Runs in a worker process (signal-based timeouts need a main thread).

    math-verify returns "no match" when its own timeout fires; here that is reported as a timeout
    (`raise_on_error=True` surfaces it, and keeps math-verify from logging the whole answer)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
    from math_verify.errors import TimeoutException

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    timeout = max(1, round(timeout_s))

    def parsed(text: str) -> list:
        try:
            return parse(text, extraction_config=configs, parsing_timeout=timeout, raise_on_error=True)
        except Exception:  # what math-verify itself maps to "nothing parsed"
            return []

    try:
        gold_parsed = parsed(wrap_math(gold))
        if not gold_parsed:
            return False, f"gold answer {gold!r} could not be parsed"
        candidates = parsed(wrap_math(candidate)) or parsed(candidate)
    except TimeoutException:
        return False, f"math-verify timed out parsing the answer (after {timeout} s)"
    if not candidates:
        return False, "answer could not be parsed"
    timed_out = False
    for expected, given in product(gold_parsed, candidates):  # what `verify` does, keeping its timeouts apart
        try:
            if verify(expected, given, timeout_seconds=timeout, raise_on_error=True):
                return True, "equivalent to gold"
        except TimeoutException:
            timed_out = True
        except Exception:  # math-verify counts a failed comparison as "not equal"
            continue
    if timed_out:
        return False, f"math-verify timed out comparing with gold (after {timeout} s)"
    return False, "not equivalent to gold"


Verifier = Callable[[str, str, float], tuple[bool, str]]
Job = Answer | tuple[str, str]  # an answer to grade whole, or a (gold, candidate) pair to verify


def _verified(gold: str, candidate: str, verifier: Verifier, timeout_s: float, memory_mb: int | None) -> Verdict:
    try:
        correct, reason = verifier(gold, candidate, timeout_s)
    except MemoryError:
        correct, reason = False, f"grading ran out of memory ({memory_mb} MiB)"
    except Exception as err:  # an answer that breaks the parser is wrong, not fatal
        correct, reason = False, f"grading failed: {type(err).__name__}"
    return Verdict(correct, candidate, reason)


def grade_answer(answer: Answer, verifier: Verifier, timeout_s: float, memory_mb: int | None = None) -> Verdict:
    """Extract and check one answer (in a worker: `Grader` runs this under its deadline)."""
    if answer.kind == "choice":
        letter, where = extract_choice(answer.text, answer.letters)
        if letter is None:
            return Verdict(False, None, where)
        ok = letter == answer.gold.strip().upper()
        return Verdict(ok, letter, f"{'matches' if ok else 'differs from'} gold ({where})")
    candidate, where = extract_math(answer.text)
    if candidate is None:
        return Verdict(False, None, where)
    return _verified(answer.gold, candidate, verifier, timeout_s, memory_mb)


def _serve(conn: Connection, memory_mb: int | None, timeout_s: float, verifier: Verifier) -> None:
    """Worker loop: receive (index, job), send back (index, verdict)."""
    if memory_mb:
        import resource

        limit = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import math_verify  # noqa: F401  (imported before the first deadline starts)

    # math-verify logs the expression it gave up on: a model's megabyte-long answer would go to stderr.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    conn.send("ready")
    while True:
        task = conn.recv()
        if task is None:
            return
        index, job = task
        try:
            if isinstance(job, Answer):
                verdict = grade_answer(job, verifier, timeout_s, memory_mb)
            else:
                verdict = _verified(*job, verifier, timeout_s, memory_mb)
        except MemoryError:
            verdict = Verdict(False, None, f"grading ran out of memory ({memory_mb} MiB)")
        conn.send((index, verdict))


def _digest(answer: Answer) -> bytes:
    fields = (answer.kind, answer.gold, answer.letters, answer.text)
    return hashlib.blake2b("\0".join(fields).encode("utf-8", "surrogatepass"), digest_size=16).digest()


class _Worker:
    def __init__(self, context: Any, memory_mb: int | None, timeout_s: float, verifier: Verifier):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, memory_mb, timeout_s, verifier), daemon=True)
        self.process.start()
        child.close()
        self.task: int | None = None
        self.deadline = 0.0
        self.ready = False

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        """Block until the worker has imported math-verify, so its start never counts as grading time."""
        if self.ready:
            return
        self.ready = self.conn.poll(timeout_s) and self.conn.recv() == "ready"
        if not self.ready:
            self.stop()
            raise RuntimeError(f"a grading worker did not start within {timeout_s:g} s")

    def stop(self) -> None:
        """Workers hold no state worth a clean exit (an interpreter teardown with sympy loaded takes
        over a second): end them at once."""
        self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class Grader:
    """Grades answers in parallel worker processes, each answer under a time and memory limit.

        with Grader(workers=2) as grader:
            verdicts = grader.grade([Answer("math", "\\frac{1}{2}", "... \\boxed{0.5}")])

    Args:
        workers: worker processes for math-verify.
        timeout_s: time allowed per answer, extraction included; an answer that takes longer is
            wrong ("timed out"), and so is one math-verify gives up on.
        memory_mb: address-space limit per worker (None: no limit).
        verifier: `(gold, candidate, timeout_s) -> (correct, reason)` for math answers, run in the
            workers; a module-level function (it is sent to another process). Default: math-verify.
    """

    def __init__(
        self,
        workers: int = 2,
        timeout_s: float = 5.0,
        memory_mb: int | None = 4096,
        verifier: Verifier = verify_math,
    ):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.n_workers = workers
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.verifier = verifier
        self._context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
        self._workers: list[_Worker] = []
        # Verdicts already given, keyed by a digest of the answer (its text may be megabytes) or by a
        # (gold, candidate) pair: an answer seen again is not graded again.
        self._cache: dict[bytes | tuple[str, str], Any] = {}

    def __enter__(self) -> Grader:
        return self

    def start(self) -> Grader:
        """Start the workers now, without waiting: their imports (several seconds) then overlap
        with whatever the caller does before the first `grade`, such as generation."""
        while len(self._workers) < self.n_workers:
            self._workers.append(self._spawn())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()
        self._workers = []

    def grade(self, answers: Sequence[Answer]) -> list[Verdict]:
        """One verdict per answer, in order. Each distinct answer is graded once, in a worker."""
        for i, answer in enumerate(answers):
            if answer.kind not in ("math", "choice"):
                raise ValueError(f"answer {i}: kind must be 'math' or 'choice', got {answer.kind!r}")
        keys = [_digest(answer) for answer in answers]
        todo = {key: answer for key, answer in zip(keys, answers, strict=True) if key not in self._cache}
        verdicts = self._run_all(list(todo.values()))
        self._cache.update({key: verdicts[answer] for key, answer in todo.items()})
        return [self._cache[key] for key in keys]

    def equivalent(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """Whether each (earlier, later) pair of extracted math answers is the same answer: the verifier
        with the first as gold, in the workers under the same deadlines as grading (for majority vote).
        A pair that does not parse, fails or times out counts as two different answers."""
        todo = sorted({pair for pair in pairs if pair not in self._cache})
        self._cache.update(self._verify_all(todo))
        return [self._cache[pair][0] for pair in pairs]

    def _verify_all(self, tasks: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[bool, str]]:
        """(correct, reason) for (gold, candidate) pairs already extracted, each verified in a worker."""
        todo = [task for task in dict.fromkeys(tasks) if task not in self._cache]
        self._cache.update({task: (v.correct, v.reason) for task, v in self._run_all(todo).items()})
        return {task: self._cache[task] for task in tasks}

    def _run_all(self, jobs: list[Job]) -> dict[Job, Verdict]:
        """Run every job in the workers, each under the deadline; a worker that overruns it or dies is replaced."""
        results: dict[Job, Verdict] = {}
        if not jobs:
            return results
        self._workers += [self._spawn() for _ in range(min(self.n_workers, len(jobs)) - len(self._workers))]
        for worker in self._workers:
            worker.wait_ready()
        pending = list(range(len(jobs)))[::-1]
        while pending or any(w.task is not None for w in self._workers):
            for worker in self._workers:
                if worker.task is None and pending:
                    worker.task = pending.pop()
                    worker.deadline = time.monotonic() + self.timeout_s + GRACE_S
                    worker.conn.send((worker.task, jobs[worker.task]))
            busy = [w for w in self._workers if w.task is not None]
            wait_s = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=wait_s)
            for k, worker in enumerate(self._workers):
                if worker.task is None:
                    continue
                job = jobs[worker.task]
                extracted = None if isinstance(job, Answer) else job[1]
                if worker.conn.poll():
                    _, results[job] = worker.conn.recv()
                    worker.task = None
                elif not worker.process.is_alive():
                    code = worker.process.exitcode
                    results[job] = Verdict(False, extracted, f"grading worker died (exit code {code}; memory limit?)")
                    worker.task = None
                    self._workers[k] = self._replace(worker)
                elif time.monotonic() > worker.deadline:
                    results[job] = Verdict(False, extracted, f"grading timed out after {self.timeout_s:g} s")
                    worker.task = None
                    self._workers[k] = self._replace(worker)
        return results

    def _spawn(self) -> _Worker:
        return _Worker(self._context, self.memory_mb, self.timeout_s, self.verifier)

    def _replace(self, worker: _Worker) -> _Worker:
        worker.stop()
        fresh = self._spawn()
        fresh.wait_ready()
        return fresh
