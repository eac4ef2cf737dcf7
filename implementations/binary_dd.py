"""float64 binary cross-entropy kernels in double-double arithmetic (:mod:`.doubledouble`).

Plain float64 chains of ``exp``, ``log1p``, products and sums reach 2–3 ULP in the worst case,
over the 2-ULP value budget. Here every quantity is carried to about 2^-100 relative and rounded
once, so values and gradients are within about 1 ULP — also where soft targets make the
gradient terms cancel, unless they cancel by more than about 2^45. Inputs must be finite,
probabilities strictly inside (0, 1); callers (:mod:`.binary_core`) take the plain kernels
elsewhere (their results there are exact: 0, ±inf, NaN).

- ``log(1 − p)``: ``log1p(−p)`` for ``p ≤ 0.29`` (the log1p kernel's domain); otherwise
  ``log(h) + l/h`` with ``1 − p = h + l`` exactly (two-sum);
- ``softplus(±x) = max(±x, 0) + log1p(e)``, ``e = e^{−|x|}``; ``log1p(e) = ln 2 + log1p((e − 1)/2)``
  when ``e > √2 − 1``; ``σ(x) = 1/(1 + e)``, ``σ(−x) = e/(1 + e)`` for ``x ≥ 0`` (swapped below 0).
"""

from __future__ import annotations

from typing import Any

from . import doubledouble as dd

Array = Any
DD = tuple[Array, Array]

_LOG1P_MAX = 0.41421356237309503  # < √2 − 1: upper end of dd.log1p's domain
_LOG1P_MIN = -0.29  # > √½ − 1: lower end of dd.log1p's domain
_TINY = 2.0**-500  # below, log1p(t) = t to far beyond 2^-106 (and dd.log1p would lose subnormal bits)
_FAR = 600.0  # |x| beyond: e^{−|x|} < 2^-865 is carried unscaled, E·2^k, and scaled once at the end


def _zero(a: Array) -> Array:
    return dd.xp(a).zeros_like(a)


def _d(a: Array) -> DD:
    return a, _zero(a)


def _where(c: Array, a: DD, b: DD) -> DD:
    ns = dd.xp(c)
    return ns.where(c, a[0], b[0]), ns.where(c, a[1], b[1])


def _sub(a: DD, b: DD) -> DD:
    return dd.add(a, dd.neg(b))


def one_minus(a: Array) -> DD:
    """``1 − a`` exactly."""
    return dd.two_sum(1.0 + _zero(a), -a)


def _log1m(p: Array) -> DD:
    """``log(1 − p)`` for ``0 < p < 1`` (``−p`` itself below 2^-500, where ``p²/2`` is negligible)."""
    ns = dd.xp(p)
    small = p <= -_LOG1P_MIN
    direct = _where(p < _TINY, _d(-p), dd.log1p(_d(ns.where(small, -p, 0.0))))
    h, l = one_minus(ns.where(small, 0.5, p))
    return _where(small, direct, dd.add_d(dd.log(h), l / h))


def bce(p: Array, y: Array, w: Array | None) -> Array:
    """``−w·[y log p + (1 − y) log(1 − p)]`` for ``0 < p < 1``."""
    loss = dd.neg(dd.add(dd.mul_d(dd.log(p), y), dd.mul(_log1m(p), one_minus(y))))
    return dd.collapse(loss if w is None else dd.mul_d(loss, w))


def _cotangent(g: Array, w: Array | None) -> DD:
    return _d(g) if w is None else dd.two_prod(g, w)


def bce_grads(g: Array, w: Array | None, p: Array, y: Array) -> tuple[Array, Array]:
    """``g·w·(p − y)/(p(1 − p))`` and ``g·w·(log(1 − p) − log p)`` for ``0 < p < 1``."""
    a = _cotangent(g, w)
    ratio = dd.div(dd.two_sum(p, -y), dd.mul_d(one_minus(p), p))
    return dd.collapse(dd.mul(a, ratio)), dd.collapse(dd.mul(a, _sub(_log1m(p), dd.log(p))))


class _Exp:
    """``e = e^{−|x|}`` scaled (a double-double) and unscaled, ``e = E·2^k``."""

    def __init__(self, x: Array) -> None:
        self.E, self.k = dd.exp(-abs(x))
        self.e = dd.ldexp(self.E[0], self.k), dd.ldexp(self.E[1], self.k)
        self.far = abs(x) > _FAR


def _finish(ex: _Exp, near: DD, normal: DD, tiny: DD) -> Array:
    """The rounded result: ``near`` for moderate ``|x|``; for far ``x``, ``normal + tiny·2^k`` — when
    the normal part is exactly 0, the tiny part is scaled once, after its last product, so a
    subnormal result is rounded once."""
    ns = dd.xp(ex.k)
    scaled = dd.collapse(dd.add(normal, (dd.ldexp(tiny[0], ex.k), dd.ldexp(tiny[1], ex.k))))
    far = ns.where(normal[0] != 0, scaled, dd.ldexp(dd.collapse(tiny), ex.k))
    return ns.where(ex.far, far, dd.collapse(near))


def _log1p_small(e: DD) -> DD:
    """``log(1 + e)`` for ``0 ≤ e ≤ 1``."""
    low = e[0] <= _LOG1P_MAX
    zero = _d(_zero(e[0]))
    direct = dd.log1p(_where(low, e, zero))
    m = dd.add_d(e, -1.0)
    shifted = dd.add(dd.log1p(_where(low, zero, (0.5 * m[0], 0.5 * m[1]))), dd.LN2)
    return _where(low, direct, shifted)


def _softplus_pair(x: Array, e: DD) -> tuple[DD, DD]:
    ns = dd.xp(x)
    l = _log1p_small(e)
    return dd.add_d(l, ns.where(x > 0, x, 0.0)), dd.add_d(l, ns.where(x < 0, -x, 0.0))


def _positive_weight(y: Array, pw: Array | None) -> DD:
    return _d(y) if pw is None else dd.two_prod(pw, y)


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
    big, small = dd.div(_d(1.0 + _zero(x)), one_plus), dd.div(ex.e, one_plus)
    pos = x >= 0
    s, sm = _where(pos, big, small), _where(pos, small, big)
    near = _sub(dd.mul(c, s), dd.mul(d, sm))
    tiny = dd.mul(dd.add(c, d), ex.E)
    dx = _finish(ex, dd.mul(a, near), dd.mul(a, _where(pos, c, dd.neg(d))),
                 dd.mul(a, _where(pos, dd.neg(tiny), tiny)))
    if pw is None:
        return dx, dd.collapse(dd.mul(a, _d(-x)))
    sp, sn = _softplus_pair(x, ex.e)
    near = _sub(dd.mul_d(sn, pw), sp)
    normal = _where(pos, _d(-x), dd.two_prod(pw, abs(x)))
    tiny = dd.mul(dd.add_d(_d(pw + _zero(x)), -1.0), ex.E)
    return dx, _finish(ex, dd.mul(a, near), dd.mul(a, normal), dd.mul(a, tiny))
