"""Double-double arithmetic on float64 arrays, written once for NumPy arrays and torch tensors.

A double-double ``(hi, lo)`` is the unevaluated sum ``hi + lo`` with ``|lo| ≤ ulp(hi)/2``: about
106 significant bits from float64 operations alone (Dekker 1971; Hida, Li & Bailey, "Library for
double-double and quad-double arithmetic", 2000 — the error-free transformations ``two_sum`` and
``two_prod`` and the "accurate" addition; ``two_prod`` splits by clearing low bits, which never
overflows, at the price of a rounding of at most 2^-104 of the product). Only ``+ − × ÷`` (each
rounded once, never fused across operations: every eager NumPy/torch operation is its own kernel),
rounding to integers, bit masks, table look-ups, ``frexp`` and ``ldexp`` are used, so NumPy, the
CPU and CUDA give the same bits and no hardware ``log``/``exp`` accuracy is relied on (except in
:data:`SHORT`, whose Newton steps start from the hardware ``log``).

Elementary functions of a double or a double-double argument (relative error about 2^-100, for
finite arguments in their domain only — callers mask the rest; :data:`HARDWARE` offers the same
interface on the float64 hardware functions, about 2^-52, enough for results rounded to float32):

- :func:`exp`: ``t = n·ln2/64 + r``, ``n = 64k + j``, ``|r| ≤ ln2/128`` (Cody–Waite: ``ln2/64`` in
  three parts, the first two of 36 bits, so ``n`` times them is exact for ``|n| < 2^17``);
  ``e^t = 2^k·T_j·(1 + u)`` with ``T_j = 2^{j/64}`` from a table and ``u = e^r − 1`` by its Taylor
  series (coefficients of ``r¹…r⁶`` in double-double, ``r⁷…r¹¹`` in double: below 2^-54 of ``u``).
  Returned unscaled, ``E = T_j + T_j·u ∈ [0.7, 1.42]`` with ``k``, so that callers scale once,
  after their last product (no double rounding in the subnormal range);
- :func:`expm1`: ``(T_j − 1) + T_j·u`` (tabulated ``T_j − 1``: full relative accuracy for tiny
  ``t``) where ``k = 0``, i.e. ``|t| ≤ 0.34``; ``2^k·E − 1`` elsewhere;
- :func:`log`: ``x = 2^k·m``, ``m ∈ [√½, √2)`` (``frexp``, exact for subnormals), ``c = i/64``
  nearest ``m``: ``log x = k·ln2 + log c + 2·atanh(s)``, ``s = (m − c)/(m + c)``, ``|s| < 2^-7.4``
  (``m − c`` exact; ``atanh(s)/s = Σ s^{2n}/(2n + 1)``, ``n ≤ 3`` in double-double, ``4…6`` in
  double); the parts never cancel by more than a factor 2;
- :func:`log1p`: the same, ``m − c`` and ``m + c`` formed from ``f`` itself
  (``f − (c − 1)``, ``f + (1 + c)``) where ``1 + f ∈ [√½, √2)`` — full relative accuracy for tiny
  ``f`` — and from ``x = 1 + f`` elsewhere; ``f`` itself below 2^-500 (``f²/2`` is negligible).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np

Array = Any  # numpy.ndarray or torch.Tensor (float64)
DD = tuple[Array, Array]

__all__ = [
    "xp", "constant", "LN2", "two_sum", "two_prod", "lift", "add", "add_d", "sub", "neg", "mul", "mul_d",
    "div_d", "div", "where", "collapse", "log", "log1p", "exp", "expm1", "sum_last", "ldexp", "Transcendentals",
    "PRECISE", "SHORT", "HARDWARE",
]


def xp(x: Array):
    """The array namespace of ``x`` (NumPy, or torch for tensors)."""
    if isinstance(x, (np.ndarray, np.generic)):
        return np
    import torch

    return torch


def constant(value: Fraction) -> tuple[float, float]:
    """The double-double nearest an exact rational: ``(hi, lo)`` floats."""
    hi = float(value)
    return hi, float(value - Fraction(hi))


def _bits(value: Fraction, bits: int) -> float:
    """``value`` rounded to ``bits`` significant bits."""
    q = Fraction(2) ** (math.frexp(float(value))[1] - bits)
    return float(round(value / q) * q)


def _table(values: list[Fraction]) -> tuple[np.ndarray, np.ndarray]:
    parts = [constant(v) for v in values]
    return np.array([h for h, _ in parts]), np.array([lo for _, lo in parts])


with localcontext() as _ctx:
    _ctx.prec = 60
    _LN2_DEC = Decimal(2).ln()
    _POW2 = [(Decimal(j) / 64 * _LN2_DEC).exp() for j in range(-32, 32)]  # 2^{j/64}
    _LOG_C = [(Decimal(i) / 64).ln() for i in range(45, 92)]  # log(i/64), i/64 ∈ [√½, √2] rounded
    _LN2_FRAC = Fraction(_LN2_DEC)

LN2 = constant(_LN2_FRAC)
_L1 = _bits(_LN2_FRAC / 64, 36)  # ln2/64 = L1 + L2 + L3; n·L1 and n·L2 exact for |n| < 2^17
_L2 = _bits(_LN2_FRAC / 64 - Fraction(_L1), 36)
_L3 = float(_LN2_FRAC / 64 - Fraction(_L1) - Fraction(_L2))
_EXP_MIN = -1400.0  # below: E of −1400 with k = −4096, so that E·2^k·(any double) underflows to 0
_POW2_T = _table([Fraction(v) for v in _POW2])  # T_j, j = −32…31 at index j + 32
_POW2_M1 = _table([Fraction(v) - 1 for v in _POW2])  # T_j − 1
_EXP_DD = [constant(Fraction(1, math.factorial(m + 1))) for m in range(6)]  # u/r = Σ r^m/(m + 1)!
_EXP_TAIL = [1.0 / math.factorial(m + 1) for m in range(6, 11)]
_EXP_SHORT = [1.0 / math.factorial(m) for m in range(7, 1, -1)]  # 1/7!, …, 1/2! (:data:`SHORT`)
_LOG_C_T = _table([Fraction(v) for v in _LOG_C])  # log(i/64) at index i − 45
_ATANH_DD = [constant(Fraction(1, 2 * n + 1)) for n in range(4)]  # atanh(s)/s = Σ z^n/(2n + 1)
_ATANH_TAIL = [1.0 / (2 * n + 1) for n in range(4, 7)]
_SQRT_HALF, _SQRT2 = 0.7071067811865476, 1.4142135623730951
_TINY = 2.0**-500  # |f| below: log1p(f) = f to far beyond 2^-106
_SPLITTER = 134217729.0  # 2^27 + 1 (Dekker's split)
_MASK27 = ~((1 << 27) - 1)


# ----------------------------------------------------------------------------------------------
# Error-free transformations and arithmetic


def two_sum(a: Array | float, b: Array | float) -> DD:
    """``a + b = s + e`` exactly (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _fast_two_sum(a: Array, b: Array) -> DD:
    """``a + b = s + e`` exactly when ``|a| ≥ |b|`` (or a = 0)."""
    s = a + b
    return s, b - (s - a)


def _dekker(a: Array | float) -> DD:
    """``a = hi + lo`` with 26-bit halves (Dekker), for ``|a| ≤ 2^995``."""
    c = _SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


def _truncate(a: Array) -> Array:
    """``a`` with its 27 low significand bits cleared: its top 26 bits, never rounded up (no overflow)."""
    if xp(a) is np:
        return (np.asarray(a).view(np.int64) & _MASK27).view(np.float64)
    import torch

    return (a.view(torch.int64) & _MASK27).view(torch.float64)


def _split(a: Array | float) -> DD:
    """``a = hi + lo``, ``hi`` the top 26 significand bits of ``a`` (:func:`_truncate`: never rounded up,
    so never overflowing) and ``lo`` the other 27; :func:`_dekker` for a constant."""
    if isinstance(a, float):
        return _dekker(a)
    hi = _truncate(a)
    return hi, a - hi


def two_prod(a: Array, b: Array | float) -> DD:
    """``a·b = p + e`` (Dekker), unless the product underflows or overflows: exact but for the product of
    the two 27-bit ``lo`` halves (:func:`_split`), which may round, by at most 2^-104 of ``p``."""
    p = a * b
    ah, al = _split(a)
    bh, bl = (ah, al) if b is a else _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _zero(like: Array) -> Array:
    return xp(like).zeros_like(like)


def lift(a: Array) -> DD:
    """A double as a double-double ``(a, 0)``."""
    return a, _zero(a)


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


def sub(a: DD, b: DD) -> DD:
    return add(a, neg(b))


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


def where(c: Array, a: DD, b: DD) -> DD:
    """``a`` where ``c`` holds, else ``b``."""
    ns = xp(c)
    return ns.where(c, a[0], b[0]), ns.where(c, a[1], b[1])


def collapse(a: DD) -> Array:
    """The double nearest ``hi + lo``."""
    return a[0] + a[1]


def ldexp(x: Array | DD, k: Array) -> Array | DD:
    """``x·2^k`` with one rounding (for torch in two exact-range steps, so ``2^k`` never overflows; on
    the CPU, where both powers are normal, built from their bits rather than by ``torch.ldexp``); a
    double-double ``x``: both parts, by the same powers."""
    parts = x if isinstance(x, tuple) else (x,)
    ns = xp(parts[0])
    if ns is np:  # int32 exponents: NumPy's fast loop (|k| > 2^14 under- or overflows any double anyway)
        k = np.clip(k, -16384, 16384).astype(np.int32)
        out = tuple(np.ldexp(v, k) for v in parts)
    else:
        k = k.to(ns.int64)
        h = k >> 1  # ⌊k/2⌋
        low, high = ns.aminmax(k) if parts[0].device.type == "cpu" and k.numel() else (-1, 1 << 20)
        if low >= -2044 and high <= 2046:  # 2^h, 2^(k − h) normal: the same products, powers from the bits
            p1, p2 = ((h + 1023) << 52).view(ns.float64), ((k - h + 1023) << 52).view(ns.float64)
            out = tuple(v * p1 * p2 for v in parts)
        else:
            out = tuple(ns.ldexp(ns.ldexp(v, h), k - h) for v in parts)
    return out if isinstance(x, tuple) else out[0]


def sum_last(a: DD) -> DD:
    """Sum over the last axis by pairwise double-double addition (``log2 n`` vectorized steps)."""
    hi, lo = a
    ns = xp(hi)
    cat = np.concatenate if ns is np else ns.cat
    if hi.shape[-1] == 0:
        return hi.sum(-1), lo.sum(-1)
    while hi.shape[-1] > 1:
        if hi.shape[-1] % 2:
            pad = ns.zeros_like(hi[..., :1])
            hi, lo = cat([hi, pad], -1), cat([lo, pad], -1)
        h = hi.shape[-1] // 2
        hi, lo = add((hi[..., :h], lo[..., :h]), (hi[..., h:], lo[..., h:]))
    return hi[..., 0], lo[..., 0]


def extraction_exponent(n: int) -> int:
    """``M`` with ``2^M ≥ n + 2``: an extraction grid ``σ = 2^k ≥ 2^M·max|t|`` holds ``n`` terms."""
    return max(1, (n + 1).bit_length())


def extraction_sum(t: Array, sigma: Array | float, out: Array | None = None) -> tuple[Array, Array, Array | float]:
    """``Σ t`` over the last axis as ``(Σq, fl(Σr), bound)``: ``Σq`` exact, ``|fl(Σr) − Σr| ≤ bound``, in
    any summation order; ``r`` may be written into ``out``.

    Rump, Ogita & Oishi, "Accurate floating-point summation part I: faithful rounding", SIAM J.
    Sci. Comput. 31 (2008), Lemma 3.3 (ExtractVector): for a power of two ``σ ≥ 2^M·max|t_i|``
    (:func:`extraction_exponent`; broadcast against ``t``), ``q_i = fl(fl(σ + t_i) − σ)`` and
    ``r_i = fl(t_i − q_i)`` are exact, ``Σ q_i`` is exact in any order and ``|r_i| ≤ 2^-53·σ``; so any
    order of ``Σ r_i`` errs by at most ``(n − 1)·u·Σ|r_i| ≤ n²·2^-106·σ`` (1.01 for the higher orders)."""
    n = t.shape[-1]
    q = t + sigma
    q -= sigma
    r = t - q if out is None else xp(t).subtract(t, q, out=out)
    return q.sum(-1), r.sum(-1), sigma * (1.01 * n * n * 2.0**-106)


# ----------------------------------------------------------------------------------------------
# Elementary functions


def _parts(t: Array | DD) -> tuple[Array, Array | None]:
    return t if isinstance(t, tuple) else (t, None)


def _lookup(table: tuple[np.ndarray, np.ndarray], i: Array) -> DD:
    """Entries ``i`` (integer-valued floats) of a double-double table."""
    if isinstance(i, (np.ndarray, np.generic)):
        idx = np.asarray(i).astype(np.intp)
        return table[0][idx], table[1][idx]
    import torch

    idx = i.long()
    return torch.as_tensor(table[0], device=i.device)[idx], torch.as_tensor(table[1], device=i.device)[idx]


def _series(x: DD, leading: list[tuple[float, float]], tail: list[float]) -> DD:
    """``Σ c_m x^m`` by Horner's rule: the coefficients ``leading`` (double-doubles) in double-double,
    the higher-order ``tail`` (doubles, terms below 2^-54 of the sum) in double on ``hi``."""
    acc = xp(x[0]).full_like(x[0], tail[-1])
    for c in reversed(tail[:-1]):
        acc = acc * x[0] + c
    q = add(mul_d(x, acc), leading[-1])
    for c in reversed(leading[:-1]):
        q = add(mul(q, x), c)
    return q


def _u_short(r: DD) -> DD:
    """``u = e^r − 1`` for ``|r| ≤ ln2/128``: ``r + r²·(1/2! + … + r⁵/7!)``, the polynomial in double on
    ``hi`` (error about 2^-53·r²/2: 2^-68 of ``e^r``, 2^-60 of ``u``)."""
    rh, rl = r
    p = xp(rh).full_like(rh, _EXP_SHORT[0])
    for c in _EXP_SHORT[1:]:
        p = p * rh + c
    return _fast_two_sum(rh, rl * (1.0 + rh) + rh * rh * p)


def _exp_reduce(t: Array | DD, short: bool) -> tuple[DD, Array, Array]:
    """``(r, j, k)`` with ``t = (64k + j)·ln2/64 + r`` (see the module docstring; ``short``: the low
    parts of ``r`` summed in double, about 2^-106·|t| more error, fewer passes)."""
    th, tl = _parts(t)
    ns = xp(th)
    low = th < _EXP_MIN
    tc = th.clip(min=_EXP_MIN)
    n = ns.round(tc * (64.0 / LN2[0]))
    r = two_sum(tc - n * _L1, -(n * _L2))  # tc − n·L1 exact (Sterbenz), n·L1 and n·L2 exact
    if short:
        r = r[0], r[1] + (-(n * _L3) if tl is None else ns.where(low, 0.0, tl) - n * _L3)
    else:
        if tl is not None:
            r = add_d(r, ns.where(low, 0.0, tl))
        r = add_d(r, -(n * _L3))
    k = ns.floor((n + 32.0) * (1.0 / 64.0))
    return r, n - 64.0 * k, ns.where(low, -4096.0, k)


def _expm1_parts(t: Array | DD, short: bool = False) -> tuple[DD, DD, Array, Array]:
    """``(T_j, T_j·u, j, k)`` with ``e^t = 2^k·(T_j + T_j·u)`` (see the module docstring; ``short``:
    ``u`` by :func:`_u_short`)."""
    r, j, k = _exp_reduce(t, short)
    T = _lookup(_POW2_T, j + 32.0)
    u = _u_short(r) if short else mul(_series(r, _EXP_DD, _EXP_TAIL), r)
    return T, mul(T, u), j, k


def exp(t: Array | DD) -> tuple[DD, Array]:
    """``e^t = E·2^k`` for finite ``t ≤ 710``: returns ``(E, k)``, ``E ∈ [0.7, 1.42]`` (below −1400,
    ``k = −4096``: ``E·2^k`` times any double underflows to 0)."""
    T, Tu, _, k = _expm1_parts(t)
    return add(T, Tu), k


def expm1(t: Array | DD) -> DD:
    """``e^t − 1`` for finite ``t ≤ 709``, to full relative accuracy also for tiny ``t``."""
    T, Tu, j, k = _expm1_parts(t)
    near = add(_lookup(_POW2_M1, j + 32.0), Tu)
    E = add(T, Tu)
    far = add_d(ldexp(E, k), -1.0)
    return where(k == 0, near, far)


def _log_parts(x: Array | DD) -> tuple[DD, DD, Array, Array]:
    """``(m − c, m + c, i, k)`` for ``x = 2^k·m``, ``m ∈ [√½, √2)``, ``c = i/64`` nearest ``m``."""
    hi, lo = _parts(x)
    ns = xp(hi)
    m, k = ns.frexp(hi)
    k = k.astype(np.float64) if ns is np else k.to(hi.dtype)
    low = m < _SQRT_HALF
    m = ns.where(low, m + m, m)
    k = ns.where(low, k - 1.0, k)
    i = ns.round(m * 64.0)
    c = i * (1.0 / 64.0)
    if lo is None:
        return lift(m - c), two_sum(m, c), i, k
    lo = ldexp(lo, -k)
    return two_sum(m - c, lo), add_d(two_sum(m, c), lo), i, k


def _log_reduced(num: DD, den: DD, i: Array, k: Array) -> DD:
    """``k·ln2 + log(i/64) + 2·atanh(num/den)``."""
    s = div(num, den)
    h, lo = mul(s, _series(mul(s, s), _ATANH_DD, _ATANH_TAIL))
    return add(add(mul_d(LN2, k), _lookup(_LOG_C_T, i - 45.0)), (2.0 * h, 2.0 * lo))


def log(x: Array | DD) -> DD:
    """``log x`` for positive finite ``x`` (subnormals included)."""
    return _log_reduced(*_log_parts(x))


def log1p(f: Array | DD) -> DD:
    """``log(1 + f)`` for finite ``f > −1``, to full relative accuracy also for tiny ``f``."""
    fh, fl = _parts(f)
    ns = xp(fh)
    num, den, i, k = _log_parts(add_d(f, 1.0) if fl is not None else two_sum(fh, 1.0))
    near = (fh >= _SQRT_HALF - 1.0) & (fh < _SQRT2 - 1.0)
    i = ns.where(near, ns.round((1.0 + fh) * 64.0), i)
    c = i * (1.0 / 64.0)
    num_near, den_near = two_sum(fh, 1.0 - c), two_sum(fh, 1.0 + c)  # f − (c − 1), f + (1 + c)
    if fl is not None:
        num_near, den_near = add_d(num_near, fl), add_d(den_near, fl)
    out = _log_reduced(where(near, num_near, num), where(near, den_near, den), i, ns.where(near, 0.0, k))
    return where(abs(fh) < _TINY, (fh, fl if fl is not None else _zero(fh)), out)


# ----------------------------------------------------------------------------------------------
# The same interface on the float64 hardware functions


def _value(t: Array | DD) -> Array:
    return t[0] + t[1] if isinstance(t, tuple) else t


def _log_hw(x: Array | DD) -> DD:
    return lift(xp(_value(x)).log(_value(x)))


def _log1p_hw(f: Array | DD) -> DD:
    return lift(xp(_value(f)).log1p(_value(f)))


def _exp_hw(t: Array | DD) -> tuple[DD, Array]:
    t = _value(t)
    ns = xp(t)
    k = ns.round(t / LN2[0])
    return lift(ns.exp((t - k * LN2[0]) - k * LN2[1])), k


def _expm1_hw(t: Array | DD) -> DD:
    return lift(xp(_value(t)).expm1(_value(t)))


class Transcendentals(NamedTuple):
    """The signatures of :func:`log`, :func:`log1p`, :func:`exp` and :func:`expm1`."""

    log: Callable[[Array | DD], DD]
    log1p: Callable[[Array | DD], DD]
    exp: Callable[[Array | DD], tuple[DD, Array]]
    expm1: Callable[[Array | DD], DD]


# ----------------------------------------------------------------------------------------------
# Shorter double-double functions: 2^-68 (exp) to 2^-60 (log1p) relative, ample for results rounded
# once to float64, in about half the passes. ``exp``: ``e^r`` by :func:`_u_short`; ``log``, ``log1p``:
# one Newton step from the hardware function (whose last bits may differ between NumPy, CPU and CUDA;
# the step leaves about 2^-104 of that difference)


def _exp_short(t: Array | DD) -> tuple[DD, Array]:
    """:func:`exp` with ``e^r`` by :func:`_u_short` (about 2^-68 relative): ``E = T_j·(1 + u)``."""
    r, j, k = _exp_reduce(t, short=True)
    uh, ul = _u_short(r)
    s, e = _fast_two_sum(1.0, uh)
    return mul(_lookup(_POW2_T, j + 32.0), _fast_two_sum(s, e + ul)), k


def _expm1_short(t: Array | DD) -> DD:
    """:func:`expm1` with ``e^r`` by :func:`_u_short` (about 2^-60 relative)."""
    T, Tu, j, k = _expm1_parts(t, short=True)
    near = add(_lookup(_POW2_M1, j + 32.0), Tu)
    E = add(T, Tu)
    return where(k == 0, near, add_d(ldexp(E, k), -1.0))


def _log_short(x: Array | DD) -> DD:
    """``log x`` for positive normal ``x``: one Newton step ``l + x·e^(−l) − 1`` from the hardware
    ``l = log(hi)`` (:func:`_exp_short`; the product ``x·E`` ≈ 1 is scaled once, never overflowing)."""
    hi, lo = _parts(x)
    l0 = xp(hi).log(hi)
    E, k = _exp_short(-l0)
    p = mul(E, x) if lo is not None else mul_d(E, x)
    return add_d(add_d(ldexp(p, k), -1.0), l0)


def _log1p_short(f: Array | DD) -> DD:
    """``log(1 + f)`` for finite ``f ∈ (−1, 2^500]``, to full relative accuracy also for tiny ``f``:
    one Newton step ``l + (e^(−l) − 1) + f·e^(−l)`` from the hardware ``l = log1p(hi)``."""
    fh, fl = _parts(f)
    l0 = xp(fh).log1p(fh)
    E, k = _exp_short(-l0)
    E = ldexp(E, k)
    fE = mul(f, E) if fl is not None else mul_d(E, f)
    return add_d(add(add_d(E, -1.0), fE), l0)


PRECISE = Transcendentals(log, log1p, exp, expm1)
SHORT = Transcendentals(_log_short, _log1p_short, _exp_short, _expm1_short)
HARDWARE = Transcendentals(_log_hw, _log1p_hw, _exp_hw, _expm1_hw)
