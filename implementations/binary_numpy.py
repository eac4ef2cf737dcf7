"""NumPy binary cross-entropy on probabilities and on logits: values and explicit VJPs.

Kernels in :mod:`.binary_core`. float16/float32 are computed in float64 (NumPy's own float32
``exp``/``log`` are up to ~2 ULP off, which would eat the float32 budget) and float64 in long
double (64-bit mantissa; double-double where NumPy's long double is only float64), each rounded
once to the input's dtype; other arguments are converted to it. Semantics are PyTorch's
(``lossoracle.reference.binary``), with exact logarithms — no −100 clamp.
"""

from __future__ import annotations

import numpy as np

from . import binary_core as core


def _opt(a) -> np.ndarray | None:
    return None if a is None else np.asarray(a)


class _Call:
    """A validated call: operands in the compute dtype, the result dtype and the reduction."""

    def __init__(self, input, target, weight, reduction: str, pos_weight=None, probabilities: bool = False):
        input, target, weight, pos_weight = np.asarray(input), np.asarray(target), _opt(weight), _opt(pos_weight)
        core.check(input, target, weight, reduction, pos_weight, probabilities)
        self.dtype, self.reduction = input.dtype, reduction
        wide = input.dtype == np.float64
        ct = core.LONG_DOUBLE if wide and core.LONG_DOUBLE is not None else np.float64
        self.dd = wide and ct == np.float64  # no long double: float64 goes through double-double
        self.x, self.y = input.astype(ct), target.astype(ct)
        self.w = None if weight is None else weight.astype(ct)
        self.pw = None if pos_weight is None else pos_weight.astype(ct)

    def out(self, v) -> np.ndarray:
        return np.asarray(v).astype(self.dtype)

    def value(self, elementwise: np.ndarray) -> np.ndarray:
        return self.out(core.reduce(elementwise, self.reduction))

    def cotangent(self, grad_output) -> np.ndarray:
        """What each element's (weighted) loss receives: ``g``, or ``g/numel`` under mean."""
        g = np.asarray(grad_output).astype(self.x.dtype)
        if self.reduction == "mean":
            g = g / self.x.size
        return np.broadcast_to(g, self.x.shape)


@np.errstate(all="ignore")  # inf/NaN edge values are handled on purpose
def binary_cross_entropy(input: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None,
                         reduction: str = "mean") -> np.ndarray:
    """``−w·[y log p + (1 − y) log(1 − p)]``, reduced (mean = Σ / numel)."""
    c = _Call(input, target, weight, reduction, probabilities=True)
    return c.value(core.bce(c.x, c.y, c.w, dd=c.dd))


@np.errstate(all="ignore")  # inf/NaN edge values are handled on purpose
def binary_cross_entropy_grad(grad_output: np.ndarray, input: np.ndarray, target: np.ndarray,
                              weight: np.ndarray | None = None, reduction: str = "mean") -> dict[str, np.ndarray]:
    """VJP: ``a·w·(p − y)/(p(1 − p))`` for ``input``, ``a·w·log((1 − p)/p)`` for ``target``."""
    c = _Call(input, target, weight, reduction, probabilities=True)
    gp, gy = core.bce_grads(c.cotangent(grad_output), c.w, c.x, c.y, dd=c.dd)
    return {"input": c.out(gp), "target": c.out(gy)}


@np.errstate(all="ignore")  # inf/NaN edge values are handled on purpose
def binary_cross_entropy_with_logits(input: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None,
                                     reduction: str = "mean", pos_weight: np.ndarray | None = None) -> np.ndarray:
    """``w·[pw·y·softplus(−x) + (1 − y)·softplus(x)]``, reduced (mean = Σ / numel)."""
    c = _Call(input, target, weight, reduction, pos_weight)
    return c.value(core.bce_logits(c.x, c.y, c.w, c.pw, dd=c.dd))


@np.errstate(all="ignore")  # inf/NaN edge values are handled on purpose
def binary_cross_entropy_with_logits_grad(grad_output: np.ndarray, input: np.ndarray, target: np.ndarray,
                                          weight: np.ndarray | None = None, reduction: str = "mean",
                                          pos_weight: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """VJP: ``a·w·[(1 − y)σ(x) − pw·y·σ(−x)]`` for ``input``, ``a·w·[pw·softplus(−x) − softplus(x)]``
    for ``target``."""
    c = _Call(input, target, weight, reduction, pos_weight)
    gx, gy = core.bce_logits_grads(c.cotangent(grad_output), c.w, c.x, c.y, c.pw, dd=c.dd)
    return {"input": c.out(gx), "target": c.out(gy)}
