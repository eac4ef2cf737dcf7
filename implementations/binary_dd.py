"""float64 binary cross-entropy kernels in double-double arithmetic (:mod:`.doubledouble`).

Plain float64 chains of ``exp``, ``log1p``, products and sums reach 2–3 ULP in the worst case,
over the 2-ULP value budget. Here every quantity is carried to about 2^-100 relative and rounded
once, so values and gradients are within about 1 ULP — also where soft targets make the
gradient terms cancel, unless they cancel by more than about 2^45. Inputs must be finite,
probabilities strictly inside (0, 1); callers (:mod:`.binary_core`) take the plain kernels
elsewhere (their results there are exact: 0, ±inf, NaN).

- ``log(1 − p) = log1p(−p)``, ``1 − y`` and ``p − y`` exact (two-sum);
- ``softplus(±x) = max(±x, 0) + log1p(e)``, ``e = e^{−|x|}``; ``σ(x) = 1/(1 + e)``,
  ``σ(−x) = e/(1 + e)`` for ``x ≥ 0`` (swapped below 0).
"""

from __future__ import annotations

from typing import Any

from . import doubledouble as dd

Array = Any
DD = tuple[Array, Array]

_FAR = 600.0  # |x| beyond: e^{−|x|} < 2^-865 is carried unscaled, E·2^k, and scaled once at the end


def one_minus(a: Array) -> DD:
    """``1 − a`` exactly."""
    return dd.two_sum(1.0, -a)


def bce(p: Array, y: Array, w: Array | None) -> Array:
    """``−w·[y log p + (1 − y) log(1 − p)]`` for ``0 < p < 1``."""
    loss = dd.neg(dd.add(dd.mul_d(dd.log(p), y), dd.mul(dd.log1p(-p), one_minus(y))))
    return dd.collapse(loss if w is None else dd.mul_d(loss, w))


def _cotangent(g: Array, w: Array | None) -> DD:
    return dd.lift(g) if w is None else dd.two_prod(g, w)


def bce_grads(g: Array, w: Array | None, p: Array, y: Array) -> tuple[Array, Array]:
    """``g·w·(p − y)/(p(1 − p))`` and ``g·w·(log(1 − p) − log p)`` for ``0 < p < 1``."""
    a = _cotangent(g, w)
    ratio = dd.div(dd.two_sum(p, -y), dd.mul_d(one_minus(p), p))
    return dd.collapse(dd.mul(a, ratio)), dd.collapse(dd.mul(a, dd.sub(dd.log1p(-p), dd.log(p))))


class _Exp:
    """``e = e^{−|x|}`` scaled (a double-double) and unscaled, ``e = E·2^k``."""

    def __init__(self, x: Array) -> None:
        self.E, self.k = dd.exp(-abs(x))
        self.e = dd.ldexp(self.E, self.k)
        self.far = abs(x) > _FAR


def _finish(ex: _Exp, near: DD, normal: DD, tiny: DD) -> Array:
    """The rounded result: ``near`` for moderate ``|x|``; for far ``x``, ``normal + tiny·2^k`` — when
    the normal part is exactly 0, the tiny part is scaled once, after its last product, so a
    subnormal result is rounded once."""
    ns = dd.xp(ex.k)
    scaled = dd.collapse(dd.add(normal, dd.ldexp(tiny, ex.k)))
    far = ns.where(normal[0] != 0, scaled, dd.ldexp(dd.collapse(tiny), ex.k))
    return ns.where(ex.far, far, dd.collapse(near))


def _softplus_pair(x: Array, e: DD) -> tuple[DD, DD]:
    ns = dd.xp(x)
    lam = dd.log1p(e)
    return dd.add_d(lam, ns.where(x > 0, x, 0.0)), dd.add_d(lam, ns.where(x < 0, -x, 0.0))


def _positive_weight(y: Array, pw: Array | None) -> DD:
    return dd.lift(y) if pw is None else dd.two_prod(pw, y)


def _weighted(v: DD, w: Array | None) -> DD:
    return v if w is None else dd.mul_d(v, w)


def bce_logits(x: Array, y: Array, w: Array | None, pw: Array | None) -> Array:
    """``w·[pw·y·softplus(−x) + (1 − y)·softplus(x)]`` for finite ``x``. Far out, with
    ``softplus(±x) = max(±x, 0) + e``: ``A·max(−x, 0) + B·max(x, 0)`` plus ``(A + B)·E·2^k``."""
    ns = dd.xp(x)
    ex = _Exp(x)
    A, B = _positive_weight(y, pw), one_minus(y)
    sp, sn = _softplus_pair(x, ex.e)
    near = dd.add(dd.mul(A, sn), dd.mul(B, sp))
    normal = dd.add(dd.mul_d(A, ns.where(x < 0, -x, 0.0)), dd.mul_d(B, ns.where(x > 0, x, 0.0)))
    tiny = dd.mul(dd.add(A, B), ex.E)
    return _finish(ex, _weighted(near, w), _weighted(normal, w), _weighted(tiny, w))


def bce_logits_grads(g: Array, w: Array | None, x: Array, y: Array, pw: Array | None) -> tuple[Array, Array]:
    """``g·w·[(1 − y)σ(x) − pw·y·σ(−x)]`` and ``g·w·[pw·softplus(−x) − softplus(x)]`` for finite
    ``x``. Far out, ``σ(±x) = 1 − e`` or ``e`` (``e² < 2^-1700``): ``c − (c + d)e`` (x > 0) or
    ``−d + (c + d)e``."""
    ns = dd.xp(x)
    a = _cotangent(g, w)
    ex = _Exp(x)
    c, d = one_minus(y), _positive_weight(y, pw)
    one_plus = dd.add_d(ex.e, 1.0)
    big, small = dd.div(dd.lift(ns.ones_like(x)), one_plus), dd.div(ex.e, one_plus)
    pos = x >= 0
    s, sm = dd.where(pos, big, small), dd.where(pos, small, big)
    near = dd.sub(dd.mul(c, s), dd.mul(d, sm))
    tiny = dd.mul(dd.add(c, d), ex.E)
    dx = _finish(ex, dd.mul(a, near), dd.mul(a, dd.where(pos, c, dd.neg(d))),
                 dd.mul(a, dd.where(pos, dd.neg(tiny), tiny)))
    if pw is None:
        return dx, dd.collapse(dd.mul(a, dd.lift(-x)))
    sp, sn = _softplus_pair(x, ex.e)
    near = dd.sub(dd.mul_d(sn, pw), sp)
    normal = dd.where(pos, dd.lift(-x), dd.two_prod(pw, abs(x)))
    tiny = dd.mul(dd.add_d(dd.lift(pw + ns.zeros_like(x)), -1.0), ex.E)
    return dx, _finish(ex, dd.mul(a, near), dd.mul(a, normal), dd.mul(a, tiny))
