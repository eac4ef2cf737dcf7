"""Multi-task weighting, forward + backward: ours against the eager compositions people write —
time and peak extra memory, and their ratios, from one run on one thread.

    python benchmarks/multitask_ratio.py [--k 4 100 1048576] [--dtype float32] [--repeat 31]

Variants per K (number of tasks; random losses e^{U(−4, 4)}, log-variances U(−3, 3), KPIs
U(0.05, 0.95), γ = 2):

- ``uw ours`` — ``torch_impl.uncertainty_weighted_loss`` (kendall, sum), gradients w.r.t. losses
  and log-variances; ``uw composition`` — ``(0.5·exp(−s)·L + 0.5·s).sum()`` (torchjd's and the
  paper's regression form, the baseline); ``uw torchjd`` — ``torchjd.scalarization.UW`` when
  importable;
- ``dtp ours`` — ``torch_impl.dynamic_task_priority`` (sum), gradient w.r.t. the losses;
  ``dtp composition`` — ``(−(1 − κ)^γ·log κ · L).sum()`` with the weights detached (baseline).

Timing: warm-up calls, then ``--repeat`` rounds timing every variant once each in turn; median
and minimum. On CPU the script re-executes itself with ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` set high (freed memory reused, no page-fault noise). Peak extra memory
(bytes above the inputs) only for the largest K, in a fresh subprocess per variant with a low
mmap threshold (every allocation of 64 KiB or more its own mapping), as the rise of ``VmHWM``
over ``VmRSS`` during one forward + backward after a warm-up — for a few tasks it is below what
the process's page granularity can resolve.

Ours carries every quantity in double-double and rounds once (faithful in every dtype, no
``exp`` overflow); the composition is 4 eager kernels and overflows ``exp(−s)``. For the handful
of tasks of real multi-task training both are dominated by per-call overhead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

try:  # run as a script, or imported by the asv suites (a package)
    from .measure import child_peak_bytes, forward_backward, reexec_with_malloc_settings, rss_rise
except ImportError:
    from measure import child_peak_bytes, forward_backward, reexec_with_malloc_settings, rss_rise

GAMMA = 2.0


def make_inputs(k: int, dtype: torch.dtype = torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    L = torch.exp(torch.rand(k, generator=g, dtype=torch.float64) * 8 - 4).to(dtype).requires_grad_()
    s = (torch.rand(k, generator=g, dtype=torch.float64) * 6 - 3).to(dtype).requires_grad_()
    kap = (torch.rand(k, generator=g, dtype=torch.float64) * 0.9 + 0.05).to(dtype)
    return L, s, kap


def _uw_ours(L, s, kap):
    from lossoracle.implementations.torch_impl import uncertainty_weighted_loss

    return uncertainty_weighted_loss(L, s)


def _uw_composition(L, s, kap):
    return (0.5 * torch.exp(-s) * L + 0.5 * s).sum()


def _uw_torchjd(L, s, kap):
    from lossoracle.ecosystem.multitask import torchjd_uw

    return torchjd_uw(L, s)


def _dtp_ours(L, s, kap):
    from lossoracle.implementations.torch_impl import dynamic_task_priority

    return dynamic_task_priority(L, kap, GAMMA)


def _dtp_composition(L, s, kap):
    w = (-(1 - kap) ** GAMMA * torch.log(kap)).detach()
    return (w * L).sum()


def variants() -> dict[str, Callable]:
    out = {"uw ours": _uw_ours, "uw composition": _uw_composition}
    try:
        import torchjd  # noqa: F401

        out["uw torchjd"] = _uw_torchjd
    except ImportError:
        pass
    out |= {"dtp ours": _dtp_ours, "dtp composition": _dtp_composition}
    return out


_step = forward_backward


def measure_times(fns: dict[str, Callable], inputs, repeat: int, warmup: int = 3) -> dict[str, list[float]]:
    for fn in fns.values():
        for _ in range(warmup):
            _step(fn, *inputs)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            _step(fn, *inputs)
            times[name].append(time.perf_counter() - t0)
    return times


def _peak_child(name: str, k: int, dtype: torch.dtype) -> int:
    fn = variants()[name]
    inputs = make_inputs(k, dtype)
    _step(fn, *inputs)
    _step(fn, *inputs)
    inputs[0].grad = inputs[1].grad = None
    return rss_rise(lambda: _step(fn, *inputs))


def peak_extra_bytes(name: str, k: int, dtype: str) -> int:
    return child_peak_bytes(__file__, [name, "--k", str(k),
                          "--dtype", dtype])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, nargs="+", default=[4, 100, 2**20], help="numbers of tasks")
    ap.add_argument("--dtype", choices=("float16", "bfloat16", "float32", "float64"), default="float32")
    ap.add_argument("--repeat", type=int, default=31)
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    if args.memory_child:
        print(json.dumps({"peak_extra_bytes": _peak_child(args.memory_child, args.k[0], dtype)}))
        return
    reexec_with_malloc_settings(__file__)
    fns = variants()
    print(f"multi-task weighting fwd+bwd, {args.dtype} cpu, 1 thread; torch {torch.__version__}")
    print("{:>8s} {:16s} {:>10s} {:>9s} {:>10s} {:>15s} {:>9s}".format(
        "K", "variant", "median µs", "min µs", "time ratio", "peak extra MiB", "mem ratio"))
    for k in args.k:
        times = measure_times(fns, make_inputs(k, dtype), args.repeat)
        peaks = {n: peak_extra_bytes(n, k, args.dtype) for n in fns} if k == max(args.k) else {}
        for name in fns:
            base = name.split()[0] + " composition"
            med = statistics.median(times[name])
            ratio = med / statistics.median(times[base])
            mem = (f"{peaks[name] / 2**20:15.1f} {peaks[name] / max(peaks[base], 1):9.3f}" if peaks
                   else f"{'-':>15s} {'-':>9s}")
            print(f"{k:8d} {name:16s} {med * 1e6:10.1f} {min(times[name]) * 1e6:9.1f} {ratio:10.3f} {mem}")


if __name__ == "__main__":
    main()
