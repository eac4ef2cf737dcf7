"""Box losses (GIoU, DIoU, CIoU), forward + backward on paired float32 boxes: ours against
torchvision's — time and peak extra memory, and their ratios, from one run on one thread.

    python benchmarks/box_ratio.py [--n 1048576] [--loss generalized_box_iou_loss ...] [--device cpu|cuda]
                                   [--repeat 9]

Inputs: ``n`` pairs of float32 boxes (deterministic): box 1 with centres uniform in [0, 1000)² and
sizes log-uniform in [4, 400], box 2 a jittered copy (the regression regime); both require
gradients; ``reduction="mean"``, ``eps=1e-7``. Timing: warm-up calls first, then ``--repeat``
rounds that time each variant once, in turn; median and minimum reported. On CPU the script
re-executes itself with ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` set high (freed
memory is reused, page faults of fresh allocations do not dominate). Peak extra memory: a fresh
subprocess per variant with a low mmap threshold, peak RSS reset after warm-up (CPU), or
``torch.cuda.max_memory_allocated`` (CUDA).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

try:  # run as a script, or imported by the asv suites (a package)
    from .measure import child_peak_bytes, forward_backward, reexec_with_malloc_settings, rss_rise
except ImportError:
    from measure import child_peak_bytes, forward_backward, reexec_with_malloc_settings, rss_rise

LOSSES = ("generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss")


def make_inputs(n: int, device: str = "cpu", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(n, 2, generator=g, dtype=torch.float64) * 1000
    s = torch.exp(torch.rand(n, 2, generator=g, dtype=torch.float64) * (torch.log(torch.tensor(100.0)))) * 4
    c2 = c + torch.randn(n, 2, generator=g, dtype=torch.float64) * 0.2 * s
    s2 = s * torch.exp(torch.randn(n, 2, generator=g, dtype=torch.float64) * 0.2)
    b1 = torch.cat([c - s / 2, c + s / 2], dim=1).to(device=device, dtype=torch.float32)
    b2 = torch.cat([c2 - s2 / 2, c2 + s2 / 2], dim=1).to(device=device, dtype=torch.float32)
    return b1.requires_grad_(), b2.requires_grad_()


def _fn(variant: str, loss: str):
    if variant == "ours":
        from lossoracle.implementations import torch_impl

        return getattr(torch_impl, loss)
    import torchvision.ops

    return getattr(torchvision.ops, loss)


def step(variant: str, loss: str, b1: torch.Tensor, b2: torch.Tensor) -> None:
    forward_backward(_fn(variant, loss), b1, b2, reduction="mean")


def measure_times(loss: str, b1, b2, repeat: int, warmup: int = 2) -> dict[str, list[float]]:
    variants = ("ours", "torchvision")
    for v in variants:
        for _ in range(warmup):
            step(v, loss, b1, b2)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(repeat):
        for v in variants:
            t0 = time.perf_counter()
            step(v, loss, b1, b2)
            times[v].append(time.perf_counter() - t0)
    return times


def _cpu_peak_in_this_process(variant: str, loss: str, n: int) -> int:
    b1, b2 = make_inputs(n)
    step(variant, loss, b1, b2)
    step(variant, loss, b1, b2)
    b1.grad = b2.grad = None
    return rss_rise(lambda: step(variant, loss, b1, b2))


def peak_extra_bytes(variant: str, loss: str, n: int, device: str = "cpu") -> int:
    if device == "cuda":
        b1, b2 = make_inputs(n, device)
        step(variant, loss, b1, b2)
        b1.grad = b2.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(variant, loss, b1, b2)
        return torch.cuda.max_memory_allocated() - base
    return child_peak_bytes(__file__, [variant, "--loss", loss,
                          "--n", str(n)])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2**20, help="box pairs (default 2^20)")
    ap.add_argument("--loss", action="append", choices=LOSSES, help="default: all three")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    losses = args.loss or list(LOSSES)
    if args.memory_child:
        print(json.dumps({"peak_extra_bytes": _cpu_peak_in_this_process(args.memory_child, losses[0], args.n)}))
        return
    if args.device == "cpu":
        reexec_with_malloc_settings(__file__)
    elif not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device available")
    b1, b2 = make_inputs(args.n, args.device)
    print(f"box losses fwd+bwd: n={args.n} pairs float32 {args.device}, 1 thread, reduction=mean; "
          f"torch {torch.__version__}")
    print("{:26s} {:12s} {:>10s} {:>8s} {:>10s} {:>15s} {:>9s}".format(
        "loss", "variant", "median ms", "min ms", "time ratio", "peak extra MiB", "mem ratio"))
    for loss in losses:
        times = measure_times(loss, b1, b2, args.repeat)
        peaks = {v: (None if args.no_memory else peak_extra_bytes(v, loss, args.n, args.device)) for v in times}
        base = statistics.median(times["torchvision"])
        for v, ts in times.items():
            med = statistics.median(ts)
            mem = "" if peaks[v] is None else f"{peaks[v] / 2**20:15.1f} {peaks[v] / max(peaks['torchvision'], 1):9.3f}"
            print(f"{loss:26s} {v:12s} {med * 1e3:10.1f} {min(ts) * 1e3:8.1f} {med / base:10.3f} {mem}")


if __name__ == "__main__":
    main()
