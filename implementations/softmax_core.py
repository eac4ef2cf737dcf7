"""Cancellation-free softmax cross-entropy kernels, written once for NumPy arrays and torch tensors.

Rows are laid out class-last, ``(..., C)``. With ``k = argmax x``, ``m = x_k`` and
``r = Σ_{j≠k} e^{x_j − m}`` (the arg-max term left out, so no ``1 + tiny`` is ever rounded):

- ``−log p_c = (m − x_c) + log1p(r)`` — two non-negative terms, no cancellation;
- ``p_c = e^{x_c − m} / (1 + r)``; ``1 − p_c = r/(1 + r)`` at the arg-max, ``1 − p_c`` elsewhere
  (there ``p_c ≤ 1/2``, so the subtraction is exact to a rounding);
- for a row loss ``Σ_c β_c (−log p_c)`` the gradient is ``rest_j·p_j − β_j·(1 − p_j)`` with
  ``rest_j = Σ_{c≠j} β_c`` from prefix and suffix sums (no ``B − β_j`` subtraction).

The caller supplies arrays in the compute dtype (float32 for half inputs) and does validation.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

Array = Any  # numpy.ndarray or torch.Tensor


def _xp(x: Array):
    if isinstance(x, np.ndarray):
        return np
    import torch

    return torch


def _take(x: Array, idx: Array) -> Array:
    return np.take_along_axis(x, idx, -1) if isinstance(x, np.ndarray) else x.gather(-1, idx)


def _flip(x: Array) -> Array:
    return np.flip(x, -1) if isinstance(x, np.ndarray) else x.flip(-1)


class RowStats(NamedTuple):
    nlp: Array  # −log p
    p: Array
    omp: Array  # 1 − p
    is_max: Array  # the arg-max entry of each row


def _exp_diff(x: Array, m: Array) -> tuple[Array, Array]:
    """``d = fl(x − m)`` and ``e^{x − m}`` corrected for the rounding of ``d`` (Knuth's TwoSum
    gives the exact residual ``δ``; ``e^{d+δ} ≈ e^{d}(1 + δ)``), so tiny probabilities keep full
    relative accuracy even when ``|x − m|`` is in the hundreds."""
    xp = _xp(x)
    d = x - m
    bp = d - x
    residual = (x - (d - bp)) + (-m - bp)
    e = xp.exp(d)
    return d, xp.where(xp.isfinite(residual), e + e * residual, e)


def row_stats(x: Array) -> RowStats:
    """``−log p``, ``p`` and ``1 − p`` per entry of class-last rows ``x``, and the arg-max mask."""
    xp = _xp(x)
    k = x.argmax(-1, keepdims=True)
    m = _take(x, k)
    is_max = _like(np.arange(x.shape[-1]), k) == k
    finite_m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))  # an all −inf row stays nan/inf
    d, e = _exp_diff(x, finite_m)
    r = xp.where(is_max, xp.zeros_like(e), e).sum(-1, keepdims=True)
    nlp = (-d) + xp.log1p(r)
    p = e / (1 + r)
    omp = xp.where(is_max, r / (1 + r), 1 - p)
    return RowStats(nlp, p, omp, is_max)


def exclusive_sums(beta: Array) -> Array:
    """``Σ_{c≠j} β_c`` for every ``j``, from prefix and suffix sums (no cancellation for β ≥ 0)."""
    xp = _xp(beta)
    zero = xp.zeros_like(beta[..., :1])
    before = xp.concatenate([zero, beta[..., :-1]], -1) if xp is np else xp.cat([zero, beta[..., :-1]], -1)
    after = _flip(_flip(beta).cumsum(-1))
    after = xp.concatenate([after[..., 1:], zero], -1) if xp is np else xp.cat([after[..., 1:], zero], -1)
    return before.cumsum(-1) + after


def weighted_nll(nlp: Array, beta: Array) -> Array:
    """``Σ_c β_c (−log p_c)`` per row, with ``β_c = 0`` terms exactly 0 (also when −log p is inf)."""
    xp = _xp(nlp)
    return xp.where(beta != 0, beta * nlp, xp.zeros_like(nlp)).sum(-1)


def weighted_nll_grad(p: Array, omp: Array, beta: Array) -> Array:
    """``∂/∂x_j Σ_c β_c (−log p_c) = rest_j·p_j − β_j·(1 − p_j)``."""
    return exclusive_sums(beta) * p - beta * omp


def log_softmax_vjp(g: Array, st: RowStats) -> Array:
    """``g_j − p_j Σ_k g_k = g_j (1 − p_j) − p_j Σ_{k≠j} g_k`` (no ``1 − p`` rounding at the arg-max)."""
    return g * st.omp - st.p * exclusive_sums(g)


def softmax_vjp(g: Array, st: RowStats) -> Array:
    """``p_j (g_j − Σ_k g_k p_k)`` with ``g_j − Σ_k g_k p_k = (g_j − g_m) + Σ_{k≠m} p_k (g_m − g_k)``
    (``m`` the arg-max, using ``Σ p = 1``), so a dominant ``p_m ≈ 1`` cancels nothing by rounding."""
    xp = _xp(g)
    gm = _take(g, st.is_max.int().argmax(-1, keepdim=True) if xp is not np else st.is_max.argmax(-1)[..., None])
    rest = xp.where(st.is_max, xp.zeros_like(g), st.p * (gm - g)).sum(-1, keepdims=True)
    return st.p * ((g - gm) + rest)


def class_last(a: Array, dim: int) -> Array:
    """Move the class axis ``dim`` to the end."""
    return np.moveaxis(a, dim, -1) if isinstance(a, np.ndarray) else a.movedim(dim, -1)


def class_back(a: Array, dim: int) -> Array:
    """Inverse of :func:`class_last`."""
    return np.moveaxis(a, -1, dim) if isinstance(a, np.ndarray) else a.movedim(-1, dim)


def target_mask(target: Array, C: int) -> Array:
    """One-hot mask (class-last) of class-index targets; all False for out-of-range (ignored) ones."""
    return _like(np.arange(C), target) == target[..., None]


def _like(values, like: Array) -> Array:
    """An array of ``values`` with the dtype (and device) of ``like``."""
    if isinstance(like, np.ndarray):
        return np.asarray(values, dtype=like.dtype)
    import torch

    return torch.as_tensor(values, dtype=like.dtype, device=like.device)


def ce_coefficients(x: Array, target: Array, weight: Array | None, ignore_index: int, eps: float,
                    prob: bool) -> tuple[Array, Array, Array]:
    """Row coefficients ``β`` (class-last, like ``x``), the ``mean`` denominator, and the mask of
    rows that are not ignored (``(..., 1)``; ignored rows receive no cotangent).

    Index targets: ``β_c = (1−ε)·w_y·[c = y] + (ε/C)·w_c`` (0 on ignored rows), denominator
    ``Σ w_y`` over non-ignored rows. Probability targets (class-last): ``β_c = w_c·((1−ε)·t_c + ε/C)``,
    denominator the number of rows.
    """
    xp = _xp(x)
    C = x.shape[-1]
    w = _like(np.ones(C), x) if weight is None else weight
    if prob:
        beta = w * ((1 - eps) * target + eps / C)
        return beta, _like(float(np.prod(x.shape[:-1])), x), xp.ones_like(beta[..., :1], dtype=bool)
    valid = target != ignore_index
    safe = xp.where(valid, target, xp.zeros_like(target))
    onehot = target_mask(safe, C)
    wy = w[safe] * valid
    beta = (1 - eps) * wy[..., None] * onehot
    if eps:
        beta = beta + (eps / C) * w * valid[..., None]
    return beta, wy.sum(), valid[..., None]
