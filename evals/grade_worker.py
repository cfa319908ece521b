"""A grading worker: a fresh interpreter, `python -m evals.grade_worker FD`, serving `Grader` over a socket.

A fresh interpreter rather than a multiprocessing child: multiprocessing's spawn re-imports the
caller's main module in every child, which fails for a script without `if __name__ == "__main__":`,
a notebook, `python -c` and a script read from stdin; fork would copy a parent that holds torch's
threads. Here the worker runs only our code, in its own main thread, where math-verify's
`signal.alarm` timeouts work.

The protocol, over the socket whose file descriptor is the one argument:
  parent -> worker: (sys.path, memory_mb, timeout_s, pickled verifier); then (index, job) pairs; None to stop
  worker -> parent: "ready" or ("error", message); then (index, verdict) pairs
"""

from __future__ import annotations

import logging
import pickle
import sys
from multiprocessing.connection import Connection

from .grading import Answer, Verdict, Verifier, grade_answer, verified


def _setup(conn: Connection) -> tuple[Verifier, float, int | None] | None:
    """Read the settings; the verifier is imported by name from the parent's module search path."""
    try:
        path, memory_mb, timeout_s, verifier_bytes = conn.recv()
    except EOFError:  # the parent went away before sending anything
        return None
    sys.path[:] = path
    try:
        verifier = pickle.loads(verifier_bytes)
    except Exception as err:
        conn.send(("error", f"the grading worker could not import the verifier: {type(err).__name__}: {err}"))
        return None
    if memory_mb:  # after the verifier's module is imported (it may import torch), as it was in the parent
        import resource

        limit = memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        import math_verify  # noqa: F401  (imported before the first deadline starts)
    except MemoryError:
        conn.send(("error", f"the grading worker ran out of memory importing math-verify ({memory_mb} MiB)"))
        return None
    # math-verify logs the expression it gave up on: a model's megabyte-long answer would go to stderr.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return verifier, timeout_s, memory_mb


def serve(conn: Connection) -> None:
    """Receive (index, job), send back (index, verdict), until told to stop or the parent is gone."""
    settings = _setup(conn)
    if settings is None:
        return
    verifier, timeout_s, memory_mb = settings
    conn.send("ready")
    while True:
        try:
            task = conn.recv()
        except EOFError:  # the parent ended without closing the grader
            return
        if task is None:
            return
        index, job = task
        try:
            if isinstance(job, Answer):
                verdict = grade_answer(job, verifier, timeout_s, memory_mb)
            else:
                verdict = verified(*job, verifier, timeout_s, memory_mb)
        except MemoryError:
            verdict = Verdict(False, None, f"grading ran out of memory ({memory_mb} MiB)")
        conn.send((index, verdict))


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
