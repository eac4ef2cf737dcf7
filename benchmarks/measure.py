"""What every ratio script measures the same way: interleaved wall times, the peak extra resident
memory of one step (in a child process with mmap thresholds low, so large buffers are visible),
and the malloc settings every timing run needs (thresholds high: page faults otherwise dominate).

    MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 python benchmarks/<family>_ratio.py

(the scripts re-execute themselves with these settings when they are missing).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping

HIGH = "17179869184"  # 16 GiB: malloc keeps and reuses freed memory
MEM_MMAP_THRESHOLD = "65536"  # the memory child: large buffers come from mmap and show in the RSS

__all__ = ["HIGH", "forward_backward", "interleaved_times", "rss_rise", "child_peak_bytes", "child_peaks",
           "report_child_peak", "reexec_with_malloc_settings", "low_mmap_threshold", "peak_rise"]


def forward_backward(fn: Callable, *inputs, **kwargs):
    """One training step of a loss: clear the inputs' gradients, ``fn(*inputs, **kwargs)``,
    backward, and wait for the device; returns the detached loss."""
    for t in inputs:
        if getattr(t, "requires_grad", False):
            t.grad = None
    loss = fn(*inputs, **kwargs)
    loss.backward()
    if getattr(inputs[0], "is_cuda", False):
        import torch

        torch.cuda.synchronize()
    return loss.detach()


def interleaved_times(steps: Mapping[str, Callable[[], object]], repeat: int,
                      clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """``repeat`` rounds, each timing every step once (interleaved, so drifts hit all alike).
    ``clock``: wall time by default; ``time.thread_time`` (CPU time of this thread) is less
    disturbed by other processes on a shared machine (on one thread, CPU steps only)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeat):
        for name, step in steps.items():
            t0 = clock()
            step()
            times[name].append(clock() - t0)
    return times


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_rise(step: Callable[[], object]) -> int:
    """Bytes the resident peak rises during ``step()`` (the peak reset just before it)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    step()
    return (_status_kib("VmHWM") - before) * 1024


def child_peak_bytes(script: str, args: list[str]) -> int:
    """Run ``script --memory-child ARGS`` with mmap thresholds low; it prints
    ``{"peak_extra_bytes": N}`` last (:func:`report_child_peak`)."""
    return int(child_peaks(script, args))


def child_peaks(script: str, args: list[str]):
    """:func:`child_peak_bytes` for a child that reports several peaks: the ``peak_extra_bytes`` it
    printed, as it printed it (a number or a list)."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=MEM_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD_="0")
    out = subprocess.run([sys.executable, os.path.abspath(script), "--memory-child", *args], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_extra_bytes"]


def report_child_peak(nbytes: int) -> None:
    print(json.dumps({"peak_extra_bytes": nbytes}))


def reexec_with_malloc_settings(script: str) -> None:
    """Re-execute ``script`` with the timing malloc settings unless they are set."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") == HIGH and os.environ.get("MALLOC_TRIM_THRESHOLD_") == HIGH:
        return
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=HIGH, MALLOC_TRIM_THRESHOLD_=HIGH)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, os.path.abspath(script), *sys.argv[1:]], env)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>


@contextlib.contextmanager
def low_mmap_threshold():
    """Within the block, what the memory child gets from its environment, set at run time
    (glibc ``mallopt``): every allocation of 64 KiB or more is its own mapping, returned on free,
    and the free memory the process holds is released first (``malloc_trim``), so a step's
    buffers show in the resident size even when they reuse freed memory. The timing settings
    (thresholds high) are restored after."""
    libc = ctypes.CDLL(None)
    libc.mallopt(_M_MMAP_THRESHOLD, int(MEM_MMAP_THRESHOLD))
    libc.mallopt(_M_TRIM_THRESHOLD, 0)
    libc.malloc_trim(0)
    try:
        yield
    finally:
        for param, var in ((_M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_"),
                           (_M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_")):
            libc.mallopt(param, min(int(os.environ.get(var, HIGH)), 2**31 - 1))  # mallopt takes a C int


def peak_rise(step: Callable[[], object]) -> int:
    """Peak extra bytes of one (already warm) ``step()`` in this process: :func:`rss_rise` under
    :func:`low_mmap_threshold`."""
    with low_mmap_threshold():
        return rss_rise(step)
