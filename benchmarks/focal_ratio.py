"""Sigmoid focal loss, forward + backward: our fused implementation against torchvision — time and
peak extra memory, and their ratios, from one run on one thread.

    python benchmarks/focal_ratio.py [--n 4194304] [--dtype float32|float64] [--device cpu|cuda]
                                     [--repeat 15] [--variants ours,ours eager]

Variants (same inputs: logits ~ 3·N(0, 1) of ``--dtype``, hard 0/1 targets with 10% positives,
alpha = 0.25, gamma = 2, reduction = "mean"): ``ours`` (``lossoracle.implementations.
focal_torch``, its default path: ``torch.compile`` on large CPU float32 inputs), ``ours eager``
(the same with compilation off), ``composition`` (the torchvision-style expression below) and
``torchvision`` (``torchvision.ops.sigmoid_focal_loss``, the baseline of the ratios when
importable). Targets (issue 9): float32 ``ours`` ≤ 0.6×, ``ours eager`` ≤ 1.0×; float64 ≤ 4×.

Timing: warm-up calls first (they include any one-off ``torch.compile``), then ``--repeat``
rounds that time every variant once each, in turn, so machine noise hits all alike; the median
and the minimum are reported. On CPU the script re-executes itself with
``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` set high, so that freed memory is reused
instead of returned to the kernel and page faults of fresh allocations do not dominate.

Peak extra memory (bytes above what the inputs hold): CUDA — ``torch.cuda.max_memory_allocated``;
CPU — a fresh subprocess per variant with a low fixed mmap threshold (every allocation of
64 KiB or more is its own mapping, returned on free), which resets the peak RSS (``VmHWM``,
``/proc/self/clear_refs``) after its warm-up and reports the rise of the peak over the resident
size during one more forward + backward.

The functions ``make_inputs``, ``ours_fwd_bwd``, ``composition_fwd_bwd``, ``torchvision_fwd_bwd``,
``measure_times`` and ``peak_extra_bytes`` are importable (asv suites reuse them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

try:  # run as a script, or imported by the asv suites (a package)
    from .measure import child_peak_bytes, forward_backward, reexec_with_malloc_settings, rss_rise
except ImportError:
    from measure import child_peak_bytes, forward_backward, reexec_with_malloc_settings, rss_rise

ALPHA, GAMMA, REDUCTION = 0.25, 2.0, "mean"


def make_inputs(n: int, device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0,
                positive_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Leaf logits (requires_grad) ~ 3·N(0, 1) and hard 0/1 targets, deterministic in ``seed``."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, generator=g, dtype=torch.float64) * 3).to(device=device, dtype=dtype)
    y = (torch.rand(n, generator=g) < positive_fraction).to(device=device, dtype=dtype)
    return x.requires_grad_(), y


_step = forward_backward


def _ours(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    from lossoracle.implementations.focal_torch import sigmoid_focal_loss

    return sigmoid_focal_loss(x, y, ALPHA, GAMMA, REDUCTION)


def _ours_eager(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    from lossoracle.implementations import compiled, focal_torch

    on = compiled.ENABLED["on"]
    compiled.ENABLED["on"] = False
    try:
        return focal_torch.sigmoid_focal_loss(x, y, ALPHA, GAMMA, REDUCTION)
    finally:
        compiled.ENABLED["on"] = on


def _composition(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * ((1 - p_t) ** GAMMA)
    alpha_t = ALPHA * y + (1 - ALPHA) * (1 - y)
    return (alpha_t * loss).mean()


def _torchvision(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    from torchvision.ops import sigmoid_focal_loss

    return sigmoid_focal_loss(x, y, ALPHA, GAMMA, REDUCTION)


def ours_fwd_bwd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Forward + backward of ours; returns the (detached) loss."""
    return _step(_ours, x, y)


def ours_eager_fwd_bwd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Forward + backward of ours without compilation (the eager fallback)."""
    return _step(_ours_eager, x, y)


def composition_fwd_bwd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Forward + backward of the torchvision-style eager composition (the baseline)."""
    return _step(_composition, x, y)


def torchvision_fwd_bwd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Forward + backward of ``torchvision.ops.sigmoid_focal_loss``."""
    return _step(_torchvision, x, y)


def available_variants() -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    variants = {"ours": ours_fwd_bwd, "ours eager": ours_eager_fwd_bwd, "composition": composition_fwd_bwd}
    try:
        import torchvision.ops  # noqa: F401
    except ImportError:
        return variants
    variants["torchvision"] = torchvision_fwd_bwd
    return variants


def measure_times(variants: dict[str, Callable], x: torch.Tensor, y: torch.Tensor, repeat: int,
                  warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per forward + backward: ``warmup`` untimed calls each, then ``repeat`` rounds in turn."""
    for fn in variants.values():
        for _ in range(warmup):
            fn(x, y)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn(x, y)
            times[name].append(time.perf_counter() - t0)
    return times


def _cpu_peak_in_this_process(variant: str, n: int, dtype: torch.dtype) -> int:
    fn = available_variants()[variant]
    x, y = make_inputs(n, dtype=dtype)
    fn(x, y)  # warm-up: compilation, lazy initialisation
    fn(x, y)
    x.grad = None  # the measured step allocates its own gradient
    return rss_rise(lambda: fn(x, y))


def peak_extra_bytes(variant: str, n: int, device: str = "cpu", dtype: torch.dtype = torch.float32) -> int:
    """Peak memory of one forward + backward above what the inputs already hold."""
    if device == "cuda":
        fn = available_variants()[variant]
        x, y = make_inputs(n, device, dtype)
        fn(x, y)
        x.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn(x, y)
        return torch.cuda.max_memory_allocated() - base
    return child_peak_bytes(__file__, [variant, "--n", str(n), "--dtype", str(dtype).replace("torch.", "")])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4 * 2**20, help="number of elements (default 4·2^20)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--repeat", type=int, default=15, help="timed rounds (default 15)")
    ap.add_argument("--variants", help="comma-separated subset of the variants (default: all)")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    if args.memory_child:
        print(json.dumps({"peak_extra_bytes": _cpu_peak_in_this_process(args.memory_child, args.n, dtype)}))
        return
    if args.device == "cpu":
        reexec_with_malloc_settings(__file__)
    elif not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device available")
    variants = available_variants()
    if args.variants:
        keep = {*args.variants.split(","), "composition", "torchvision"}
        variants = {k: v for k, v in variants.items() if k in keep}
    x, y = make_inputs(args.n, args.device, dtype)
    print(f"sigmoid focal loss fwd+bwd: n={args.n} {args.dtype} {args.device}, 1 thread, alpha={ALPHA} gamma={GAMMA} "
          f"reduction={REDUCTION}; torch {torch.__version__}")
    times = measure_times(variants, x, y, args.repeat)
    peaks = {name: peak_extra_bytes(name, args.n, args.device, dtype) for name in variants}
    base = "torchvision" if "torchvision" in variants else "composition"
    base_t, base_m = statistics.median(times[base]), peaks[base]
    header = ("variant", "median ms", "min ms", "time ratio", "peak extra MiB", "mem ratio")
    print("{:12s} {:>10s} {:>8s} {:>10s} {:>15s} {:>9s}".format(*header))
    for name in variants:
        med = statistics.median(times[name])
        print(f"{name:12s} {med * 1e3:10.1f} {min(times[name]) * 1e3:8.1f} {med / base_t:10.3f} "
              f"{peaks[name] / 2**20:15.1f} {peaks[name] / base_m:9.3f}")
    targets = {"ours": 0.6 if dtype == torch.float32 else 4.0, "ours eager": 1.0 if dtype == torch.float32 else None}
    for name, target in targets.items():
        if name in times:
            print(f"{name} / {base}: time {statistics.median(times[name]) / base_t:.3f}"
                  + (f" (target <= {target})" if target else "") + f", peak extra memory {peaks[name] / base_m:.3f}")


if __name__ == "__main__":
    main()
