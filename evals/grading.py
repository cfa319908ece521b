"""Grading model answers: extraction and math-verify, both in worker processes, under one deadline.

Model output is untrusted, and math-verify parses it with sympy: a crafted or unlucky answer can
hang the parser or exhaust memory. math-verify's own timeouts rely on `signal.alarm`, which only
works in a process's main thread. So everything done to an answer (finding it in the text, parsing
and comparing it) runs in the main thread of a worker process (`evals.grade_worker`, a fresh
interpreter: it works whatever the caller's script looks like) that has an address-space limit,
under math-verify's timeout, and under a hard deadline here: a worker that overruns it is killed and
replaced, and its answer is marked wrong with the reason. An answer math-verify gives up on is
reported as timed out, never as "not equivalent". Nothing in a model output is ever executed.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from .extract import extract_choice, extract_math

GRACE_S = 2.0  # beyond math-verify's own timeout, before a worker is killed
_ROOT = str(Path(__file__).resolve().parents[1])  # the folder holding this package, put first on the workers' path


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


def verified(gold: str, candidate: str, verifier: Verifier, timeout_s: float, memory_mb: int | None) -> Verdict:
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
    return verified(answer.gold, candidate, verifier, timeout_s, memory_mb)


def _pickled_verifier(verifier: Verifier) -> bytes:
    """The verifier as the workers receive it: a reference to a function of an importable module."""
    name = getattr(verifier, "__qualname__", repr(verifier))
    if getattr(verifier, "__module__", None) == "__main__":
        raise ValueError(
            f"verifier {name} is defined in the script being run (__main__): the grading workers are fresh "
            "interpreters that import the verifier by its module's name; define it in a module of its own"
        )
    try:
        return pickle.dumps(verifier)
    except (pickle.PicklingError, TypeError, AttributeError) as err:
        raise ValueError(
            f"verifier {name} cannot be sent to the grading workers ({err}): use a function defined at the top "
            "level of an importable module (not a lambda or a nested function)"
        ) from None


def _digest(answer: Answer) -> bytes:
    fields = (answer.kind, answer.gold, answer.letters, answer.text)
    return hashlib.blake2b("\0".join(fields).encode("utf-8", "surrogatepass"), digest_size=16).digest()


class _Worker:
    """One worker process (`evals.grade_worker`) and the socket to it."""

    def __init__(self, memory_mb: int | None, timeout_s: float, verifier: bytes):
        self.conn, child = multiprocessing.Pipe()  # a connected socket pair
        # Our package first, so the worker runs this copy of `evals` wherever the caller's cwd is.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-m", "evals.grade_worker", str(child.fileno())],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
        )
        child.close()
        self.conn.send((list(sys.path), memory_mb, timeout_s, verifier))
        self.task: int | None = None
        self.deadline = 0.0
        self.ready = False

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        """Block until the worker has imported math-verify, so its start never counts as grading time."""
        if self.ready:
            return
        message: Any = None
        if self.conn.poll(timeout_s):
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                message = ("error", f"a grading worker exited while starting (exit code {self.exit_code()})")
        self.ready = message == "ready"
        if not self.ready:
            self.stop()
            if isinstance(message, tuple) and message[:1] == ("error",):
                raise RuntimeError(message[1])
            raise RuntimeError(f"a grading worker did not start within {timeout_s:g} s")

    def receive(self) -> tuple[int, Verdict] | None:
        """The worker's answer if one has arrived, None if not yet; EOFError once the worker is gone."""
        if not self.conn.poll():
            return None
        try:
            return self.conn.recv()
        except OSError:
            raise EOFError from None

    def exit_code(self) -> int | None:
        try:
            return self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """Workers hold no state worth a clean exit (an interpreter teardown with sympy loaded takes
        over a second): end them at once."""
        self.process.kill()
        self.process.wait(timeout=5)
        self.conn.close()


def _stop_all(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.stop()
    workers.clear()


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
            workers; a function at the top level of an importable module, not of the script being run
            (the workers import it by name). Default: math-verify.
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
        self._verifier_bytes = _pickled_verifier(verifier)
        self._workers: list[_Worker] = []
        # Workers end with the grader, or at the latest when the interpreter exits (a grader never closed).
        self._finalizer = weakref.finalize(self, _stop_all, self._workers)
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
        _stop_all(self._workers)

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
        self._workers.extend(self._spawn() for _ in range(min(self.n_workers, len(jobs)) - len(self._workers)))
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
            wait([w.conn for w in busy], timeout=wait_s)  # a worker that dies closes its end: readable too
            for k, worker in enumerate(self._workers):
                if worker.task is None:
                    continue
                job = jobs[worker.task]
                extracted = None if isinstance(job, Answer) else job[1]
                try:
                    answer = worker.receive()
                except EOFError:  # the worker died
                    code = worker.exit_code()
                    results[job] = Verdict(False, extracted, f"grading worker died (exit code {code}; memory limit?)")
                    worker.task = None
                    self._workers[k] = self._replace(worker)
                    continue
                if answer is not None:
                    results[job] = answer[1]
                    worker.task = None
                elif time.monotonic() > worker.deadline:
                    results[job] = Verdict(False, extracted, f"grading timed out after {self.timeout_s:g} s")
                    worker.task = None
                    self._workers[k] = self._replace(worker)
        return results

    def _spawn(self) -> _Worker:
        return _Worker(self.memory_mb, self.timeout_s, self._verifier_bytes)

    def _replace(self, worker: _Worker) -> _Worker:
        worker.stop()
        fresh = self._spawn()
        fresh.wait_ready()
        return fresh
