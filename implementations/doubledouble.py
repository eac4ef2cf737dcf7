"""Double-double arithmetic on float64 arrays, written once for NumPy arrays and torch tensors.

A double-double ``(hi, lo)`` is the unevaluated sum ``hi + lo`` with ``|lo| ≤ ulp(hi)/2``: about
106 significant bits from float64 operations alone (Dekker 1971; Hida, Li & Bailey, "Library for
double-double and quad-double arithmetic", 2000 — the error-free transformations ``two_sum`` and
``two_prod`` and the "accurate" addition). Only ``+ − × ÷`` (each rounded once, never fused
across operations: every eager NumPy/torch operation is its own kernel), ``frexp`` and ``ldexp``
are used, so CPU and CUDA behave alike and no hardware ``log``/``exp`` accuracy is relied on.

Transcendentals (relative error about 2^-100, for finite arguments only — callers mask
non-finite and out-of-domain entries; :data:`HARDWARE` offers the same interface on the float64
hardware functions, about 2^-52, enough for results rounded to float32 or narrower):

- :func:`log1p` of a double-double ``f ∈ [√½ − 1, √2 − 1]``: ``2·atanh(s)``, ``s = f/(2 + f)``,
  ``|s| ≤ 0.172`` (Taylor series in ``z = s²``: nine double-double Horner steps, the tail
  ``z⁹…z²⁰`` in float64 where its rounding is below 2^-104);
- :func:`log` of a positive double: ``x = m·2^k`` with ``m ∈ [√½, √2)`` (``frexp``, exact for
  subnormals), ``log x = k·ln 2 + log1p(m − 1)`` (``m − 1`` exact; the two parts never cancel by
  more than a factor 2);
- :func:`exp` of a double: ``t = k·ln 2 + r``, ``e^r = (1 + expm1(r/2^8))^(2^8)`` by eight exact
  squarings of ``1 + u`` carried as ``2u + u²``; returned unscaled with ``k`` so that callers
  scale once, after their last product (no double rounding in the subnormal range);
  :func:`expm1` is the same ``u`` for ``|t| ≤ 0.35`` (full relative accuracy for tiny ``t``).
"""

from __future__ import annotations

import math
from fractions import Fraction
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

Array = Any  # numpy.ndarray or torch.Tensor (float64)
DD = tuple[Array, Array]

__all__ = [
    "xp", "two_sum", "two_prod", "add", "add_d", "mul", "mul_d", "div_d", "div", "neg", "collapse",
    "log", "log1p", "exp", "expm1", "sum_last", "ldexp", "Transcendentals", "PRECISE", "HARDWARE",
]


def xp(x: Array):
    """The array namespace of ``x`` (NumPy, or torch for tensors)."""
    if isinstance(x, (np.ndarray, np.generic)):
        return np
    import torch

    return torch


def _const(value: Fraction) -> tuple[float, float]:
    hi = float(value)
    return hi, float(value - Fraction(hi))


# ln 2 to 60 digits (OEIS A002162), split exactly into hi + lo.
LN2 = _const(Fraction("0.693147180559945309417232121458176568075500134360255254120680009"))
_SQRT_HALF = 0.7071067811865476
_SPLITTER = 134217729.0  # 2^27 + 1 (Dekker's split)
_SPLIT_MAX = 2.0**995  # above this, Dekker's split would overflow: pre-scale by 2^-28
_ATANH = [_const(Fraction(1, 2 * n + 3)) for n in range(21)]  # Q(z) = Σ z^n/(2n+3)
_DD_TERMS = 9  # leading Q coefficients evaluated in double-double; z ≤ 2^-5.08 makes z⁹·2^-53 < 2^-98


_INV_FACT = [_const(Fraction(1, math.factorial(n))) for n in range(12)]
_EXP_SQUARINGS = 8  # |r| ≤ 0.35 → |r/2^8| ≤ 0.0014: 1/11! · 0.0014^10 < 2^-104 relative to r


def two_sum(a: Array, b: Array) -> DD:
    """``a + b = s + e`` exactly (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _fast_two_sum(a: Array, b: Array) -> DD:
    """``a + b = s + e`` exactly when ``|a| ≥ |b|`` (or a = 0)."""
    s = a + b
    return s, b - (s - a)


def _split(a: Array | float) -> DD:
    if isinstance(a, float):  # a constant (never near overflow)
        c = _SPLITTER * a
        return c - (c - a), a - (c - (c - a))
    x = xp(a)
    big = abs(a) > _SPLIT_MAX
    a = x.where(big, a * 2.0**-28, a)
    c = _SPLITTER * a
    hi = c - (c - a)
    lo = a - hi
    return x.where(big, hi * 2.0**28, hi), x.where(big, lo * 2.0**28, lo)


def two_prod(a: Array, b: Array) -> DD:
    """``a·b = p + e`` exactly (Dekker), unless the product underflows or overflows."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def add(a: DD, b: DD) -> DD:
    """Accurate double-double addition (relative error ≤ 2^-104 even under cancellation)."""
    s, e = two_sum(a[0], b[0])
    t, f = two_sum(a[1], b[1])
    s, e = _fast_two_sum(s, e + t)
    return _fast_two_sum(s, e + f)


def add_d(a: DD, b: Array | float) -> DD:
    """``a + b`` for a double ``b``."""
    s, e = two_sum(a[0], b)
    return _fast_two_sum(s, e + a[1])


def neg(a: DD) -> DD:
    return -a[0], -a[1]


def mul(a: DD, b: DD) -> DD:
    p, e = two_prod(a[0], b[0])
    return _fast_two_sum(p, e + (a[0] * b[1] + a[1] * b[0]))


def mul_d(a: DD, b: Array | float) -> DD:
    """``a·b`` for a double ``b``."""
    p, e = two_prod(a[0], b)
    return _fast_two_sum(p, e + a[1] * b)


def div_d(a: DD, b: Array | float) -> DD:
    """``a/b`` for a double ``b``."""
    q = a[0] / b
    p, e = two_prod(q, b)
    return _fast_two_sum(q, (((a[0] - p) - e) + a[1]) / b)


def div(a: DD, b: DD) -> DD:
    """``a/b`` (one correction step: relative error about 2^-104)."""
    q1 = a[0] / b[0]
    r = add(a, neg(mul_d(b, q1)))
    return _fast_two_sum(q1, r[0] / b[0])


def collapse(a: DD) -> Array:
    """The double nearest ``hi + lo``."""
    return a[0] + a[1]


def _zero(like: Array) -> Array:
    return xp(like).zeros_like(like)


def log1p(f: DD) -> DD:
    """``log(1 + f)`` for a double-double ``f ∈ [√½ − 1, √2 − 1]`` (see the module docstring)."""
    s = div(f, add_d(f, 2.0))
    z = mul(s, s)
    tail = _zero(z[0])
    for n in range(len(_ATANH) - 1, _DD_TERMS - 1, -1):
        tail = tail * z[0] + _ATANH[n][0]
    q = (tail, _zero(tail))
    for n in range(_DD_TERMS - 1, -1, -1):
        q = add(mul(q, z), _ATANH[n])
    w = add_d(mul(z, q), 1.0)  # atanh(s)/s
    h, lo = mul(s, w)
    return 2.0 * h, 2.0 * lo


def log(x: Array) -> DD:
    """``log x`` for positive finite doubles (subnormals included)."""
    ns = xp(x)
    m, k = ns.frexp(x)
    k = k.astype(np.float64) if ns is np else k.to(x.dtype)
    low = m < _SQRT_HALF
    m = ns.where(low, m + m, m)
    k = ns.where(low, k - 1.0, k)
    head = mul_d(LN2, k)
    return add(head, log1p((m - 1.0, _zero(m))))


def _expm1_reduced(r: DD) -> DD:
    """``e^r − 1`` for ``|r| ≤ 0.35`` (relative error about 2^-96 after the eight squarings)."""
    r = (r[0] * 2.0**-_EXP_SQUARINGS, r[1] * 2.0**-_EXP_SQUARINGS)
    acc = (_INV_FACT[-1][0] + _zero(r[0]), _INV_FACT[-1][1] + _zero(r[0]))
    for n in range(len(_INV_FACT) - 2, 0, -1):
        acc = add(mul(acc, r), _INV_FACT[n])
    u = mul(acc, r)
    for _ in range(_EXP_SQUARINGS):
        u = add((2.0 * u[0], 2.0 * u[1]), mul(u, u))
    return u


def expm1(t: Array) -> DD:
    """``e^t − 1`` for doubles ``|t| ≤ 0.35``, to full relative accuracy also for tiny ``t``."""
    return _expm1_reduced((t, _zero(t)))


def exp(t: Array) -> tuple[DD, Array]:
    """``e^t = E·2^k`` for finite doubles ``t ≤ 710``: returns ``(E, k)``, ``E ∈ [0.7, 1.42]``."""
    k = xp(t).round(t / LN2[0])
    return add_d(_expm1_reduced(add_d(neg(mul_d(LN2, k)), t)), 1.0), k


def ldexp(x: Array, k: Array) -> Array:
    """``x·2^k`` with one rounding (for torch in two exact-range steps, so ``2^k`` never overflows)."""
    ns = xp(x)
    if ns is np:
        return np.ldexp(x, k.astype(np.int64))
    k = k.to(ns.int64)
    h = ns.div(k, 2, rounding_mode="floor")
    return ns.ldexp(ns.ldexp(x, h), k - h)


def _log_hw(x: Array) -> DD:
    return xp(x).log(x), _zero(x)


def _log1p_hw(f: DD) -> DD:
    return xp(f[0]).log1p(f[0] + f[1]), _zero(f[0])


def _exp_hw(t: Array) -> tuple[DD, Array]:
    ns = xp(t)
    k = ns.round(t / LN2[0])
    return (ns.exp((t - k * LN2[0]) - k * LN2[1]), _zero(t)), k


def _expm1_hw(t: Array) -> DD:
    return xp(t).expm1(t), _zero(t)


class Transcendentals(NamedTuple):
    """The signatures of :func:`log`, :func:`log1p`, :func:`exp` and :func:`expm1`."""

    log: Callable[[Array], DD]
    log1p: Callable[[DD], DD]
    exp: Callable[[Array], tuple[DD, Array]]
    expm1: Callable[[Array], DD]


PRECISE = Transcendentals(log, log1p, exp, expm1)
HARDWARE = Transcendentals(_log_hw, _log1p_hw, _exp_hw, _expm1_hw)


def sum_last(a: DD) -> DD:
    """Sum over the last axis by pairwise double-double addition (``log2 n`` vectorized steps)."""
    hi, lo = a
    ns = xp(hi)
    cat = np.concatenate if ns is np else ns.cat
    if hi.shape[-1] == 0:
        return hi.sum(-1), lo.sum(-1)
    while hi.shape[-1] > 1:
        if hi.shape[-1] % 2:
            pad = _zero(hi[..., :1])
            hi, lo = cat([hi, pad], -1), cat([lo, pad], -1)
        h = hi.shape[-1] // 2
        hi, lo = add((hi[..., :h], lo[..., :h]), (hi[..., h:], lo[..., h:]))
    return hi[..., 0], lo[..., 0]
