"""Catalogued implementations checked side by side, in forked processes (``lossoracle check --jobs N``).

Each task is one :func:`lossoracle.catalog.run` (one implementation of one loss, its dtypes), run
in one of ``jobs`` processes forked from this one after every library is imported here (the
caller imports them), so no process imports one again; each forks its own worker for the
implementation, as a sequential run does (:mod:`lossoracle.isolation`). Reports come back in the
order of the tasks, whatever the order they finish in: the table and the JSON are those of a
sequential run. The tasks marked ``first`` (JAX implementations: the longest cells) start first,
so they do not finish last alone.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor

from .isolation import freeze_inherited
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


def _run(index: int) -> Report:
    """Task ``index`` of :data:`_TASKS`, which the process inherited at fork time (tasks close
    over implementations holding local functions, which do not pickle)."""
    return _TASKS[index]()


def run_all(tasks: Sequence[Callable[[], Report]], jobs: int, first: Sequence[bool] = ()) -> Iterator[Report]:
    """``task()`` for each task, in order, ``jobs`` at a time; those marked in ``first`` start first."""
    global _TASKS
    if jobs <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield task()
        return
    marked = list(first) + [False] * (len(tasks) - len(first))
    order = sorted(range(len(tasks)), key=lambda i: not marked[i])
    _TASKS = tasks
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("fork"),
                                 initializer=freeze_inherited) as pool:
            futures: dict[int, Future] = {i: pool.submit(_run, i) for i in order}
            for i in range(len(tasks)):
                yield futures[i].result()
    finally:
        _TASKS = ()
