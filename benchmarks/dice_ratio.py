"""Soft Dice loss from logits, forward + backward: ours against MONAI's ``DiceLoss`` — time, peak extra
memory, their ratios, and the ratio to the memory floor, from one run on one thread.

    python benchmarks/dice_ratio.py [--shape 8x4x256x256] [--device cpu|cuda] [--repeat 11]

Inputs (the issue's): float32 logits (8, 4, 256, 256) ~ 3·N(0, 1) with ``requires_grad``, int64
class-index targets (8, 256, 256); softmax over the classes, smoothing 1e-5 / 1e-5, reduction
mean. ``ours`` is ``lossoracle.implementations.torch_impl.dice_loss(x, t, activation="softmax")``;
``monai`` is ``monai.losses.DiceLoss(softmax=True, to_onehot_y=True)(x, t[:, None])`` — the same
mathematical loss (the script checks that both values agree to 1e-6).

Memory floor: the time to read the inputs once (a ``sum`` over the logits and over the targets,
the cheapest pass that touches every byte), measured in the same run.

Timing: warm-up calls first, then ``--repeat`` rounds that time every variant once each, in turn;
the median is reported. On CPU the script re-executes itself with ``MALLOC_MMAP_THRESHOLD_`` /
``MALLOC_TRIM_THRESHOLD_`` set high (freed memory is reused, page faults of fresh allocations do
not dominate). Peak extra memory (bytes above what the inputs hold): CUDA —
``torch.cuda.max_memory_allocated``; CPU — a fresh subprocess per variant with a low mmap threshold
(each allocation of 64 KiB or more is its own mapping, returned on free) that resets the peak RSS
after its warm-up and reports the rise of the peak during one more forward + backward.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

import torch

try:  # run as a script, or imported by the asv suites (a package)
    from .measure import child_peak_bytes, forward_backward, reexec_with_malloc_settings, rss_rise
except ImportError:
    from measure import child_peak_bytes, forward_backward, reexec_with_malloc_settings, rss_rise


def make_inputs(shape, device: str = "cpu", seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 3).to(device).requires_grad_()
    t = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g).to(device)
    return x, t


def _ours(x, t):
    from lossoracle.implementations.torch_impl import dice_loss

    return dice_loss(x, t, activation="softmax")


_MONAI = {}


def _monai(x, t):
    if "loss" not in _MONAI:
        from monai.losses import DiceLoss

        _MONAI["loss"] = DiceLoss(softmax=True, to_onehot_y=True)
    return _MONAI["loss"](x, t[:, None])


VARIANTS = {"ours": _ours, "monai": _monai}


step = forward_backward


def floor_time(x, t, repeat: int) -> float:
    """Seconds to read the inputs once (median of ``repeat``)."""
    xd = x.detach()
    times = []
    for _ in range(repeat + 2):
        t0 = time.perf_counter()
        xd.sum()
        t.sum()
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[2:])


def measure_times(x, t, repeat: int, warmup: int = 2) -> dict[str, list[float]]:
    for fn in VARIANTS.values():
        for _ in range(warmup):
            step(fn, x, t)
    times = {name: [] for name in VARIANTS}
    for _ in range(repeat):
        for name, fn in VARIANTS.items():
            t0 = time.perf_counter()
            step(fn, x, t)
            times[name].append(time.perf_counter() - t0)
    return times


def _cpu_peak_in_this_process(variant: str, shape) -> int:
    fn = VARIANTS[variant]
    x, t = make_inputs(shape)
    step(fn, x, t)
    step(fn, x, t)
    x.grad = None
    return rss_rise(lambda: step(fn, x, t))


def peak_extra_bytes(variant: str, shape, device: str) -> int:
    if device == "cuda":
        fn = VARIANTS[variant]
        x, t = make_inputs(shape, device)
        step(fn, x, t)
        x.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(fn, x, t)
        return torch.cuda.max_memory_allocated() - base
    return child_peak_bytes(__file__, [variant,
                          "--shape", "x".join(map(str, shape))])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="8x4x256x256")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--repeat", type=int, default=11)
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    shape = tuple(int(v) for v in args.shape.split("x"))
    if args.memory_child:
        print(json.dumps({"peak_extra_bytes": _cpu_peak_in_this_process(args.memory_child, shape)}))
        return
    if args.device == "cpu":
        reexec_with_malloc_settings(__file__)
    elif not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device available")
    x, t = make_inputs(shape, args.device)
    a, b = step(_ours, x, t), step(_monai, x, t)
    assert abs(float(a) - float(b)) < 1e-6, (float(a), float(b))
    times = measure_times(x, t, args.repeat)
    floor = floor_time(x, t, args.repeat)
    peaks = {name: peak_extra_bytes(name, shape, args.device) for name in VARIANTS}
    nbytes = x.numel() * x.element_size() + t.numel() * t.element_size()
    print(f"soft Dice fwd+bwd from logits: {args.shape} float32, int64 targets, softmax, {args.device}, 1 thread; "
          f"torch {torch.__version__}; inputs {nbytes / 2**20:.1f} MiB read once in {floor * 1e3:.2f} ms (floor)")
    base_t, base_m = statistics.median(times["monai"]), peaks["monai"]
    print("{:8s} {:>10s} {:>8s} {:>11s} {:>12s} {:>15s} {:>9s}".format(
        "variant", "median ms", "min ms", "vs monai", "vs floor", "peak extra MiB", "mem ratio"))
    for name in VARIANTS:
        med = statistics.median(times[name])
        print(f"{name:8s} {med * 1e3:10.1f} {min(times[name]) * 1e3:8.1f} {med / base_t:11.2f} {med / floor:12.1f} "
              f"{peaks[name] / 2**20:15.1f} {peaks[name] / max(base_m, 1):9.2f}")


if __name__ == "__main__":
    main()
