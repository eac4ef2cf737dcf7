"""Information-theory oracles: entropy, PyTorch's ``kl_div``, and KL divergence on probabilities.

Definitions (natural logarithm; Cover & Thomas, *Elements of Information Theory*, 2nd ed., eqs.
2.1 and 2.26; PyTorch docs ``torch.nn.functional.kl_div``; CONVENTIONS.md §2–§3):

- ``entropy(p, dim=-1)``: ``H(p) = −Σ_j p_j log p_j`` along ``dim``. Rows are taken as given —
  they need not sum to 1, and entries above 1 give negative terms. Convention ``normalize=True``
  (``scipy.stats.entropy``) divides each row by its sum first (an all-zero row is 0/0 = NaN).
- ``kl_div(input, target, reduction="mean", log_target=False)``: input is ``log q``; pointwise
  ``l = p·(log p − input)`` with ``p = target``, or ``l = e^t·(t − input)`` with ``t = target = log p``
  when ``log_target``. Reductions: ``none``; ``sum``; ``mean`` = Σ/numel (PyTorch warns that this is
  not the KL divergence); ``batchmean`` = Σ/``input.size(0)`` (no division for 0-dim input).
  Empty ``mean``/``batchmean`` are 0/0 = NaN.
- ``kl_divergence(p, q, dim=-1)``: ``D(p‖q) = Σ_j p_j log(p_j/q_j)`` along ``dim``. Conventions:
  ``generalized=True`` adds ``q_j − p_j`` per term (SciPy's ``special.kl_div``, ≥ 0 for any
  non-negative rows); ``normalize=True`` divides both rows by their sums first
  (``scipy.stats.entropy(pk, qk)``).

Values at the boundary (exact spec): a term with ``p = 0`` is 0 whatever the other argument
(``0·log 0 = 0``, also when ``q = 0`` or ``input = −∞``; for ``log_target``, ``t = −∞`` is ``p = 0``);
``p > 0 = q`` (``input = −∞``) gives ``+∞``; ``p = +∞`` gives ``−∞`` in entropy. NaN in any argument
of a term propagates (a NaN input makes its term, and every reduction over it, NaN).
Negative probabilities are outside the domain: implementations raise ``ValueError``.

Gradients at the boundary: the closed-form partial derivative, evaluated in the extended reals,
with the limit taken along that coordinate where a ``0·∞`` form has one; an indeterminate
``∞ − ∞`` gives NaN. Mathematically the one-sided derivative of ``−x log x`` at ``0⁺`` is ``+∞``.

============================  ==========================  =====================================
quantity                      formula                     boundary values
============================  ==========================  =====================================
entropy ∂/∂p                  −(log p + 1)                p = 0: +∞
kl_div ∂/∂input               −p  (log_target: −e^t)      always finite (0 at p = 0)
kl_div ∂/∂target              log p + 1 − input           p = 0: −∞; input = −∞ < p: +∞;
                                                          p = 0 and input = −∞: NaN
kl_div ∂/∂target (log_target) e^t (t − input + 1)         t = −∞: 0 (e^t·t → 0), NaN if input
                                                          is ±∞; input = −∞: +∞
kl_divergence ∂/∂p            log(p/q) + 1 (gen.: −1)     p = 0 < q: −∞; q = 0 < p: +∞;
                                                          p = q = 0: NaN
kl_divergence ∂/∂q            −p/q  (gen.: 1 − p/q)       p = 0: 0 (gen.: 1) — the term is
                                                          identically 0 in q; q = 0 < p: −∞
============================  ==========================  =====================================

Libraries differ here (CONVENTIONS.md §2, §12 item 14): ``torch.special.entr`` and JAX give
``+∞`` for the entropy gradient at 0 (as the spec); PyTorch's ``kl_div`` computes
``xlogy(p, p) − p·input``, so ``p = 0`` with ``input = −∞`` is ``0·(−∞) = NaN`` and its target
gradient at ``p = 0`` is NaN (xlogy's second-argument gradient). Convention
``zero_target_grad="nan"`` models the latter for callers who want to accept it.

Hazards and remedies: ``log p − input`` and ``log(p/q)`` cancel when ``q ≈ p``; KL sums cancel
across terms of both signs; ``log p + 1`` cancels at ``p ≈ 1/e``; ``e^t(t − input)`` summed over
elements cancels where ``t`` is tiny. The oracle forms ``log(p/q)`` from the exact ratio (never
``log p − log q`` of rounded logs), differences of inputs exactly, ``p·input`` exactly (a separate
summand of the exact reduction), ``e^t·d`` as ``d + expm1(t)·d`` for ``|t| < 1``; it works at 192
bits and :func:`lossoracle.mpfuncs.stable` re-runs it at doubled precision until the float64
roundings agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import mpmath
import numpy as np
from mpmath import mpf

from mpmath import mp
from mpmath.libmp import (finf, fnan, fninf, fone, from_float, from_int, fzero, mpf_add, mpf_div, mpf_mul, mpf_neg,
                          mpf_pos, mpf_sub)

from lossoracle.mpfuncs import (EXACT, cancel_bound, certify, exact_sub, log_raw, mag, memo, mp_array, mp_sum,
                                sum_bound, sum_raw, to_mp, to_raw, workprec)
from lossoracle.spec import Arg, Case, Convention, Spec
from lossoracle.strategies import GRIDS, logits, probabilities, rng_for, to_grid

from .common import rows

_NAN, _INF = mpmath.nan, mpmath.inf
KL_REDUCTIONS = ("none", "sum", "mean", "batchmean")


def _isnan(*xs) -> bool:
    return any(mpmath.isnan(x) for x in xs)


@memo
def _log(x: mpf) -> mpf:
    """``log x`` in the extended reals (``log 0 = −∞``); NaN outside the domain (x < 0); kept: the
    value and the VJP share it."""
    if mpmath.isnan(x) or x < 0:
        return _NAN
    return mpmath.log(x) if x != 0 else -_INF


def _ratio(p: mpf, q: mpf) -> mpf:
    """``p/q`` for ``p, q ≥ 0`` in the extended reals: ``p/0 = +∞`` for ``p > 0``, ``0/0`` = NaN."""
    if _isnan(p, q) or p < 0 or q < 0 or (p == 0 and q == 0) or (mpmath.isinf(p) and mpmath.isinf(q)):
        return _NAN
    return _INF if q == 0 else p / q


def _xlogx(p: mpf) -> mpf:
    """``p log p`` with ``0·log 0 = 0``."""
    return mpf(0) if p == 0 else p * _log(p)


def _rel_entr(p: mpf, q: mpf, generalized: bool) -> list[mpf]:
    """``p log(p/q)`` (``+ q − p`` generalized, as exact summands) with the boundary values of the
    module docstring."""
    if _isnan(p, q) or p < 0 or q < 0:
        return [_NAN]
    lin = [q, -p] if generalized else []
    return lin if p == 0 else [p * _log(_ratio(p, q)), *lin]


def _normalized(row: list) -> tuple[list, mpf]:
    """The row divided by its sum (NaN entries for a zero sum), and the sum."""
    s = mp_sum(row)
    return [x / s if s != 0 else _NAN for x in row], s


def _rowwise(x, dim: int, fn) -> np.ndarray:
    """``fn(row) -> mpf`` for every row along ``dim``; the result has the other axes' shape."""
    r, lead = rows(x, dim)
    return mp_array([fn(list(row)) for row in r], lead)


# ----------------------------------------------------------------------------------------------
# The default conventions on raw libmp tuples: the same libmp calls, precision and rounding as the
# object-level formulas (every value bit for bit theirs), without the mpf object layer, for float
# arrays with finite non-negative probabilities; anything else takes the object path, which is the
# definition.

_make = mp.make_mpf
_ONE = from_int(1)


def _raw_rows(arrays: list, dim: int) -> tuple[list, tuple, int] | None:
    """Flat raw class-last rows of each array (same shape, finite, non-negative), their lead shape
    and row length; None where the raw path does not apply."""
    shape = np.shape(arrays[0])
    nd = len(shape)
    if not nd or not -nd <= dim < nd:
        return None
    d = dim % nd
    out = []
    for a in arrays:
        a = np.asarray(a)
        if a.shape != shape or a.dtype.kind != "f":
            return None
        r = to_raw(a if d == nd - 1 else np.ascontiguousarray(np.moveaxis(a, d, -1)))
        for t in r:
            if t[0] or (not t[1] and t[2]):  # negative, ±inf, NaN
                return None
        out.append(r)
    return out, shape[:d] + shape[d + 1:], shape[d]


def _raw_row_cotangents(grad_output, lead: tuple) -> list | None:
    g = np.asarray(grad_output)
    if g.dtype.kind != "f":
        return None
    return to_raw(g if g.shape == lead else np.ascontiguousarray(np.broadcast_to(g, lead)))


def _raw_out(vals: list, shape: tuple):
    out = mp_array([_make(v) for v in vals], shape)
    return out[()] if out.ndim == 0 else out


def _raw_grad(vals: list, lead: tuple, C: int, dim: int) -> np.ndarray:
    out = mp_array([_make(v) for v in vals], (*lead, C))
    return out if dim in (-1, len(lead)) else np.moveaxis(out, -1, dim)


def _grad_bounds(bounds: list, lead: tuple, C: int, dim: int) -> list:
    """Element bounds in the order of :func:`_raw_grad`'s array."""
    if dim in (-1, len(lead)):
        return bounds
    return np.moveaxis(mp_array(bounds, (*lead, C)), -1, dim).reshape(-1).tolist()


def _entropy_raw(p, dim: int, grad_output=None):
    """:func:`entropy` (not normalized) or its VJP on raw tuples, with the error bounds that
    :func:`~lossoracle.mpfuncs.stable` may use (:func:`~lossoracle.mpfuncs.certify`; u = 2^−P):
    each term ``p·log p`` is within (1 + 2u)(1 + u) − 1 ≤ 4u relative, summed exactly and rounded
    once (:func:`~lossoracle.mpfuncs.sum_bound`); the gradient ``(−g)·(log p + 1)``: the sum's
    operand ``log p`` within 2u|log p|, then two roundings
    (:func:`~lossoracle.mpfuncs.cancel_bound`). Infinities come from ``p = 0`` alone."""
    rr = _raw_rows([p], dim)
    if rr is None:
        return None
    (P,), lead, C = rr
    prec, rnd = mp._prec_rounding
    if grad_output is None:
        vals, bounds = [], []
        for i in range(math.prod(lead)):  # −Σ p log p, the terms at p = 0 (exactly 0) left out
            terms = [mpf_mul(v, log_raw(v, prec, rnd), prec, rnd) for v in P[i * C:(i + 1) * C] if v[1]]
            total = mpf_pos(sum_raw(terms, prec, rnd), prec, rnd)
            vals.append(mpf_neg(total, prec, rnd))
            bounds.append(sum_bound([mag(t) + 2 for t in terms], total))
        out = _raw_out(vals, lead)
        certify(out, bounds)
        return out
    G = _raw_row_cotangents(grad_output, lead)
    if G is None:
        return None
    vals, bounds = [], []
    for r, g in enumerate(G):
        ng = mpf_neg(g, prec, rnd)
        for v in P[r * C:(r + 1) * C]:
            lg = log_raw(v, prec, rnd)
            d = mpf_add(lg, _ONE, prec, rnd)
            vals.append(mpf_mul(ng, d, prec, rnd))
            bounds.append(EXACT if not v[1] else cancel_bound(mag(lg) + 1 if lg[1] else -9999, d, 1))
    out = {"p": _raw_grad(vals, lead, C, dim)}
    certify(out, _grad_bounds(bounds, lead, C, dim))
    return out


def _kl_divergence_raw(p, q, dim: int, grad_output=None):
    """:func:`kl_divergence` (not generalized, not normalized) or its VJP on raw tuples, with
    certified error bounds (u = 2^−P): ``L = log(p/q)`` of the rounded ratio is within
    ``2u|L| + 1.01u`` (the ratio's rounding moves the logarithm by log(1 + u)), the term ``p·L``
    within ``u(3|p·L| + 1.01p)``, the sum rounded once; ``∂/∂p = g·(L + 1)`` as a cancelling sum
    with two roundings, ``∂/∂q = g·(−p/q)`` two roundings. Infinities and NaN come from zeros of
    the inputs alone."""
    rr = _raw_rows([p, q], dim)
    if rr is None:
        return None
    (P, Q), lead, C = rr
    prec, rnd = mp._prec_rounding

    def log_ratio(a, b):  # log(p/q), q > 0 or p/0 = +inf
        return log_raw(mpf_div(a, b, prec, rnd) if b[1] else finf, prec, rnd)

    if grad_output is None:
        vals, bounds = [], []
        for i in range(math.prod(lead)):  # Σ p log(p/q), the terms at p = 0 (exactly 0) left out
            terms, errs = [], []
            for a, b in zip(P[i * C:(i + 1) * C], Q[i * C:(i + 1) * C]):
                if a[1]:
                    t = mpf_mul(a, log_ratio(a, b), prec, rnd)
                    terms.append(t)
                    errs.append(max(mag(t) + 2 if t[1] else -9999, mag(a) + 1) + 1)  # 3.01u|t| + 1.02u·p
            total = mpf_pos(sum_raw(terms, prec, rnd), prec, rnd)
            vals.append(total)
            bounds.append(sum_bound(errs, total))
        out = _raw_out(vals, lead)
        certify(out, bounds)
        return out
    G = _raw_row_cotangents(grad_output, lead)
    if G is None:
        return None
    gp, gq, bp, bq = [], [], [], []
    for r, g in enumerate(G):
        for a, b in zip(P[r * C:(r + 1) * C], Q[r * C:(r + 1) * C]):
            lr = log_ratio(a, b) if a[1] or b[1] else fnan  # log(0/0) = NaN
            d = mpf_add(lr, _ONE, prec, rnd)
            gp.append(mpf_mul(g, d, prec, rnd))
            bp.append(EXACT if not (a[1] and b[1]) else cancel_bound(max(mag(lr) + 1 if lr[1] else 0, 1) + 1, d, 1))
            d = fzero if not a[1] else (fninf if not b[1] else mpf_div(mpf_neg(a, prec, rnd), b, prec, rnd))
            gq.append(mpf_mul(g, d, prec, rnd))  # (−p/q + 0: the object path's + 0 is exact)
            bq.append(2 if a[1] and b[1] else EXACT)
    out = {"p": _raw_grad(gp, lead, C, dim), "q": _raw_grad(gq, lead, C, dim)}
    certify(out, _grad_bounds(bp, lead, C, dim) + _grad_bounds(bq, lead, C, dim))
    return out


def _kl_div_raw(input, target, reduction: str, grad_output=None):
    """:func:`kl_div` (``log_target`` False, ``zero_target_grad`` "limit") or its VJP on raw
    tuples, with certified error bounds (u = 2^−P): ``p log p`` within 4u relative, ``p·input``
    exact, sums rounded once, a mean's division one more rounding; ``∂/∂input = (−a)·p`` and
    ``∂/∂target = a·(log p + (1 − input))`` (the logarithm within 2u|log p|), ``a`` the cotangent
    (one rounding under a mean). Infinities come from ``p = 0`` alone."""
    x, t = np.asarray(input), np.asarray(target)
    if x.shape != t.shape or not x.size or reduction not in KL_REDUCTIONS:
        return None
    X, T = to_raw(x), to_raw(t)
    if X is None or T is None or any(not v[1] and v[2] for v in X) or any(v[0] or (not v[1] and v[2]) for v in T):
        return None
    prec, rnd = mp._prec_rounding
    shape = x.shape
    if grad_output is None:
        parts = [(mpf_mul(b, log_raw(b, prec, rnd), prec, rnd), mpf_neg(mpf_mul(b, a, 0), prec, rnd)) if b[1]
                 else (fzero,) for a, b in zip(X, T)]  # p log p − p·input (the product exact)
        errs = [mag(s[0]) + 2 if s[0][1] else None for s in parts]
        if reduction == "none":
            vals = [mpf_pos(sum_raw(s, prec, rnd), prec, rnd) for s in parts]
            out = _raw_out(vals, shape)
            certify(out, [sum_bound([] if e is None else [e], v) for e, v in zip(errs, vals)])
            return out
        total = mpf_pos(sum_raw([v for s in parts for v in s], prec, rnd), prec, rnd)
        den = _kl_denominator(reduction, shape)
        out = _make(total if den is None else mpf_div(total, from_int(den), prec, rnd))
        k = sum_bound([e for e in errs if e is not None], total)
        certify(out, [k + 2 if k is not None and k != EXACT else k])  # the division: one more rounding
        return out
    if reduction == "none":
        g = np.asarray(grad_output)
        if g.dtype.kind != "f":
            return None
        A = to_raw(g if g.shape == shape else np.ascontiguousarray(np.broadcast_to(g, shape)))
    else:
        g = from_float(float(np.asarray(grad_output, dtype=np.float64).reshape(-1)[0]))
        den = _kl_denominator(reduction, shape)
        A = [g if den is None else mpf_div(g, from_int(den), prec, rnd)] * x.size
    gx, gt, bx, bt = [], [], [], []
    for a, xi, ti in zip(A, X, T):
        gx.append(mpf_mul(mpf_neg(a, prec, rnd), ti, prec, rnd))
        bx.append(2)
        lg = log_raw(ti, prec, rnd)
        d = mpf_add(lg, mpf_sub(fone, xi, 0), prec, rnd)
        gt.append(mpf_mul(a, d, prec, rnd))
        bt.append(EXACT if not ti[1] else cancel_bound(mag(lg) + 1 if lg[1] else -9999, d, 2))
    out = {"input": mp_array([_make(v) for v in gx], shape), "target": mp_array([_make(v) for v in gt], shape)}
    certify(out, bx + bt)
    return out


# ----------------------------------------------------------------------------------------------
# entropy


def _entropy_row(row: list, normalize: bool) -> mpf:
    if normalize and row:
        row, _ = _normalized(row)
    return -mp_sum(_xlogx(v) for v in row)


def entropy(p, dim: int = -1, normalize: bool = False):
    """Exact ``H(p) = −Σ p log p`` along ``dim`` (object array, or mpf for 1-D ``p``)."""
    with workprec():
        if not normalize and (out := _entropy_raw(p, dim)) is not None:
            return out
        out = _rowwise(p, dim, lambda row: _entropy_row(row, normalize))
        return out[()] if out.ndim == 0 else out


def _row_cotangent(grad_output, lead: tuple[int, ...]) -> list:
    return np.broadcast_to(to_mp(grad_output), lead).reshape(-1).tolist()


def entropy_grad(grad_output, p, dim: int = -1, normalize: bool = False) -> dict[str, np.ndarray]:
    """VJP: ``−g·(log p_j + 1)``; normalized, ``−g·(log u_j + H(u))/s`` with ``u = p/s``."""
    with workprec():
        if not normalize and (out := _entropy_raw(p, dim, grad_output)) is not None:
            return out
        r, lead = rows(p, dim)
        gs = _row_cotangent(grad_output, lead)
        out = []
        for row, g in zip(r, gs):
            row = list(row)
            if normalize:
                u, s = _normalized(row)
                h = _entropy_row(u, False)
                out.extend(-g * (_log(v) + h) / s if s != 0 else _NAN for v in u)
            else:
                out.extend(-g * (_log(v) + 1) for v in row)
        return {"p": np.moveaxis(mp_array(out, (*lead, r.shape[-1])), -1, dim)}


# ----------------------------------------------------------------------------------------------
# kl_div (PyTorch semantics)


def _exp_times(t: mpf, d: mpf) -> list[mpf]:
    """``e^t·d`` as summands: ``d + expm1(t)·d`` for ``|t| < 1`` (so that sums of such terms cancel
    exactly in their ``d`` parts), else the single product."""
    if mpmath.isfinite(t) and mpmath.isfinite(d) and abs(t) < 1:
        return [d, mpmath.expm1(t) * d]
    return [mpmath.exp(t) * d]


def _kl_div_summands(x: mpf, t: mpf, log_target: bool) -> list[mpf]:
    """One element's term as summands whose exact sum is the term: ``p log p − p·input`` (the
    product exact), or :func:`_exp_times` for ``log_target``."""
    if _isnan(x, t):
        return [_NAN]
    if log_target:
        return [mpf(0)] if t == -_INF else _exp_times(t, exact_sub(t, x))
    if t < 0:
        return [_NAN]
    if t == 0:
        return [mpf(0)]
    if not (mpmath.isfinite(x) and mpmath.isfinite(t)):
        return [t * (_log(t) - x)]
    return [t * _log(t), -mpmath.fmul(t, x, exact=True)]


def _kl_reduce(summands: list, reduction: str, shape: tuple[int, ...]):
    """The exact sum of every summand, divided as ``reduction`` says."""
    if reduction not in KL_REDUCTIONS:
        raise ValueError(f"reduction must be one of {KL_REDUCTIONS}, got {reduction!r}")
    total = mp_sum(summands)
    den = _kl_denominator(reduction, shape)
    return total if den is None else (total / den if den else _NAN)


def _kl_denominator(reduction: str, shape: tuple[int, ...]) -> int | None:
    """What the sum is divided by: numel (mean), size(0) (batchmean, none for 0-dim), or None."""
    if reduction == "mean":
        return int(np.prod(shape))
    if reduction == "batchmean" and len(shape):
        return int(shape[0])
    return None


def kl_div(input, target, reduction: str = "mean", log_target: bool = False,
           zero_target_grad: str = "limit"):
    """Exact ``kl_div`` (PyTorch semantics; ``zero_target_grad`` affects the gradient only)."""
    with workprec():
        if not log_target and (out := _kl_div_raw(input, target, reduction)) is not None:
            return out
        x, t = to_mp(input), to_mp(target)
        parts = [_kl_div_summands(a, b, log_target) for a, b in zip(x.reshape(-1), t.reshape(-1))]
        if reduction == "none":
            out = mp_array([mp_sum(s) for s in parts], x.shape)
            return out[()] if out.ndim == 0 else out
        return _kl_reduce([v for s in parts for v in s], reduction, x.shape)


def _kl_div_target_grad(x: mpf, t: mpf, log_target: bool, zero_target_grad: str) -> mpf:
    if log_target:
        if t == -_INF:
            return mpf(0) if mpmath.isfinite(x) else _NAN
        return mp_sum(_exp_times(t, mpmath.fadd(exact_sub(t, x), 1, exact=True)))
    if t == 0 and zero_target_grad == "nan":
        return _NAN
    return _log(t) + exact_sub(mpf(1), x)  # log 0 = −∞: −∞ for finite x, NaN for x = −∞ (∞ − ∞)


def kl_div_grad(grad_output, input, target, reduction: str = "mean", log_target: bool = False,
                zero_target_grad: str = "limit") -> dict[str, np.ndarray]:
    """VJP: ``∂/∂input = −a·p`` (``−a·e^t``), ``∂/∂target = a·(log p + 1 − input)``
    (``a·e^t(t − input + 1)``), ``a`` the cotangent each element receives from the reduction."""
    with workprec():
        if not log_target and zero_target_grad == "limit" and (
                out := _kl_div_raw(input, target, reduction, grad_output)) is not None:
            return out
        x, t = to_mp(input), to_mp(target)
        shape = x.shape
        if reduction == "none":
            a = np.broadcast_to(to_mp(grad_output), shape).reshape(-1).tolist()
        else:
            g = mpf(float(np.asarray(grad_output, dtype=np.float64).reshape(-1)[0]))
            den = _kl_denominator(reduction, shape)
            a = [g if den is None else g / den] * x.size if x.size else []
        gx, gt = [], []
        for ai, xi, ti in zip(a, x.reshape(-1), t.reshape(-1)):
            p = mpmath.exp(ti) if log_target else ti
            gx.append(-ai * p)
            gt.append(ai * _kl_div_target_grad(xi, ti, log_target, zero_target_grad))
        return {"input": mp_array(gx, shape), "target": mp_array(gt, shape)}


# ----------------------------------------------------------------------------------------------
# kl_divergence on probabilities


def _kl_row(p: list, q: list, generalized: bool, normalize: bool) -> mpf:
    if normalize and p:
        p, _ = _normalized(p)
        q, _ = _normalized(q)
        generalized = False  # Σ(q − p) = 0 for normalized rows
    return mp_sum(v for a, b in zip(p, q) for v in _rel_entr(a, b, generalized))


def kl_divergence(p, q, dim: int = -1, generalized: bool = False, normalize: bool = False):
    """Exact ``D(p‖q) = Σ p log(p/q)`` along ``dim``."""
    with workprec():
        if not generalized and not normalize and (out := _kl_divergence_raw(p, q, dim)) is not None:
            return out
        rp, lead = rows(p, dim)
        rq, _ = rows(q, dim)
        out = mp_array([_kl_row(list(a), list(b), generalized, normalize) for a, b in zip(rp, rq)], lead)
        return out[()] if out.ndim == 0 else out


def _kl_grads(p: mpf, q: mpf, generalized: bool) -> tuple[mpf, mpf]:
    """``(∂/∂p, ∂/∂q)`` of one term, with the boundary values of the module docstring."""
    if _isnan(p, q):
        return _NAN, _NAN
    gp = _log(_ratio(p, q)) + (0 if generalized else 1)
    if p == 0:
        gq = mpf(0)
    else:
        gq = -_INF if q == 0 else -p / q
    return gp, gq + (1 if generalized else 0)


def kl_divergence_grad(grad_output, p, q, dim: int = -1, generalized: bool = False,
                       normalize: bool = False) -> dict[str, np.ndarray]:
    """VJP: ``g·(log(p/q) + 1)`` and ``−g·p/q`` (generalized: ``g·log(p/q)``, ``g·(1 − p/q)``);
    normalized rows ``u = p/s``, ``v = q/r``: ``g·(log(u/v) − D)/s`` and ``g·(1 − u/v)/r``."""
    with workprec():
        if not generalized and not normalize and (out := _kl_divergence_raw(p, q, dim, grad_output)) is not None:
            return out
        rp, lead = rows(p, dim)
        rq, _ = rows(q, dim)
        gs = _row_cotangent(grad_output, lead)
        out_p, out_q = [], []
        for a, b, g in zip(rp, rq, gs):
            a, b = list(a), list(b)
            if normalize and a:
                u, s = _normalized(a)
                v, r = _normalized(b)
                d = _kl_row(u, v, False, False)
                for ui, vi in zip(u, v):
                    gp, gq = _kl_grads(ui, vi, False)
                    out_p.append(g * (gp - 1 - d) / s if s != 0 else _NAN)
                    out_q.append(g * (gq + 1) / r if r != 0 else _NAN)
                continue
            for ai, bi in zip(a, b):
                gp, gq = _kl_grads(ai, bi, generalized)
                out_p.append(g * gp)
                out_q.append(g * gq)
        shape = (*lead, rp.shape[-1])
        return {"p": np.moveaxis(mp_array(out_p, shape), -1, dim), "q": np.moveaxis(mp_array(out_q, shape), -1, dim)}


# ----------------------------------------------------------------------------------------------
# Reduction sizes (the log2(n) allowance)


def _row_terms(name: str):
    def terms(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> int:
        a = np.asarray(inputs[name])
        return int(a.shape[params.get("dim", -1)]) if a.ndim else 1

    return terms


def _kl_div_terms(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> int:
    return 1 if params.get("reduction", "mean") == "none" else int(np.size(inputs["input"]))


# ----------------------------------------------------------------------------------------------
# Edge catalogue and generated cases

_F = np.float64
_INV_E = 0.36787944117144233  # the double nearest 1/e: log p + 1 ≈ 2^-54.6 cancels
_SUB = (5e-324, 1e-310, 2.0**-1023)  # subnormals: the smallest, a mid one, the largest power of 2
_NEAR_P = np.array([[0.25, 0.5, 0.125, 0.125], [0.375, 0.375, 0.0625, 0.1875]])  # rows summing to 1
_ALTERNATE = np.array([1.0, -1.0, 1.0, -1.0])  # a perturbation that keeps the row sums


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=_F)


def _log_probs(rng, shape, grid: str) -> np.ndarray:
    """Log-probabilities (≤ 0) with a heavy tail, exact on ``grid``."""
    return -np.abs(logits(rng, shape, grid, 2.0))


def _entropy_cases() -> list[Case]:
    def c(id_, p, dim=-1, **kw):
        return Case(id_, {"p": _arr(p) if kw.get("raises") is not TypeError else np.asarray(p)}, {"dim": dim}, **kw)

    cases = [
        c("uniform_rows", [[0.25] * 4, [0.5, 0.5, 0.0, 0.0]]),
        c("one_hot_rows", np.eye(3)),
        c("zero_row", [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]], note="H = 0; gradient +inf at every 0"),
        c("subnormal_with_one", [[_SUB[0], 1.0], [_SUB[1], 0.5]]),
        c("all_subnormal_row", [[*_SUB, 0.0]], note="every term subnormal: the sum must not round term by term"),
        c("tiny_1e-300", [[1e-300, 1.0, 0.0]]),
        c("near_one_float64", [[1.0 - 2.0**-53, 2.0**-53]]),
        c("near_one_float32", [[1.0 - 2.0**-24, 2.0**-24]]),
        c("unnormalised_below_one", [[0.1, 0.2, 0.05]]),
        c("unnormalised_above_one", [[2.0, 3.0, 0.5], [1.5, 1.5, 1e-3]], note="entries > 1: negative terms"),
        c("mixed_sign_cancel", [[1.1, 0.03]], note="−1.1 log 1.1 + 0.105…: terms cancel to 3.5e-4"),
        c("inv_e_gradient", [[_INV_E, 1.0 - _INV_E]], note="log p + 1 ≈ 2^-54.6 in the gradient"),
        c("single_class", [[0.7], [1.0]]),
        c("one_dim", [0.2, 0.3, 0.5]),
        c("empty_batch", np.zeros((0, 5))),
        c("empty_classes", np.zeros((3, 0)), note="an empty sum: H = 0"),
        c("dim0", [[0.5, 0.25], [0.25, 0.75], [0.25, 0.0]], dim=0),
        c("spatial_dim1", probabilities(rng_for("entropy", "spatial"), (2, 3, 2), "half"), dim=1),
        c("nan_propagates", [[np.nan, 0.5], [0.25, 0.75]], note="NaN entry: NaN row, other rows exact"),
        c("infinite_entry", [[np.inf, 0.5]], note="−∞·log ∞ = −∞"),
        c("bad_integer_input", np.array([[1, 2], [3, 4]], dtype=np.int64), raises=TypeError,
          note="non-floating p"),
        c("bad_negative", [[0.5, -0.25]], raises=ValueError, note="negative probability"),
        c("bad_dim", [[0.5, 0.5]], dim=2, raises=ValueError, note="dim out of range"),
    ]
    for grid in GRIDS:
        for i, (shape, dim) in enumerate([((4, 5), -1), ((2, 3, 4), 1), ((1, 17), -1)]):
            rg = rng_for("entropy", grid, i)
            cases.append(c(f"random_{grid}_{i}", probabilities(rg, shape, grid), dim=dim))
        rg = rng_for("entropy", grid, "unnormalised")
        cases.append(c(f"random_unnormalised_{grid}", to_grid(probabilities(rg, (3, 6), grid) * 3.0, grid)))
    cases.append(c("random_float64_wide", probabilities(rng_for("entropy", "wide"), (3, 64), "float64")))
    return cases


def _kl_div_cases() -> list[Case]:
    def c(id_, x, t, raises=None, note="", **params):
        mk = _arr if raises is not TypeError else np.asarray
        return Case(id_, {"input": mk(x), "target": mk(t)}, params, raises=raises, note=note)

    r = rng_for("kl_div", "edge")
    x45, t45, lt45 = _log_probs(r, (4, 5), "half"), probabilities(r, (4, 5), "half"), _log_probs(r, (4, 5), "half")
    zt = t45.copy()
    zt[:, 0] = 0.0
    zx = x45.copy()
    zx[:2, 0] = -np.inf
    lt_zero = lt45.copy()
    lt_zero[:, 1] = -np.inf
    lt_zero[:2, 0] = -np.inf  # t = input = −inf there
    cases = []
    for red in KL_REDUCTIONS:
        cases += [
            c(f"basic_{red}", x45, t45, reduction=red),
            c(f"zero_target_{red}", x45, zt, reduction=red, note="p = 0: term 0, target gradient −inf"),
            c(f"zero_target_neginf_input_{red}", zx, zt, reduction=red,
              note="p = 0 and input = −inf: term 0 (PyTorch: NaN); target gradient NaN"),
            c(f"empty_{red}", np.zeros((0, 3)), np.zeros((0, 3)), reduction=red,
              note="0/0 = NaN" if red in ("mean", "batchmean") else ""),
            c(f"log_target_{red}", x45, lt45, reduction=red, log_target=True),
            c(f"log_target_zero_{red}", zx, lt_zero, reduction=red, log_target=True,
              note="t = −inf: term 0, target gradient 0 (NaN where input is −inf too)"),
            c(f"spatial_{red}", _log_probs(r, (2, 3, 2), "half"), probabilities(r, (2, 3, 2), "half"),
              reduction=red),
        ]
    with np.errstate(divide="ignore"):
        lp = np.log(t45)  # log p rounded to float64: input ≈ log p, the terms nearly vanish
    cases += [
        c("positive_target_neginf_input", [[-np.inf, -1.0]], [[0.5, 0.5]], reduction="none",
          note="q = 0 < p: +inf; input gradient −p"),
        c("one_hot_target", x45, np.eye(5)[[0, 4, 2, 1]], reduction="sum"),
        c("target_near_one", [[-1e-3, -7.0]], [[1.0 - 2.0**-53, 2.0**-53]], reduction="none"),
        c("subnormal_targets", [[-1.0, -700.0, 0.0]], [[_SUB[0], _SUB[1], _SUB[2]]], reduction="none"),
        c("subnormal_targets_sum", [[-1.0, -700.0, 0.0]], [[_SUB[0], _SUB[1], _SUB[2]]], reduction="sum",
          note="every term subnormal"),
        c("input_is_log_target_none", lp, t45, reduction="none",
          note="input = fl(log p): p(log p − input) cancels to ~1e-17·p"),
        c("input_is_log_target_sum", lp, t45, reduction="sum"),
        c("unnormalised", [[0.5, 2.0, -3.0]], [[1.5, 3.0, 0.25]], reduction="sum", note="q > 1 and p > 1"),
        c("scalar_batchmean", np.float64(-1.25), np.float64(0.375), reduction="batchmean",
          note="0-dim: batchmean does not divide"),
        c("scalar_mean", np.float64(-1.25), np.float64(0.375), reduction="mean"),
        c("one_dim_batchmean", [-0.5, -1.5, -3.0], [0.25, 0.5, 0.25], reduction="batchmean",
          note="size(0) is the number of classes"),
        c("nan_input", [[np.nan, -1.0]], [[0.5, 0.5]], reduction="none"),
        c("nan_input_zero_target", [[np.nan, -1.0]], [[0.0, 0.5]], reduction="none", note="0·NaN stays NaN"),
        c("nan_target_sum", [[-1.0, -1.0]], [[np.nan, 0.5]], reduction="sum"),
        c("log_target_neginf_input", [[-np.inf, -1.0]], [[-0.5, -1.0]], reduction="none", log_target=True),
        c("log_target_subnormal_exp", [[-1.0, 0.0, -3.0]], [[-740.0, -745.0, -720.0]], reduction="none",
          log_target=True, note="e^t subnormal"),
        c("log_target_subnormal_exp_sum", [[-1.0, 0.0, -3.0]], [[-740.0, -745.0, -720.0]], reduction="sum",
          log_target=True),
        c("log_target_unnormalised", [[0.0, -2.0]], [[5.0, 1.5]], reduction="sum", log_target=True),
        c("log_target_near_input", [[-0.5, -2.0]], [[-0.5 + 2.0**-40, -2.0 - 2.0**-30]], reduction="sum",
          log_target=True, note="t ≈ input: terms e^t(t − input) tiny"),
        c("bad_shape", x45, t45[:, :4], reduction="sum", raises=ValueError, note="shape mismatch"),
        c("bad_broadcast_shape", x45, t45[:1], reduction="sum", raises=ValueError,
          note="target (1, 5) broadcasts to input (4, 5) but must match it"),
        c("bad_reduction", x45, t45, reduction="avg", raises=ValueError, note="unknown reduction"),
        c("bad_integer_input", np.array([[-1, -2]]), np.array([[0, 1]]), reduction="sum", raises=TypeError,
          note="non-floating input"),
        c("bad_negative_target", x45[:1], -t45[:1] - 0.125, reduction="sum", raises=ValueError,
          note="negative target probability"),
    ]
    reductions = ("mean", "sum", "none", "batchmean")
    for grid in GRIDS:
        for i, red in enumerate(reductions):
            rg = rng_for("kl_div", grid, i)
            x = _log_probs(rg, (6, 7), grid) if i != 2 else logits(rg, (6, 7), grid, 2.0)
            lt = i % 2 == 1
            t = _log_probs(rg, (6, 7), grid) if lt else probabilities(rg, (6, 7), grid)
            cases.append(c(f"random_{grid}_{i}", x, t, reduction=red, log_target=lt))
    return cases


def _kl_divergence_cases() -> list[Case]:
    def c(id_, p, q, dim=-1, **kw):
        mk = _arr if kw.get("raises") is not TypeError else np.asarray
        return Case(id_, {"p": mk(p), "q": mk(q)}, {"dim": dim}, **kw)

    r = rng_for("kl_divergence", "edge")
    p45, q45 = probabilities(r, (4, 5), "half"), probabilities(r, (4, 5), "half")
    p_norm = p45 / p45.sum(-1, keepdims=True)
    cases = [
        c("same_distribution", p_norm, p_norm, note="KL(p‖p) = 0 exactly"),
        c("same_distribution_half", p45, p45),
        c("same_one_hot", np.eye(4), np.eye(4)),
        c("p_zero", [[0.0, 0.5, 0.5]], [[0.25, 0.25, 0.5]], note="0·log(0/q) = 0; p-gradient −inf"),
        c("q_zero", [[0.5, 0.5, 0.0]], [[1.0, 0.0, 0.0]], note="p > 0 = q: +inf"),
        c("both_zero", [[0.0, 1.0]], [[0.0, 1.0]], note="0·log(0/0) = 0; p-gradient NaN, q-gradient 0"),
        c("subnormal", [[_SUB[0], 0.5, _SUB[1]]], [[_SUB[1], 0.5, _SUB[0]]]),
        c("all_subnormal_row", [[*_SUB]], [[_SUB[2], _SUB[0], _SUB[1]]], note="every term subnormal"),
        c("near_one_float64", [[1.0 - 2.0**-53, 2.0**-53]], [[0.5, 0.5]]),
        c("near_one_float32", [[1.0 - 2.0**-24, 2.0**-24]], [[1.0 - 2.0**-23, 2.0**-23]]),
        c("q_near_p_2^-16", _NEAR_P, _NEAR_P + 2.0**-16 * _ALTERNATE,
          note="Σq = Σp: the first-order terms cancel, D ≈ Σ(q − p)²/2p ≈ 2^-33"),
        c("q_near_p_2^-40", _NEAR_P, _NEAR_P + 2.0**-40 * _ALTERNATE, note="D ≈ 2^-81 from terms ≈ 2^-42"),
        c("q_scaled_from_p", p45, to_grid(p45 * (1.0 + 2.0**-12), "float32"),
          note="log(p/q) ≈ −2^-12 for every term: log1p of the exact ratio"),
        c("one_hot_against_soft", np.eye(5)[[0, 4, 2, 1]], q45),
        c("unnormalised", [[2.0, 3.0, 0.5]], [[0.5, 4.0, 1.0]]),
        c("one_dim", [0.25, 0.75], [0.5, 0.5]),
        c("empty_batch", np.zeros((0, 4)), np.zeros((0, 4))),
        c("empty_classes", np.zeros((2, 0)), np.zeros((2, 0))),
        c("dim0", p45[:3, :2], q45[:3, :2], dim=0),
        c("spatial_dim1", probabilities(r, (2, 3, 2), "half"), probabilities(r, (2, 3, 2), "half"), dim=1),
        c("nan_p", [[np.nan, 0.5], [0.5, 0.5]], [[0.5, 0.5], [0.25, 0.75]]),
        c("nan_q_zero_p", [[0.0, 0.5]], [[np.nan, 0.5]], note="0·log(0/NaN) stays NaN"),
        c("bad_shape", p45, q45[:, :3], raises=ValueError, note="shape mismatch"),
        c("bad_negative_q", [[0.5, 0.5]], [[1.5, -0.5]], raises=ValueError, note="negative probability"),
        c("bad_integer_input", np.array([[1, 0]]), np.array([[0, 1]]), raises=TypeError, note="non-floating"),
        c("bad_dim", [[0.5, 0.5]], [[0.5, 0.5]], dim=-3, raises=ValueError, note="dim out of range"),
    ]
    for grid in GRIDS:
        for i, (shape, dim) in enumerate([((4, 5), -1), ((2, 3, 4), 1), ((1, 17), -1)]):
            rg = rng_for("kl_divergence", grid, i)
            cases.append(c(f"random_{grid}_{i}", probabilities(rg, shape, grid), probabilities(rg, shape, grid),
                           dim=dim))
    return cases


# ----------------------------------------------------------------------------------------------
# Budgets and specs


_HALF_NOTE = ("float16/bfloat16/float32: ours computes in float64 (hardware log/exp, ≈ 2^-52: 2^29 more than "
              "the result needs) and rounds once, so the budget applies unchanged.")
_DD_NOTE = ("float64: ours evaluates every logarithm and exponential in double-double (relative error "
            "≈ 2^-96) and sums terms in double-double, so it stays faithful through cancellation "
            "(KL(p‖q) with q ≈ p, input ≈ log p, log p + 1 at p ≈ 1/e, rows with terms of both signs) "
            "unless the result is below about 2^-45 of its natural scale (kl_div: region input_is_log_target).")


SPECS = (
    Spec(
        name="entropy",
        signature="entropy(p, dim=-1)",
        definition="H(p) = −Σ_j p_j log p_j along dim (natural log; 0·log 0 = 0; rows not normalised)",
        source="Cover & Thomas, Elements of Information Theory (2006), eq. 2.1; scipy.special.entr",
        args=(Arg("p", "probabilities", differentiable=True),),
        params={"dim": -1},
        oracle=entropy,
        gradient=entropy_grad,
        cases=_entropy_cases,
        conventions=(Convention("normalize", False, "divide each row by its sum first (scipy.stats.entropy); "
                                                    "an all-zero row gives NaN", values=(True,)),),
        reduced_terms=_row_terms("p"),
        edge_notes=("p = 0 contributes 0; its gradient is +inf (the one-sided derivative of −p log p)",
                    "rows need not sum to 1; entries > 1 give negative terms",
                    "an empty row (no classes) has H = 0",
                    "NaN propagates to its row; +inf gives −inf"),
    ),
    Spec(
        name="kl_div",
        signature='kl_div(input, target, reduction="mean", log_target=False)',
        definition="pointwise p·(log p − input), p = target (log_target: e^t·(t − input)); reductions none, sum, "
                   "mean = Σ/numel, batchmean = Σ/input.size(0) (0-dim: Σ)",
        source="PyTorch docs torch.nn.functional.kl_div / torch.nn.KLDivLoss; Kullback & Leibler (1951)",
        args=(Arg("input", "log_probabilities", differentiable=True),
              Arg("target", "probabilities_or_log_probabilities", differentiable=True)),
        params={"reduction": "mean", "log_target": False},
        oracle=kl_div,
        gradient=kl_div_grad,
        cases=_kl_div_cases,
        conventions=(Convention("zero_target_grad", "limit",
                                "target gradient at p = 0: 'limit' (−inf, the one-sided derivative) or 'nan' "
                                "(PyTorch's xlogy backward)", values=("nan",)),),
        reduced_terms=_kl_div_terms,
        edge_notes=("p = 0 contributes 0, also where input = −inf (PyTorch gives NaN there)",
                    "p > 0 with input = −inf (q = 0) gives +inf",
                    "empty input: mean and batchmean are 0/0 = NaN; sum is 0",
                    "target gradient at p = 0 is −inf (NaN where input = −inf); input gradient is −p"),
    ),
    Spec(
        name="kl_divergence",
        signature="kl_divergence(p, q, dim=-1)",
        definition="D(p‖q) = Σ_j p_j log(p_j/q_j) along dim (0·log(0/q) = 0; p > 0 = q gives +inf)",
        source="Cover & Thomas, Elements of Information Theory (2006), eq. 2.26; scipy.special.rel_entr",
        args=(Arg("p", "probabilities", differentiable=True), Arg("q", "probabilities", differentiable=True)),
        params={"dim": -1},
        oracle=kl_divergence,
        gradient=kl_divergence_grad,
        cases=_kl_divergence_cases,
        conventions=(
            Convention("generalized", False, "add q − p per term: x log(x/y) − x + y (scipy.special.kl_div)",
                       values=(True,)),
            Convention("normalize", False, "divide p and q by their row sums first (scipy.stats.entropy(pk, qk))",
                       values=(True,)),
        ),
        reduced_terms=_row_terms("p"),
        edge_notes=("p = 0 contributes 0 for every q ≥ 0 (also q = 0)",
                    "p > 0 = q gives +inf",
                    "p-gradient: −inf at p = 0 < q, NaN at p = q = 0; q-gradient 0 at p = 0"),
    ),
)
