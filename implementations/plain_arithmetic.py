"""Ordinary floating-point arithmetic in the compute dtype, behind the interface of
:mod:`.dd_arithmetic` (a number is one NumPy array or torch tensor), so that one kernel runs in
either arithmetic: ``A.add(a, b)``, ``A.exp(a)``, … with ``A`` this module or that one."""

from __future__ import annotations

from typing import Any

from .doubledouble import xp

Array = Any  # numpy.ndarray or torch.Tensor


def lift(a: Array) -> Array:
    return a


def const(v: float | tuple[float, float], like: Array) -> Array:
    """``v`` (a double-double constant: its leading part) filled like ``like``."""
    return xp(like).full_like(like, v[0] if isinstance(v, tuple) else float(v))


def hi(a: Array) -> Array:
    return a


def round(a: Array) -> Array:  # noqa: A001 (the arithmetic's name for its final rounding)
    return a


def add(a: Array, b: Array) -> Array:
    return a + b


def sub(a: Array, b: Array) -> Array:
    return a - b


def mul(a: Array, b: Array) -> Array:
    return a * b


def div(a: Array, b: Array) -> Array:
    return a / b


def scale(a: Array, s: float) -> Array:
    """``a·s`` for a power of two ``s`` (exact)."""
    return a * s


def ldexp(a: Array, k: Array) -> Array:
    """``a·2^k`` element-wise (integer-valued ``k``)."""
    return a * xp(k).exp2(k)


def neg(a: Array) -> Array:
    return -a


def exp(a: Array) -> Array:
    return xp(a).exp(a)


def expm1(a: Array) -> Array:
    return xp(a).expm1(a)


def log(a: Array) -> Array:
    return xp(a).log(a)


def log1p(a: Array) -> Array:
    return xp(a).log1p(a)


def where(c: Array, a: Array, b: Array) -> Array:
    return xp(c).where(c, a, b)


def sum_last(a: Array) -> Array:
    return a.sum(-1)


def col(a: Array) -> Array:
    """A per-row number as a column, broadcastable against the row's classes."""
    return a[..., None]


def apply(fn, a: Array) -> Array:
    """``fn`` applied to the array of the number ``a``."""
    return fn(a)


def apply2(fn, a: Array, b: Array) -> Array:
    """``fn`` applied to the arrays of the numbers ``a`` and ``b``."""
    return fn(a, b)
