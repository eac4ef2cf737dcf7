"""Soft Dice on large float32 volumes: the error of ours and of the common float32 formulations
against an exact reference, and whether the "scale = 1000" variant changes float32 accuracy.

    python benchmarks/dice_accuracy.py [--shapes 8x4x512x512 2x3x128x128x128] [--seed 0]

Inputs: probabilities p (float32, uniform, 20% of them within 1e-3 of 0 or 1) and one-hot
targets y (float32), or float32 logits x ~ 3·N(0, 1) through a softmax with class-index targets.
The loss is the ``none`` map (N, C) of ``dice_loss`` (activation none, smoothing s_nr = s_dr =
1e-5), each element a ratio of sums over the 512² = 262144 (2D) or 128³ = 2097152 (3D) positions.

Reference (``lossoracle.reference.dice.large_dice_reference``): each product of two float32 values
is exact in float64 and ``math.fsum`` rounds each exact sum once, so the float64 sums I, FP, FN
are within 2^-53 relative of the exact ones (all terms non-negative); the ratio is formed in
mpmath. From logits the softmax p and 1 − p are formed in float64 from the float32 logits
(relative error < 2^-50 each, far below a float32 ULP).

Variants, all float32 results (errors in float32 ULP of the exact value):

- ``ours torch`` / ``ours numpy``: ``lossoracle.implementations`` (float64 internal, sums of
  non-negative terms, one rounding);
- ``f32 pairwise``: ``1 − (2Σp·y + s)/(Σp + Σy + s)`` with torch's float32 sums (cascade /
  pairwise: the reduction kernels split the sum into blocks);
- ``f32 → f64 accumulate``: the same float32 products, accumulated in float64, ratio in float64;
- near-perfect logits (``x += 24`` at the target class, no smoothing): the loss is ~1e-9, and the
  float32 formulations keep no correct digit;
- ``scale 1000``: the popular variant ``(2Σ(p/1000)·y + ε)/(Σ(p/1000) + Σ(y/1000) + ε)``, ε = 1e-5,
  float32 throughout — compared with ``f32 pairwise`` at the same ratio (smoothing ε·1000 = 0.01).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from lossoracle.floats import FORMATS, ulp_error
from lossoracle.implementations import numpy_impl, torch_impl
from lossoracle.reference.dice import large_dice_reference

F32 = FORMATS["float32"]


def make(shape, seed: int, logits: bool, near: bool = False):
    rng = np.random.default_rng(seed)
    N, C = shape[:2]
    t = rng.integers(0, C, size=(N, *shape[2:]))
    if logits:
        x = rng.standard_normal(shape, dtype=np.float32) * 3
        if near:  # a confident, correct prediction: the loss is ~1e-7, 1 − ratio keeps few digits
            x += 24 * np.moveaxis(np.eye(C, dtype=np.float32)[t], -1, 1)
        return x.astype(np.float32), t
    p = rng.random(shape, dtype=np.float32)
    edge = rng.random(shape, dtype=np.float32)
    p = np.where(edge < 0.1, p * 1e-3, np.where(edge < 0.2, 1 - p * 1e-3, p)).astype(np.float32)
    y = (np.moveaxis(np.eye(C, dtype=np.float32)[t], -1, 1))
    return p, y


def reference(a, b, smooth: float, logits: bool):
    if not logits:
        return large_dice_reference(a, b, smooth, smooth)
    x = torch.from_numpy(a).double()
    e = torch.exp(x - x.amax(1, keepdim=True))
    s = e.sum(1, keepdim=True)
    p = e / s
    C = a.shape[1]
    # 1 − p without cancellation: the sum of the *other* classes' exponentials over the total
    q = torch.stack([sum(e[:, j] for j in range(C) if j != c) for c in range(C)], 1) / s
    y = np.moveaxis(np.eye(C)[b], -1, 1)
    return large_dice_reference(p.numpy(), y, smooth, smooth, q=q.numpy())


def f32_pairwise(p: torch.Tensor, y: torch.Tensor, smooth: float) -> torch.Tensor:
    dims = tuple(range(2, p.ndim))
    return 1 - (2 * (p * y).sum(dims) + smooth) / (p.sum(dims) + y.sum(dims) + smooth)


def f32_to_f64(p: torch.Tensor, y: torch.Tensor, smooth: float) -> torch.Tensor:
    dims = tuple(range(2, p.ndim))
    num = 2 * (p * y).sum(dims, dtype=torch.float64) + smooth
    den = p.sum(dims, dtype=torch.float64) + y.sum(dims, dtype=torch.float64) + smooth
    return (1 - num / den).float()


def scale_variant(p: torch.Tensor, y: torch.Tensor, eps: float, scale: float = 1000.0) -> torch.Tensor:
    dims = tuple(range(2, p.ndim))
    ps, ys = p / scale, y / scale
    return 1 - (2 * (ps * y).sum(dims) + eps) / (ps.sum(dims) + ys.sum(dims) + eps)


def max_ulp(got, want) -> float:
    g = np.asarray(got, dtype=np.float64).reshape(-1)
    return max(ulp_error(float(a), b, F32) for a, b in zip(g, np.asarray(want, dtype=object).reshape(-1)))


def run(shape, seed: int, logits: bool, smooth: float = 1e-5, near: bool = False) -> dict[str, float]:
    a, b = make(shape, seed, logits, near)
    t0 = time.perf_counter()
    want = reference(a, b, smooth, logits)
    t_ref = time.perf_counter() - t0
    act = "softmax" if logits else "none"
    out = {"reference s": t_ref}
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out["ours torch"] = max_ulp(torch_impl.dice_loss(ta, tb, activation=act, reduction="none",
                                                     smooth_nr=smooth, smooth_dr=smooth), want)
    out["ours numpy"] = max_ulp(numpy_impl.dice_loss(a, b, activation=act, reduction="none", smooth_nr=smooth,
                                                     smooth_dr=smooth), want)
    if logits:
        p = torch.softmax(ta, 1)
        y = torch.nn.functional.one_hot(tb, a.shape[1]).movedim(-1, 1).float()
    else:
        p, y = ta, tb
    out["f32 pairwise"] = max_ulp(f32_pairwise(p, y, smooth), want)
    out["f32 -> f64 accumulate"] = max_ulp(f32_to_f64(p, y, smooth), want)
    if near:
        out["loss (max)"] = float(max(want.reshape(-1)))
    if not logits:  # the scale variant is the plain ratio with smoothing eps·scale
        want_s = reference(a, b, 1e-5 * 1000, logits)
        out["scale 1000 (eps 1e-5)"] = max_ulp(scale_variant(p, y, 1e-5), want_s)
        out["plain, smoothing 0.01"] = max_ulp(f32_pairwise(p, y, 1e-5 * 1000), want_s)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", nargs="*", default=["8x4x512x512", "2x3x128x128x128"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for text in args.shapes:
        shape = tuple(int(v) for v in text.split("x"))
        n = math.prod(shape[2:])
        for logits, near in ((False, False), (True, False), (True, True)):
            res = run(shape, args.seed, logits, near=near, smooth=0.0 if near else 1e-5)
            kind = "softmax(logits), index targets" if logits else "probabilities, one-hot targets"
            kind += ", near-perfect (x += 24 at the target), no smoothing" if near else ""
            print(f"{text} ({n} positions per ratio; {kind}); reference in {res.pop('reference s'):.1f} s; "
                  f"budget 4 + log2({n}) = {4 + math.log2(n):.0f} ULP")
            for name, v in res.items():
                print(f"  {name:24s} max {v:10.3g}" + ("" if name.startswith("loss") else " ULP"))


if __name__ == "__main__":
    main()
