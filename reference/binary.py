"""Binary cross-entropy oracles: on probabilities and on logits, with PyTorch's semantics.

Definitions (PyTorch ``torch.nn.functional.binary_cross_entropy`` and
``binary_cross_entropy_with_logits`` documentation; CONVENTIONS.md §5). Every argument is
elementwise over the input's shape; ``weight`` and ``pos_weight`` broadcast to it (numpy rules,
so a ``pos_weight`` of shape (C,) applies along the last dimension).

- Probabilities ``p ∈ [0, 1]``, targets ``y ∈ [0, 1]``:
  ``ℓ = −w·[y·log p + (1 − y)·log(1 − p)]`` with ``0·log 0 = 0`` — so ``ℓ = 0`` at ``p = y ∈ {0, 1}``
  and ``ℓ = +inf`` at ``p = 0, y > 0`` and at ``p = 1, y < 1``.
- Logits ``x``: ``ℓ = w·[pw·y·softplus(−x) + (1 − y)·softplus(x)]``
  ``= −w·[pw·y·log σ(x) + (1 − y)·log(1 − σ(x))]``, ``pw`` = ``pos_weight`` (default 1).
- Reductions: ``none``; ``sum``; ``mean`` = ``Σ w·ℓ / numel`` (weights do not normalise;
  an empty mean is 0/0 = NaN).
- A zero coefficient annihilates its term even when the logarithm is infinite (``0·log 0 = 0``,
  ``pos_weight = 0`` at ``x = −inf``), and a zero ``weight`` masks its element (its loss and
  gradients are 0 — the limit of ``w·ℓ``). NaN in any argument of an element gives NaN.

Gradients (vector-Jacobian products with cotangent ``a``; ``a/numel`` under ``mean``):
``∂ℓ/∂p = w·(p − y)/(p(1 − p))`` (one-sided at ``p ∈ {0, 1}``: ``(1 − y)/(1 − p) − y/p`` with
``0/0`` terms dropped), ``∂ℓ/∂y = w·log((1 − p)/p)``;
``∂ℓ/∂x = w·[(1 − y)·σ(x) − pw·y·σ(−x)]``, ``∂ℓ/∂y = w·[pw·softplus(−x) − softplus(x)]``
(``= −w·x`` when ``pw = 1``). ``weight`` and ``pos_weight`` are not differentiated.

Conventions (``binary_cross_entropy`` only): ``log_floor`` clamps each logarithm below
(PyTorch: −100, so the loss of one element is at most 100·w); ``grad_floor`` selects PyTorch's
backward, which differentiates the *unclamped* loss and floors the denominator:
``w·(p − y)/max(p(1 − p), 1e-12)`` and ``w·log((1 − p)/p)`` — inconsistent with its own clamped
forward (pytorch#103316). Without ``grad_floor`` the gradient is the derivative of the forward
as specified (zero where a log is clamped).

``probability_clip = c`` clips ``p`` to ``[c, 1 − c]`` first (``clip_high``: the upper bound as an
implementation rounds ``1 − c``; the gradient reaches ``p`` only strictly inside, as
``torch.clamp``'s backward); ``mean_over="weights"`` divides a mean by ``Σ w`` (both losses).

Hazards and remedies: ``log(1 − p)`` and ``σ(x) − y`` lose everything when formed by rounding
``1 − p`` or ``σ(x)`` — the oracle forms ``1 − p``, ``1 − y`` and ``(1 − y) − pw·y`` exactly,
uses ``softplus(±x)`` (no log of a sigmoid), ``−σ(−x)`` for ``σ(x) − 1``, ``expm1`` where the two
sigmoids meet near ``x = 0``, and splits ``softplus(|x|) = |x| + softplus(−|x|)`` so a large
``|x|`` never cancels against itself. Genuine cancellation remains in
``(1 − y)·σ(x) − pw·y·σ(−x)`` and ``pw·softplus(−x) − softplus(x)`` for soft targets (a float
implementation is accurate to eps times the terms there), and in ``log(1 − p) − log p`` as
computed by libraries near ``p = 1/2``; the grading's condition numbers (:mod:`lossoracle.conditioning`)
say how much of that cancellation is genuine.
"""

from __future__ import annotations

import mpmath
import numpy as np
from mpmath import mpf

from mpmath import mp
from mpmath.libmp import (finf, fnan, fninf, fone, from_float, from_int, fzero, mpf_add, mpf_div, mpf_mul, mpf_neg,
                          mpf_pos, mpf_sub)

from lossoracle.mpfuncs import (EXACT, cancel_bound, certify, exact_sub, exp_raw, log1pexp_raw, mag, sigmoid_raw,
                                sum_bound, exp, log1pexp, log_raw, memo, mp_array, sigmoid, sum_raw, to_mp, to_raw,
                                workprec)
from lossoracle.spec import DTYPE_EPS, Arg, Case, Convention, InDtype, Spec
from lossoracle.strategies import GRIDS, logits, probabilities, rng_for, to_grid

from .common import REDUCTIONS, reduce


class _Elements:
    """Flat exact operands of an elementwise binary loss, every argument broadcast to the input."""

    def __init__(self, input, target, weight=None, pos_weight=None) -> None:
        self.shape = np.shape(input)
        self.x = to_mp(input).reshape(-1).tolist()
        self.y = to_mp(target).reshape(-1).tolist()
        self.w = self._spread(weight)
        self.pw = self._spread(pos_weight)

    def _spread(self, a) -> list:
        if a is None:
            return [mpf(1)] * len(self.x)
        return to_mp(np.broadcast_to(np.asarray(a, dtype=np.float64), self.shape)).reshape(-1).tolist()

    def rows(self):
        return zip(self.x, self.y, self.w, self.pw)

    def denominator(self, mean_over: str) -> mpf:
        """A mean's denominator: ``numel`` (``elements``) or ``Σ w`` (``weights``)."""
        if mean_over not in MEAN_OVER:
            raise ValueError(f"mean_over must be one of {MEAN_OVER}, got {mean_over!r}")
        return mpf(len(self.x)) if mean_over == "elements" else mpmath.fsum(self.w)

    def cotangents(self, grad_output, reduction: str, mean_over: str = "elements") -> list:
        """What each element's loss receives: ``a_i`` (none), ``a`` (sum), ``a/den`` (mean)."""
        n = len(self.x)
        if n == 0:
            return []
        if reduction == "none":
            return to_mp(np.broadcast_to(np.asarray(grad_output, dtype=np.float64), self.shape)).reshape(-1).tolist()
        a = mpf(float(np.asarray(grad_output, dtype=np.float64).reshape(-1)[0]))
        if reduction == "mean":
            den = self.denominator(mean_over)
            a = a / den if den != 0 else mpmath.nan
        return [a] * n

    def array(self, values: list) -> np.ndarray:
        return mp_array(values, self.shape)


def _has_nan(*vs) -> bool:
    return any(mpmath.isnan(v) for v in vs)


def _xmul(c: mpf, v: mpf) -> mpf:
    """``c·v`` with ``0·v = 0`` for every ``v`` (``0·log 0 = 0``)."""
    return mpf(0) if c == 0 else c * v


def _xdiv(c: mpf, d: mpf) -> mpf:
    """``c/d`` with ``0/d = 0`` and ``c/0 = ±inf``."""
    if c == 0:
        return mpf(0)
    return c / d if d != 0 else mpmath.inf * mpmath.sign(c)


def _weighted(w: mpf, v: mpf) -> mpf:
    """``w·v`` with a zero weight masking the element (NaN was handled before)."""
    return mpf(0) if w == 0 else w * v


@memo
def _logs(p: mpf) -> tuple[mpf, mpf]:
    """``log p`` and ``log(1 − p)`` (``1 − p`` exact; kept: the value and the VJP share them)."""
    return mpmath.log(p), mpmath.log(exact_sub(mpf(1), p))


MEAN_OVER = ("elements", "weights")
_TORCH_GRAD_FLOOR = 9.999999960041972e-13  # PyTorch's BCE backward floor: 1e-12 as a float32 constant


def _clip(p: mpf, clip, high) -> mpf:
    """``p`` clipped to ``[c, high]``, ``high = 1 − c`` by default (unchanged without a clip, and
    NaN stays NaN)."""
    if not clip or mpmath.isnan(p):
        return p
    c = mpf(clip)
    return min(max(p, c), exact_sub(mpf(1), c) if high is None else mpf(high))


def _at_or_beyond(p: mpf, clip, high) -> bool:
    """``p`` on or outside the clip interval ``[c, high]``."""
    return not mpf(clip) < p < (exact_sub(mpf(1), mpf(clip)) if high is None else mpf(high))


def _clamp(v: mpf, log_floor) -> mpf:
    """``max(v, log_floor)``, or ``v`` without a floor."""
    return v if log_floor is None else max(v, mpf(log_floor))


# ----------------------------------------------------------------------------------------------
# The default conventions on raw libmp tuples: the same libmp calls, precision and rounding as the
# object-level formulas below (every value bit for bit theirs), without the mpf object layer. For
# float arrays of one shape with finite entries and ``0 ≤ p ≤ 1`` (logits: finite); anything else
# (NaN, ±inf, other conventions, bad input) takes the object path, which is the definition.

_make = mp.make_mpf


def _is0(t: tuple) -> bool:
    return not t[1] and not t[2]


def _raw_operands(arrays: list, weight, shape, unit: bool) -> list | None:
    """Flat raw operands (weight and pos_weight broadcast; 1 for None) if the raw path applies."""
    out = []
    for a in arrays:
        a = np.asarray(a)
        if a.shape != shape or (r := to_raw(a)) is None:
            return None
        out.append(r)
    for w in weight:
        if w is None:
            out.append([fone] * len(out[0]))
            continue
        try:
            b = np.ascontiguousarray(np.broadcast_to(np.asarray(w, dtype=np.float64), shape))
        except ValueError:
            return None
        out.append(to_raw(b))
    for r in out:
        for t in r:
            if not t[1] and t[2]:  # ±inf, NaN
                return None
    if unit:
        for t in out[0]:
            if t[0] or mpf_sub(fone, t, 0)[0]:
                return None
    return out


def _raw_reduce(vals: list, bounds: list, reduction: str, shape, prec: int, rnd: str):
    """Reduce raw element values; certified (:func:`~lossoracle.mpfuncs.certify`) from the
    elements' bounds (bits, or EXACT for infinities that the inputs produce): a sum is exact then
    rounded once (:func:`~lossoracle.mpfuncs.sum_bound`), a mean divides once more (2 bits more)."""
    if reduction == "none":
        out = mp_array([_make(v) for v in vals], shape)
        certify(out, bounds)
        return out
    total = mpf_pos(sum_raw(vals, prec, rnd), prec, rnd)  # mp_sum
    k = sum_bound([mag(v) + b for v, b in zip(vals, bounds) if v[1] and b != EXACT], total)
    if reduction == "sum":
        out = _make(total)
    else:
        if not vals:
            out, k = mpmath.nan, EXACT  # the empty mean: 0/0, at every precision
        else:
            out = _make(mpf_div(total, from_int(len(vals)), prec, rnd))
            k = k + 2 if k is not None and k != EXACT else k  # (K + 1.01 ≤ 4K)
    certify(out, [k])
    return out


def _raw_cotangents(grad_output, reduction: str, shape, n: int, prec: int, rnd: str) -> list | None:
    if n == 0:
        return []
    if reduction == "none":
        return to_raw(np.ascontiguousarray(np.broadcast_to(np.asarray(grad_output, dtype=np.float64), shape)))
    a = from_float(float(np.asarray(grad_output, dtype=np.float64).reshape(-1)[0]))
    return [mpf_div(a, from_int(n), prec, rnd) if reduction == "mean" else a] * n


def _rmul0(c: tuple, v: tuple, prec: int, rnd: str) -> tuple:
    """Raw :func:`_xmul` / :func:`_weighted`: ``c·v`` with ``0·v = 0``."""
    return fzero if _is0(c) else mpf_mul(c, v, prec, rnd)


def _bce_raw(input, target, weight, reduction: str, grad_output=None):
    """:func:`binary_cross_entropy` (``grad_output`` None) or its VJP under the default conventions
    on raw tuples, or None where the raw path does not apply. Certified error bounds (u = 2^−P;
    for targets in [0, 1] and weights ≥ 0, else none): an element ``w·(−(y·log p + (1 − y)·log(1 − p)))``
    adds two terms of one sign, each within 4u, then two roundings: 8u; ``∂/∂p = w·(a·(p − y)/(p(1 − p)))``
    (or the one-sided quotients at p ∈ {0, 1}) within four roundings and the cotangent's one: 8u;
    ``∂/∂y = w·(a·(log(1 − p) − log p))`` cancels near p = 1/2 (operands within 2u|log|), then
    three roundings and the cotangent's. Infinities come from p ∈ {0, 1} alone; at p = 1/2 the
    difference is exactly 0 at every precision."""
    shape = np.shape(input)
    ops = _raw_operands([input, target], [weight], shape, unit=True)
    if ops is None or reduction not in REDUCTIONS:
        return None
    prec, rnd = mp._prec_rounding
    P, Y, W = ops
    bounded = all(not y[0] and not mpf_sub(fone, y, 0)[0] for y in Y) and all(not w[0] for w in W)
    if grad_output is None:
        vals, bounds = [], []
        for p, y, w in zip(P, Y, W):
            lp, lq = log_raw(p, prec, rnd), log_raw(mpf_sub(fone, p, 0), prec, rnd)
            v = mpf_neg(mpf_add(_rmul0(y, lp, prec, rnd), _rmul0(mpf_sub(fone, y, 0), lq, prec, rnd), prec, rnd),
                        prec, rnd)
            v = _rmul0(w, v, prec, rnd)
            vals.append(v)
            bounds.append((EXACT if not v[1] and v[2] else 3) if bounded else None)
        return _raw_reduce(vals, bounds, reduction, shape, prec, rnd)
    A = _raw_cotangents(grad_output, reduction, shape, len(P), prec, rnd)
    if A is None or any(t == fnan for t in A):
        return None
    gp, gy, bp, by = [], [], [], []
    for p, y, w, a in zip(P, Y, W, A):
        q = mpf_sub(fone, p, 0)
        lp, lq = log_raw(p, prec, rnd), log_raw(q, prec, rnd)
        if p[1] and q[1]:  # 0 < p < 1
            dp = mpf_div(mpf_sub(p, y, 0), mpf_mul(p, q, prec, rnd), prec, rnd)
        else:
            dp = mpf_sub(_rdiv0(mpf_sub(fone, y, 0), q, prec, rnd), _rdiv0(y, p, prec, rnd), prec, rnd)
        v = _rmul0(w, _rmul0(a, dp, prec, rnd), prec, rnd)
        gp.append(_make(v))
        bp.append(EXACT if not v[1] and v[2] else 3)
        d = mpf_sub(lq, lp, prec, rnd)
        gy.append(_make(_rmul0(w, _rmul0(a, d, prec, rnd), prec, rnd)))
        by.append(EXACT if not (p[1] and q[1]) else 0 if p == q else cancel_bound(max(mag(lp), mag(lq)) + 2, d, 2))
    out = {"input": mp_array(gp, shape), "target": mp_array(gy, shape)}
    certify(out, bp + by)
    return out


def _rdiv0(c: tuple, d: tuple, prec: int, rnd: str) -> tuple:
    """Raw :func:`_xdiv`: ``0/d = 0``, ``c/0 = ±inf``."""
    if _is0(c):
        return fzero
    if _is0(d):
        return fninf if c[0] else finf
    return mpf_div(c, d, prec, rnd)


# ----------------------------------------------------------------------------------------------
# binary_cross_entropy (probabilities)


def _bce_element(p: mpf, y: mpf, log_floor) -> mpf:
    lp, lq = _logs(p)
    return -(_xmul(y, _clamp(lp, log_floor)) + _xmul(exact_sub(mpf(1), y), _clamp(lq, log_floor)))


def binary_cross_entropy(input, target, weight=None, reduction: str = "mean", log_floor=None, grad_floor=None, *,
                         probability_clip: float = 0.0, clip_high: float | None = None, mean_over: str = "elements"):
    """Exact ``−w·[y log p + (1 − y) log(1 − p)]`` reduced (``grad_floor`` only affects the gradient)."""
    with workprec():
        if log_floor is None and not probability_clip and mean_over == "elements":
            out = _bce_raw(input, target, weight, reduction)
            if out is not None:
                return out
        e = _Elements(input, target, weight)
        vals = [mpmath.nan if _has_nan(p, y, w) else _weighted(w, _bce_element(_clip(p, probability_clip, clip_high),
                                                                                 y, log_floor))
                for p, y, w, _ in e.rows()]
        return reduce(e.array(vals), reduction, e.denominator(mean_over))


def _bce_partials(p: mpf, y: mpf, log_floor, grad_floor) -> tuple[mpf, mpf]:
    """``(∂ℓ/∂p, ∂ℓ/∂y)`` of one unweighted element under the conventions."""
    q, ny = exact_sub(mpf(1), p), exact_sub(mpf(1), y)
    lp, lq = _logs(p)
    if grad_floor is not None:  # PyTorch's backward: the unclamped derivatives, denominator floored
        return _xdiv(exact_sub(p, y), max(p * q, mpf(grad_floor))), lq - lp
    live_p = log_floor is None or lp > log_floor  # log p not clamped: its derivative 1/p counts
    live_q = log_floor is None or lq > log_floor
    if live_p and live_q and 0 < p < 1:
        dp = exact_sub(p, y) / (p * q)  # cancellation-free form of (1 − y)/(1 − p) − y/p
    else:
        dp = (_xdiv(ny, q) if live_q else mpf(0)) - (_xdiv(y, p) if live_p else mpf(0))
    return dp, _clamp(lq, log_floor) - _clamp(lp, log_floor)


def binary_cross_entropy_grad(grad_output, input, target, weight=None, reduction: str = "mean", log_floor=None,
                              grad_floor=None, *, probability_clip: float = 0.0, clip_high: float | None = None,
                              mean_over: str = "elements") -> dict[str, np.ndarray]:
    """VJP of :func:`binary_cross_entropy` w.r.t. ``input`` and ``target``. Under a clip the
    gradient passes to ``p`` only where ``c < p < high``, and is 0 elsewhere (at the bounds and at
    NaN too, whatever the cotangent: torch.clamp's backward)."""
    with workprec():
        if log_floor is None and grad_floor is None and not probability_clip and mean_over == "elements":
            out = _bce_raw(input, target, weight, reduction, grad_output)
            if out is not None:
                return out
        e = _Elements(input, target, weight)
        gp, gy = [], []
        for (p, y, w, _), a in zip(e.rows(), e.cotangents(grad_output, reduction, mean_over)):
            pc = _clip(p, probability_clip, clip_high)
            clipped = bool(probability_clip) and (mpmath.isnan(p) or _at_or_beyond(p, probability_clip, clip_high))
            if _has_nan(p, y, w, a):
                gp.append(mpf(0) if clipped else mpmath.nan)
                gy.append(mpmath.nan)
                continue
            dp, dy = _bce_partials(pc, y, log_floor, grad_floor)
            if clipped:
                dp = mpf(0)
            gp.append(_weighted(w, _xmul(a, dp)))
            gy.append(_weighted(w, _xmul(a, dy)))
        return {"input": e.array(gp), "target": e.array(gy)}


# ----------------------------------------------------------------------------------------------
# binary_cross_entropy_with_logits


def _bcel_raw(input, target, weight, pos_weight, reduction: str, grad_output=None):
    """:func:`binary_cross_entropy_with_logits` or its VJP (``grad_output``) on raw tuples, or None
    where the raw path does not apply (non-finite or zero logits, NaN, bad input). Certified
    bounds (u = 2^−P; softplus within 8u, ``mpfuncs.log1pexp_raw``; σ within 4.1u,
    ``mpfuncs.sigmoid_raw``; expm1 and exp within 2u): the element
    ``w·(pw·y·softplus(−x) + (1 − y)·softplus(x))`` adds two terms of one sign (for y ∈ [0, 1],
    w, pw ≥ 0; no bound otherwise) within 10u each, then two roundings: 16u; ``∂/∂x`` and ``∂/∂y``
    are cancelling sums (their operands' errors as the formulas of :func:`_bcel_dx` and
    :func:`_bcel_dy` accumulate them, below), then up to four roundings, the cotangent's included."""
    shape = np.shape(input)
    ops = _raw_operands([input, target], [weight, pos_weight], shape, unit=False)
    if ops is None or reduction not in REDUCTIONS or any(not t[1] for t in ops[0]):
        return None
    prec, rnd = mp._prec_rounding
    X, Y, W, PW = ops
    try:
        return _bcel_raw_eval(X, Y, W, PW, shape, reduction, grad_output, prec, rnd)
    except _SeriesBranch:  # log1p's series branch (|x| ≳ 140): the object path
        return None


class _SeriesBranch(Exception):
    pass


def _bcel_raw_eval(X, Y, W, PW, shape, reduction, grad_output, prec, rnd):
    def sp(t):  # softplus, only where its coefficient is not 0 (0·softplus is 0 either way)
        out = log1pexp_raw(t, prec, rnd)
        if out is None:
            raise _SeriesBranch
        return out

    if grad_output is None:
        bounded = (all(not y[0] and not mpf_sub(fone, y, 0)[0] for y in Y) and all(not w[0] for w in W)
                   and all(not w[0] for w in PW))
        vals = []
        for x, y, w, pw in zip(X, Y, W, PW):
            d, c = mpf_mul(pw, y, prec, rnd), mpf_sub(fone, y, 0)
            v = mpf_add(mpf_mul(d, sp(mpf_neg(x, prec, rnd)), prec, rnd) if not _is0(d) else fzero,
                        mpf_mul(c, sp(x), prec, rnd) if not _is0(c) else fzero, prec, rnd)
            vals.append(_rmul0(w, v, prec, rnd))
        return _raw_reduce(vals, [4 if bounded else None] * len(vals), reduction, shape, prec, rnd)
    A = _raw_cotangents(grad_output, reduction, shape, len(X), prec, rnd)
    if A is None or any(not t[1] and t[2] for t in A):
        return None
    gx, gy, bx, by = [], [], [], []
    for x, y, w, pw, a in zip(X, Y, W, PW, A):
        c, d = mpf_sub(fone, y, 0), mpf_mul(pw, y, prec, rnd)
        if x[2] + x[3] > 0:  # |x| ≥ 1: c·σ(x) − d·σ(−x), each product within 6.3u
            s1 = mpf_mul(c, sigmoid_raw(x, prec, rnd), prec, rnd) if not _is0(c) else fzero
            s2 = mpf_mul(d, sigmoid_raw(mpf_neg(x, prec, rnd), prec, rnd), prec, rnd) if not _is0(d) else fzero
            v = mpf_sub(s1, s2, prec, rnd)
            bound = cancel_bound(max(_mag0(s1), _mag0(s2)) + 4, v, 3) if v[1] or s1[1] or s2[1] else 0
        else:  # (c − d ∓ (d or c)·expm1(∓x))/(1 + e^{∓x}): the product within 4.1u, the quotient ≤ 5u more
            cd = mpf_sub(c, d, 0)
            nx = mpf_neg(x, prec, rnd)
            if not x[0]:
                t = mpf_mul(d, _expm1_raw(nx), prec, rnd)
                num = mpf_sub(cd, t, prec, rnd)
                v = mpf_div(num, mpf_add(exp_raw(nx, prec, rnd), fone, prec, rnd), prec, rnd)
            else:
                t = mpf_mul(c, _expm1_raw(x), prec, rnd)
                num = mpf_add(cd, t, prec, rnd)
                v = mpf_div(num, mpf_add(exp_raw(x, prec, rnd), fone, prec, rnd), prec, rnd)
            bound = cancel_bound(_mag0(t) + 3, num, 3) if num[1] or t[1] or cd[1] else 0
        gx.append(_make(_rmul0(w, _rmul0(a, v, prec, rnd), prec, rnd)))
        bx.append(bound)
        pm1 = mpf_sub(pw, fone, prec, rnd)
        if not x[0]:  # (pw − 1)·softplus(−x) − x: the product within 10u
            t = mpf_mul(pm1, sp(mpf_neg(x, prec, rnd)), prec, rnd) if not _is0(pm1) else fzero
            v, err = mpf_sub(t, x, prec, rnd), _mag0(t) + 4
        else:  # pw·(−x) + (pw − 1)·softplus(x): within u and 10u
            t1 = _rmul0(pw, mpf_neg(x, prec, rnd), prec, rnd)
            t2 = mpf_mul(pm1, sp(x), prec, rnd) if not _is0(pm1) else fzero
            v, err = mpf_add(t1, t2, prec, rnd), max(_mag0(t1), _mag0(t2) + 4) + 1
        gy.append(_make(_rmul0(w, _rmul0(a, v, prec, rnd), prec, rnd)))
        by.append(cancel_bound(err, v, 2) if v[1] else None)
    out = {"input": mp_array(gx, shape), "target": mp_array(gy, shape)}
    certify(out, bx + by)
    return out


def _mag0(t: tuple) -> int:
    """mag of a finite raw value, very negative for 0."""
    return t[2] + t[3] if t[1] else -(1 << 30)


def _expm1_raw(t: tuple) -> tuple:
    """``mpmath.expm1`` (within 2u: it sums e^x − 1 with guard bits beyond the cancellation)."""
    return mpmath.expm1(_make(t))._mpf_


def _bcel_element(x: mpf, y: mpf, pw: mpf) -> mpf:
    return _xmul(pw * y, log1pexp(-x)) + _xmul(exact_sub(mpf(1), y), log1pexp(x))


def binary_cross_entropy_with_logits(input, target, weight=None, reduction: str = "mean", pos_weight=None, *,
                                     mean_over: str = "elements"):
    """Exact ``w·[pw·y·softplus(−x) + (1 − y)·softplus(x)]`` reduced."""
    with workprec():
        if mean_over == "elements" and (out := _bcel_raw(input, target, weight, pos_weight, reduction)) is not None:
            return out
        e = _Elements(input, target, weight, pos_weight)
        vals = [mpmath.nan if _has_nan(x, y, w, pw) else _weighted(w, _bcel_element(x, y, pw))
                for x, y, w, pw in e.rows()]
        return reduce(e.array(vals), reduction, e.denominator(mean_over))


def _bcel_dx(x: mpf, c: mpf, d: mpf) -> mpf:
    """``c·σ(x) − d·σ(−x)``. For ``|x| < 1`` as ``(c − d − d·expm1(−x))/(1 + e^{−x})`` (x ≥ 0) or
    ``(c − d + c·expm1(x))/(1 + e^{x})`` (x < 0): ``c − d`` is exact, so the two sigmoids do not
    cancel against each other at tiny ``x`` with ``c ≈ d``. For ``|x| ≥ 1`` the sigmoids differ by a
    factor ``e^{|x|} > e`` and the two-term form is exact (``−σ(−x)`` stays tiny, never ``1 − 1``)."""
    if not abs(x) < 1:
        return _xmul(c, sigmoid(x)) - _xmul(d, sigmoid(-x))
    cd = exact_sub(c, d)
    if x >= 0:
        return (cd - d * mpmath.expm1(-x)) / (1 + exp(-x))
    return (cd + c * mpmath.expm1(x)) / (1 + exp(x))


def _bcel_dy(x: mpf, pw: mpf) -> mpf:
    """``pw·softplus(−x) − softplus(x)`` with ``softplus(|x|) = |x| + softplus(−|x|)`` split off:
    ``(pw − 1)·softplus(−x) − x`` (x ≥ 0) or ``pw·|x| + (pw − 1)·softplus(x)`` (x < 0) — exactly
    ``−x`` at ``pw = 1``, and the large ``|x|`` never cancels against itself."""
    if x >= 0:
        return _xmul(pw - 1, log1pexp(-x)) - x
    return _xmul(pw, -x) + _xmul(pw - 1, log1pexp(x))


def binary_cross_entropy_with_logits_grad(grad_output, input, target, weight=None, reduction: str = "mean",
                                          pos_weight=None, *, mean_over: str = "elements") -> dict[str, np.ndarray]:
    """VJP w.r.t. ``input`` (``(1 − y)σ(x) − pw·y·σ(−x)``) and ``target``
    (``pw·softplus(−x) − softplus(x)``)."""
    with workprec():
        if mean_over == "elements" and (
                out := _bcel_raw(input, target, weight, pos_weight, reduction, grad_output)) is not None:
            return out
        e = _Elements(input, target, weight, pos_weight)
        gx, gy = [], []
        for (x, y, w, pw), a in zip(e.rows(), e.cotangents(grad_output, reduction, mean_over)):
            if _has_nan(x, y, w, pw, a):
                gx.append(mpmath.nan)
                gy.append(mpmath.nan)
                continue
            gx.append(_weighted(w, _xmul(a, _bcel_dx(x, exact_sub(mpf(1), y), pw * y))))
            gy.append(_weighted(w, _xmul(a, _bcel_dy(x, pw))))
        return {"input": e.array(gx), "target": e.array(gy)}


# ----------------------------------------------------------------------------------------------
# Reduction sizes (the log2(n) allowance)


def _reduced_terms(inputs, params) -> int:
    """Elements summed by a ``sum``/``mean`` reduction (1 for ``none``: the loss is elementwise)."""
    return int(np.size(inputs["input"])) if params.get("reduction", "mean") != "none" else 1


# ----------------------------------------------------------------------------------------------
# Edge catalogue and generated cases

_F = np.float64
_NAN, _INF = float("nan"), float("inf")


def _arr(a, keep_kind: bool = False) -> np.ndarray:
    a = np.asarray(a)
    return a if keep_kind and a.dtype.kind != "f" else a.astype(_F)


def _case(id_, x, y, weight=None, pos_weight=None, note="", raises=None, **params) -> Case:
    inputs = {"input": _arr(x, keep_kind=raises is TypeError), "target": _arr(y, keep_kind=raises is TypeError),
              "weight": None if weight is None else _arr(weight)}
    if pos_weight is not None:
        inputs["pos_weight"] = _arr(pos_weight)
    return Case(id_, inputs, params, raises=raises, note=note)


def _soft_targets(rng, shape, grid) -> np.ndarray:
    """Targets mixing exact 0/1 labels with soft labels on ``grid``."""
    soft = probabilities(rng, shape, grid)
    hard = (rng.random(shape) < 0.5).astype(_F)
    return np.where(rng.random(shape) < 0.5, hard, soft)


def _with(a: np.ndarray, value: float) -> np.ndarray:
    """A copy of ``a`` with its first element replaced by ``value``."""
    out = np.array(a, dtype=_F)
    out.reshape(-1)[0] = value
    return out


def _bad_cases(x, y) -> list[Case]:
    """Bad input shared by both losses (``x``: valid input of shape (2, 3), ``y``: valid target)."""
    return [
        _case("bad_target_above_one", x, _with(y, 1.25), raises=ValueError, note="target > 1"),
        _case("bad_target_negative", x, _with(y, -0.5), raises=ValueError, note="target < 0"),
        _case("bad_target_shape", x, y[:, :2], raises=ValueError, note="target shape differs from input shape"),
        _case("bad_weight_shape", x, y, weight=[1.0, 2.0, 0.5, 1.0], raises=ValueError,
              note="weight does not broadcast to the input"),
        _case("bad_reduction", x, y, reduction="avg", raises=ValueError, note="unknown reduction"),
        _case("bad_integer_input", np.array([[0, 1, 1], [1, 0, 0]]), y, raises=TypeError, note="non-floating input"),
        _case("bad_integer_target", x, y.astype(np.int64), raises=TypeError, note="non-floating target"),
    ]


def _bce_cases() -> list[Case]:
    r = rng_for("binary_cross_entropy", "edge")
    p34 = np.clip(probabilities(r, (3, 4), "half"), 2.0**-10, 1 - 2.0**-10)  # endpoints have their own cases
    y34 = _soft_targets(r, (3, 4), "half")
    cases = []
    for red in REDUCTIONS:
        cases += [
            _case(f"basic_{red}", p34, y34, reduction=red),
            _case(f"endpoints_{red}", [0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.5], [0.0, 1.0, 0.0, 1.0, 0.25, 0.75, 0.5],
                  reduction=red, note="p ∈ {0, 1}: loss 0 or +inf exactly (PyTorch: 100)"),
            _case(f"empty_{red}", np.zeros(0), np.zeros(0), reduction=red, note="mean of nothing: NaN"),
            _case(f"empty_2d_weight_{red}", np.zeros((0, 3)), np.zeros((0, 3)), weight=[1.0, 2.0, 0.5],
                  reduction=red),
            _case(f"weights_with_zeros_{red}", p34, y34, weight=[0.0, 2.0, 0.5, 0.0], reduction=red),
        ]
    cases += [
        _case("subnormal_float64", [5e-324, 3 * 5e-324, 2.0**-1030, 1e-310], [1.0, 0.0, 0.25, 1.0], reduction="none"),
        _case("subnormal_float32", [2.0**-149, 2.0**-140, 1.5 * 2.0**-127], [1.0, 0.0, 0.25], reduction="none"),
        _case("subnormal_float16", [2.0**-24, 2.0**-20, 3 * 2.0**-22], [1.0, 0.0, 0.25], reduction="none"),
        _case("near_one_float64", [1 - 2.0**-53, 1 - 2.0**-52, 1 - 2.0**-53], [0.0, 0.25, 1.0], reduction="none"),
        _case("near_one_float32", [1 - 2.0**-24, 1 - 2.0**-23, 1 - 2.0**-24], [0.0, 0.25, 1.0], reduction="none"),
        _case("near_one_float16", [1 - 2.0**-11, 1 - 2.0**-10, 1 - 2.0**-8], [0.0, 0.25, 0.0], reduction="none"),
        _case("below_log_floor_float64", [1e-50, 3.5e-44, 4e-44, 1e-300], [1.0, 1.0, 0.5, 0.25], reduction="none",
              note="log p < −100: PyTorch's clamp is active"),
        _case("below_log_floor_float32", [2.0**-146, 2.0**-144, 2.0**-140], [1.0, 1.0, 0.5], reduction="none"),
        _case("soft_target_equals_p", [0.25, 0.5, 0.75], [0.25, 0.5, 0.75], reduction="none",
              note="input gradient exactly 0"),
        _case("near_half", [0.5, 0.5 + 2.0**-8, 0.5 - 2.0**-9, 0.5 + 2.0**-7], [1.0, 0.0, 0.25, 0.5],
              reduction="none", note="target gradient log((1 − p)/p) near 0"),
        _case("near_half_float32", [0.5 + 2.0**-20, 0.5 - 2.0**-24, 0.5 + 2.0**-23], [1.0, 0.5, 0.0],
              reduction="none"),
        _case("near_half_float64", [0.5 + 2.0**-40, 0.5 - 2.0**-53, 0.5 + 2.0**-52], [1.0, 0.5, 0.0],
              reduction="none"),
        _case("scalar_none", np.float64(0.25), np.float64(1.0), reduction="none"),
        _case("scalar_mean", np.float64(0.75), np.float64(0.25)),
        _case("zero_weight_masks_infinite", [0.0, 1.0, 0.5], [1.0, 0.0, 0.5], weight=[0.0, 0.0, 1.0],
              reduction="sum", note="w = 0 masks an infinite term (limit of w·ℓ)"),
        _case("weight_broadcast_rows", p34, y34, weight=[[1.0], [0.5], [4.0]], reduction="sum"),
        _case("spatial_4d", probabilities(r, (2, 3, 2, 2), "half"), _soft_targets(r, (2, 3, 2, 2), "half"),
              weight=[[[2.0]], [[0.5]], [[1.0]]]),
        _case("nan_propagates", [_NAN, 0.5, 0.25, 0.0], [1.0, _NAN, 0.25, _NAN], reduction="none",
              note="NaN in, NaN out"),
        _case("nan_mean", [_NAN, 0.5], [1.0, 0.0], note="NaN in, NaN out"),
    ]
    for grid in GRIDS:
        for i, (red, soft, w) in enumerate([("mean", False, False), ("sum", True, True), ("none", True, False),
                                            ("mean", True, True)]):
            rg = rng_for("binary_cross_entropy", grid, i)
            p = probabilities(rg, (5, 6), grid)
            y = _soft_targets(rg, (5, 6), grid) if soft else (rg.random((5, 6)) < 0.5).astype(_F)
            weight = np.abs(logits(rg, (6,), grid, 1.0)) if w else None
            cases.append(_case(f"random_{grid}_{i}", p, y, weight=weight, reduction=red))
    x23, y23 = p34[:2, :3], (y34[:2, :3] > 0.5).astype(_F)
    cases += _bad_cases(x23, y23)
    cases += [
        _case("bad_input_above_one", _with(x23, 1.5), y23, raises=ValueError, note="probability > 1"),
        _case("bad_input_negative", _with(x23, -0.25), y23, raises=ValueError, note="probability < 0"),
        _case("bad_input_inf", [[_INF, 0.5, 0.5]], [[1.0, 0.0, 1.0]], raises=ValueError, note="probability +inf"),
    ]
    return cases


def _bcel_cases() -> list[Case]:
    r = rng_for("binary_cross_entropy_with_logits", "edge")
    x34, y34 = logits(r, (3, 4), "half"), _soft_targets(r, (3, 4), "half")
    cases = []
    for red in REDUCTIONS:
        cases += [
            _case(f"basic_{red}", x34, y34, reduction=red),
            _case(f"empty_{red}", np.zeros((0, 3)), np.zeros((0, 3)), pos_weight=[1.0, 2.0, 0.5], reduction=red,
                  note="mean of nothing: NaN"),
            _case(f"weights_with_zeros_{red}", x34, y34, weight=[0.0, 2.0, 0.5, 0.0], reduction=red),
            _case(f"pos_weight_extremes_{red}", x34, y34, pos_weight=[0.0, 1e6, 1.0, 0.5], reduction=red,
                  note="pos_weight 0 drops the positive term; 1e6 dominates"),
        ]
    labels = [1.0, 0.0, 0.0, 1.0, 0.25, 0.75]  # confident-correct, confident-wrong, then soft
    cases += [
        _case("huge_1e4", [1e4, -1e4, 1e4, -1e4, 1e4, -1e4], labels, reduction="none"),
        _case("fp32_overflow_88", [88.75, -88.75, 89.0, -89.0, 88.75, -88.75], labels, reduction="none",
              note="exp overflows float32 beyond 88.72"),
        _case("fp16_overflow_11", [11.125, -11.125, 12.0, -12.0, 11.125, -11.125], labels, reduction="none",
              note="exp overflows float16 beyond 11.09"),
        _case("tail_40", [40.0, -40.0, 40.0, -40.0, 20.0, -20.0, 36.75, -36.75],
              [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0], reduction="none",
              note="confident correct predictions: loss and gradient ≈ e^-40, no cancellation allowed"),
        _case("tiny_logits", [0.0, 2.0**-24, -(2.0**-24), 2.0**-60, 0.0], [0.25, 1.0, 0.0, 0.5, 0.5],
              reduction="none"),
        _case("soft_targets_0.25", x34, np.full((3, 4), 0.25), reduction="none"),
        _case("infinite_logits", [_INF, -_INF, _INF, -_INF, _INF, -_INF], labels, reduction="none",
              note="limits: softplus(−inf) = 0, softplus(inf) = inf"),
        _case("infinite_logit_pos_weight_zero", [-_INF, _INF], [1.0, 1.0], pos_weight=[0.0], reduction="none",
              note="0·softplus(inf) = 0"),
        _case("zero_weight_masks_infinite", [_INF, -_INF, 1.0], [0.0, 1.0, 0.5], weight=[0.0, 0.0, 1.0],
              reduction="sum", note="w = 0 masks an infinite term (limit of w·ℓ)"),
        _case("pos_weight_channel", logits(r, (2, 3, 2, 2), "half"), _soft_targets(r, (2, 3, 2, 2), "half"),
              pos_weight=[[[2.0]], [[0.5]], [[8.0]]], weight=[0.5, 1.0], reduction="sum"),
        _case("scalar_none", np.float64(-3.5), np.float64(1.0), reduction="none"),
        _case("scalar_mean", np.float64(2.25), np.float64(0.25), pos_weight=3.0),
        _case("nan_propagates", [_NAN, 0.5, _NAN, 1.0], [1.0, _NAN, 1.0, 0.5], pos_weight=[0.0, 1.0, 2.0, 1.0],
              reduction="none", note="NaN in, NaN out (also under pos_weight 0)"),
        _case("nan_mean", [_NAN, 0.5], [1.0, 0.0], note="NaN in, NaN out"),
    ]
    for grid in GRIDS:
        x0 = to_grid(np.array([np.log(1 / 3), -np.log(1 / 3), np.log(1 / 3) - 2.0**-20]), grid)
        cases.append(_case(f"soft_gradient_cancels_{grid}", x0, [0.25, 0.75, 0.25], reduction="none",
                           note="σ(x) ≈ y: the input gradient cancels inherently (ill-conditioned)"))
        for i, (red, soft, w, pw) in enumerate([("mean", False, False, False), ("sum", True, True, False),
                                                ("none", True, False, True), ("mean", True, True, True)]):
            rg = rng_for("binary_cross_entropy_with_logits", grid, i)
            y = _soft_targets(rg, (6, 5), grid) if soft else (rg.random((6, 5)) < 0.5).astype(_F)
            weight = np.abs(logits(rg, (5,), grid, 1.0)) if w else None
            pos_weight = np.abs(logits(rg, (5,), grid, 2.0)) if pw else None
            cases.append(_case(f"random_{grid}_{i}", logits(rg, (6, 5), grid), y, weight=weight,
                               pos_weight=pos_weight, reduction=red))
    x23, y23 = x34[:2, :3], (y34[:2, :3] > 0.5).astype(_F)
    cases += _bad_cases(x23, y23)
    cases.append(_case("bad_pos_weight_shape", x23, y23, pos_weight=[1.0, 2.0], raises=ValueError,
                       note="pos_weight does not broadcast to the input"))
    return cases


_MEAN_OVER = Convention("mean_over", "elements", "mean denominator: elements (numel, PyTorch) | weights (Σ w: a "
                                                "weighted average)", values=("weights",))

SPECS = (
    Spec(
        name="binary_cross_entropy",
        signature='binary_cross_entropy(input, target, weight=None, reduction="mean")',
        definition="l = −w [y log p + (1 − y) log(1 − p)] (0·log 0 = 0); mean = Σ l / numel",
        source="PyTorch docs torch.nn.functional.binary_cross_entropy / torch.nn.BCELoss",
        args=(Arg("input", "probabilities", differentiable=True),
              Arg("target", "binary_target", differentiable=True),
              Arg("weight", "weight", positional=False)),
        params={"reduction": "mean"},
        oracle=binary_cross_entropy,
        gradient=binary_cross_entropy_grad,
        cases=_bce_cases,
        conventions=(
            Convention("log_floor", None, "clamp each logarithm below at this value (PyTorch: −100, so one "
                                          "element's loss is at most 100·w); None: exact logarithms",
                       values=(-100.0, {"log_floor": -100.0, "grad_floor": _TORCH_GRAD_FLOOR})),
            Convention("grad_floor", None, "PyTorch's backward: the derivatives of the unclamped loss, "
                                           "w(p − y)/max(p(1 − p), grad_floor) and w·log((1 − p)/p) (PyTorch: "
                                           "1e-12); None: the derivative of the forward as specified",
                       values=(1e-12,)),
            Convention("probability_clip", 0.0, "p clipped to [c, 1 − c] before the logarithms (Keras: 1e-7, "
                                                "scikit-learn log_loss: the dtype's eps); the gradient passes only "
                                                "where c < p < 1 − c (not at the bounds, nor at NaN: torch.clamp's "
                                                "backward)",
                       values=(*({"probability_clip": InDtype(c), "clip_high": InDtype(1.0 - c)}
                                 for c in (1e-7, 1e-8, 1e-12, 1e-15)), DTYPE_EPS)),
            Convention("clip_high", None, "the upper clip bound if not exactly 1 − c: an implementation's 1 − c "
                                          "rounded to its dtype (1 − 1e-7 is 1 − 2^-23 in float32, 1 in float16)"),
            _MEAN_OVER,
        ),
        reduced_terms=_reduced_terms,
        edge_notes=("p = 0 with y > 0, or p = 1 with y < 1: +inf (PyTorch: 100); gradient ±inf (PyTorch: ±1e12)",
                    "an empty mean is NaN; NaN input gives NaN (PyTorch raises instead)",
                    "a zero weight masks its element, also where the loss is +inf"),
    ),
    Spec(
        name="binary_cross_entropy_with_logits",
        signature='binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", '
                  "pos_weight=None)",
        definition="l = w [pw·y·softplus(−x) + (1 − y)·softplus(x)]; pw broadcast (last dimension for "
                   "shape (C,)); mean = Σ l / numel",
        source="PyTorch docs torch.nn.functional.binary_cross_entropy_with_logits / torch.nn.BCEWithLogitsLoss",
        args=(Arg("input", "logits", differentiable=True),
              Arg("target", "binary_target", differentiable=True),
              Arg("weight", "weight", positional=False),
              Arg("pos_weight", "weight", positional=False)),
        params={"reduction": "mean"},
        oracle=binary_cross_entropy_with_logits,
        gradient=binary_cross_entropy_with_logits_grad,
        cases=_bcel_cases,
        conventions=(_MEAN_OVER,),
        reduced_terms=_reduced_terms,
        edge_notes=("x = ±inf: the limits (0 or +inf; gradient 0 or ±1); PyTorch gives NaN (pytorch#102894)",
                    "an empty mean is NaN; NaN input gives NaN",
                    "targets outside [0, 1] are rejected (PyTorch accepts them, pytorch#123339)"),
    ),
)
