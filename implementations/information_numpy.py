"""NumPy entropy, ``kl_div`` and KL divergence: values and explicit VJPs.

Kernels in :mod:`.information_core` (double-double for float64, float64 hardware functions for
narrower dtypes), rounded once to the input dtype. Semantics, boundary values and the
gradient convention are those of ``lossoracle.reference.information``. NaN propagates;
negative probabilities, mismatched shapes, an unknown reduction or an out-of-range ``dim`` raise.
"""

from __future__ import annotations

import numpy as np

from . import information_core as core
from .validation import require_floating, require_range, require_reduction, require_same_shape

KL_REDUCTIONS = ("none", "sum", "mean", "batchmean")


def _probabilities(name: str, a) -> np.ndarray:
    a = np.asarray(a)
    require_floating(name, a)
    require_range(name, a, 0.0, np.inf)
    return a


__all__ = ["entropy", "entropy_grad", "kl_div", "kl_div_grad", "kl_divergence", "kl_divergence_grad"]


def require_dim(dim: int, ndim: int) -> None:
    """``dim`` names an axis of an array with ``ndim`` dimensions (ValueError naming ``dim``)."""
    if not isinstance(dim, (int, np.integer)) or not -ndim <= dim < ndim:
        raise ValueError(f"dim {dim!r} is out of range for an input with {ndim} dimension(s)")


def _rows(a: np.ndarray, dim: int) -> np.ndarray:
    return np.moveaxis(a.astype(np.float64), dim, -1)


def _precise(*arrays: np.ndarray) -> bool:
    """Double-double transcendentals for float64 results; float64 hardware ones suffice below."""
    return np.result_type(*arrays) == np.float64


def entropy(p, dim: int = -1) -> np.ndarray:
    """``H(p) = −Σ p log p`` along ``dim`` (``0·log 0 = 0``; rows are not normalised)."""
    p = _probabilities("p", p)
    require_dim(dim, p.ndim)
    with np.errstate(all="ignore"):
        return np.asarray(core.entropy(_rows(p, dim), _precise(p)), dtype=p.dtype)


def entropy_grad(grad_output, p, dim: int = -1) -> dict[str, np.ndarray]:
    """VJP ``−g·(log p + 1)`` (``+∞`` at ``p = 0``)."""
    p = _probabilities("p", p)
    require_dim(dim, p.ndim)
    g = np.asarray(grad_output, dtype=np.float64)[..., None]
    with np.errstate(all="ignore"):
        return {"p": np.moveaxis(core.entropy_grad(_rows(p, dim), g, _precise(p)), -1, dim).astype(p.dtype)}


def _kl_div_args(input, target, reduction: str, log_target: bool):
    require_reduction(reduction, KL_REDUCTIONS)
    x, t = np.asarray(input), np.asarray(target)
    require_floating("input", x)
    require_floating("target", t)
    require_same_shape("target", t, "input", x)
    if not log_target:
        require_range("target", t, 0.0, np.inf)
    return x, t


def _divisor(reduction: str, shape: tuple[int, ...]) -> float | None:
    """numel for ``mean``, ``size(0)`` for ``batchmean`` (0-dim input: no division)."""
    if reduction == "mean":
        return float(np.prod(shape))
    if reduction == "batchmean" and shape:
        return float(shape[0])
    return None


def kl_div(input, target, reduction: str = "mean", log_target: bool = False) -> np.ndarray:
    """PyTorch's ``kl_div``: pointwise ``p(log p − input)`` (``e^t(t − input)``), reduced."""
    x, t = _kl_div_args(input, target, reduction, log_target)
    dtype = np.result_type(x, t)
    xf, tf = x.astype(np.float64).reshape(-1), t.astype(np.float64).reshape(-1)
    with np.errstate(all="ignore"):
        if reduction == "none":
            out = core.kl_div(xf, tf, log_target, None, False, _precise(x, t))
            return np.asarray(out, dtype=dtype).reshape(x.shape)
        return np.asarray(core.kl_div(xf, tf, log_target, _divisor(reduction, x.shape), True, _precise(x, t)),
                          dtype=dtype)


def kl_div_grad(grad_output, input, target, reduction: str = "mean",
                log_target: bool = False) -> dict[str, np.ndarray]:
    """VJP: ``−a·p`` (``−a·e^t``) and ``a·(log p + 1 − input)`` (``a·e^t(t − input + 1)``)."""
    x, t = _kl_div_args(input, target, reduction, log_target)
    a = np.broadcast_to(np.asarray(grad_output, dtype=np.float64), x.shape).reshape(-1)
    xf, tf = x.astype(np.float64).reshape(-1), t.astype(np.float64).reshape(-1)
    with np.errstate(all="ignore"):  # (an overflow to ±inf in the final rounding is the right answer)
        gi, gt = core.kl_div_grad(xf, tf, log_target, a, _divisor(reduction, x.shape), _precise(x, t))
        return {"input": gi.reshape(x.shape).astype(x.dtype), "target": gt.reshape(t.shape).astype(t.dtype)}


def _kl_divergence_args(p, q, dim: int):
    p, q = _probabilities("p", p), _probabilities("q", q)
    require_same_shape("q", q, "p", p)
    require_dim(dim, p.ndim)
    return p, q


def kl_divergence(p, q, dim: int = -1) -> np.ndarray:
    """``D(p‖q) = Σ p log(p/q)`` along ``dim`` (``0·log(0/q) = 0``; ``p > 0 = q`` gives +inf)."""
    p, q = _kl_divergence_args(p, q, dim)
    with np.errstate(all="ignore"):
        return np.asarray(core.kl_divergence(_rows(p, dim), _rows(q, dim), _precise(p, q)),
                          dtype=np.result_type(p, q))


def kl_divergence_grad(grad_output, p, q, dim: int = -1) -> dict[str, np.ndarray]:
    """VJP ``g·(log(p/q) + 1)`` and ``−g·p/q``."""
    p, q = _kl_divergence_args(p, q, dim)
    g = np.asarray(grad_output, dtype=np.float64)[..., None]
    with np.errstate(all="ignore"):
        gp, gq = core.kl_divergence_grad(_rows(p, dim), _rows(q, dim), g, _precise(p, q))
        return {"p": np.moveaxis(gp, -1, dim).astype(p.dtype), "q": np.moveaxis(gq, -1, dim).astype(q.dtype)}
