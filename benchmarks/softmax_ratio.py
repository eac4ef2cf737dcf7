"""Softmax family, forward + backward: ours against PyTorch's built-ins (``F.cross_entropy``,
``F.nll_loss``, ``F.log_softmax``, ``F.softmax``) — time and peak extra memory, and their ratios,
from one run on one thread.

    python benchmarks/softmax_ratio.py [--shape 1024x1000 --shape 4096x10] [--dtype float32 ...]
                                       [--loss cross_entropy ...] [--repeat 15] [--no-memory]

Inputs (deterministic): logits ``(N, C)`` ~ 3·N(0, 1) in the dtype, ``requires_grad``; int64
class-index targets uniform in ``[0, C)``; reduction ``mean``. Rows: ``cross_entropy``,
``cross_entropy ls=0.1`` (label_smoothing 0.1), ``nll_loss`` (of exact log-probabilities made
once from the logits), ``log_softmax`` and ``softmax`` (over the classes, backward of ``.sum()``
weighted by a fixed cotangent ``1, 0.5, 2, 0.75`` repeated — a plain ``sum`` would make the
softmax gradient vanish). Ours are ``lossoracle.implementations.torch_impl.<loss>``.

Timing: warm-up calls first, then ``--repeat`` rounds that time ours and the built-in once each, in
turn (interleaved: machine noise hits both alike); the median is reported (the machine is shared:
medians, never means). On CPU the script re-executes itself with ``MALLOC_MMAP_THRESHOLD_`` /
``MALLOC_TRIM_THRESHOLD_`` set high. Peak extra memory (bytes above what the inputs hold): one
subprocess per implementation with a low mmap threshold (:mod:`measure`), the resident peak reset
after a warm-up of each row and its rise during one more forward + backward.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

try:  # run as a script, or imported by the asv suites (a package)
    from .measure import child_peaks, forward_backward, interleaved_times, reexec_with_malloc_settings, rss_rise
except ImportError:
    from measure import child_peaks, forward_backward, interleaved_times, reexec_with_malloc_settings, rss_rise

LOSSES = ("cross_entropy", "cross_entropy ls=0.1", "nll_loss", "log_softmax", "softmax")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}
SHAPES = ("1024x1000", "4096x10")
VARIANTS = ("ours", "torch")


def make_inputs(loss: str, shape: tuple[int, int], dtype: torch.dtype, seed: int = 0):
    """``(x, target_or_cotangent)``: leaf logits (log-probabilities for nll_loss) and the second input."""
    n, c = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    if loss == "nll_loss":
        x = torch.log_softmax(x, -1)
    x = x.to(dtype).requires_grad_()
    if loss.startswith(("cross_entropy", "nll_loss")):
        return x, torch.randint(0, c, (n,), generator=g)
    pattern = torch.tensor([1.0, 0.5, 2.0, 0.75], dtype=torch.float64)
    return x, pattern.repeat((n * c + 3) // 4)[: n * c].reshape(n, c).to(dtype)


def _fn(variant: str, loss: str):
    if variant == "ours":
        from lossoracle.implementations import torch_impl as module
    else:
        module = F
    name, _, extra = loss.partition(" ")
    fn = getattr(module, name)
    if name in ("log_softmax", "softmax"):
        return lambda x, cot: (fn(x, -1) * cot).sum()
    if extra:
        return lambda x, t: fn(x, t, label_smoothing=float(extra.split("=")[1]))
    return fn


def _rows(args) -> list[tuple[str, str, str]]:
    return [(loss, dt, sh) for sh in args.shape for dt in args.dtype for loss in args.loss]


def _shape(text: str) -> tuple[int, int]:
    n, c = (int(v) for v in text.split("x"))
    return n, c


def _cpu_peaks_in_this_process(variant: str, rows) -> list[int]:
    out = []
    for loss, dt, sh in rows:
        fn = _fn(variant, loss)
        x, t = make_inputs(loss, _shape(sh), DTYPES[dt])
        out.append(_peak(fn, *make_inputs(loss, _shape(sh), DTYPES[dt])))
    return out


def _peak(fn, x: torch.Tensor, t: torch.Tensor) -> int:
    forward_backward(fn, x, t)
    forward_backward(fn, x, t)
    x.grad = None
    return rss_rise(lambda: forward_backward(fn, x, t))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", action="append", help=f"NxC (repeatable; default {', '.join(SHAPES)})")
    ap.add_argument("--dtype", action="append", choices=list(DTYPES), help="repeatable; default all four")
    ap.add_argument("--loss", action="append", choices=LOSSES, help="repeatable; default all")
    ap.add_argument("--repeat", type=int, default=15, help="timed rounds (default 15)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall time, or this thread's CPU time (steadier on a loaded machine)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.shape, args.dtype = args.shape or list(SHAPES), args.dtype or list(DTYPES)
    args.loss = args.loss or list(LOSSES)
    torch.set_num_threads(1)
    rows = _rows(args)
    if args.memory_child:
        print(json.dumps({"peak_extra_bytes": _cpu_peaks_in_this_process(args.memory_child, rows)}))
        return
    reexec_with_malloc_settings(__file__)
    forwarded = [f"--{k}={v}" for k in ("shape", "dtype", "loss") for v in getattr(args, k)]
    peaks = {}
    if not args.no_memory:
        for v in VARIANTS:
            peaks[v] = child_peaks(__file__, [v, *forwarded])
    print(f"softmax family fwd+bwd, cpu, 1 thread, reduction=mean; torch {torch.__version__}; {args.clock} time, "
          f"median (and minimum) of {args.repeat} interleaved rounds")
    print("{:22s} {:9s} {:10s} {:>9s} {:>9s} {:>7s} {:>9s} {:>17s}".format(
        "loss", "dtype", "shape", "ours ms", "torch ms", "ratio", "min ratio", "peak MiB ours/tc"))
    for i, (loss, dt, sh) in enumerate(rows):
        x, t = make_inputs(loss, _shape(sh), DTYPES[dt])
        steps = {v: (lambda f=_fn(v, loss): forward_backward(f, x, t)) for v in VARIANTS}
        interleaved_times(steps, 2)  # warm-up
        times = interleaved_times(steps, args.repeat, time.thread_time if args.clock == "cpu" else time.perf_counter)
        med = {v: statistics.median(ts) for v, ts in times.items()}
        mem = "" if not peaks else f"{peaks['ours'][i] / 2**20:8.2f}/{peaks['torch'][i] / 2**20:<8.2f}"
        print(f"{loss:22s} {dt:9s} {sh:10s} {med['ours'] * 1e3:9.3f} {med['torch'] * 1e3:9.3f} "
              f"{med['ours'] / med['torch']:7.2f} {min(times['ours']) / min(times['torch']):9.2f} {mem:>17s}",
              flush=True)


if __name__ == "__main__":
    main()
