"""Cancellation-free softmax cross-entropy kernels, written once for NumPy arrays and torch tensors.

Rows are laid out class-last, ``(..., C)``. With ``k = argmax x``, ``m = x_k`` and
``r = Σ_{j≠k} e^{x_j − m}`` (the arg-max term left out, so no ``1 + tiny`` is ever rounded):

- ``−log p_c = (m − x_c) + log1p(r)`` — two non-negative terms, no cancellation;
- ``p_c = e^{x_c − m} / (1 + r)``; ``1 − p_c = r/(1 + r)`` at the arg-max, ``1 − p_c`` elsewhere
  (there ``p_c ≤ 1/2``, so the subtraction is exact to a rounding);
- for a row loss ``Σ_c β_c (−log p_c)`` the gradient is ``rest_j·p_j − β_j·(1 − p_j)`` with
  ``rest_j = Σ_{c≠j} β_c`` from prefix and suffix sums (no ``B − β_j`` subtraction); class-index
  targets take a gather/scatter fast path (no one-hot rows are ever built).

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


def _put(x: Array, idx: Array, value: Array) -> None:
    """In place: ``x[..., idx] = value`` along the last axis."""
    if isinstance(x, np.ndarray):
        np.put_along_axis(x, idx, value, -1)
    else:
        x.scatter_(-1, idx, value)


class Shifted:
    """One pass over class-last rows ``x``: the arg-max ``k``, ``d = fl(x − m)``, the corrected
    ``e = e^{x − m}`` (exactly 1 at the arg-max) and ``r = Σ_{j≠k} e_j``.

    ``d`` carries a rounding error up to ``eps·|d|/2``, which ``e^{d}`` would turn into a relative
    error ``eps·|d|/2`` — hundreds of ULP for ``|d|`` in the hundreds. Knuth's TwoSum gives the
    exact residual ``δ = (x − m) − d`` and ``e = e^{d}(1 + δ)`` restores full relative accuracy.
    """

    def __init__(self, x: Array) -> None:
        xp = _xp(x)
        self.k = x.argmax(-1, keepdims=True)
        m = _take(x, self.k)
        m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))  # an all −inf row stays nan/inf
        # TwoSum residual (x − m) − d, formed in place: fresh temporaries cost more than arithmetic
        d = x - m
        bp = d - x
        res = d - bp
        xp.subtract(x, res, out=res)  # x − (d − bp)
        bp += m
        xp.subtract(res, bp, out=res)  # + (−m − bp)
        if xp is np:
            np.nan_to_num(res, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        else:
            xp.nan_to_num(res, nan=0.0, posinf=0.0, neginf=0.0, out=res)
        e = xp.exp(d, out=bp)
        res += 1
        e *= res
        one = _take(e, self.k)
        _put(e, self.k, xp.zeros_like(one))
        self.r = e.sum(-1, keepdims=True)  # the arg-max term left out: no 1 + tiny is rounded
        _put(e, self.k, one)
        self.d, self.e = d, e

    def nlp(self) -> Array:
        """``−log p = (m − x) + log1p(r)``: two non-negative terms."""
        return _xp(self.d).log1p(self.r) - self.d

    def p(self) -> Array:
        return self.e / (1 + self.r)

    def omp_at(self, idx: Array, p_idx: Array) -> Array:
        """``1 − p`` at class ``idx`` per row: ``r/(1 + r)`` where ``idx`` is the arg-max."""
        xp = _xp(p_idx)
        return xp.where(idx == self.k, self.r / (1 + self.r), 1 - p_idx)


class RowStats(NamedTuple):
    nlp: Array  # −log p
    p: Array
    omp: Array  # 1 − p
    k: Array  # the arg-max index of each row (keepdims)


def row_stats(x: Array) -> RowStats:
    """``−log p``, ``p`` and ``1 − p`` per entry of class-last rows ``x``, and the arg-max."""
    sh = Shifted(x)
    p = sh.p()
    omp = 1 - p
    _put(omp, sh.k, sh.r / (1 + sh.r))
    return RowStats(sh.nlp(), p, omp, sh.k)


def exclusive_sums(beta: Array) -> Array:
    """``Σ_{c≠j} β_c`` for every ``j``, from prefix and suffix sums (no cancellation for β ≥ 0)."""
    xp = _xp(beta)
    zero = xp.zeros_like(beta[..., :1])
    before = xp.concatenate([zero, beta[..., :-1]], -1) if xp is np else xp.cat([zero, beta[..., :-1]], -1)
    after = _flip(_flip(beta).cumsum(-1))
    after = xp.concatenate([after[..., 1:], zero], -1) if xp is np else xp.cat([after[..., 1:], zero], -1)
    return before.cumsum(-1) + after


def log_softmax_vjp(g: Array, st: RowStats) -> Array:
    """``g_j − p_j Σ_k g_k = g_j (1 − p_j) − p_j Σ_{k≠j} g_k`` (no ``1 − p`` rounding at the arg-max)."""
    return g * st.omp - st.p * exclusive_sums(g)


def softmax_vjp(g: Array, st: RowStats) -> Array:
    """``p_j (g_j − Σ_k g_k p_k)`` with ``g_j − Σ_k g_k p_k = (g_j − g_m) + Σ_{k≠m} p_k (g_m − g_k)``
    (``m`` the arg-max, using ``Σ p = 1``), so a dominant ``p_m ≈ 1`` cancels nothing by rounding."""
    gm = _take(g, st.k)
    terms = st.p * (gm - g)  # zero at the arg-max itself
    rest = terms.sum(-1, keepdims=True)
    return st.p * ((g - gm) + rest)


def class_last(a: Array, dim: int) -> Array:
    """Move the class axis ``dim`` to the end."""
    return np.moveaxis(a, dim, -1) if isinstance(a, np.ndarray) else a.movedim(dim, -1)


def class_back(a: Array, dim: int) -> Array:
    """Inverse of :func:`class_last`."""
    return np.moveaxis(a, -1, dim) if isinstance(a, np.ndarray) else a.movedim(-1, dim)


def _like(values, like: Array) -> Array:
    """An array of ``values`` with the dtype (and device) of ``like``."""
    if isinstance(like, np.ndarray):
        return np.asarray(values, dtype=like.dtype)
    import torch

    return torch.as_tensor(values, dtype=like.dtype, device=like.device)


class Coefficients:
    """The row loss ``Σ_c β_c (−log p_c)`` of a cross-entropy call, split as
    ``β = (1−ε)·w_y·onehot(y) + dense``: the index part (absent for probability targets) and a
    dense part — ``(ε/C)·w`` for label smoothing, ``w·((1−ε)·t + ε/C)`` for probability targets,
    None without either. Also the ``mean`` denominator and the non-ignored rows mask ``(..., 1)``
    (ignored rows receive no cotangent)."""

    def __init__(self, x: Array, target: Array, weight: Array | None, ignore_index: int, eps: float,
                 prob: bool) -> None:
        xp = _xp(x)
        C = x.shape[-1]
        w = _like(np.ones(C), x) if weight is None else weight
        self.y = self.wy = None
        if prob:
            self.dense = w * ((1 - eps) * target + eps / C)
            self.den = _like(float(np.prod(x.shape[:-1])), x)
            self.valid = xp.ones_like(self.dense[..., :1], dtype=bool)
            return
        valid = target != ignore_index
        self.y = xp.where(valid, target, xp.zeros_like(target))[..., None]
        w_y = w[self.y] * valid[..., None]
        self.wy = (1 - eps) * w_y
        self.den = w_y.sum()
        self.valid = valid[..., None]
        self.dense = (eps / C) * w * self.valid if eps else None


def _times(coef: Array, nlp: Array) -> Array:
    """``coef·nlp`` with ``0·inf = 0`` (a zero coefficient contributes nothing)."""
    xp = _xp(nlp)
    return xp.where(coef != 0, coef * nlp, xp.zeros_like(nlp))


def ce_rows(sh: Shifted, co: Coefficients) -> Array:
    """Per-row loss ``Σ_c β_c (−log p_c)``."""
    xp = _xp(sh.d)
    out = xp.zeros_like(sh.r)
    if co.y is not None:
        out = out + _times(co.wy, xp.log1p(sh.r) - _take(sh.d, co.y))
    if co.dense is not None:
        out = out + _times(co.dense, sh.nlp()).sum(-1, keepdims=True)
    return out[..., 0]


def ce_rows_grad(sh: Shifted, co: Coefficients, a: Array) -> Array:
    """``a·∂/∂x_j Σ_c β_c (−log p_c)``: index part ``w_y (p_j − [j = y])`` with ``p_y − 1 = −r/(1+r)``
    at the arg-max; dense part ``rest_j·p_j − β_j (1 − p_j)``; 0 on ignored rows."""
    xp = _xp(sh.d)
    p = sh.p()
    g = xp.zeros_like(p)
    if co.y is not None:
        g = p * co.wy
        _put(g, co.y, -co.wy * sh.omp_at(co.y, _take(p, co.y)))
    if co.dense is not None:
        omp = 1 - p
        _put(omp, sh.k, sh.r / (1 + sh.r))
        g = g + exclusive_sums(co.dense) * p - co.dense * omp
    return xp.where(co.valid, a * g, xp.zeros_like(g))


def target_nll_grad(co: Coefficients, a: Array, like: Array) -> Array:
    """Gradient of ``−w_y·input_y`` (NLL): ``−a·w_y`` at the target, 0 elsewhere and on ignored rows."""
    xp = _xp(like)
    g = xp.zeros_like(like)
    _put(g, co.y, xp.where(co.valid, -a * co.wy, xp.zeros_like(co.wy)))
    return g
