"""Catalogued implementations checked side by side, in forked processes (``lossoracle check --jobs N``).

Each task is one :func:`lossoracle.catalog.run` (one implementation of one loss, some of its
dtypes), run in one of ``jobs`` processes forked from this one; each forks its own worker for the
implementation, as a sequential run does (:mod:`lossoracle.isolation`). Reports come back in the
order of the tasks, whatever the order they finish in: the table and the JSON are those of a
sequential run.

The processes are forked before the libraries are imported: a task imports what it needs
(``needs``: module names) in the process that runs it, so the imports (seconds each for MONAI,
torchmetrics, segmentation_models_pytorch, JAX) run side by side with other tasks instead of one
after the other ahead of them all. A free process is handed, among the tasks left, first one
that needs no library only another process has imported (so each library is imported once, while
there is other work), else any; among those the costliest (``cost``), so the long tasks (JAX
implementations: one XLA compilation per case) do not finish last alone.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection, wait

from .isolation import forked_child
from .report import Report

__all__ = ["default_jobs", "run_all"]


def default_jobs() -> int:
    """One process per core this process may use, at most 4 (each holds every imported library)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


_TASKS: Sequence[Callable[[], Report]] = ()


def _serve(conn: Connection) -> None:
    """A pool process: run task ``i`` of :data:`_TASKS` (inherited at fork time: tasks close over
    implementations holding local functions, which do not pickle) for each ``i`` received; reply
    ("ok", report) or ("fail", exception)."""
    if not forked_child():
        return
    while True:
        try:
            i = conn.recv()
        except EOFError:
            return
        if i is None:
            return
        try:
            reply = ("ok", _TASKS[i]())
        except BaseException as e:  # the parent re-raises it, as a sequential run would
            reply = ("fail", e)
        try:
            conn.send(reply)
        except Exception as e:  # an unpicklable exception: its text
            conn.send(("fail", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}: {e}")))


def _pick(left: list[int], mine: set[str], others: set[str], needs: Sequence[frozenset[str]],
          cost: Sequence[float]) -> int:
    """The next task for a process holding the libraries ``mine`` (``others``: held elsewhere)."""
    def rank(i: int) -> tuple:
        return (bool(needs[i] & (others - mine)), -cost[i], i)

    return min(left, key=rank)


def run_all(tasks: Sequence[Callable[[], Report]], jobs: int, cost: Sequence[float] = (),
            needs: Sequence[Sequence[str]] = ()) -> Iterator[Report]:
    """``task()`` for each task, in order, ``jobs`` at a time (see the module docstring for which
    process runs which); ``cost``: a relative estimate of each task's time, ``needs``: the modules
    each imports. A task that raises raises here."""
    global _TASKS
    if jobs <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield task()
        return
    n = len(tasks)
    cost = list(cost) + [0.0] * (n - len(cost))
    need = [frozenset(x) for x in needs] + [frozenset()] * (n - len(needs))
    ctx = mp.get_context("fork")
    _TASKS = tasks
    procs: dict[Connection, tuple] = {}
    try:
        for _ in range(min(jobs, n)):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(child,), name="lossoracle-pool")
            proc.start()
            child.close()
            procs[parent] = (proc, set())
        left, running, done = list(range(n)), {}, {}

        def hand(conn: Connection) -> None:
            if not left:
                return
            held = procs[conn][1]
            others = set().union(*(h for c, (_, h) in procs.items() if c is not conn))
            i = _pick(left, held, others, need, cost)
            left.remove(i)
            held |= need[i]
            running[conn] = i
            conn.send(i)

        for conn in procs:
            hand(conn)
        for k in range(n):
            while k not in done:
                for conn in wait(list(running)):
                    i = running.pop(conn)
                    try:
                        status, result = conn.recv()
                    except EOFError:
                        proc = procs[conn][0]
                        proc.join()
                        raise RuntimeError(f"a --jobs process died (exit status {proc.exitcode}) "
                                           f"running task {i}") from None
                    if status == "fail":
                        raise result
                    done[i] = result
                    hand(conn)
            yield done.pop(k)
    finally:
        _TASKS = ()
        for conn, (proc, _) in procs.items():
            try:
                conn.send(None)
            except OSError:
                pass
            proc.join(timeout=1.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()
