"""Exhaustive accuracy of Inductor's float32 ``exp`` on CPU on every float32 ``d`` in [−104, 0].

The softmax focal loss's compiled float32 kernel (``focal_torch._sm_rows32``) relies on Inductor's
float32 ``exp`` being within 1 ULP of ``e^d`` for ``d ≤ 0`` (documented: SLEEF's ``Sleef_expf*_u10``,
"1.0 ULP error bound", the vectorised loop body; glibc's ``expf``, 0.502 ULP, the scalar tail). This
script checks it on this build for every float32 ``d`` in [−104, 0] (about 1.12e9 numbers; below
−104, ``e^d < 2^-150`` and 0 is within half a subnormal spacing) against float64 ``exp`` (within
2^-52 relative: below 1e-6 of a float32 ULP). A normal result's error is reported relative (in
units of 2^-23: ≤ 1 is what the kernel's bound assumes) and in ULP of the exact value; a subnormal
result's in units of the subnormal spacing 2^-149 (≤ 1 assumed). ``--eager`` adds eager
``torch.exp`` (oneMKL VM or SLEEF; for information: the eager path uses float64 exponentials).

    python benchmarks/exp32_ulp.py [--chunk-log2 22] [--eager]

Takes about 10 minutes of one core.
"""

from __future__ import annotations

import argparse
import time

import torch

_TINY = 2.0**-126


def _errors(got: torch.Tensor, d: torch.Tensor) -> tuple[float, float, float]:
    """(max relative error / 2^-23 over normal exact values, max ULP error of those, max subnormal error / 2^-149)."""
    ref = torch.exp(d.to(torch.float64))
    err = (got.to(torch.float64) - ref).abs_()
    normal = ref >= _TINY
    rel = float((err[normal] / ref[normal]).max()) * 2.0**23 if bool(normal.any()) else 0.0
    _, e = torch.frexp(ref[normal])
    ulp = torch.ldexp(torch.ones_like(ref[normal]), (e - 24).to(torch.float64))
    ulps = float((err[normal] / ulp).max()) if bool(normal.any()) else 0.0
    sub = float(err[~normal].max()) * 2.0**149 if bool((~normal).any()) else 0.0
    return rel, ulps, sub


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunk-log2", type=int, default=22)
    ap.add_argument("--eager", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    lo = 0x80000000  # −0.0
    hi = int(torch.tensor(-104.0, dtype=torch.float32).view(torch.int32)) & 0xFFFFFFFF
    variants = {"compiled": torch.compile(lambda t: torch.exp(t), dynamic=False)}
    if args.eager:
        variants["eager"] = torch.exp
    step = 1 << args.chunk_log2
    worst = {k: [0.0, 0.0, 0.0] for k in variants}
    exact_one = {}
    t0 = time.time()
    for start in range(lo, hi + 1, step):
        n = min(step, hi + 1 - start)
        bits = torch.arange(start, start + step, dtype=torch.int64).clamp_max(hi).to(torch.int32)  # wraps
        d = bits.view(torch.float32)  # the last chunk padded with −104: one compiled shape
        for name, fn in variants.items():
            for i, v in enumerate(_errors(fn(d)[:n], d[:n])):
                worst[name][i] = max(worst[name][i], v)
    for name, fn in variants.items():
        z = torch.zeros(step, dtype=torch.float32)
        exact_one[name] = bool((fn(z) == 1).all())
    print(f"every float32 d in [-104, 0] ({hi - lo + 1:,} numbers), {time.time() - t0:.0f} s, "
          f"torch {torch.__version__}, cpu capability {torch.backends.cpu.get_cpu_capability()}, "
          f"MKL {torch.backends.mkl.is_available()}")
    for name, (rel, ulps, sub) in worst.items():
        print(f"{name:9s}: max relative error {rel:.4f}·2^-23, {ulps:.4f} ULP; subnormal results {sub:.4f}·2^-149; "
              f"exp(0) == 1: {exact_one[name]}")


if __name__ == "__main__":
    main()
