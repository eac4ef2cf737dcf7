"""The double-double arithmetic of :mod:`.doubledouble` behind the interface of
:mod:`.plain_arithmetic`: a number is a pair ``(hi, lo)`` of float64 arrays (NumPy or torch).

Unlike those functions (finite operands only) these let non-finite values through: ``hi`` is then
what float64 gives (a product its plain product, NaN where an infinity meets a sum) and ``lo`` is
0, which :func:`round` ignores."""

from __future__ import annotations

from typing import Any

from . import doubledouble as dd
from .doubledouble import xp

Array = Any  # numpy.ndarray or torch.Tensor (float64)
DD = dd.DD

lift = dd.lift
neg = dd.neg
where = dd.where
ldexp = dd.ldexp


def const(v: float | tuple[float, float], like: Array) -> DD:
    """``v`` (a float, or a double-double constant ``(hi, lo)``) filled like ``like``."""
    h, lo = v if isinstance(v, tuple) else (float(v), 0.0)
    ns = xp(like)
    return ns.full_like(like, h), ns.full_like(like, lo)


def hi(a: DD) -> Array:
    return a[0]


def round(a: DD) -> Array:  # noqa: A001 (the arithmetic's name for its final rounding)
    h, lo = a
    return xp(h).where(xp(h).isfinite(h), h + lo, h)


def _finite(a: DD, plain: Array | None = None) -> DD:
    """``a`` with ``lo = 0`` (and ``hi = plain`` if given) where ``hi`` is not finite."""
    ns = xp(a[0])
    ok = ns.isfinite(a[0])
    return a[0] if plain is None else ns.where(ok, a[0], plain), ns.where(ok, a[1], 0.0)


def add(a: DD, b: DD) -> DD:
    return _finite(dd.add(a, b))


def sub(a: DD, b: DD) -> DD:
    return _finite(dd.sub(a, b))


def mul(a: DD, b: DD) -> DD:
    return _finite(dd.mul(a, b), a[0] * b[0])


def div(a: DD, b: DD) -> DD:
    return _finite(dd.div(a, b))


def scale(a: DD, s: float) -> DD:
    """``a·s`` for a power of two ``s`` (exact)."""
    return a[0] * s, a[1] * s


def _clamped(a: DD) -> DD:
    """``a`` clipped to [−1100, 709] and NaN set to 0: finite arguments for :mod:`.doubledouble`."""
    ns = xp(a[0])
    h = ns.clip(a[0], -1100.0, 709.0)
    h = ns.where(ns.isnan(h), 0.0, h)
    return h, ns.where(h == a[0], a[1], 0.0)


def exp(a: DD) -> DD:
    """``e^a``: 0 below −1100, inf above 709, NaN for NaN."""
    ns = xp(a[0])
    E, k = dd.exp(_clamped(a))
    out = ldexp(E, k)
    h = ns.where(a[0] < -1100.0, 0.0, out[0])
    h = ns.where(a[0] > 709.0, h + float("inf"), h)
    h = ns.where(ns.isnan(a[0]), a[0], h)
    return h, ns.where(h == out[0], out[1], 0.0)


def expm1(a: DD) -> DD:
    """``e^a − 1``: −1 below −1100, NaN for NaN."""
    ns = xp(a[0])
    out = dd.expm1(_clamped(a))
    h = ns.where(a[0] < -1100.0, -1.0, out[0])
    h = ns.where(ns.isnan(a[0]), a[0], h)
    return h, ns.where(h == out[0], out[1], 0.0)


def log1p(z: DD) -> DD:
    """``log(1 + z)``; the float64 ``log1p`` of ``hi`` where ``hi`` is not finite or not above −1."""
    ns = xp(z[0])
    ok = ns.isfinite(z[0]) & (z[0] > -1.0)
    y = dd.log1p(dd.where(ok, z, const(0.0, z[0])))
    return ns.where(ok, y[0], ns.log1p(z[0])), ns.where(ok, y[1], 0.0)


def log(a: DD) -> DD:
    """``log a``; the float64 ``log`` of ``hi`` where ``hi`` is not finite or not positive."""
    ns = xp(a[0])
    ok = ns.isfinite(a[0]) & (a[0] > 0)
    y = dd.log(dd.where(ok, a, const(1.0, a[0])))
    return ns.where(ok, y[0], ns.log(a[0])), ns.where(ok, y[1], 0.0)


def sum_last(a: DD) -> DD:
    """Pairwise double-double sum over the last axis."""
    return _finite(dd.sum_last(a))


def col(a: DD) -> DD:
    """A per-row number as a column, broadcastable against the row's classes."""
    return a[0][..., None], a[1][..., None]


def apply(fn, a: DD) -> DD:
    """``fn`` applied to both arrays of the number ``a``."""
    return fn(a[0]), fn(a[1])


def apply2(fn, a: DD, b: DD) -> DD:
    """``fn`` applied pairwise to the arrays of the numbers ``a`` and ``b``."""
    return fn(a[0], b[0]), fn(a[1], b[1])
