"""Focal-loss kernels written once for NumPy arrays and torch tensors, in two arithmetics.

Why two arithmetics: the modulating factor ``u^γ`` turns a relative error δ of ``u = 1 − p_t``
into ``γ·δ``, so with γ = 5 a ``u`` good to 1 ULP already costs 5 ULP — beyond the 2-ULP
(value) and 4-ULP (gradient) float64 budgets. Every quantity is therefore computed in a wider
arithmetic and rounded once:

- :mod:`.plain_arithmetic` — ordinary arrays of a wider dtype: float64 for float32 data, float32
  for float16/bfloat16 data (a few ULP of the wide type are far below one ULP of the narrow one);
- :mod:`.dd_arithmetic` — for float64 data, the double-double arithmetic of :mod:`.doubledouble`
  (unevaluated sums ``hi + lo`` of two doubles, elementary functions to about 2^-100 relative),
  ample for a final rounding to 53 bits. Every operation is an ordinary array operation: no fused
  multiply-add is assumed, so it runs unchanged on CPU and CUDA.

A kernel takes the arithmetic ``A`` (one of those two modules, the same function names) and the
array namespace ``xp = doubledouble.xp(x)`` (NumPy or torch).

The kernels take class-last rows (softmax) or matching arrays (sigmoid) already validated by the
caller, and return per-element values and derivative factors in the chosen arithmetic.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

from . import dd_arithmetic, plain_arithmetic
from . import doubledouble as dd

Array = Any  # numpy.ndarray or torch.Tensor

_INV3 = dd.constant(Fraction(1, 3))


def arithmetic(data_dtype: str):
    """The arithmetic (a module) for data of ``data_dtype`` and the compute dtype name it works in."""
    if data_dtype == "float64":
        return dd_arithmetic, "float64"
    return plain_arithmetic, ("float64" if data_dtype == "float32" else "float32")


# ----------------------------------------------------------------------------------------------
# Sigmoid focal loss, element-wise


def sigmoid_focal_terms(A, x, y, alpha: float | None, gamma: float, grads: bool):
    """Value and derivatives of ``α_t (1 − p_t)^γ BCE(x, y)`` element-wise.

    With ``e = e^{−|x|}``, ``λ = log1p(e)`` and the weights of the likely and unlikely outcome
    ``(w, v) = (1 − y, y)`` for ``x ≥ 0``, ``(y, 1 − y)`` for ``x < 0``:
    ``BCE = w·|x| + λ`` and ``1 − p_t = q = (w + v·e)/(1 + e)`` — sums of non-negative terms.
    ``∂/∂x = α_t q^γ [γ(1 − 2y)·eB/c + s·(w − v·e)]/(1 + e)`` (``c = w + v·e``, ``s = sign x``),
    ``∂/∂y = q^γ [(2α − 1)·B + α_t(−γ·s·(1 − e)·B/c − x)]``; where ``w = 0`` (a correctly
    classified hard target) ``c = e`` cancels analytically: ``eB/c = λ`` and
    ``B/c = λ/e = 1 − e/2 + e²/3 − …`` — so saturated logits give the finite limit, never 0·∞.
    Returns ``(value, d_x, d_y)`` (derivatives None unless ``grads``).
    """
    xp = dd.xp(x)
    X = A.lift(x)
    ax = xp.abs(x)
    AX = A.lift(ax)
    pos = x >= 0
    e = A.exp(A.lift(-ax))
    lam = A.log1p(e)
    Y = A.lift(y)
    one = A.const(1.0, x)
    omy = A.sub(one, Y)
    w = A.where(pos, omy, Y)
    v = A.where(pos, Y, omy)
    hard = A.hi(w) == 0
    B = A.add(A.mul(w, AX), lam)
    c = A.add(w, A.mul(v, e))
    # q^γ = exp(γ·log q); where it is below 2^-866 it is carried as q^γ·2^600 and scaled back after
    # the last product, so a subnormal q^γ is never multiplied by the large factors of ∂ℓ/∂y.
    shift = xp.full_like(x, 0.0)
    if gamma == 0:
        qg_s = one
    else:
        c_safe = A.where(hard, one, c)
        log_c = A.where(hard, A.neg(AX), A.log(c_safe))
        arg = A.mul(A.const(gamma, x), A.sub(log_c, lam))
        shift = xp.where(A.hi(arg) < -600.0, shift + 600.0, shift)
        qg_s = A.exp(A.add(arg, A.mul(A.const(dd.LN2, x), A.lift(shift))))
    qg = A.ldexp(qg_s, -shift)
    if alpha is None:
        at = one
    else:
        al = A.const(alpha, x)
        at = A.add(A.mul(al, Y), A.mul(A.sub(one, al), omy))
    value = A.mul(A.mul(at, qg), B)
    if not grads:
        return value, None, None
    one_e = A.add(one, e)
    c_safe = A.where(hard, one, c)
    s = A.where(pos, one, A.neg(one))
    # ∂/∂x
    eBc = A.where(hard, lam, A.div(A.mul(e, B), c_safe))
    omy2 = A.sub(omy, Y)  # 1 − 2y, exact in double-double
    core = A.mul(s, A.sub(w, A.mul(v, e)))
    if gamma != 0:
        core = A.add(core, A.mul(A.const(gamma, x), A.mul(omy2, eBc)))
    d_x = A.div(A.mul(A.mul(at, qg), core), one_e)
    # ∂/∂y = q^γ·T, T = dα·B + α_t(−γ·s·(1 − e)·B/c − x), dα = 2α − 1 (0 when α is disabled).
    # Where w ≥ e > 0, (1 − e)/c = 1/w − e/(w·c) regroups T as |x|·K0 + λ·K1 + α_t s γ (e/c)(|x| + λ/w)
    # with K0 = dα·w − α_t s (γ + 1), K1 = dα − α_t s γ/w formed from the parameters first: for
    # dyadic α, y, γ the |x| terms can cancel exactly (α = 1/4, γ = 1, y = 1: K0 = 0), leaving O(e).
    tiny_e = A.hi(e) < 2.0**-30
    e_safe = A.where(tiny_e, one, e)
    rho_series = A.add(A.sub(one, A.scale(e, 0.5)), A.mul(A.mul(e, e), A.const(_INV3, x)))
    rho = A.where(tiny_e, rho_series, A.div(lam, e_safe))  # λ/e
    Bc = A.where(hard, rho, A.div(B, c_safe))
    da = A.const(0.0, x) if alpha is None else A.sub(A.scale(al, 2.0), one)
    gs = A.mul(A.const(gamma, x), s)
    t_direct = A.mul(at, A.neg(X))
    if gamma != 0:
        ome = A.neg(A.expm1(A.lift(-ax)))  # 1 − e without cancellation
        t_direct = A.sub(t_direct, A.mul(A.mul(at, gs), A.mul(ome, Bc)))
    t_direct = A.add(t_direct, A.mul(da, B))
    w_safe = A.where(hard, one, w)
    K0 = A.sub(A.mul(da, w), A.mul(at, A.add(s, gs)))
    K1 = A.sub(da, A.div(A.mul(at, gs), w_safe))
    t_split = A.add(A.mul(AX, K0), A.mul(lam, K1))
    if gamma != 0:
        t_split = A.add(t_split, A.mul(A.mul(at, gs), A.mul(A.div(e, c_safe), A.add(AX, A.div(lam, w_safe)))))
    split = ~hard & (A.hi(w) >= A.hi(e))
    d_y = A.where(split, t_split, t_direct)
    d_y = A.ldexp(A.mul(qg_s, d_y), -shift)
    return value, d_x, d_y


# ----------------------------------------------------------------------------------------------
# Softmax focal loss, per class-last row


def softmax_focal_terms(A, x, target, alpha_y, gamma: float, grads: bool):
    """Value ``α_y (1 − p_y)^γ (−log p_y)`` of each class-last row of ``x`` and, if ``grads``,
    the derivative of each row's loss w.r.t. its logits.

    ``target`` holds valid class indices (the caller masks ignored rows); ``alpha_y`` the
    per-row weights (None for 1). With ``k = argmax x``, ``m = x_k``, exact differences
    ``d_j = x_j − m`` and ``e_j = e^{d_j}`` with ``e_k`` left out (``x_k`` is set to −∞ first),
    ``r = Σ_{j≠k} e_j``: ``−log p_y = log1p(r) − d_y`` (two terms ≥ 0) and ``u = 1 − p_y = S/(1 + r)``
    with ``S = Σ_{j≠y} e_j`` — ``r`` when ``y = k``, else ``1 + (r − e_y)`` (the subtraction's error
    is ``eps·r``, small against ``S ≥ 1``): no ``1 − p`` is ever formed.
    Gradient: ``∂ℓ/∂x_j = α_y u^γ W·e_j/S`` for ``j ≠ y`` and ``−α_y u^γ W`` for ``j = y``,
    ``W = γ p_y (−log p_y) + u``: finite as ``u → 0`` for every γ ≥ 0 (no ``u^{γ−1}``).
    Full-size work: one exponential per logit, one sum, and for the gradient one division and
    one product per logit; everything else is per row. Returns ``(value, grad)``.
    """
    xp = dd.xp(x)
    wide = A is dd_arithmetic
    ti = target[..., None]
    if xp is np:
        k = np.argmax(x, -1)[..., None]
        m = np.take_along_axis(x, k, -1)
        xm = x.copy()
        np.put_along_axis(xm, k, -np.inf, -1)
        x_y = np.take_along_axis(x, ti, -1)[..., 0]
    else:
        m, k = x.max(-1, keepdim=True)
        xm = x.scatter(-1, k, float("-inf"))
        x_y = x.gather(-1, ti)[..., 0]
    y_is_k = target == k[..., 0]
    bad = ~xp.isfinite(m[..., 0])  # NaN or +inf in the row, or every logit −inf: NaN
    m_fin = xp.where(xp.isfinite(m), m, 0.0)
    e = A.exp(dd.two_sum(xm, -m_fin) if wide else xm - m_fin)  # e_k = exp(−∞) = 0
    r = A.sum_last(e)
    mr = m_fin[..., 0]
    d_y = dd.two_sum(x_y, -mr) if wide else x_y - mr
    rows = softmax_focal_rows(A, r, d_y, y_is_k, bad, alpha_y, gamma, grads)
    if not grads:
        return rows.value, None
    one, F, S_safe = A.const(1.0, A.hi(r)), rows.F, rows.S_safe
    q = A.div(e, A.col(S_safe))  # e_j/S; column k still holds 0 here
    q = _scatter(A, q, k, A.div(one, S_safe))
    g = A.mul(q, A.col(F))
    return rows.value, _scatter(A, g, ti, A.neg(F))


class SoftmaxFocalRows(NamedTuple):
    """Per-row quantities of :func:`softmax_focal_rows` (``F``, ``S_safe``, ``s``, ``W`` None
    without gradients)."""

    value: Any  # α_y u^γ (−log p_y), NaN on bad rows
    nlp: Any  # −log p_y = log1p(r) − d_y
    e_y: Any  # e^{d_y}
    S: Any  # Σ_{j≠y} e_j
    F: Any  # α_y u^γ W (NaN on bad rows)
    S_safe: Any  # S, 1 where S = 0
    s: Any  # 1 + r
    W: Any  # γ p_y (−log p_y) + u


def softmax_focal_rows(A, r, d_y, y_is_k, bad, alpha_y, gamma: float, grads: bool) -> SoftmaxFocalRows:
    """The per-row part of :func:`softmax_focal_terms` from ``r = Σ_{j≠k} e_j`` and ``d_y = x_y − m``
    (``y_is_k``: the target is the maximum, ``d_y = 0``; ``bad``: rows whose results are NaN)."""
    e_y = A.exp(d_y)
    row = A.hi(r)
    one, zero = A.const(1.0, row), A.const(0.0, row)
    lp1r = A.log1p(r)
    nlp = A.sub(lp1r, d_y)
    r2 = A.where(y_is_k, r, A.sub(r, e_y))
    S = A.where(y_is_k, r, A.add(one, r2))
    S_zero = A.hi(S) == 0
    if gamma == 0:
        ug = one
    else:
        log_S = A.where(y_is_k, A.log(A.where(S_zero, one, r)), A.log1p(A.where(y_is_k, zero, r2)))
        ug = A.exp(A.mul(A.const(gamma, row), A.sub(log_S, lp1r)))
        ug = A.where(S_zero, zero, ug)
    if alpha_y is not None:
        ug = A.mul(ug, A.lift(alpha_y))
    nan = A.const(float("nan"), row)
    value = A.where(bad, nan, A.mul(ug, nlp))
    if not grads:
        return SoftmaxFocalRows(value, nlp, e_y, S, None, None, None, None)
    s = A.add(one, r)
    W = A.add(A.mul(A.const(gamma, row), A.mul(A.div(A.where(y_is_k, one, e_y), s), nlp)), A.div(S, s))
    F = A.where(bad, nan, A.mul(ug, W))
    return SoftmaxFocalRows(value, nlp, e_y, S, F, A.where(S_zero, one, S), s, W)


def _scatter(A, a, idx, v):
    """``a`` with column ``idx`` of each row replaced by the per-row number ``v``."""
    def one(arr, val):
        if isinstance(arr, np.ndarray):
            out = arr.copy()
            np.put_along_axis(out, idx, val[..., None], -1)
            return out
        return arr.scatter(-1, idx, val[..., None])
    return A.apply2(one, a, v)
