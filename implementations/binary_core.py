"""Binary cross-entropy kernels, written once for NumPy arrays and torch tensors.

Elementwise, in the caller's compute dtype, on operands broadcast to the input's shape; the
caller validates (:func:`check`) and reduces. Plain float64 chains of ``exp``/``log1p``, products
and sums reach 2–3 ULP in the worst case, over the float64 budget of 2, so float64 results are
computed with guard bits: in :data:`LONG_DOUBLE` (x87 extended, 64-bit mantissa, where NumPy has
it — the plain kernels below, rounded once) or, with ``dd=True``, in the double-double kernels
of the double-double kernels below wherever the operands are finite (the plain kernels serve the edges, where
their results are exact). Formulas (``lossoracle.reference.binary``):

- ``log(1 − p)``: ``log1p(−p)`` below 1/2, ``log(1 − p)`` from 1/2 on (``1 − p`` exact there);
- ``∂ℓ/∂p = (p − y)/(p(1 − p))`` — ``p − y`` is one rounding of exact inputs, so nothing cancels;
  at ``p ∈ {0, 1}`` the one-sided ``(1 − y)/(1 − p) − y/p`` with ``0/0`` terms dropped;
- ``∂ℓ/∂y = log((1 − p)/p)``: ``log1p((1 − 2p)/p)`` for ``p ∈ [1/4, 3/4]`` (``1 − 2p`` exact), else
  ``log(1 − p) − log p`` (one term dominates, no cancellation);
- ``softplus(±x) = log1p(e^{−|x|}) + max(±x, 0)``, ``σ(±x)`` from the same ``e^{−|x|}`` (no log of
  a rounded sigmoid, ``σ(x) − 1 = −σ(−x)``);
- a zero coefficient times an infinite term is 0 (``0·log 0 = 0``, masked elements), while
  ``0·NaN`` stays NaN, so NaN input always propagates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import doubledouble as dd
from .doubledouble import xp as _xp
from .validation import require_floating, require_range, require_reduction, require_same_shape

Array = Any  # numpy.ndarray or torch.Tensor

# NumPy's long double when it carries 11+ guard bits over float64 (x87 extended), else None
LONG_DOUBLE = np.longdouble if np.finfo(np.longdouble).nmant >= 63 else None


def require_broadcast(name: str, a: Array | None, shape: tuple[int, ...]) -> None:
    """``a`` broadcasts to ``shape`` without enlarging it (ValueError naming ``name`` otherwise)."""
    if a is None:
        return
    try:
        ok = np.broadcast_shapes(tuple(a.shape), shape) == shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name} of shape {tuple(a.shape)} does not broadcast to the input shape {shape}")


def check(input: Array, target: Array, weight: Array | None, reduction: str, pos_weight: Array | None = None,
          probabilities: bool = False, ranges: bool = True) -> None:
    """Validate a call: floating input and target of one shape in [0, 1] (targets; inputs too for
    probabilities), weights broadcasting to the input, a known reduction. NaN passes. ``ranges=False``
    leaves the ranges to the caller (:func:`require_ranges`)."""
    require_reduction(reduction)
    require_floating("input", input)
    require_floating("target", target)
    require_same_shape("target", target, "input", input)
    shape = tuple(input.shape)
    require_broadcast("weight", weight, shape)
    require_broadcast("pos_weight", pos_weight, shape)
    if ranges:
        require_ranges(input, target, probabilities)


def require_ranges(input: Array, target: Array, probabilities: bool,
                   extrema: tuple[float, float, float, float] | None = None) -> None:
    """Targets (and, for probabilities, inputs) in [0, 1], NaN passing; ``extrema``: their minima
    and maxima ``(target min, target max[, input min, input max])`` if already known (a scan is
    needed only when one is outside, or NaN)."""
    lo, hi = 0.0, 1.0
    named = [("input", input, 2)] if probabilities else []
    for name, a, i in named + [("target", target, 0)]:
        if extrema is None and _xp(a) is not np and a.numel():
            low, high = _xp(a).aminmax(a)  # one pass; NaN makes both NaN
            if bool(low >= lo) and bool(high <= hi):
                continue
        elif extrema is not None and extrema[i] >= lo and extrema[i + 1] <= hi:
            continue
        require_range(name, a, lo, hi)


def mul0(c: Array, v: Array) -> Array:
    """``c·v`` with ``0·(±inf) = 0`` (``0·NaN`` stays NaN)."""
    xp = _xp(v)
    return xp.where((c == 0) & xp.isinf(v), 0.0, c * v)


def _nan_like(y: Array, v: Array) -> Array:
    """``v``, or NaN where ``y`` is NaN (a derivative that does not involve ``y`` still propagates it)."""
    return _xp(v).where(y != y, y, v)


def _div0(c: Array, d: Array) -> Array:
    """``c/d`` with ``0/d = 0`` (also ``0/0``)."""
    return _xp(d).where(c == 0, 0.0, c / d)


def _weighted(w: Array | None, v: Array) -> Array:
    """``w·v`` (a zero weight masks an infinite term)."""
    return v if w is None else mul0(w, v)


def _double(dd: bool, *operands: Array) -> tuple[Array, list[Array]] | None:
    """With ``dd``: the lanes where every operand is finite, and the operands made finite elsewhere
    (so the double-double kernels never see inf/NaN); None without."""
    if not dd:
        return None
    xp = _xp(operands[0])
    ok = xp.isfinite(operands[0])
    for a in operands[1:]:
        ok = ok & xp.isfinite(a)
    return ok, [xp.where(ok, a, 0.5) for a in operands]


def log1m(p: Array) -> Array:
    """``log(1 − p)``."""
    xp = _xp(p)
    return xp.where(p < 0.5, xp.log1p(-p), xp.log(1 - p))


_DD_TINY = 2.0**-960  # below, double-double products and quotients of p would underflow


def _bce_double(dd: bool, p: Array, y: Array, low: float = 0.0):
    """Double-double lanes for probabilities in (low, 1) (``low = 0``: every interior one)."""
    lanes = _double(dd, p, y)
    if lanes is None:
        return None
    ok, (ps, ys) = lanes
    inside = ok & (p > low) & (p < 1)
    return inside, _xp(p).where(inside, ps, 0.5), ys


def bce(p: Array, y: Array, w: Array | None = None, *, dd: bool = False) -> Array:
    """``−w·[y log p + (1 − y) log(1 − p)]`` per element."""
    xp = _xp(p)
    plain = _weighted(w, -(mul0(y, xp.log(p)) + mul0(1 - y, log1m(p))))
    lanes = _bce_double(dd, p, y)
    if lanes is None:
        return plain
    inside, ps, ys = lanes
    return xp.where(inside, _dd_bce(ps, ys, w), plain)


def bce_grads(g: Array, w: Array | None, p: Array, y: Array, *, dd: bool = False,
              want_y: bool = True) -> tuple[Array, Array | None]:
    """``g·w·∂ℓ/∂p`` and ``g·w·∂ℓ/∂y`` (``g``: each element's cotangent; None without ``want_y``)."""
    xp = _xp(p)
    interior = (p > 0) & (p < 1)
    # the ratio before the cotangent: a·(p − y) could underflow for subnormal p and y
    dp = xp.where(interior, (p - y) / (p * (1 - p)), _div0(1 - y, 1 - p) - _div0(y, p))
    # the weight last: g·(∂ℓ) is in the normal range, so a tiny weight rounds once, not twice
    gp, gy = _weighted(w, mul0(g, dp)), None
    if want_y:
        neg_logit = xp.where(abs(p - 0.5) <= 0.25, xp.log1p((1 - 2 * p) / p), log1m(p) - xp.log(p))
        gy = _weighted(w, mul0(g, _nan_like(y, neg_logit)))
    lanes = _bce_double(dd, p, y, _DD_TINY)
    if lanes is None:
        return gp, gy
    inside, ps, ys = lanes
    dgp, dgy = _dd_bce_grads(g, w, ps, ys)
    return xp.where(inside, dgp, gp), (xp.where(inside, dgy, gy) if want_y else None)


def _exp_neg_abs(x: Array) -> Array:
    return _xp(x).exp(-abs(x))


def softplus_pair(x: Array) -> tuple[Array, Array]:
    """``(softplus(x), softplus(−x))``."""
    xp = _xp(x)
    l = xp.log1p(_exp_neg_abs(x))
    return l + xp.where(x > 0, x, 0.0), l + xp.where(x < 0, -x, 0.0)


def sigmoid_pair(x: Array) -> tuple[Array, Array]:
    """``(σ(x), σ(−x))``: ``1/(1 + e)`` and ``e/(1 + e)`` with ``e = e^{−|x|}``."""
    xp = _xp(x)
    e = _exp_neg_abs(x)
    big, small = 1 / (1 + e), e / (1 + e)
    pos = x >= 0
    return xp.where(pos, big, small), xp.where(pos, small, big)


def bce_logits(x: Array, y: Array, w: Array | None = None, pw: Array | None = None, *, dd: bool = False) -> Array:
    """``w·[pw·y·softplus(−x) + (1 − y)·softplus(x)]`` per element."""
    xp = _xp(x)
    sp, sn = softplus_pair(x)
    pos = mul0(y, sn) if pw is None else mul0(pw, mul0(y, sn))  # pw last: pw·y may be subnormal
    plain = _weighted(w, pos + mul0(1 - y, sp))
    lanes = _double(dd, x, y)
    if lanes is None:
        return plain
    ok, (xs, ys) = lanes
    return xp.where(ok, _dd_bce_logits(xs, ys, w, pw), plain)


def bce_logits_grads(g: Array, w: Array | None, x: Array, y: Array, pw: Array | None, *,
                     dd: bool = False, want_y: bool = True) -> tuple[Array, Array | None]:
    """``g·w·[(1 − y)σ(x) − pw·y·σ(−x)]`` and ``g·w·[pw·softplus(−x) − softplus(x)]`` (``−g·w·x``
    where ``pw = 1``)."""
    xp = _xp(x)
    c, d = 1 - y, (y if pw is None else pw * y)
    s, sm = sigmoid_pair(x)
    # |x| < 1/4: c·σ(x) − d·σ(−x) = ((c − d) − d·m)/(2 + m) (x ≥ 0) or ((c − d) + c·m)/(2 + m) with
    # m = expm1(−|x|): the sigmoids no longer cancel against each other near x = 0 (y = 1/2: −m/(2(2 + m)))
    m = xp.expm1(-abs(x))
    cd = (1 - 2 * y) if pw is None else c - d
    near0 = xp.where(x >= 0, cd - d * m, cd + c * m) / (2 + m)
    # the weight last: g·(∂ℓ) is in the normal range, so a tiny weight rounds once, not twice
    pos = mul0(y, sm) if pw is None else mul0(pw, mul0(y, sm))  # pw last: pw·y may be subnormal
    gx = _weighted(w, mul0(g, xp.where(abs(x) < 0.25, near0, mul0(c, s) - pos)))
    if not want_y:
        lanes = _double(dd, x, y)
        if lanes is None:
            return gx, None
        ok, (xs, ys) = lanes
        return xp.where(ok, _dd_bce_logits_grads(g, w, xs, ys, pw)[0], gx), None
    if pw is None:
        dy = -x
    else:  # softplus(|x|) = |x| + softplus(−|x|) split off: exactly −x at pw = 1, |x| never cancels itself
        sp, sn = softplus_pair(x)
        dy = xp.where(x >= 0, mul0(pw - 1, sn) - x, mul0(pw, -x) + mul0(pw - 1, sp))
    gy = _weighted(w, mul0(g, _nan_like(y, dy)))
    lanes = _double(dd, x, y)
    if lanes is None:
        return gx, gy
    ok, (xs, ys) = lanes
    dgx, dgy = _dd_bce_logits_grads(g, w, xs, ys, pw)
    return xp.where(ok, dgx, gx), xp.where(ok, dgy, gy)


def reduce(v: Array, reduction: str) -> Array:
    """``none``, ``sum``, or ``mean`` = sum / numel (NaN when empty)."""
    if reduction == "none":
        return v
    total = v.sum()
    if reduction == "sum":
        return total
    return total / (np.size(v) if _xp(v) is np else v.numel())


# ----------------------------------------------------------------------------------------------
# float64 in double-double arithmetic (:mod:`.doubledouble`)
#
# float64 binary cross-entropy kernels in double-double arithmetic (:mod:`.doubledouble`).
#
# Plain float64 chains of ``exp``, ``log1p``, products and sums reach 2–3 ULP in the worst case,
# over the 2-ULP value budget. Here every quantity is carried to about 2^-100 relative and rounded
# once, so values and gradients are within about 1 ULP — also where soft targets make the
# gradient terms cancel, unless they cancel by more than about 2^45. Inputs must be finite,
# probabilities strictly inside (0, 1); callers (:mod:`.binary_core`) take the plain kernels
# elsewhere (their results there are exact: 0, ±inf, NaN).
#
# - ``log(1 − p) = log1p(−p)``, ``1 − y`` and ``p − y`` exact (two-sum);
# - ``softplus(±x) = max(±x, 0) + log1p(e)``, ``e = e^{−|x|}``; ``σ(x) = 1/(1 + e)``,
#   ``σ(−x) = e/(1 + e)`` for ``x ≥ 0`` (swapped below 0).
DD = tuple[Array, Array]

_DD_FAR = 600.0  # |x| beyond: e^{−|x|} < 2^-865 is carried unscaled, E·2^k, and scaled once at the end


def _dd_one_minus(a: Array) -> DD:
    """``1 − a`` exactly."""
    return dd.two_sum(1.0, -a)


def _dd_bce(p: Array, y: Array, w: Array | None) -> Array:
    """``−w·[y log p + (1 − y) log(1 − p)]`` for ``0 < p < 1``."""
    loss = dd.neg(dd.add(dd.mul_d(dd.log(p), y), dd.mul(dd.log1p(-p), _dd_one_minus(y))))
    return dd.collapse(loss if w is None else dd.mul_d(loss, w))


def _dd_cotangent(g: Array, w: Array | None) -> DD:
    return dd.lift(g) if w is None else dd.two_prod(g, w)


def _dd_bce_grads(g: Array, w: Array | None, p: Array, y: Array) -> tuple[Array, Array]:
    """``g·w·(p − y)/(p(1 − p))`` and ``g·w·(log(1 − p) − log p)`` for ``0 < p < 1``."""
    a = _dd_cotangent(g, w)
    ratio = dd.div(dd.two_sum(p, -y), dd.mul_d(_dd_one_minus(p), p))
    return dd.collapse(dd.mul(a, ratio)), dd.collapse(dd.mul(a, dd.sub(dd.log1p(-p), dd.log(p))))


class _DDExp:
    """``e = e^{−|x|}`` scaled (a double-double) and unscaled, ``e = E·2^k``."""

    def __init__(self, x: Array) -> None:
        self.E, self.k = dd.exp(-abs(x))
        self.e = dd.ldexp(self.E, self.k)
        self.far = abs(x) > _DD_FAR


def _dd_finish(ex: _DDExp, near: DD, normal: DD, tiny: DD) -> Array:
    """The rounded result: ``near`` for moderate ``|x|``; for far ``x``, ``normal + tiny·2^k`` — when
    the normal part is exactly 0, the tiny part is scaled once, after its last product, so a
    subnormal result is rounded once."""
    ns = dd.xp(ex.k)
    scaled = dd.collapse(dd.add(normal, dd.ldexp(tiny, ex.k)))
    far = ns.where(normal[0] != 0, scaled, dd.ldexp(dd.collapse(tiny), ex.k))
    return ns.where(ex.far, far, dd.collapse(near))


def _dd_softplus_pair(x: Array, e: DD) -> tuple[DD, DD]:
    ns = dd.xp(x)
    lam = dd.log1p(e)
    return dd.add_d(lam, ns.where(x > 0, x, 0.0)), dd.add_d(lam, ns.where(x < 0, -x, 0.0))


def _dd_positive_weight(y: Array, pw: Array | None) -> DD:
    return dd.lift(y) if pw is None else dd.two_prod(pw, y)


def _dd_weighted(v: DD, w: Array | None) -> DD:
    return v if w is None else dd.mul_d(v, w)


def _dd_bce_logits(x: Array, y: Array, w: Array | None, pw: Array | None) -> Array:
    """``w·[pw·y·softplus(−x) + (1 − y)·softplus(x)]`` for finite ``x``. Far out, with
    ``softplus(±x) = max(±x, 0) + e``: ``A·max(−x, 0) + B·max(x, 0)`` plus ``(A + B)·E·2^k``."""
    ns = dd.xp(x)
    ex = _DDExp(x)
    A, B = _dd_positive_weight(y, pw), _dd_one_minus(y)
    sp, sn = _dd_softplus_pair(x, ex.e)
    near = dd.add(dd.mul(A, sn), dd.mul(B, sp))
    normal = dd.add(dd.mul_d(A, ns.where(x < 0, -x, 0.0)), dd.mul_d(B, ns.where(x > 0, x, 0.0)))
    tiny = dd.mul(dd.add(A, B), ex.E)
    return _dd_finish(ex, _dd_weighted(near, w), _dd_weighted(normal, w), _dd_weighted(tiny, w))


def _dd_bce_logits_grads(g: Array, w: Array | None, x: Array, y: Array, pw: Array | None) -> tuple[Array, Array]:
    """``g·w·[(1 − y)σ(x) − pw·y·σ(−x)]`` and ``g·w·[pw·softplus(−x) − softplus(x)]`` for finite
    ``x``. Far out, ``σ(±x) = 1 − e`` or ``e`` (``e² < 2^-1700``): ``c − (c + d)e`` (x > 0) or
    ``−d + (c + d)e``."""
    ns = dd.xp(x)
    a = _dd_cotangent(g, w)
    ex = _DDExp(x)
    c, d = _dd_one_minus(y), _dd_positive_weight(y, pw)
    one_plus = dd.add_d(ex.e, 1.0)
    big, small = dd.div(dd.lift(ns.ones_like(x)), one_plus), dd.div(ex.e, one_plus)
    pos = x >= 0
    s, sm = dd.where(pos, big, small), dd.where(pos, small, big)
    near = dd.sub(dd.mul(c, s), dd.mul(d, sm))
    tiny = dd.mul(dd.add(c, d), ex.E)
    dx = _dd_finish(ex, dd.mul(a, near), dd.mul(a, dd.where(pos, c, dd.neg(d))),
                 dd.mul(a, dd.where(pos, dd.neg(tiny), tiny)))
    if pw is None:
        return dx, dd.collapse(dd.mul(a, dd.lift(-x)))
    sp, sn = _dd_softplus_pair(x, ex.e)
    near = dd.sub(dd.mul_d(sn, pw), sp)
    normal = dd.where(pos, dd.lift(-x), dd.two_prod(pw, abs(x)))
    tiny = dd.mul(dd.add_d(dd.lift(pw + ns.zeros_like(x)), -1.0), ex.E)
    return dx, _dd_finish(ex, dd.mul(a, near), dd.mul(a, normal), dd.mul(a, tiny))
