"""Binary cross-entropy (on logits and on probabilities), entropy and ``kl_div``, forward + backward:
ours (``lossoracle.implementations.torch_impl``) against PyTorch's built-ins — time, peak extra
memory and their ratios, from one run on one thread.

    python benchmarks/elementwise_ratio.py [--loss bce_logits bce entropy kl_div] [--dtype float32 float64]
                                           [--repeat 9] [--cold]

Inputs (deterministic): BCE at 2^20 elements — logits ~ 3·N(0, 1) (probabilities ``σ`` of them),
soft targets uniform in [0, 1], reduction ``mean``, gradient w.r.t. the input only; entropy and
``kl_div`` at 1024×1024 — rows ``softmax(3·N(0, 1))``; entropy of each row summed (baseline:
``torch.special.entr(p).sum(-1).sum()``); ``kl_div(log_softmax(…), softmax(…), "batchmean")``
with the gradient w.r.t. the input. Every baseline is one fused built-in (``F.binary_cross_entropy
(_with_logits)``, ``torch.special.entr``, ``F.kl_div``).

Timing: warm-up calls first (they include any one-off ``torch.compile``; ``--cold`` reports the
first call's time separately), then ``--repeat`` rounds that time ours and the baseline in turn
(interleaved: the machine is shared); the median is reported and the minimum shown. On CPU the
script re-executes itself with ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` set high.
Peak extra memory: a fresh subprocess per variant with a low mmap threshold, peak RSS reset after
its warm-up, the rise during one more forward + backward (:mod:`measure`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

try:  # run as a script, or imported by the asv suites (a package)
    from .measure import child_peak_bytes, forward_backward, interleaved_times, reexec_with_malloc_settings, rss_rise
except ImportError:
    from measure import child_peak_bytes, forward_backward, interleaved_times, reexec_with_malloc_settings, rss_rise

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}
SHAPES = {"bce_logits": (1 << 20,), "bce": (1 << 20,), "entropy": (1024, 1024), "kl_div": (1024, 1024)}


def make_inputs(loss: str, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(leaf input with requires_grad, target) for ``loss``."""
    g = torch.Generator().manual_seed(seed)
    shape = SHAPES[loss]
    z = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    u = torch.rand(shape, generator=g, dtype=torch.float64)
    if loss == "bce_logits":
        x, y = z, u
    elif loss == "bce":
        x, y = torch.sigmoid(z), u
    elif loss == "entropy":
        x, y = torch.softmax(z, -1), u
    else:
        x, y = torch.log_softmax(z, -1), torch.softmax(torch.randn(shape, generator=g, dtype=torch.float64) * 3, -1)
    return x.to(dtype).requires_grad_(), y.to(dtype)


def _ours(loss: str):
    from lossoracle.implementations import torch_impl as t

    return {"bce_logits": lambda x, y: t.binary_cross_entropy_with_logits(x, y),
            "bce": lambda x, y: t.binary_cross_entropy(x, y),
            "entropy": lambda p, _: t.entropy(p).sum(),
            "kl_div": lambda x, y: t.kl_div(x, y, reduction="batchmean")}[loss]


def _torch(loss: str):
    return {"bce_logits": lambda x, y: F.binary_cross_entropy_with_logits(x, y),
            "bce": lambda x, y: F.binary_cross_entropy(x, y),
            "entropy": lambda p, _: torch.special.entr(p).sum(-1).sum(),
            "kl_div": lambda x, y: F.kl_div(x, y, reduction="batchmean")}[loss]


VARIANTS = {"ours": _ours, "torch": _torch}


def _child_peak(variant: str, loss: str, dtype: torch.dtype) -> int:
    fn = VARIANTS[variant](loss)
    x, y = make_inputs(loss, dtype)
    forward_backward(fn, x, y)
    forward_backward(fn, x, y)
    x.grad = None  # the measured step allocates its own gradient
    return rss_rise(lambda: forward_backward(fn, x, y))


def measure(loss: str, dtype: torch.dtype, repeat: int, cold: bool) -> dict:
    x, y = make_inputs(loss, dtype)
    fns = {name: make(loss) for name, make in VARIANTS.items()}
    first = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        forward_backward(fn, x, y)
        first[name] = time.perf_counter() - t0
        forward_backward(fn, x, y)
    times = interleaved_times({name: (lambda fn=fn: forward_backward(fn, x, y)) for name, fn in fns.items()},
                              repeat)
    dname = str(dtype).removeprefix("torch.")
    peaks = {name: child_peak_bytes(__file__, [name, "--loss", loss, "--dtype", dname])
             for name in fns} if not cold else {name: 0 for name in fns}
    return {"loss": loss, "dtype": dname, "shape": "x".join(map(str, SHAPES[loss])), "first": first,
            "median": {k: statistics.median(v) for k, v in times.items()},
            "min": {k: min(v) for k, v in times.items()}, "peak": peaks}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loss", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--dtype", nargs="+", default=["float32", "float64"], choices=list(DTYPES))
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--cold", action="store_true", help="report the first call (compilation) instead of memory")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.memory_child:  # one loss, one dtype
        print(json.dumps({"peak_extra_bytes": _child_peak(args.memory_child, args.loss[0], DTYPES[args.dtype[0]])}))
        return
    reexec_with_malloc_settings(__file__)
    print(f"fwd+bwd on cpu, 1 thread, torch {torch.__version__}; median of {args.repeat} interleaved rounds "
          f"(min in brackets)")
    head = ("loss", "dtype", "shape", "ours ms", "torch ms", "ratio", "peak MiB ours/torch")
    if args.cold:
        head = (*head[:6], "first call ms ours/torch")
    print("{:11s} {:9s} {:10s} {:>16s} {:>16s} {:>6s}  {}".format(*head))
    for loss in args.loss:
        for dname in args.dtype:
            r = measure(loss, DTYPES[dname], args.repeat, args.cold)
            med, mn = r["median"], r["min"]
            last = (f"{r['first']['ours'] * 1e3:.0f} / {r['first']['torch'] * 1e3:.0f}" if args.cold else
                    f"{r['peak']['ours'] / 2**20:.1f} / {r['peak']['torch'] / 2**20:.1f}")
            print(f"{loss:11s} {dname:9s} {r['shape']:10s} {med['ours'] * 1e3:7.2f} ({mn['ours'] * 1e3:6.2f}) "
                  f"{med['torch'] * 1e3:7.2f} ({mn['torch'] * 1e3:6.2f}) {med['ours'] / med['torch']:6.2f}  {last}",
                  flush=True)


if __name__ == "__main__":
    main()
