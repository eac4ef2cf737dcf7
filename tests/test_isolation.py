"""Worker isolation (crash, hang, errors, reuse, fork safety) and the resumable journal."""

import faulthandler
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lossoracle import isolation as iso
from lossoracle import journal



def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def _segfault():
    faulthandler.disable()  # the child inherits pytest's; its dump is noise here
    os.kill(os.getpid(), signal.SIGSEGV)


def _boom(x):
    raise RuntimeError(f"boom {x}\nsecond line")


BOOM_LINE = _boom.__code__.co_firstlineno + 1


def test_segfault_is_a_crash_and_the_next_task_forks_afresh():
    calls = {"segv": _segfault, "ok": lambda: os.getpid()}
    with iso.Worker(lambda what: calls[what](), timeout=10) as w:
        first = w.run("ok")
        r = w.run("segv")
        assert r == iso.Failure("crashed", "crashed: SIGSEGV")
        assert w.pid is None and _gone(first)
        second = w.run("ok")
        assert isinstance(second, int) and second != first and second != os.getpid()


def test_hang_times_out_and_the_next_task_works():
    with iso.Worker(lambda s: time.sleep(s) or s, timeout=1) as w:
        assert w.run(0) == 0
        pid = w.pid
        t = time.perf_counter()
        assert w.run(1000) == iso.Failure("timeout", "timeout after 1 s")
        assert time.perf_counter() - t < 3 and _gone(pid)
        assert w.run(0.01) == 0.01


def test_exception_reports_type_message_and_innermost_frame():
    with iso.Worker(_boom) as w:
        r = w.run(7)
        assert r == iso.Failure("error", f"RuntimeError: boom 7 second line (test_isolation.py:{BOOM_LINE})",
                                "RuntimeError")
        pid = w.pid
        assert w.run(8).message.startswith("RuntimeError: boom 8") and w.pid == pid  # the worker survives


def test_not_implemented_is_unsupported():
    def f(dtype):
        raise NotImplementedError(f"no {dtype}")

    r = iso.Worker(f).run("float16")
    assert r.kind == "unsupported" and r.exc_type == "NotImplementedError"
    assert r.message.startswith("NotImplementedError: no float16 (test_isolation.py:")


def test_healthy_worker_is_reused_and_returns_arrays():
    with iso.Worker(lambda x: (os.getpid(), x * 2, {"g": (x + 1, "float32")})) as w:
        pids = set()
        for i in range(5):
            pid, y, grads = w.run(np.arange(3.0) + i)
            pids.add(pid)
            np.testing.assert_array_equal(y, 2 * (np.arange(3.0) + i))
            np.testing.assert_array_equal(grads["g"][0], np.arange(3.0) + i + 1)
        assert pids == {w.pid} and w.pid != os.getpid()


def test_exits_and_unpicklable_results():
    actions = {"exit3": lambda: os._exit(3), "sysexit": lambda: sys.exit(2), "lambda": lambda: (lambda: 0),
               "ok": lambda: "ok"}
    with iso.Worker(lambda what: actions[what](), timeout=10) as w:
        assert w.run("exit3") == iso.Failure("crashed", "crashed: exit status 3")
        r = w.run("sysexit")
        assert (r.kind, r.exc_type) == ("error", "SystemExit")
        pid = w.pid
        r = w.run("lambda")
        assert r.kind == "error" and "result of type function cannot be sent" in r.message
        assert w.run("ok") == "ok" and w.pid == pid


def test_child_dying_between_tasks_is_replaced():
    def call(die):
        if die:
            threading.Timer(0.05, os._exit, (1,)).start()
        return os.getpid()

    with iso.Worker(call, timeout=10) as w:
        pid = w.run(True)
        time.sleep(0.3)
        assert w.run(False) != pid


def test_close_stops_the_child():
    w = iso.Worker(lambda: 1)
    assert w.run() == 1
    pid = w.pid
    w.close()
    assert _gone(pid) and w.pid is None


def test_in_process_runner():
    r = iso.worker(_boom, timeout=5, isolate=False)
    assert isinstance(r, iso.InProcess)
    assert r.run(1) == iso.Failure("error", f"RuntimeError: boom 1 second line (test_isolation.py:{BOOM_LINE})",
                                   "RuntimeError")
    assert iso.worker(len, None).run([1, 2]) == 2


def test_torch_in_child_after_multithreaded_parent():
    torch = pytest.importorskip("torch")
    if torch.get_num_threads() < 2:
        pytest.skip("needs a multithreaded torch")
    a = torch.randn(1500, 1500)
    (a @ a).sum()  # the parent's OpenMP pool is now live

    def task(n):
        x = torch.randn(n, n, dtype=torch.float64, requires_grad=True)
        (x @ x).exp().mean().backward()
        return torch.get_num_threads(), float(x.grad.abs().sum()) > 0

    with iso.Worker(task, timeout=20) as w:
        assert w.run(1500) == (1, True)


def test_parent_death_kills_a_hanging_child():
    script = textwrap.dedent("""
        import os, threading, time
        from lossoracle import isolation as iso
        w = iso.Worker(lambda: time.sleep(1000), None)
        threading.Timer(0.5, lambda: (print(w.pid, flush=True), os.kill(os.getpid(), 9))).start()
        w.run()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=10).stdout
    pid = int(out)
    deadline = time.time() + 3
    while not _gone(pid) and time.time() < deadline:
        time.sleep(0.05)
    assert _gone(pid)


def test_jax_fork_safety():
    pytest.importorskip("jax")
    script = textwrap.dedent("""
        from lossoracle import isolation as iso
        import jax, jax.numpy as jnp
        task = lambda: float(jax.grad(lambda x: jnp.sum(jax.nn.softplus(x)))(jnp.zeros(4)).sum())
        print(iso.Worker(task, 30).run())
        task()
        try:
            iso.Worker(task, 30).run()
        except RuntimeError as e:
            print("refused", e)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60).stdout
    assert out.splitlines()[0] == "2.0"
    assert out.splitlines()[1].startswith("refused a JAX backend is initialised")


def _rows(loss, impl, dtype, n):
    return [{"loss": loss, "implementation": impl, "device": None, "dtype": dtype, "case": f"c{i}",
             "quantity": "value", "verdict": "conforms", "max_ulp": float("inf") if i else 0.5} for i in range(n)]


def test_journal_round_trip_and_resume(tmp_path):
    path = str(tmp_path / "j.jsonl")
    a, b, c = _rows("l", "A", "float32", 3), _rows("l", "A", "float64", 2), _rows("l", "B", "float32", 2)
    with journal.Journal(path) as j:
        j.append(a)
        j.end_cell(("l", "A", None, "float32"))
        j.append(b)
        j.end_cell(("l", "A", None, "float64"))
        j.append(c[:1])  # interrupted half-way through cell B
    rows = journal.load(path)
    assert rows[:3] == a and rows[1]["max_ulp"] == float("inf")
    assert journal.done_cells(rows) == {("l", "A", None, "float32"), ("l", "A", None, "float64")}
    assert journal.completed(rows) == a + b

    with open(path, "a") as f:
        f.write(json.dumps(c[1])[:25])  # killed mid-write
    rows = journal.load(path)
    assert rows[-1] == c[0] and len(rows) == 8

    with journal.Journal(path, resume=True) as j:  # keeps complete cells only, then reruns B
        assert journal.completed(journal.load(path), markers=True) == journal.load(path)
        j.append(c)
        j.end_cell(("l", "B", None, "float32"))
    rows = journal.load(path)
    assert journal.completed(rows) == a + b + c
    assert journal.done_cells(rows) == {("l", "A", None, "float32"), ("l", "A", None, "float64"),
                                        ("l", "B", None, "float32")}


def test_journal_rejects_a_corrupt_middle_line(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"cell_done": ["l", "A", null, "float32"]}\n{"loss": \n{"cell_done": ["l", "B", null, "f"]}\n')
    with pytest.raises(ValueError, match="j.jsonl:2"):
        journal.load(str(path))
    journal.Journal(str(path)).close()  # a fresh run truncates
    assert journal.load(str(path)) == []


# ----------------------------------------------------------------------------------------------
# The engine and the CLI: a crash and a hang become verdicts, and the run goes on


def _crash_in_float16(input, target, **kw):
    import torch.nn.functional as F

    if input.dtype == torch.float16:
        os.kill(os.getpid(), signal.SIGSEGV)
    return F.nll_loss(input, target, **kw)


def _hang_in_float16(input, target, **kw):
    import torch.nn.functional as F

    if input.dtype == torch.float16:
        time.sleep(1000)
    return F.nll_loss(input, target, **kw)


torch = pytest.importorskip("torch")


@pytest.mark.parametrize("fn, verdict, text", [(_crash_in_float16, "crashed", "crashed: SIGSEGV in case "),
                                               (_hang_in_float16, "timeout", "timeout after 5 s in case ")])
def test_a_crash_or_a_hang_is_a_verdict_and_the_run_goes_on(fn, verdict, text):
    from lossoracle import check

    faulthandler.disable()  # pytest's faulthandler would print the child's traceback
    try:
        # 5 s: a fresh worker's first nll_loss case took over 2 s on a loaded 2-core machine (load 10-12)
        report = check(fn, "nll_loss", "torch", dtypes=["float16", "float32"], timeout=5)
    finally:
        faulthandler.enable()
    cells = {r["dtype"]: r for r in report.summary()}
    assert cells["float16"]["verdict"] == verdict and text in cells["float16"]["detail"]
    assert cells["float32"]["verdict"] == "conforms"  # the next cell ran in a fresh worker
    assert len([r for r in report.results if r.dtype == "float16"]) == 1  # the rest of the cell was not run
    assert not report.passes()


def test_the_cli_survives_a_crashing_implementation(tmp_path):
    (tmp_path / "crashy.py").write_text(textwrap.dedent("""
        import os, signal
        import torch.nn.functional as F

        def nll(input, target, **kw):
            if input.dtype.itemsize == 2:
                os.kill(os.getpid(), signal.SIGSEGV)
            return F.nll_loss(input, target, **kw)
    """))
    out = subprocess.run([sys.executable, "-m", "lossoracle.cli", "check", "--impl", "crashy:nll", "--loss", "nll_loss",
                          "--json", str(tmp_path / "r.json")], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 1, out.stderr[-2000:]
    rows = json.loads((tmp_path / "r.json").read_text())["results"]
    verdicts = {r["dtype"]: r["verdict"] for r in rows if r["quantity"] != "raises"}
    assert verdicts["float16"] == verdicts["bfloat16"] == "crashed" and verdicts["float64"] == "conforms"


def test_resume_skips_the_cells_the_journal_holds(tmp_path, capsys):
    from lossoracle.cli import main

    path = str(tmp_path / "j.jsonl")
    impl = ["--impl", "torch.nn.functional:nll_loss", "--loss", "nll_loss"]
    assert main(["check", *impl, "--dtype", "float64", "--journal", path]) == 0
    first = journal.load(path)
    assert journal.done_cells(first) == {("nll_loss", "torch.nn.functional:nll_loss", "cpu", "float64")}
    with open(path, "a") as f:  # an interrupted second run: rows of a float32 cell without its marker
        f.write(json.dumps({**first[0], "dtype": "float32"}) + "\n")
    capsys.readouterr()
    assert main(["check", *impl, "--dtype", "float64", "--dtype", "float32", "--resume", path]) == 0
    out = capsys.readouterr().out
    assert "float64" in out and "float32" in out
    rows = journal.load(path)
    assert journal.done_cells(rows) == {("nll_loss", "torch.nn.functional:nll_loss", "cpu", d)
                                        for d in ("float64", "float32")}
    assert len([r for r in rows if r.get("dtype") == "float64"]) == len([r for r in first if r.get("dtype")
                                                                           == "float64"])  # not run again


def test_a_worker_forked_after_our_compiled_kernels_can_still_run_backward():
    """Run in a fresh process: a compiled kernel called (no gradients), then a backward, then a forked
    worker's backward. Without ``compiled._prime_autograd`` the autograd engine starts its threads
    at that first backward and the child refuses every backward ("autograd's threading in
    combination with fork-based multiprocessing"), so every implementation would fail."""
    code = textwrap.dedent("""
        import torch
        from lossoracle import isolation
        from lossoracle.implementations import compiled
        assert compiled.ENABLED["on"]
        k = compiled.Kernel(lambda a: (a.exp() + 1).sum(), "probe", 1)
        with torch.no_grad():
            assert k(0, torch.arange(4.0)) is not None, "torch.compile failed"
        x = torch.ones(3, requires_grad=True); (x * 2).sum().backward()

        def grad_in_child():
            y = torch.ones(3, requires_grad=True)
            (y * 3).sum().backward()
            return y.grad.tolist()

        print(isolation.Worker(grad_in_child, timeout=120).run())
    """)
    env = {**os.environ, "LOSSORACLE_COMPILE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[3.0, 3.0, 3.0]", out.stdout[-2000:]


_USER_TRAINS_COMPILED = """
import torch

def train_compiled():  # a user's training step: a compiled model, then a backward
    model = torch.compile(lambda a: (a.exp() + 1).sum(), backend="eager")
    model(torch.arange(4.0, requires_grad=True)).backward()
"""


def test_the_pytest_plugin_primes_autograd_before_a_suite_that_trains_with_torch_compile(tmp_path):
    """A downstream suite (fresh process, the plugin auto-loaded) trains with ``torch.compile`` in one
    test and checks a loss in the next: the checks' forked workers run backward because the plugin's
    ``pytest_configure`` primed autograd first. Without the plugin (``-p no:lossoracle``) the same
    suite's worker refuses backward, so the test bites."""
    pytest.importorskip("torch")
    (tmp_path / "user_model.py").write_text(_USER_TRAINS_COMPILED)
    (tmp_path / "test_user.py").write_text(textwrap.dedent("""
        import torch
        import lossoracle
        from user_model import train_compiled

        def test_train():
            train_compiled()

        def test_check_after_training():
            report = lossoracle.check(torch.nn.functional.nll_loss, "nll_loss", "torch", dtypes=["float64"],
                                      fingerprint=False)
            refused = [r.detail for r in report.results if "autograd's threading" in (r.detail or "")]
            assert not refused, refused[0]
            assert any(r.verdict == "conforms" for r in report.results)
    """))

    def suite(*flags: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *flags, "test_user.py"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)

    primed = suite()
    assert primed.returncode == 0, primed.stdout[-3000:] + primed.stderr[-2000:]
    unprimed = suite("-p", "no:lossoracle")
    assert unprimed.returncode == 1 and "autograd's threading" in unprimed.stdout, unprimed.stdout[-3000:]


@pytest.mark.parametrize("primed", [True, False])
def test_the_cli_primes_autograd_before_importing_the_users_module(tmp_path, primed):
    """``lossoracle check --impl`` of a module that trains with ``torch.compile`` on import (fresh
    process): primed at the CLI's start, its workers run backward; with the priming replaced by a
    no-op, they refuse it (the test bites)."""
    pytest.importorskip("torch")
    (tmp_path / "user_loss.py").write_text(_USER_TRAINS_COMPILED + "\ntrain_compiled()\n"
                                           "from torch.nn.functional import nll_loss\n")
    code = textwrap.dedent(f"""
        import sys
        from lossoracle import isolation
        if not {primed}:
            isolation.prime_torch_autograd = lambda: None
        from lossoracle.cli import main
        sys.exit(main(["check", "--impl", "user_loss:nll_loss", "--loss", "nll_loss", "--dtype", "float64",
                       "--no-fingerprint", "-v"]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    refused = "autograd's threading" in out.stdout
    assert refused != primed, out.stdout[-3000:] + out.stderr[-2000:]
    if primed:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
