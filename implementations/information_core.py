"""Entropy and KL-divergence kernels, written once for NumPy arrays and torch tensors.

Inputs are float64 (callers widen narrower dtypes and round the result once); reductions run
over the last axis (callers move ``dim`` there). Semantics and boundary values are those of
``lossoracle.reference.information``.

Accuracy: for float64 results (``precise=True``) every logarithm and exponential is a
double-double (:mod:`.doubledouble`); for float32 and narrower results the float64 hardware
functions (≈ 2^-52) leave 2^29 of headroom and are used instead (``precise=False``). Each term
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
    ns, z = dd.xp(h), _zero(h)
    return (ns.where(tiny, z, h), ns.where(tiny, z, lo)), (ns.where(tiny, h, z), ns.where(tiny, lo, z))


def _products(p: Array, d, ok: Array):
    """Terms ``p·d`` (``p ≥ 0`` double, ``d`` double-double finite where ``ok``; 0 elsewhere)."""
    ns = dd.xp(p)
    p = ns.where(ok, p, 0.0)
    tiny = p < _TINY
    h, lo = dd.mul_d(d, ns.where(tiny, p * _UP, p))
    return _tiers(h, lo, tiny)


def _exp_products(e, k: Array, d):
    """Terms ``E·2^k·d`` (the double-double exponential of :func:`doubledouble.exp`)."""
    ns = dd.xp(k)
    h, lo = dd.mul(e, d)
    tiny = k < -800.0
    s = ns.where(tiny, k + 300.0, k)
    return _tiers(dd.ldexp(h, s), dd.ldexp(lo, s), tiny)


def _masked(a, mask: Array):
    """A double-double with the entries outside ``mask`` set to 0."""
    ns = dd.xp(mask)
    return ns.where(mask, a[0], 0.0), ns.where(mask, a[1], 0.0)


def _special(plain: Array, ok: Array) -> Array:
    """The non-finite terms that irregular inputs give (0 elsewhere: a term of regular inputs is
    finite, even where its plain float evaluation overflows)."""
    ns = dd.xp(plain)
    return ns.where(ok | ns.isfinite(plain), 0.0, plain)


def _finish(normal, tiny, special: Array, plain: Array) -> Array:
    """Round ``normal + tiny·2^-300`` once. Non-finite terms (``special``, their sum) win; where
    finite terms overflow the double-double sum (|terms| near 2^1024), the plain float result
    (then ±inf, as IEEE arithmetic gives) replaces the NaN of ``inf − inf``."""
    ns = dd.xp(special)
    only_tiny = normal[0] == 0
    small = dd.collapse(tiny) * _DOWN
    out = dd.collapse(dd.add(normal, (tiny[0] * _DOWN, tiny[1] * _DOWN)))
    out = ns.where(only_tiny, small, out)
    out = ns.where(ns.isnan(out), plain, out)
    return ns.where(special != 0, special, out)


def _sum_rows(normal, tiny, plain: Array, ok: Array) -> Array:
    return _finish(dd.sum_last(normal), dd.sum_last(tiny), _special(plain, ok).sum(-1), plain.sum(-1))


def _math(precise: bool) -> dd.Transcendentals:
    return dd.PRECISE if precise else dd.HARDWARE


def _lift(a: Array, b: Array) -> tuple[Array, Array]:
    """``a·2^600, b·2^600`` where both are below 2^-900 (exact), so that the error-free products
    inside a division of one by the other do not underflow; ratios are unchanged."""
    ns = dd.xp(a)
    s = ns.where(ns.maximum(a, b) < _TINY, ns.full_like(a, 2.0**600), ns.ones_like(a))
    return a * s, b * s


def _ratio(p: Array, q: Array):
    """``p/q`` as a double-double for positive finite ``p``, ``q`` (tiny ``p`` scaled up and back)."""
    ns = dd.xp(p)
    s = ns.where(p < _TINY, ns.full_like(p, 2.0**600), ns.ones_like(p))
    h, lo = dd.div_d((p * s, _zero(p)), q)
    return h / s, lo / s


def _log_ratio(p: Array, q: Array, m: dd.Transcendentals):
    """``log(p/q)`` as a double-double for positive finite ``p``, ``q``."""
    ns = dd.xp(p)
    p, q = _lift(p, q)
    d = dd.div_d(dd.two_sum(p, -q), q)
    near = (d[0] >= _SQRT_HALF_M1) & (d[0] <= _SQRT2_M1)
    z = _zero(p)
    close = m.log1p((ns.where(near, d[0], z), ns.where(near, d[1], z)))
    far = dd.add(m.log(p), dd.neg(m.log(q)))
    return ns.where(near, close[0], far[0]), ns.where(near, close[1], far[1])


def _pick(ok: Array, precise: Array, plain: Array) -> Array:
    """The double-double result where the inputs are regular and it did not overflow, else the
    plain formula (which carries the boundary values and the overflow to ±inf)."""
    ns = dd.xp(plain)
    return ns.where(ok & ns.isfinite(precise), precise, plain)


def _positive(*xs: Array) -> Array:
    ns = dd.xp(xs[0])
    ok = ns.isfinite(xs[0]) & (xs[0] > 0)
    for x in xs[1:]:
        ok = ok & ns.isfinite(x) & (x > 0)
    return ok


# ----------------------------------------------------------------------------------------------
# entropy


def entropy(p: Array, precise: bool = True) -> Array:
    """``−Σ p log p`` over the last axis."""
    ns = dd.xp(p)
    ok = _positive(p)
    normal, tiny = _products(p, dd.neg(_math(precise).log(ns.where(ok, p, 1.0))), ok)
    plain = ns.where(p == 0, 0.0, -p * ns.log(p))
    return _sum_rows(normal, tiny, plain, ok)


def entropy_grad(p: Array, g: Array, precise: bool = True) -> Array:
    """``−g·(log p + 1)`` (``+∞·g`` at ``p = 0``)."""
    ns = dd.xp(p)
    ok = _positive(p)
    v = dd.collapse(dd.mul_d(dd.add_d(_math(precise).log(ns.where(ok, p, 1.0)), 1.0), -g))
    plain = -g * (ns.log(p) + 1.0)
    return _pick(ok, v, plain)


# ----------------------------------------------------------------------------------------------
# kl_div (PyTorch semantics), elementwise terms on arrays of one shape


def _kl_div_terms(x: Array, t: Array, log_target: bool, m: dd.Transcendentals):
    ns = dd.xp(x)
    if log_target:
        ok = ns.isfinite(t) & ns.isfinite(x)
        ts, xs = ns.where(ok, t, 0.0), ns.where(ok, x, 0.0)
        small = abs(ts) <= _EXPM1_MAX
        d = dd.two_sum(ts, -xs)
        e, k = m.exp(ns.where(small, 0.0, ts))
        normal, tiny = _exp_products(e, k, _masked(d, ~small))
        # |t| small: e^t·d = d + expm1(t)·d, the exact d summed apart so that it cancels exactly
        d = _masked(d, small)
        parts = [d, dd.add(normal, dd.mul(m.expm1(ns.where(small, ts, 0.0)), d))]
        diff = t - x
        zero = ((t == -_INF) & ~ns.isnan(x)) | (diff == 0)
        plain = ns.where(ns.isfinite(t) & ns.isinf(x), -x, ns.exp(t) * diff)  # e^t > 0 even if it underflows
        plain = ns.where(zero, 0.0, plain)
        return parts, tiny, plain, ok
    ok = _positive(t) & ns.isfinite(x)
    d = dd.add_d(m.log(ns.where(ok, t, 1.0)), -ns.where(ok, x, 0.0))
    normal, tiny = _products(t, d, ok)
    plain = ns.where((t == 0) & ~ns.isnan(x), 0.0, t * (ns.log(t) - x))
    return [normal], tiny, plain, ok


def kl_div(x: Array, t: Array, log_target: bool, divisor: float | None, reduce: bool,
           precise: bool = True) -> Array:
    """Pointwise terms (``reduce=False``) or their sum divided by ``divisor`` (None: no division)."""
    parts, tiny, plain, ok = _kl_div_terms(x, t, log_target, _math(precise))
    if not reduce:
        return _finish(functools.reduce(dd.add, parts), tiny, _special(plain, ok), plain)
    if divisor is not None:  # divide the terms (to 2^-104), so that the sum of a mean cannot overflow
        if divisor == 0:  # an empty mean: 0/0
            return x.sum() * float("nan")
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
                precise: bool = True) -> tuple[Array, Array]:
    """``(∂/∂input, ∂/∂target)`` times the cotangent ``a`` (divided by ``divisor``)."""
    ns, m = dd.xp(x), _math(precise)
    den = 1.0 if divisor is None else divisor
    if log_target:
        ok_t = ns.isfinite(t)
        ok = ok_t & ns.isfinite(x)
        ts, xs = ns.where(ok_t, t, 0.0), ns.where(ok, x, 0.0)
        e, k = m.exp(ts)
        gi = _pick(ok_t, dd.ldexp(_scaled(e, -a, divisor), k), -a * ns.exp(t) / den)
        gt = dd.ldexp(_scaled(dd.mul(e, dd.add_d(dd.two_sum(ts, -xs), 1.0)), a, divisor), k)
        plain = a * ns.where(ns.isfinite(t) & ns.isinf(x), -x, ns.exp(t) * (t - x + 1.0)) / den
        plain = ns.where((t == -_INF) & ns.isfinite(x), 0.0, plain)
        return gi, _pick(ok, gt, plain)
    ok = _positive(t) & ns.isfinite(x)
    fin = ns.isfinite(t)
    gi = _scaled((ns.where(fin, t, 0.0), _zero(t)), -a, divisor)
    gi = _pick(fin, gi, -a * t / den)
    d = dd.add_d(dd.add_d(m.log(ns.where(ok, t, 1.0)), 1.0), -ns.where(ok, x, 0.0))
    gt = _scaled(d, a, divisor)
    return gi, _pick(ok, gt, a * (ns.log(t) + 1.0 - x) / den)


# ----------------------------------------------------------------------------------------------
# kl_divergence on probabilities (last axis)


def kl_divergence(p: Array, q: Array, precise: bool = True) -> Array:
    """``Σ p log(p/q)`` over the last axis."""
    ns = dd.xp(p)
    ok = _positive(p, q)
    d = _log_ratio(ns.where(ok, p, 1.0), ns.where(ok, q, 1.0), _math(precise))
    normal, tiny = _products(p, d, ok)
    plain = ns.where((p == 0) & ~ns.isnan(q), 0.0, p * (ns.log(p) - ns.log(q)))
    return _sum_rows(normal, tiny, plain, ok)


def kl_divergence_grad(p: Array, q: Array, g: Array, precise: bool = True) -> tuple[Array, Array]:
    """``(g·(log(p/q) + 1), −g·p/q)``; the q-gradient is 0 at ``p = 0`` (also ``q = 0``)."""
    ns = dd.xp(p)
    ok = _positive(p, q)
    ps, qs = ns.where(ok, p, 1.0), ns.where(ok, q, 1.0)
    gp = dd.collapse(dd.mul_d(dd.add_d(_log_ratio(ps, qs, _math(precise)), 1.0), g))
    gp = _pick(ok, gp, g * (ns.log(p) - ns.log(q) + 1.0))
    gq = dd.collapse(dd.mul_d(dd.neg(_ratio(ps, qs)), g))
    plain = ns.where((p == 0) & ~ns.isnan(q), 0.0, -p / q) * g
    return gp, _pick(ok, gq, plain)
