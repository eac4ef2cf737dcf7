"""Softmax cross-entropy kernels, written once for NumPy arrays and torch tensors (``xp`` is the
``numpy`` or ``torch`` module, :func:`doubledouble.xp`).

Rows are laid out class-last, ``(R, C)``. Two tiers:

**Bulk** (every row): from ``ℓ = log p = (x − m) − L`` (``m`` the row maximum, ``L = log Σ e^{x−m}``:
PyTorch's fused ``log_softmax``, or the same passes in NumPy) and ``p = e^ℓ``. Where every
probability the result depends on is at most 1/2, no step cancels: ``−ℓ_c ≥ log 2`` is a sum of
non-negative terms carrying absolute errors of ``u·(|x_c − m| + L)`` — within the componentwise
condition of the loss, which grows with the logits' magnitudes — and ``1 − p ≥ 1/2``.

**Tail rows** (a probability above 1/2, or a non-finite value): ``L`` would round ``1 + r`` and
``1 − p`` would cancel, so these rows alone are recomputed cancellation-free from the logits. With
``k = argmax x``, ``m = x_k`` and ``r = Σ_{j≠k} e^{x_j − m}`` (the arg-max term left out, so no
``1 + tiny`` is ever rounded):

- ``−log p_c = (m − x_c) + log1p(r)`` — two non-negative terms, no cancellation;
- ``p_c = e^{x_c − m} / (1 + r)``; ``1 − p_c = r/(1 + r)`` at the arg-max, ``1 − p_c`` elsewhere
  (there ``p_c ≤ 1/2``, so the subtraction is exact to a rounding);
- for a row loss ``Σ_c β_c (−log p_c)`` the gradient is ``rest_j·p_j − β_j·(1 − p_j)`` with
  ``rest_j = Σ_{c≠j} β_c`` from prefix and suffix sums (no ``B − β_j`` subtraction); class-index
  targets take a gather/scatter path (no one-hot rows are ever built).

The caller supplies arrays in the compute dtype (float32 for half inputs) and does validation.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .doubledouble import xp as namespace

Array = Any  # numpy.ndarray or torch.Tensor

LN2 = math.log(2.0)


def take(a: Array, idx: Array) -> Array:
    """``a[..., idx]`` along the last axis."""
    return np.take_along_axis(a, idx, -1) if isinstance(a, np.ndarray) else a.gather(-1, idx)


def finite(a: Array) -> Array:
    """``isfinite(a)`` (as ``|a| < inf``: torch's ``isfinite`` is several times slower on the CPU)."""
    return abs(a) < math.inf


def put(a: Array, idx: Array, value: Array) -> None:
    """In place: ``a[..., idx] = value`` along the last axis."""
    if isinstance(a, np.ndarray):
        np.put_along_axis(a, idx, value, -1)
    else:
        a.scatter_(-1, idx, value)


def like(values, ref: Array) -> Array:
    """An array of ``values`` with the dtype (and device) of ``ref``."""
    if isinstance(ref, np.ndarray):
        return np.asarray(values, dtype=ref.dtype)
    import torch

    return torch.as_tensor(values, dtype=ref.dtype, device=ref.device)


# ----------------------------------------------------------------------------------------------
# Tail rows: the cancellation-free kernels


class Shifted:
    """One pass over class-last rows ``x``: the arg-max ``k``, ``d = fl(x − m)``, the corrected
    ``e = e^{x − m}`` (exactly 1 at the arg-max) and ``r = Σ_{j≠k} e_j``.

    ``d`` carries a rounding error up to ``eps·|d|/2``, which ``e^{d}`` would turn into a relative
    error ``eps·|d|/2`` — hundreds of ULP for ``|d|`` in the hundreds. Knuth's TwoSum gives the
    exact residual ``δ = (x − m) − d`` and ``e = e^{d}(1 + δ)`` restores full relative accuracy.
    """

    def __init__(self, x: Array) -> None:
        xp = namespace(x)
        self.k = x.argmax(-1, keepdims=True)
        m = take(x, self.k)
        m = xp.where(finite(m), m, xp.zeros_like(m))  # an all −inf row stays nan/inf
        d = x - m
        bp = d - x
        res = (x - (d - bp)) - (m + bp)  # TwoSum: (x − m) − d exactly
        e = xp.exp(d) * (1 + xp.where(finite(res), res, xp.zeros_like(res)))
        one = take(e, self.k)
        put(e, self.k, xp.zeros_like(one))
        self.r = e.sum(-1, keepdims=True)  # the arg-max term left out: no 1 + tiny is rounded
        put(e, self.k, one)
        self.d, self.e = d, e

    def nlp(self) -> Array:
        """``−log p = (m − x) + log1p(r)``: two non-negative terms."""
        return namespace(self.d).log1p(self.r) - self.d

    def p(self) -> Array:
        return self.e / (1 + self.r)

    def omp(self, p: Array) -> Array:
        """``1 − p``, with ``r/(1 + r)`` at the arg-max."""
        omp = 1 - p
        put(omp, self.k, self.r / (1 + self.r))
        return omp


class RowStats(NamedTuple):
    nlp: Array  # −log p
    p: Array
    omp: Array  # 1 − p
    k: Array  # the arg-max index of each row (keepdims)


def row_stats(x: Array) -> RowStats:
    """``−log p``, ``p`` and ``1 − p`` per entry of class-last rows ``x``, and the arg-max."""
    sh = Shifted(x)
    p = sh.p()
    return RowStats(sh.nlp(), p, sh.omp(p), sh.k)


def exclusive_sums(beta: Array) -> Array:
    """``Σ_{c≠j} β_c`` for every ``j``, from prefix and suffix sums (no cancellation for β ≥ 0)."""
    xp = namespace(beta)
    zero = xp.zeros_like(beta[..., :1])
    before = xp.cumsum(xp.concatenate([zero, beta[..., :-1]], -1), -1)
    after = xp.flip(xp.cumsum(xp.flip(beta[..., 1:], (-1,)), -1), (-1,))
    return before + xp.concatenate([after, zero], -1)


def log_softmax_vjp(g: Array, st: RowStats) -> Array:
    """``g_j − p_j Σ_k g_k = g_j (1 − p_j) − p_j Σ_{k≠j} g_k`` (no ``1 − p`` rounding at the arg-max)."""
    return g * st.omp - st.p * exclusive_sums(g)


def softmax_vjp(g: Array, st: RowStats) -> Array:
    """``p_j (g_j − Σ_k g_k p_k)`` with ``g_j − Σ_k g_k p_k = (g_j − g_m) + Σ_{k≠m} p_k (g_m − g_k)``
    (``m`` the arg-max, using ``Σ p = 1``), so a dominant ``p_m ≈ 1`` cancels nothing by rounding."""
    gm = take(g, st.k)
    rest = (st.p * (gm - g)).sum(-1, keepdims=True)  # zero at the arg-max itself
    return st.p * ((g - gm) + rest)


class Coefficients:
    """The row loss ``Σ_c β_c (−log p_c)`` of a cross-entropy call, split as
    ``β = (1−ε)·w_y·onehot(y) + dense``: the index part (absent for probability targets) and a
    dense part — ``(ε/C)·w`` for label smoothing, ``w·((1−ε)·t + ε/C)`` for probability targets,
    None without either. Also the ``mean`` denominator and the non-ignored rows mask ``(..., 1)``
    (ignored rows receive no cotangent)."""

    def __init__(self, x: Array, target: Array, weight: Array | None, ignore_index: int, eps: float,
                 prob: bool) -> None:
        xp = namespace(x)
        C = x.shape[-1]
        w = like(np.ones(C), x) if weight is None else weight
        self.y = self.wy = None
        if prob:
            self.dense = w * ((1 - eps) * target + eps / C)
            self.den = like(float(np.prod(x.shape[:-1])), x)
            self.valid = xp.ones_like(self.dense[..., :1], dtype=bool)
            return
        valid = target != ignore_index
        self.y = xp.where(valid, target, xp.zeros_like(target))[..., None]
        w_y = w[self.y] * valid[..., None]
        self.wy = (1 - eps) * w_y
        self.den = w_y.sum()
        self.valid = valid[..., None]
        self.dense = (eps / C) * w * self.valid if eps else None


def times(coef: Array, nlp: Array) -> Array:
    """``coef·nlp`` with ``0·inf = 0`` (a zero coefficient contributes nothing)."""
    xp = namespace(nlp)
    return xp.where(coef != 0, coef * nlp, xp.zeros_like(nlp))


def ce_rows(sh: Shifted, co: Coefficients) -> Array:
    """Per-row loss ``Σ_c β_c (−log p_c)``."""
    xp = namespace(sh.d)
    out = xp.zeros_like(sh.r)
    if co.y is not None:
        out = out + times(co.wy, xp.log1p(sh.r) - take(sh.d, co.y))
    if co.dense is not None:
        out = out + times(co.dense, sh.nlp()).sum(-1, keepdims=True)
    return out[..., 0]


def ce_rows_grad(sh: Shifted, co: Coefficients, a: Array) -> Array:
    """``a·∂/∂x_j Σ_c β_c (−log p_c)``: index part ``w_y (p_j − [j = y])`` with ``p_y − 1 = −r/(1+r)``
    at the arg-max; dense part ``rest_j·p_j − β_j (1 − p_j)``; 0 on ignored rows."""
    xp = namespace(sh.d)
    p = sh.p()
    g = xp.zeros_like(p)
    if co.y is not None:
        g = p * co.wy
        put(g, co.y, -co.wy * xp.where(co.y == sh.k, sh.r / (1 + sh.r), 1 - take(p, co.y)))
    if co.dense is not None:
        g = g + exclusive_sums(co.dense) * p - co.dense * sh.omp(p)
    return xp.where(co.valid, a * g, xp.zeros_like(g))


# ----------------------------------------------------------------------------------------------
# Bulk: every row from ℓ = log p, the tail rows flagged for the kernels above


def _max_arg(x: Array) -> tuple[Array, Array]:
    """The row maxima and their indices, ``(R, 1)`` each."""
    if isinstance(x, np.ndarray):
        k = np.argmax(x, -1)[:, None]
        return np.take_along_axis(x, k, -1), k
    m, k = x.max(-1, keepdim=True)  # torch's argmax alone is slower
    return m, k


def _finite_or_zero(a: Array) -> None:
    """In place: non-finite entries of ``a`` set to 0."""
    if isinstance(a, np.ndarray):
        np.nan_to_num(a, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    else:
        a.nan_to_num_(0.0, 0.0, 0.0)


class Bulk:
    """``log p`` of every row (unless ``log`` is false), ``e = e^d`` and ``s = Σ e`` (``(R, 1)``): the
    passes of a fused ``log_softmax``, as array operations. float64 adds the TwoSum residual
    ``δ = (x − m) − d`` (``e^d (1 + δ)``, ``d − log s + δ``): the rounding of ``x − m`` alone costs
    ``|x − m|·u/2`` relative, a few ULP at moderate logits, beyond float64's 2 ULP budget; and sums
    ``s`` without the arg-max term first."""

    def __init__(self, x2: Array, log: bool = True) -> None:
        xp = namespace(x2)
        wide = x2.itemsize == 8 and x2.shape[-1] > 0
        if wide:
            m, k = _max_arg(x2)
        else:
            m = xp.amax(x2, -1, keepdims=True) if x2.shape[-1] else xp.zeros_like(x2[:, :1])
        m = xp.where(finite(m), m, xp.zeros_like(m))  # a row with no finite maximum stays NaN
        d = x2 - m
        res = None
        if wide:  # TwoSum in place: res = (x − (d − bp)) − (m + bp), bp = d − x
            bp = d - x2
            res = d - bp
            xp.subtract(x2, res, out=res)
            bp += m
            res -= bp
            _finite_or_zero(res)
        self.e = xp.exp(d) if res is None else xp.exp(d, out=bp)
        if res is not None:
            res += 1
            self.e *= res
            res -= 1
        if wide:  # s = e_k + Σ_{j≠k} e_j: the small terms summed first (float64's 2 ULP budget)
            one = take(self.e, k)
            put(self.e, k, xp.zeros_like(one))
            self.s = self.e.sum(-1, keepdims=True)
            put(self.e, k, one)
            self.s += one
        else:
            self.s = self.e.sum(-1, keepdims=True)
        self.lsm = None
        if log:
            d -= xp.log(self.s)
            if res is not None:
                d += res
            self.lsm = d

    def p(self) -> Array:
        """``e/s``, in place of ``e``."""
        self.e /= self.s
        return self.e


def tail_rows(ok: Array) -> Array:
    """Indices of the rows where ``ok`` (shape ``(R,)``) does not hold (NaN never holds)."""
    xp = namespace(ok)
    return xp.nonzero(~ok)[0] if xp is np else (~ok).nonzero()[:, 0]


class TopTail:
    """The tail rows ``ℓ`` (``(T, C)``, bulk ``log p``, the largest above ``−log 2``) and their arg-max
    ``k`` (``(T, 1)``): ``r = Σ_{j≠k} e^{ℓ_j − ℓ_k}`` (``ℓ_j − ℓ_k = x_j − m`` to a rounding: the bulk's
    error in ``L`` is common to both and cancels), or ``Σ_{j≠k} e_j`` of the rows' ``e = e^{x − m}``
    when at hand. Only the arg-max column is inexact in the bulk (``1 − p_k`` cancels):
    ``log p_k = −log1p(r)``, ``1 − p_k = r/(1 + r)``, ``p_k = 1/(1 + r)``."""

    def __init__(self, lsm: Array, k: Array, e: Array | None = None) -> None:
        xp = namespace(lsm)
        self.k = k
        e = xp.exp(lsm - take(lsm, self.k)) if e is None else e  # or the rows' e^{x − m}, if at hand
        put(e, self.k, xp.zeros_like(self.k, dtype=e.dtype))
        self.r = e.sum(-1, keepdims=True)

    def lsm_k(self) -> Array:
        return -namespace(self.r).log1p(self.r)

    def log_softmax_vjp_k(self, g: Array) -> Array:
        """``g_k (1 − p_k) − p_k Σ_{i≠k} g_i`` (``g`` the rows' cotangents ``(T, C)``, overwritten)."""
        xp = namespace(g)
        gk = take(g, self.k)
        put(g, self.k, xp.zeros_like(gk))
        return (gk * self.r - g.sum(-1, keepdims=True)) / (1 + self.r)


def softmax_vjp_k(g: Array, p: Array, k: Array) -> Array:
    """``p_k Σ_{i≠k} p_i (g_k − g_i)`` at the arg-max ``k`` of rows where ``p_k > 1/2`` (``1 − p_k`` would
    cancel in ``p_k (g_k − Σ_i g_i p_i)``)."""
    return take(p, k) * (p * (take(g, k) - g)).sum(-1, keepdims=True)


class IndexRows:
    """Cross-entropy rows ``(1−ε) w_y (−ℓ_y) + (ε/C) Σ_c w_c (−ℓ_c)`` of class-index targets from the
    bulk ``ℓ`` (``(R, C)``), the rows' total weight ``B = Σ_c β_c``, and which rows are in the tail:
    ``p_y > 1/2`` (``1 − p_y`` would cancel), a loss below ``B·log 2`` (``β`` concentrated where
    ``p > 1/2``), or a value not finite."""

    def __init__(self, lsm: Array, t: Array, weight: Array | None, ignore_index: int, eps: float) -> None:
        xp = namespace(lsm)
        C = lsm.shape[-1]
        valid = t != ignore_index
        self.y = xp.where(valid, t, xp.zeros_like(t))[:, None]
        self.valid = valid[:, None]
        w_y = self.valid * like(1.0, lsm) if weight is None else weight[self.y] * self.valid
        self.den = w_y.sum()
        self.coef = (1 - eps) * w_y  # (R, 1)
        self.lsm_y = take(lsm, self.y)
        rows = times(self.coef, -self.lsm_y)
        self.B, self.beta_y, self.wd = self.coef, self.coef, None
        if eps:
            self.wd = like(eps / C, lsm) if weight is None else (eps / C) * weight  # dense β per class
            dense = -(lsm.sum(-1, keepdims=True) * self.wd) if weight is None else -(lsm @ self.wd)[:, None]
            rows = rows + xp.where(self.valid, dense, xp.zeros_like(dense))
            self.B = self.B + (self.wd * C if weight is None else self.wd.sum()) * self.valid
            self.beta_y = self.beta_y + (self.wd if weight is None else self.wd[self.y]) * self.valid
        self.rows = rows[:, 0]
        lsm_y = self.lsm_y[:, 0]
        ok = (lsm_y <= -LN2) & (self.rows >= self.B[:, 0] * LN2) & finite(self.rows) & finite(lsm_y)
        self.tail = tail_rows(ok | ~valid)  # an ignored row is 0, whatever its logits

    def grad(self, p: Array, a: Array) -> Array:
        """``a_r (B_r p_j − β_rj)`` in place of ``p`` (``a`` the rows' cotangents, ``(R, 1)`` or a scalar);
        0 on ignored rows; the tail rows are left for the caller."""
        xp = namespace(p)
        a = xp.where(self.valid, a, xp.zeros_like(self.coef))  # ignored rows: no cotangent (even 1/0)
        py = take(p, self.y)
        p *= a * self.B
        if self.wd is not None:
            p -= a * self.wd
        put(p, self.y, a * (self.B * py - self.beta_y))
        return p
