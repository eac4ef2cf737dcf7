"""Entropy and KL-divergence kernels, written once for NumPy arrays and torch tensors.

Inputs are float64 (callers widen narrower dtypes and round the result once); reductions run
over the last axis (callers move ``dim`` there). Semantics and boundary values are those of
``lossoracle.reference.information``.

Accuracy: for float32 and narrower results (``precise=False``) the plain float64 formulas
suffice: every term is formed from inputs of a narrower format — so nothing overflows or
underflows in float64 that does not also in the result's format — with a relative error of a
few 2^-53, and a sum of n terms errs by at most n·2^-53 of the sum of their magnitudes, which
the componentwise condition number bounds: 2^29 of headroom against the float32 budgets (the
conditioning bound of a stable result, ``8·2^-24·c``, and faithful rounding where ``c ≤ 4|f|``).
For float64 results (``precise=True``) every logarithm and exponential is a double-double
(:mod:`.doubledouble`) and each term
``P·D`` is an exact product of ``P`` (``p``, or ``e^t`` carried as ``E·2^k``) with the double-double
``D`` (``−log p``, ``log p − input``, ``t − input``, ``log(p/q)``), and terms are summed pairwise in
double-double, so the result is rounded once — no cancellation between logarithms, between a log
and ``input``, or between terms of both signs costs accuracy. ``log(p/q)`` is ``log1p((p − q)/q)``
(``p − q`` exact) when ``p/q ∈ [√½, √2]`` and ``log p − log q`` otherwise (no cancellation there).
``log_target`` terms with ``|t| ≤ 0.34`` are ``d + expm1(t)·d`` (``d = t − input`` exact), the ``d``
summed apart, so sums whose ``d`` cancel (``t ≈ 0``) keep their second-order remainder.
Mean reductions divide each term (to 2^-104) before the sum, which therefore cannot overflow.

Subnormal results: a term whose factor ``P`` is below 2^-900 is formed scaled by 2^300 and summed
in a second "tiny" tier that is scaled back once at the end, so rows of subnormal terms are
rounded once rather than term by term.

Special values come from the plain float formula (``plain``), which is only consulted where it is
not finite: ``p = 0`` terms are 0 (also against ``input = −∞`` or ``q = 0``), ``0·NaN`` stays NaN.
"""

from __future__ import annotations

import functools
from typing import Any

from . import doubledouble as dd

Array = Any  # float64 numpy.ndarray or torch.Tensor

_TINY = 2.0**-900
_EXPM1_MAX = 0.34  # |t| up to this: e^t·d = d + expm1(t)·d (where expm1 needs no scaling by 2^k)
_UP, _DOWN = 2.0**300, 2.0**-300
_SQRT_HALF_M1, _SQRT2_M1 = 0.7071067811865476 - 1.0, 1.4142135623730951 - 1.0
_INF = float("inf")


def _zero(a: Array) -> Array:
    return dd.xp(a).zeros_like(a)


def _tiers(h: Array, lo: Array, tiny: Array):
    """Split terms into the normal tier and the (pre-scaled) tiny tier."""
    xp, z = dd.xp(h), _zero(h)
    return (xp.where(tiny, z, h), xp.where(tiny, z, lo)), (xp.where(tiny, h, z), xp.where(tiny, lo, z))


def _products(p: Array, d, ok: Array):
    """Terms ``p·d`` (``p ≥ 0`` double, ``d`` double-double finite where ``ok``; 0 elsewhere)."""
    xp = dd.xp(p)
    p = xp.where(ok, p, 0.0)
    tiny = p < _TINY
    h, lo = dd.mul_d(d, xp.where(tiny, p * _UP, p))
    return _tiers(h, lo, tiny)


def _exp_products(e, k: Array, d):
    """Terms ``E·2^k·d`` (the double-double exponential of :func:`doubledouble.exp`)."""
    xp = dd.xp(k)
    h, lo = dd.mul(e, d)
    tiny = k < -800.0
    s = xp.where(tiny, k + 300.0, k)
    return _tiers(dd.ldexp(h, s), dd.ldexp(lo, s), tiny)


def _masked(a, mask: Array):
    """A double-double with the entries outside ``mask`` set to 0."""
    xp = dd.xp(mask)
    return xp.where(mask, a[0], 0.0), xp.where(mask, a[1], 0.0)


def _special(plain: Array, ok: Array) -> Array:
    """The non-finite terms that irregular inputs give (0 elsewhere: a term of regular inputs is
    finite, even where its plain float evaluation overflows)."""
    xp = dd.xp(plain)
    return xp.where(ok | xp.isfinite(plain), 0.0, plain)


def _finish(normal, tiny, special: Array, plain: Array) -> Array:
    """Round ``normal + tiny·2^-300`` once. Non-finite terms (``special``, their sum) win; where
    finite terms overflow the double-double sum (|terms| near 2^1024), the plain float result
    (then ±inf, as IEEE arithmetic gives) replaces the NaN of ``inf − inf``."""
    xp = dd.xp(special)
    only_tiny = normal[0] == 0
    small = dd.collapse(tiny) * _DOWN
    out = dd.collapse(dd.add(normal, (tiny[0] * _DOWN, tiny[1] * _DOWN)))
    out = xp.where(only_tiny, small, out)
    out = xp.where(xp.isnan(out), plain, out)
    return xp.where(special != 0, special, out)


def _sum_rows(normal, tiny, plain: Array, ok: Array) -> Array:
    return _finish(dd.sum_last(normal), dd.sum_last(tiny), _special(plain, ok).sum(-1), plain.sum(-1))


def _lift(a: Array, b: Array) -> tuple[Array, Array]:
    """``a·2^600, b·2^600`` where both are below 2^-900 (exact), so that the error-free products
    inside a division of one by the other do not underflow; ratios are unchanged."""
    xp = dd.xp(a)
    s = xp.where(xp.maximum(a, b) < _TINY, xp.full_like(a, 2.0**600), xp.ones_like(a))
    return a * s, b * s


def _ratio(p: Array, q: Array):
    """``p/q`` as a double-double for positive finite ``p``, ``q`` (tiny ``p`` scaled up and back)."""
    xp = dd.xp(p)
    s = xp.where(p < _TINY, xp.full_like(p, 2.0**600), xp.ones_like(p))
    h, lo = dd.div_d((p * s, _zero(p)), q)
    return h / s, lo / s


def _log_ratio(p: Array, q: Array, m: dd.Transcendentals):
    """``log(p/q)`` as a double-double for positive finite ``p``, ``q``."""
    xp = dd.xp(p)
    p, q = _lift(p, q)
    d = dd.div_d(dd.two_sum(p, -q), q)
    near = (d[0] >= _SQRT_HALF_M1) & (d[0] <= _SQRT2_M1)
    z = _zero(p)
    close = m.log1p((xp.where(near, d[0], z), xp.where(near, d[1], z)))
    far = dd.add(m.log(p), dd.neg(m.log(q)))
    return xp.where(near, close[0], far[0]), xp.where(near, close[1], far[1])


def _pick(ok: Array, precise: Array, plain: Array) -> Array:
    """The double-double result where the inputs are regular and it did not overflow, else the
    plain formula (which carries the boundary values and the overflow to ±inf)."""
    xp = dd.xp(plain)
    return xp.where(ok & xp.isfinite(precise), precise, plain)


def _positive(*xs: Array) -> Array:
    xp = dd.xp(xs[0])
    ok = xp.isfinite(xs[0]) & (xs[0] > 0)
    for x in xs[1:]:
        ok = ok & xp.isfinite(x) & (x > 0)
    return ok


# ----------------------------------------------------------------------------------------------
# entropy


def entropy(p: Array, precise: bool = True) -> Array:
    """``−Σ p log p`` over the last axis."""
    xp = dd.xp(p)
    plain = xp.where(p == 0, 0.0, -p * xp.log(p))
    if not precise:
        return plain.sum(-1)
    ok = _positive(p)
    normal, tiny = _products(p, dd.neg(dd.PRECISE.log(xp.where(ok, p, 1.0))), ok)
    return _sum_rows(normal, tiny, plain, ok)


def entropy_grad(p: Array, g: Array, precise: bool = True) -> Array:
    """``−g·(log p + 1)`` (``+∞·g`` at ``p = 0``)."""
    xp = dd.xp(p)
    plain = -g * (xp.log(p) + 1.0)
    if not precise:
        return plain
    ok = _positive(p)
    v = dd.collapse(dd.mul_d(dd.add_d(dd.PRECISE.log(xp.where(ok, p, 1.0)), 1.0), -g))
    return _pick(ok, v, plain)


# ----------------------------------------------------------------------------------------------
# kl_div (PyTorch semantics), elementwise terms on arrays of one shape


def _kl_div_plain(x: Array, t: Array, log_target: bool) -> Array:
    """The terms by the plain float formula, with their boundary values."""
    xp = dd.xp(x)
    if log_target:
        zero = ((t == -_INF) & ~xp.isnan(x)) | (t - x == 0)
        plain = xp.where(xp.isfinite(t) & xp.isinf(x), -x, xp.exp(t) * (t - x))  # e^t > 0 even if it underflows
        return xp.where(zero, 0.0, plain)
    return xp.where((t == 0) & ~xp.isnan(x), 0.0, t * (xp.log(t) - x))


def _kl_div_terms(x: Array, t: Array, log_target: bool):
    xp, m = dd.xp(x), dd.PRECISE
    if log_target:
        ok = xp.isfinite(t) & xp.isfinite(x)
        ts, xs = xp.where(ok, t, 0.0), xp.where(ok, x, 0.0)
        small = abs(ts) <= _EXPM1_MAX
        d = dd.two_sum(ts, -xs)
        e, k = m.exp(xp.where(small, 0.0, ts))
        normal, tiny = _exp_products(e, k, _masked(d, ~small))
        # |t| small: e^t·d = d + expm1(t)·d, the exact d summed apart so that it cancels exactly
        d = _masked(d, small)
        return [d, dd.add(normal, dd.mul(m.expm1(xp.where(small, ts, 0.0)), d))], tiny, ok
    ok = _positive(t) & xp.isfinite(x)
    d = dd.add_d(m.log(xp.where(ok, t, 1.0)), -xp.where(ok, x, 0.0))
    normal, tiny = _products(t, d, ok)
    return [normal], tiny, ok


def kl_div(x: Array, t: Array, log_target: bool, divisor: float | None, reduce: bool,
           precise: bool = True) -> Array:
    """Pointwise terms (``reduce=False``) or their sum divided by ``divisor`` (None: no division)."""
    plain = _kl_div_plain(x, t, log_target)
    if reduce and divisor == 0:  # an empty mean: 0/0
        return x.sum() * float("nan")
    if not precise:
        if not reduce:
            return plain
        return plain.sum() if divisor is None else plain.sum() / divisor
    parts, tiny, ok = _kl_div_terms(x, t, log_target)
    if not reduce:
        return _finish(functools.reduce(dd.add, parts), tiny, _special(plain, ok), plain)
    if divisor is not None:  # divide the terms (to 2^-104), so that the sum of a mean cannot overflow
        parts, tiny, plain = [dd.div_d(a, divisor) for a in parts], dd.div_d(tiny, divisor), plain / divisor

    def total(a):
        return dd.sum_last((a[0].reshape(1, -1), a[1].reshape(1, -1)))

    return _finish(functools.reduce(dd.add, map(total, parts)), total(tiny), _special(plain, ok).sum().reshape(1),
                   plain.sum().reshape(1))[0]


def _scaled(v, a: Array, divisor: float | None) -> Array:
    """``v·a/divisor`` rounded once (``v`` a double-double)."""
    v = dd.mul_d(v, a)
    return dd.collapse(v if divisor is None else dd.div_d(v, divisor))


def kl_div_grad(x: Array, t: Array, log_target: bool, a: Array, divisor: float | None,
                precise: bool = True, want: tuple[bool, bool] = (True, True)) -> tuple[Array | None, Array | None]:
    """``(∂/∂input, ∂/∂target)`` times the cotangent ``a`` (divided by ``divisor``); None for the
    gradients ``want`` leaves out."""
    xp, m = dd.xp(x), dd.PRECISE
    den = 1.0 if divisor is None else divisor
    gi = gt = None
    if log_target:
        ok_t = xp.isfinite(t)
        ok = ok_t & xp.isfinite(x)
        ts, xs = xp.where(ok_t, t, 0.0), xp.where(ok, x, 0.0)
        if want[1]:
            gt = a * xp.where(xp.isfinite(t) & xp.isinf(x), -x, xp.exp(t) * (t - x + 1.0)) / den
            gt = xp.where((t == -_INF) & xp.isfinite(x), 0.0, gt)
        if not precise:
            return (-a * xp.exp(t) / den if want[0] else None), gt
        e, k = m.exp(ts)
        if want[0]:
            gi = _pick(ok_t, dd.ldexp(_scaled(e, -a, divisor), k), -a * xp.exp(t) / den)
        if want[1]:
            gt = _pick(ok, dd.ldexp(_scaled(dd.mul(e, dd.add_d(dd.two_sum(ts, -xs), 1.0)), a, divisor), k), gt)
        return gi, gt
    if want[0]:
        gi = -a * t / den
        if precise:
            fin = xp.isfinite(t)
            gi = _pick(fin, _scaled((xp.where(fin, t, 0.0), _zero(t)), -a, divisor), gi)
    if want[1]:
        gt = a * (xp.log(t) + 1.0 - x) / den
        if precise:
            ok = _positive(t) & xp.isfinite(x)
            d = dd.add_d(dd.add_d(m.log(xp.where(ok, t, 1.0)), 1.0), -xp.where(ok, x, 0.0))
            gt = _pick(ok, _scaled(d, a, divisor), gt)
    return gi, gt


# ----------------------------------------------------------------------------------------------
# kl_divergence on probabilities (last axis)


def kl_divergence(p: Array, q: Array, precise: bool = True) -> Array:
    """``Σ p log(p/q)`` over the last axis."""
    xp = dd.xp(p)
    plain = xp.where((p == 0) & ~xp.isnan(q), 0.0, p * (xp.log(p) - xp.log(q)))
    if not precise:
        return plain.sum(-1)
    ok = _positive(p, q)
    d = _log_ratio(xp.where(ok, p, 1.0), xp.where(ok, q, 1.0), dd.PRECISE)
    normal, tiny = _products(p, d, ok)
    return _sum_rows(normal, tiny, plain, ok)


def kl_divergence_grad(p: Array, q: Array, g: Array, precise: bool = True) -> tuple[Array, Array]:
    """``(g·(log(p/q) + 1), −g·p/q)``; the q-gradient is 0 at ``p = 0`` (also ``q = 0``)."""
    xp = dd.xp(p)
    gp = g * (xp.log(p) - xp.log(q) + 1.0)
    gq = xp.where((p == 0) & ~xp.isnan(q), 0.0, -p / q) * g
    if not precise:
        return gp, gq
    ok = _positive(p, q)
    ps, qs = xp.where(ok, p, 1.0), xp.where(ok, q, 1.0)
    gp = _pick(ok, dd.collapse(dd.mul_d(dd.add_d(_log_ratio(ps, qs, dd.PRECISE), 1.0), g)), gp)
    return gp, _pick(ok, dd.collapse(dd.mul_d(dd.neg(_ratio(ps, qs)), g)), gq)
