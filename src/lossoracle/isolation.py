"""Run an implementation in a forked worker process, so that a crash or a hang costs one task, not the run.

A :class:`Worker` forks one child (lazily, on the first task) that inherits the callable, and
feeds it tasks over a pipe one at a time. A task's result comes back pickled; an exception in
the call comes back as a :class:`Failure`, and so do a child that dies (signal or exit) and a
task that overruns its timeout. After a crash or a timeout the child is killed and the next
task forks a fresh one. :class:`InProcess` has the same interface without a child.

Fork caveats, handled here or refused:

* GNU OpenMP is not fork-safe once the parent used its thread pool (any multithreaded torch
  op): a child that enters a parallel region hangs. The child therefore runs torch with one
  thread when torch is imported, as torch's DataLoader workers do.
* A JAX backend initialised in the parent deadlocks the child on its first JAX computation
  (and resetting the backend in the child aborts), so forking such a parent raises
  :class:`RuntimeError`. Importing jax in the parent is fine; the child initialises its own
  backend.
* CUDA cannot be used in a child forked from a parent that initialised CUDA.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing as mp
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

__all__ = ["Failure", "Worker", "InProcess", "worker", "unforkable", "forked_child", "freeze_inherited",
           "prime_torch_autograd"]

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Failure:
    """A task that produced no result.

    ``kind`` is "error" (the call raised), "unsupported" (it raised NotImplementedError),
    "crashed" (the worker died) or "timeout"; ``message`` is one line; ``exc_type`` is the
    exception class name for "error" and "unsupported".
    """

    kind: str
    message: str
    exc_type: str | None = None


def _describe(e: BaseException) -> tuple[str, str, str]:
    """(kind, message, exc_type) of an exception, located at its innermost frame."""
    name = type(e).__name__
    tb = traceback.extract_tb(e.__traceback__)
    where = f" ({os.path.basename(tb[-1].filename)}:{tb[-1].lineno})" if tb else ""
    text = " ".join(str(e).splitlines())[:200]
    return ("unsupported" if isinstance(e, NotImplementedError) else "error"), f"{name}: {text}{where}", name


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"crashed: {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"crashed: signal {-exitcode}"
    return f"crashed: exit status {exitcode}"


class InProcess:
    """Runs ``call(*args)`` in this process: exceptions become Failures, crashes and hangs are not contained."""

    def __init__(self, call: Callable[..., Any]):
        self.call = call

    def run(self, *args: Any) -> Any | Failure:
        """The result of ``call(*args)``, or a Failure when it raised (SystemExit included)."""
        try:
            return self.call(*args)
        except (Exception, SystemExit) as e:
            return Failure(*_describe(e))

    def close(self) -> None:
        pass

    def __enter__(self) -> InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(call: Callable[..., Any], conn: Connection, parent_end: Connection) -> None:
    """The child's loop: receive an argument tuple, reply ("ok", result) or ("fail", kind, message, exc_type)."""
    parent_end.close()  # so that the parent's death reads as EOF here
    if not forked_child():
        return
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    while True:
        try:
            args = conn.recv()
        except EOFError:
            return
        if args is None:
            return
        try:
            reply = ("ok", call(*args))
        except BaseException as e:  # SystemExit too: a call that exits is an error, and the worker lives on
            reply = ("fail", *_describe(e))
        try:
            conn.send(reply)
        except Exception as e:  # pickling fails before anything is written
            _, message, name = _describe(e)
            conn.send(("fail", "error", f"result of type {type(reply[1]).__name__} cannot be sent: {message}", name))


def forked_child() -> bool:
    """Set up a process forked by :class:`Worker` or :func:`lossoracle.parallel.run_all`: it ignores
    Ctrl-C (the parent's to handle; it kills us), dies with the parent even when that is SIGKILLed,
    and leaves the inherited objects out of garbage collection (:func:`freeze_inherited`), and never
    builds a native kernel (:mod:`lossoracle.implementations.native`: a cold C++ build, 30–90 s, would run
    under the worker's call timeout; the implementations take their eager kernels, or a module the
    parent built before forking). False
    when the parent is already gone."""
    freeze_inherited()
    os.environ["LOSSORACLE_NATIVE_BUILD"] = "0"
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != mp.parent_process().pid:  # it died before prctl
            return False
    return True


def freeze_inherited() -> None:
    """In a forked child: the objects inherited from the parent are left out of garbage collection.
    A collection traverses every tracked object, and in a child that inherited every imported
    library (~650k objects) each full collection wrote to all of them — copy-on-write faults,
    ~0.5 s each, in every worker that traces JAX code; the inherited objects outlive the child
    anyway."""
    gc.freeze()


def prime_torch_autograd() -> None:
    """When torch is installed: one tiny backward now, before any user code runs
    (:func:`lossoracle.implementations.compiled._prime_autograd`). A process whose first backward
    comes after a ``torch.compile`` call (a test suite training a compiled model, then checking
    with lossoracle) has autograd worker threads, and every worker forked from it refuses
    backward; a backward first keeps the engine thread-free. Imports torch (once per process)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return
    from .implementations.compiled import _prime_autograd

    _prime_autograd()


def unforkable() -> str | None:
    """Why this process cannot fork a worker (None when it can)."""
    if "jax" in sys.modules:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            return ("a JAX backend is initialised in this process, and a forked worker would deadlock on its "
                    "first JAX computation")
    return None


def _refuse_initialised_jax() -> None:
    reason = unforkable()
    if reason:
        raise RuntimeError(f"{reason}: run no JAX code before forking, or do not isolate")


class Worker:
    """Runs ``call(*args)`` in a forked child; ``call`` and everything it closes over are inherited at fork time.

    The child is forked on the first :meth:`run` and reused while healthy. Arguments and results
    travel pickled. ``timeout`` (seconds per task, None for no limit) bounds each task.
    """

    def __init__(self, call: Callable[..., Any], timeout: float | None = 60.0):
        self.call = call
        self.timeout = timeout
        self._proc: Any = None
        self._conn: Connection | None = None
        self._busy = False

    @property
    def pid(self) -> int | None:
        """The current child's process id (None before the first task and after a crash or timeout)."""
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> None:
        _refuse_initialised_jax()
        ctx = mp.get_context("fork")
        parent, child = ctx.Pipe()
        for stream in (sys.stdout, sys.stderr):  # or the child would print the parent's buffered text again
            if stream is not None:
                stream.flush()
        proc = ctx.Process(target=_serve, args=(self.call, child, parent), daemon=True, name="lossoracle-worker")
        with warnings.catch_warnings():  # Python >= 3.12 warns on forking a threaded parent; see the module notes
            warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks", category=DeprecationWarning)
            proc.start()
        child.close()
        self._proc, self._conn = proc, parent

    def _stop(self) -> None:
        """Kill and reap the child."""
        self._proc.kill()
        self._proc.join()
        self._conn.close()
        self._proc.close()
        self._proc = self._conn = None
        self._busy = False

    def run(self, *args: Any) -> Any | Failure:
        """The result of ``call(*args)`` in the child, or a Failure."""
        if self._proc is not None and not self._proc.is_alive():  # died between tasks: reap it, fork afresh
            self._stop()
        if self._proc is None:
            self._start()
        conn, proc = self._conn, self._proc
        self._busy = True
        try:
            conn.send(args)
        except OSError:  # the child is gone; its sentinel tells below
            pass
        ready = wait([conn, proc.sentinel], self.timeout)
        if not ready:
            self._stop()
            return Failure("timeout", f"timeout after {self.timeout:g} s")
        if conn in ready:  # a reply, or EOF from a dead child
            try:
                reply = conn.recv()
            except (EOFError, OSError):
                pass
            else:
                self._busy = False
                return reply[1] if reply[0] == "ok" else Failure(*reply[1:])
        proc.join()
        failure = Failure("crashed", _death(proc.exitcode))
        self._stop()
        return failure

    def close(self) -> None:
        """Stop the child: politely when it is idle, with SIGKILL when a task was interrupted."""
        if self._proc is None:
            return
        if not self._busy:
            try:
                self._conn.send(None)
                self._proc.join(timeout=1.0)
            except OSError:
                pass
        self._stop()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def worker(call: Callable[..., Any], timeout: float | None, isolate: bool = True) -> Worker | InProcess:
    """A :class:`Worker` for ``call`` (``isolate``, when this process can fork one), else an
    :class:`InProcess` runner (``timeout`` unused)."""
    return Worker(call, timeout) if isolate and unforkable() is None else InProcess(call)
