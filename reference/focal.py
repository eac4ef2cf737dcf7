"""Focal loss oracles: sigmoid (binary / multi-label) and softmax (multi-class).

Source: Lin, Goyal, Girshick, He, Dollár, "Focal Loss for Dense Object Detection", ICCV 2017
(arXiv:1708.02002), eqs. (1)–(5): ``CE(p_t) = −log p_t``, ``FL(p_t) = −α_t (1 − p_t)^γ log p_t``;
CONVENTIONS.md §6 for what each library computes.

**sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="none")** — torchvision's
signature and semantics, element-wise: ``p = σ(x)``, ``p_t = p·y + (1 − p)(1 − y)``,
``ℓ = α_t (1 − p_t)^γ · BCE(x, y)`` with ``BCE = y·softplus(−x) + (1 − y)·softplus(x)`` and
``α_t = α·y + (1 − α)(1 − y)``; ``α = −1`` (any α < 0 in the oracle) disables the weighting.
Soft targets ``y ∈ [0, 1]`` use the same linear ``p_t``, i.e.
``1 − p_t = (1 − y)σ(x) + y·σ(−x)`` — a sum of non-negative terms. ``mean`` averages over every
element (``0/0 = NaN`` when empty), ``sum`` adds them.

**softmax_focal_loss(input, target, alpha=None, gamma=2.0, ignore_index=-100, reduction="mean")**
— logits ``(N, C)`` or ``(N, C, d1, …)`` (class axis 1), class-index targets ``(N, d1, …)``:
``ℓ_i = −α_{y_i} (1 − p_{i,y_i})^γ log p_{i,y_i}``, ``p = softmax`` over the classes, ``ℓ_i = 0``
where ``y_i = ignore_index``. ``alpha``: None (1), a scalar (the same α for every class) or a
per-class sequence. ``mean`` = ``Σ_i ℓ_i / #{i : y_i ≠ ignore_index}`` — the mean over the
targets that count; all ignored (or an empty batch) is ``0/0 = NaN``, as in PyTorch's
cross-entropy; ``sum`` = ``Σ_i ℓ_i``.

γ = 0 gives exactly the (α-weighted) BCE-with-logits / cross-entropy.

Gradients (vector-Jacobian products, analytic): w.r.t. ``inputs`` and ``targets`` (sigmoid) and
``input`` (softmax). With ``q = 1 − p_t``: ``∂ℓ/∂x = α_t [γ q^{γ−1} q'·BCE + q^γ (σ(x) − y)]``,
``q' = (1 − 2y)σ(x)σ(−x)``; ``∂ℓ/∂y = (2α − 1) q^γ BCE + α_t [γ q^{γ−1}(σ(−x) − σ(x))·BCE − q^γ x]``.
Softmax, ``u = 1 − p_y``, ``L = −log p_y``, ``W = γ p_y L + u``: ``∂ℓ/∂x_j = α_y u^γ W·e_j/S``
(``j ≠ y``, ``S = Σ_{c≠y} e_c``) and ``−α_y u^γ W`` (``j = y``). For γ < 1 the factor ``q^γ`` has
an infinite derivative as ``q → 0`` but ``q' = O(q)``: the gradient tends to 0, and the forms
above (``q^{γ−1}·q'`` evaluated as a ratio, ``e_j/S``) return that finite limit at every
finite logit.

Hazards and remedies: ``1 − p_t`` is never formed as ``1 − (rounded p)`` — it is the sum above
(σ(∓x) from ``exp(−|x|)``); the log term is ``softplus``; softmax quantities come from
:class:`~lossoracle.mpfuncs.SoftmaxRow` (exact differences, no ``1 − p`` subtraction).

Conventions (keyword-only oracle parameters; each names the libraries that use it):

- sigmoid ``p_t`` for soft targets: ``"linear"`` (torchvision, fvcore, Keras, optax — optax's
  ``log((1−y)σ(x) + yσ(−x))`` is the same quantity), ``"per_term"`` (kornia: ``y·α σ(−x)^γ
  softplus(−x) + (1 − y)(1 − α) σ(x)^γ softplus(x)``), ``"sign"`` (MONAI: ``σ(−x(2y − 1))^γ``),
  ``"exp_bce"`` (segmentation_models_pytorch: ``p_t = e^{−BCE}``). All agree for ``y ∈ {0, 1}``.
- ``probability_clip = c``: probabilities clipped to ``[c, 1 − c]`` (Keras, ``c = 1e-7``) — for the
  sigmoid loss in the BCE term only (the modulating factor uses the unclipped σ), for the softmax
  loss in both ``log p`` and ``(1 − p)^γ``; a clipped probability passes no gradient.
- ``mean_over``: sigmoid ``"elements"`` | ``"positives"`` — RetinaNet's normalisation, the sum
  divided by ``max(1, #{y = 1})`` (torchvision ``models/detection/retinanet.py``; apply per image
  and average); softmax ``"targets"`` | ``"alpha"`` (``Σ α_{y_i}`` over counted targets, the
  per-class-weight normalisation of ``cross_entropy(weight=…)``) | ``"elements"`` (``N·C·d1⋯``,
  ignored positions included: the mean over a one-hot map, kornia and MONAI without a mask).
- ``empty_mean``: ``"nan"`` (0/0) | ``"zero"`` (MONAI, kornia: an empty mean is 0).
- ``sum_rule``: ``"plain"`` | ``"spatial_mean"`` (MONAI ``reduction="sum"``: for ≥ 3-d inputs the
  sum over batch (and classes, sigmoid) of the mean over the spatial positions).
- softmax ``scalar_alpha``: ``"all"`` (every class, Keras) | ``"background"`` (class 0 gets
  ``1 − α``, the others ``α``: kornia, MONAI).
"""

from __future__ import annotations

import mpmath
import numpy as np
from mpmath import mp, mpf
from mpmath.libmp import fnan, fone, fzero, mpf_add, mpf_div, mpf_mul, mpf_neg, mpf_pos, mpf_sub

from lossoracle.mpfuncs import (EXACT, SoftmaxRow, cancel_bound, certify, log1pexp, log1pexp_raw, memo, mp_array,
                                mp_sum, sigmoid, sigmoid_raw, softmax_rows_raw, sum_bound, sum_raw, to_mp, to_raw,
                                workprec)
from lossoracle.spec import DTYPE_EPS, Arg, Case, Convention, Spec
from lossoracle.strategies import GRIDS, LADDERS, class_indices, logits, probabilities, rng_for

from .common import class_last

P_T = ("linear", "per_term", "sign", "exp_bce")

# ----------------------------------------------------------------------------------------------
# Sigmoid focal loss


def _alpha_t(alpha, y: mpf) -> tuple[mpf, mpf]:
    """``α_t`` and ``∂α_t/∂y``; α None or < 0 disables the weighting."""
    if alpha is None or alpha < 0:
        return mpf(1), mpf(0)
    a = mpf(alpha)
    return a * y + (1 - a) * (1 - y), 2 * a - 1


def _bce(x: mpf, y: mpf, clip: float) -> tuple[mpf, mpf, mpf]:
    """``BCE``, ``∂BCE/∂x``, ``∂BCE/∂y``; with ``clip = c > 0`` the probability is clipped to
    ``[c, 1 − c]`` first (a clipped probability passes no gradient)."""
    s = sigmoid(x)
    if clip:
        c = mpf(clip)
        if s < c or s > 1 - c:
            pc = c if s < c else 1 - c
            lp, l1p = mpmath.log(pc), mpmath.log1p(-pc)
            return -(y * lp + (1 - y) * l1p), mpf(0), l1p - lp
    sp_neg, sp_pos = log1pexp(-x), log1pexp(x)
    return y * sp_neg + (1 - y) * sp_pos, (1 - y) * s - y * sigmoid(-x), -x  # σ(x) − y, no 1 − tiny


def _pow_ratio(q: mpf, dq: mpf, gamma: mpf) -> tuple[mpf, mpf]:
    """``q^γ`` and ``γ q^{γ−1} dq`` (0 when γ = 0; ``q > 0`` at every finite logit)."""
    if gamma == 0:
        return mpf(1), mpf(0)
    return q**gamma, gamma * q ** (gamma - 1) * dq


@memo
def _sigmoid_element(x: mpf, y: mpf, alpha, gamma: mpf, p_t: str, clip: float):
    """``(ℓ, ∂ℓ/∂x, ∂ℓ/∂y, certificate)`` of one element under the given conventions (kept: the
    value and the VJP share it); the certificate (:func:`_sigmoid_bounds`) is None outside the
    conventions it covers."""
    if mpmath.isnan(x) or mpmath.isnan(y):
        return (mpmath.nan,) * 3 + ((EXACT,) * 3,)
    at, dat = _alpha_t(alpha, y)
    if p_t == "per_term":
        s, sb = sigmoid(x), sigmoid(-x)
        a = mpf(1) if alpha is None or alpha < 0 else mpf(alpha)
        b = mpf(1) if alpha is None or alpha < 0 else 1 - mpf(alpha)
        sp_neg, sp_pos = log1pexp(-x), log1pexp(x)
        fn, dfn = _pow_ratio(sb, -s * sb, gamma)
        fp, dfp = _pow_ratio(s, s * sb, gamma)
        value = y * a * fn * sp_neg + (1 - y) * b * fp * sp_pos
        dx = y * a * (dfn * sp_neg - fn * sb) + (1 - y) * b * (dfp * sp_pos + fp * s)
        dy = a * fn * sp_neg - b * fp * sp_pos
        return value, dx, dy, None
    B, dBx, dBy = _bce(x, y, clip)
    if p_t == "linear" and gamma == 0:  # _pow_ratio's (1, 0): q and its derivatives are not needed
        qg, gx, gy = mpf(1), mpf(0), mpf(0)
    else:
        if p_t == "linear":
            s, sb = sigmoid(x), sigmoid(-x)
            q, dqx, dqy = (1 - y) * s + y * sb, (1 - 2 * y) * s * sb, -mpmath.tanh(x / 2)
        elif p_t == "sign":
            z = x * (1 - 2 * y)
            q, dqx, dqy = sigmoid(z), (1 - 2 * y) * sigmoid(z) * sigmoid(-z), -2 * x * sigmoid(z) * sigmoid(-z)
        elif p_t == "exp_bce":
            q, dqx, dqy = -mpmath.expm1(-B), mpmath.exp(-B) * dBx, mpmath.exp(-B) * dBy
        else:
            raise ValueError(f"p_t must be one of {P_T}, got {p_t!r}")
        qg, gx = _pow_ratio(q, dqx, gamma)
        _, gy = _pow_ratio(q, dqy, gamma)
    value = at * qg * B
    dx = at * (gx * B + qg * dBx)
    dy = dat * qg * B + at * (gy * B + qg * dBy)
    bounds = (_sigmoid_bounds(x, y, alpha, at, dat, B, dx, dy)
              if p_t == "linear" and gamma == 0 and not clip else None)
    return value, dx, dy, bounds


def _sigmoid_bounds(x: mpf, y: mpf, alpha, at: mpf, dat: mpf, B: mpf, dx: mpf, dy: mpf):
    """Certificates (:func:`~lossoracle.mpfuncs.certify`) of ``(ℓ, ∂ℓ/∂x, ∂ℓ/∂y)`` at γ = 0 with
    the linear ``p_t`` and no clip, for a finite logit, ``y ∈ [0, 1]`` and α ∈ [0, 1] (or
    disabled); None otherwise. With u = 2^−P: ``α_t = α·y + (1 − α)(1 − y)`` adds two
    non-negative products (≤ 4.02u); σ within 4.1u and softplus within 8u
    (:mod:`~lossoracle.mpfuncs`), so ``BCE = y·softplus(−x) + (1 − y)·softplus(x)`` within 7.2u
    and ``ℓ = α_t·BCE`` within 12.3u (4 bits, before the reduction's weight); ``∂ℓ/∂x = α_t·((1 −
    y)σ(x) − y·σ(−x))`` cancels (operands within 6.2u), then the difference's rounding, α_t and the
    cotangent's three roundings (16u: 4 bits); ``∂ℓ/∂y = (2α − 1)·BCE + α_t·(−x)`` cancels
    (operands within 9.2u and 5.02u), then a rounding and the cotangent's three (2 bits)."""
    if not (mpmath.isfinite(x) and 0 <= y <= 1 and (alpha is None or alpha < 0 or alpha <= 1)):
        return None
    prec, rnd = mp._prec_rounding
    t = x._mpf_
    return _sigmoid_bounds_raw(t, y._mpf_, at._mpf_, dat._mpf_, B._mpf_, dx._mpf_, dy._mpf_, sigmoid_raw(t, prec, rnd),
                               sigmoid_raw(mpf_neg(t, prec, rnd), prec, rnd))


def _sigmoid_bounds_raw(x, y, at, dat, B, dx, dy, s, sb):
    """:func:`_sigmoid_bounds` past its domain check, on raw tuples (``s``, ``sb``: σ(x), σ(−x))."""
    ms = _raw_mag(mpf_sub(fone, y, *mp._prec_rounding)) + _raw_mag(s)  # |(1 − y)σ(x)| < 2^ms
    mb = _raw_mag(y) + _raw_mag(sb)  # |y·σ(−x)| < 2^mb
    if at == fzero:  # α = 0 at y = 1, α = 1 at y = 0: exactly 0 at every precision
        kx = 0
    else:
        kx = cancel_bound(max(ms, mb) + 4 + _raw_mag(at), dx, 4) if dx != fzero else None
    t1, t2 = _raw_mag(dat) + _raw_mag(B), _raw_mag(at) + _raw_mag(x)
    ky = cancel_bound(max(t1 + 4, t2 + 3) + 1, dy, 2) if dy != fzero else (0 if t1 < -(1 << 29) and
                                                                            t2 < -(1 << 29) else None)
    return 4, kx, ky


def _sigmoid_linear_raw(X: list, Y: list, alpha, in_domain: list) -> list:
    """:func:`_sigmoid_element` at γ = 0 with the linear ``p_t`` and no clip, for finite logits
    ``X`` and targets ``Y`` (raw): the object formulas' own steps, each operation of the mpf
    operators (one rounding at the working precision) on raw tuples — ``q^γ = 1`` and its
    derivatives 0 enter as those operators do. ``in_domain``: where :func:`_sigmoid_bounds`
    certifies (0 ≤ y ≤ 1, α ≤ 1)."""
    prec, rnd = mp._prec_rounding
    if alpha is None or alpha < 0:
        a = None
        at, dat = fone, fzero
    else:
        am = mpf(alpha)
        a, one_a, dat = am._mpf_, (1 - am)._mpf_, (2 * am - 1)._mpf_
    out = []
    for x, y, ok in zip(X, Y, in_domain):
        one_y = mpf_sub(fone, y, prec, rnd)
        if a is not None:  # α_t = α·y + (1 − α)(1 − y)
            at = mpf_add(mpf_mul(a, y, prec, rnd), mpf_mul(one_a, one_y, prec, rnd), prec, rnd)
        # _bce: σ(x), softplus(∓x), BCE = y·softplus(−x) + (1 − y)·softplus(x), (1 − y)σ(x) − y·σ(−x), −x
        neg = mpf_neg(x, prec, rnd)
        s, sb = sigmoid_raw(x, prec, rnd), sigmoid_raw(neg, prec, rnd)
        sp_neg, sp_pos = log1pexp_raw(neg, prec, rnd), log1pexp_raw(x, prec, rnd)
        if sp_neg is None:
            sp_neg = log1pexp(mp.make_mpf(neg))._mpf_
        if sp_pos is None:
            sp_pos = log1pexp(mp.make_mpf(x))._mpf_
        B = mpf_add(mpf_mul(y, sp_neg, prec, rnd), mpf_mul(one_y, sp_pos, prec, rnd), prec, rnd)
        dBx = mpf_sub(mpf_mul(one_y, s, prec, rnd), mpf_mul(y, sb, prec, rnd), prec, rnd)
        # ℓ = α_t·1·B, ∂ℓ/∂x = α_t(0·B + 1·∂B/∂x), ∂ℓ/∂y = (∂α_t/∂y)·1·B + α_t(0·B + 1·∂B/∂y)
        value = mpf_mul(mpf_mul(at, fone, prec, rnd), B, prec, rnd)
        dx = mpf_mul(at, mpf_add(mpf_mul(fzero, B, prec, rnd), mpf_mul(fone, dBx, prec, rnd), prec, rnd), prec, rnd)
        dy = mpf_add(mpf_mul(mpf_mul(dat, fone, prec, rnd), B, prec, rnd),
                     mpf_mul(at, mpf_add(mpf_mul(fzero, B, prec, rnd), mpf_mul(fone, neg, prec, rnd), prec, rnd),
                             prec, rnd), prec, rnd)
        out.append((value, dx, dy, _sigmoid_bounds_raw(x, y, at, dat, B, dx, dy, s, sb) if ok else None))
    return out


def _mag(v: mpf) -> int:
    """An upper bound of log2|v| (``|v| < 2^mag``); very negative for 0."""
    return _raw_mag(v._mpf_)


def _raw_mag(t: tuple) -> int:
    """:func:`_mag` of a raw value (very negative for 0 and the specials)."""
    return t[2] + t[3] if t[1] else -(1 << 30)


@memo
def _sigmoid_elements(inputs, targets, alpha, gamma, p_t, clip):
    """Value, ∂/∂x, ∂/∂y (object arrays; kept per case: the value and the VJP share them, read only)
    and the certificates of every element."""
    xa, ya = np.asarray(inputs), np.asarray(targets)
    shape = np.shape(inputs)
    if (p_t == "linear" and gamma == 0 and not clip and xa.dtype.kind == "f" and ya.dtype.kind == "f"
            and xa.shape == ya.shape and np.isfinite(xa).all() and np.isfinite(ya).all()):
        cert = alpha is None or alpha < 0 or alpha <= 1
        in_domain = ((ya >= 0) & (ya <= 1)).reshape(-1).tolist() if cert else [False] * xa.size
        raws = _sigmoid_linear_raw(to_raw(xa), to_raw(ya), alpha, in_domain)
        make = mp.make_mpf
        return (*(mp_array([make(o[i]) for o in raws], shape) for i in range(3)), [o[3] for o in raws])
    x, y = to_mp(inputs), to_mp(targets)
    g = mpf(gamma)
    out = [_sigmoid_element(a, b, alpha, g, p_t, clip) for a, b in zip(x.reshape(-1), y.reshape(-1))]
    return (*(mp_array([o[i] for o in out], shape) for i in range(3)), [o[3] for o in out])


def _sigmoid_weights(targets, reduction: str, mean_over: str, sum_rule: str) -> np.ndarray | mpf:
    """What each element's loss is multiplied by in the reduction (object array of mpf)."""
    shape = np.shape(targets)
    n = int(np.prod(shape)) if shape else 1
    if reduction == "none":
        return mp_array([mpf(1)] * n, shape)
    if reduction == "sum":
        if sum_rule == "spatial_mean" and len(shape) >= 3:
            return mp_array([1 / mpf(int(np.prod(shape[2:])))] * n, shape)
        return mp_array([mpf(1)] * n, shape)
    if reduction != "mean":
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    if mean_over == "positives":
        den = mpf(max(1, int(np.sum(np.asarray(targets) == 1))))
    else:
        den = mpf(n)
    return mp_array([1 / den if n else mpmath.nan] * n, shape)


def sigmoid_focal_loss(inputs, targets, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "none", *,
                       p_t: str = "linear", probability_clip: float = 0.0, mean_over: str = "elements",
                       sum_rule: str = "plain"):
    """Exact sigmoid focal loss (element-wise, or reduced), torchvision semantics by default."""
    with workprec():
        value, _, _, bounds = _sigmoid_elements(inputs, targets, alpha, gamma, p_t, probability_clip)
        w = _sigmoid_weights(targets, reduction, mean_over, sum_rule)
        kv = [None if b is None else b[0] for b in bounds]
        if reduction == "none":
            value = value.copy()  # (the kept array stays unexposed)
            certify(value, kv)
            return value
        if np.size(value) == 0:
            out = mpmath.nan if reduction == "mean" else mpf(0)
            certify(out, [EXACT])
            return out
        terms = (w * value).reshape(-1).tolist()
        out = mp_sum(terms)
        if None not in kv:  # each weighted term within 16u and the weight's rounding: 5 bits
            certify(out, [sum_bound([_mag(t) + 5 for t, k in zip(terms, kv) if t != 0 and k != EXACT],
                                    out._mpf_)])
        return out


def sigmoid_focal_loss_grad(grad_output, inputs, targets, alpha: float = 0.25, gamma: float = 2.0,
                            reduction: str = "none", *, p_t: str = "linear", probability_clip: float = 0.0,
                            mean_over: str = "elements", sum_rule: str = "plain") -> dict[str, np.ndarray]:
    """VJP of :func:`sigmoid_focal_loss` w.r.t. ``inputs`` and ``targets``."""
    with workprec():
        _, dx, dy, bounds = _sigmoid_elements(inputs, targets, alpha, gamma, p_t, probability_clip)
        w = _sigmoid_weights(targets, reduction, mean_over, sum_rule)
        g = to_mp(np.broadcast_to(np.asarray(grad_output, dtype=np.float64), np.shape(inputs)))
        cot = g * w
        out = {"inputs": cot * dx, "targets": cot * dy}
        if all(b is not None for b in bounds) and all(mpmath.isfinite(v) for v in cot.reshape(-1)):
            certify(out, [b[1] for b in bounds] + [b[2] for b in bounds])
        return out


# ----------------------------------------------------------------------------------------------
# Softmax focal loss


def _alpha_of(alpha, c: int, scalar_alpha: str) -> mpf:
    if alpha is None:
        return mpf(1)
    if np.ndim(alpha) == 0:
        a = mpf(float(alpha))
        return 1 - a if (scalar_alpha == "background" and c == 0) else a
    return mpf(float(np.asarray(alpha, dtype=np.float64)[c]))


class _Rows:
    """Rows of logits (class axis last), targets, per-row α and the reduction's weights."""

    def __init__(self, input, target, alpha, ignore_index, reduction, scalar_alpha, mean_over, empty_mean,
                 sum_rule):
        x = np.asarray(input)
        self.shape = x.shape
        self.lead = (x.shape[0], *x.shape[2:])
        self.C = x.shape[1]
        xl = class_last(x, 1)
        # float logits: their exact raw values, class last (rows built by softmax_rows_raw); else mpf rows
        self.raw = to_raw(np.ascontiguousarray(xl)) if x.dtype.kind == "f" else None
        self.x = None if self.raw is not None else class_last(to_mp(x), 1).reshape(-1, self.C)
        self.t = np.asarray(target).reshape(-1)
        self.valid = [int(t) != ignore_index for t in self.t]
        per: dict[int, mpf] = {}  # α of each class once (the same expression gives the same number)
        self.alpha = [(per[c] if (c := int(t)) in per else per.setdefault(c, _alpha_of(alpha, c, scalar_alpha)))
                      if v else mpf(0) for t, v in zip(self.t, self.valid)]
        self.negative_alpha = any(a._mpf_[0] for a in self.alpha)  # (a raw sign: α < 0, NaN not)
        self.weights = self._weights(reduction, mean_over, empty_mean, sum_rule)

    def _weights(self, reduction, mean_over, empty_mean, sum_rule) -> list:
        M = len(self.t)
        if reduction == "none" or (reduction == "sum" and (sum_rule == "plain" or len(self.shape) < 3)):
            return [mpf(1)] * M
        if reduction == "sum":  # MONAI: per sample, the mean over its counted spatial positions
            per = M // self.shape[0] if self.shape[0] else 0
            out = []
            for n in range(self.shape[0]):
                count = sum(self.valid[n * per:(n + 1) * per])
                out += [self._inv(mpf(count), empty_mean)] * per
            return out
        if reduction != "mean":
            raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
        if mean_over == "targets":
            den = mpf(sum(self.valid))
        elif mean_over == "alpha":
            den = mp_sum(self.alpha)
        elif mean_over == "elements":
            den = mpf(M * self.C)
        else:
            raise ValueError(f"mean_over must be 'targets', 'alpha' or 'elements', got {mean_over!r}")
        return [self._inv(den, empty_mean)] * M

    @staticmethod
    def _inv(den: mpf, empty_mean: str) -> mpf:
        if den != 0:
            return 1 / den
        return mpf(0) if empty_mean == "zero" else mpmath.nan




@memo
def _softmax_row(xr, y: int, a: mpf, gamma: mpf, clip: float):
    """:func:`_row_terms` of one row of mpf logits ``xr`` (kept: the conditioning's differencing
    changes one row at a time)."""
    return _row_terms(SoftmaxRow(xr), len(xr), y, a, gamma, clip)


def _row_terms(sr: SoftmaxRow, C: int, y: int, a: mpf, gamma: mpf, clip: float):
    """``(ℓ, (∂ℓ/∂x_j), certificate)`` of one row of ``C`` logits (its :class:`SoftmaxRow` ``sr``),
    as raw tuples. The certificate, at γ = 0 without a clip (None otherwise; u = 2^−P): ``−log p_y``,
    ``1 − p_y`` within 8u (:meth:`~lossoracle.mpfuncs.SoftmaxRow.bound`), α within u, so
    ``ℓ = α·1·L`` and ``F = α·1·(0 + u)`` within 11u (4 bits); ``F·e_j/S`` adds ``e_j``'s 2u,
    ``S``'s 3.01u and two roundings: 18u (5 bits); a bad row is NaN at every precision."""
    if sr.bad:
        return fnan, (fnan,) * C, (EXACT, (EXACT,) * C)
    prec, rnd = mp._prec_rounding
    clipped = False
    a_raw, g_raw = a._mpf_, gamma._mpf_
    if clip:
        L, u, p = sr.neg_log_p(y), sr.one_minus_p(y), sr.p(y)
        c = mpf(clip)
        if p < c or p > 1 - c:
            clipped = True
            p = c if p < c else 1 - c
            L, u = -mpmath.log(p), 1 - p
        ug = mpf(1) if g_raw == fzero else u**gamma
        value = (a * ug * L)._mpf_
        if not clipped and a_raw != fzero:
            F = (a * ug * (gamma * p * L + u))._mpf_
    else:  # the same products on raw tuples
        L, u = sr.neg_log_p_raw(y), sr.one_minus_p_raw(y)
        aug = mpf_mul(a_raw, fone if g_raw == fzero else (mp.make_mpf(u) ** gamma)._mpf_, prec, rnd)
        value = mpf_mul(aug, L, prec, rnd)
        if a_raw != fzero:
            if g_raw == fzero and L[1]:  # 0·p·L = 0 exactly (L finite, non-zero), and 0 + u = u: aug·u
                F = mpf_mul(aug, u, prec, rnd)
            else:
                F = mpf_mul(aug, mpf_add(mpf_mul(mpf_mul(g_raw, sr.p_raw(y), prec, rnd), L, prec, rnd), u,
                                         prec, rnd), prec, rnd)
    certified = g_raw == fzero and not clip
    special = sr.bound(y) == EXACT
    kv = (EXACT if special else 4) if certified else None
    if clipped or a_raw == fzero:
        return value, (fzero,) * C, (kv, (0,) * C) if certified else None
    # −F at the target, F·e_j/S elsewhere (0 for S = 0): the object formula's libmp steps
    f, S = F, sr.sum_except_raw(y)
    neg, nonzero = mpf_neg(f, prec, rnd), S[1] or S[2]
    grads = [neg if j == y else mpf_div(mpf_mul(f, ej, prec, rnd), S, prec, rnd) if nonzero else fzero
             for j, ej in enumerate(sr.e_raw)]
    if not certified:
        return value, grads, None
    return value, grads, (kv, tuple(EXACT if special else 4 if j == y else 5 for j in range(C)))


@memo
def _softmax(input, target, alpha, gamma, ignore_index, reduction, scalar_alpha, mean_over, empty_mean, sum_rule,
             clip):
    """The rows, per-row losses, gradients (raw tuples) and certificates of a case (kept: the value
    and the VJP share them; read only)."""
    rows = _Rows(input, target, alpha, ignore_index, reduction, scalar_alpha, mean_over, empty_mean, sum_rule)
    g = mpf(gamma)
    losses, grads, bounds = [], [], []
    C = rows.C
    for i, (y, v, a) in enumerate(zip(rows.t, rows.valid, rows.alpha)):
        if not v:
            losses.append(fzero)
            grads.append([fzero] * C)
            bounds.append((0, (0,) * C))
            continue
        if rows.raw is None:
            val, gr, b = _softmax_row(rows.x[i], int(y), a, g, clip)
        else:  # the row kept by its exact values (softmax_rows_raw), its terms computed here
            val, gr, b = _row_terms(softmax_rows_raw(rows.raw[i * C:(i + 1) * C], 1, C)[0], C, int(y), a, g, clip)
        losses.append(val)
        grads.append(gr)
        bounds.append(b)
    if any(b is None for b in bounds) or rows.negative_alpha:
        bounds = None  # (certified: α ≥ 0, so that a mean over Σ α is within u)
    return rows, losses, grads, bounds


def softmax_focal_loss(input, target, alpha=None, gamma: float = 2.0, ignore_index: int = -100,
                       reduction: str = "mean", *, scalar_alpha: str = "all", mean_over: str = "targets",
                       empty_mean: str = "nan", sum_rule: str = "plain", probability_clip: float = 0.0):
    """Exact multi-class focal loss of logits ``input`` against class indices ``target``."""
    with workprec():
        rows, losses, _, bounds = _softmax(input, target, alpha, gamma, ignore_index, reduction, scalar_alpha,
                                           mean_over, empty_mean, sum_rule, probability_clip)
        if reduction == "none":
            out = mp_array([mp.make_mpf(t) for t in losses], rows.lead)
            if bounds is not None:
                certify(out, [b[0] for b in bounds])
            return out
        if not losses and reduction == "mean":
            out = mpf(0) if empty_mean == "zero" else mpmath.nan
            certify(out, [EXACT])
            return out
        prec, rnd = mp._prec_rounding  # w·v as the mpf product computes it (0 where w = 0)
        terms = [mpf_mul(w._mpf_, v, prec, rnd) if w._mpf_ != fzero else fzero for w, v in zip(rows.weights, losses)]
        total = mpf_pos(sum_raw(terms, prec, rnd), prec, rnd)  # mp_sum
        out = mp.make_mpf(total)
        if bounds is not None:  # a term within 16u and the weight's 2u: 5 bits
            certify(out, [sum_bound([_raw_mag(t) + 5 for t, b in zip(terms, bounds) if t != fzero and b[0] != EXACT],
                                    total)])
        return out


def softmax_focal_loss_grad(grad_output, input, target, alpha=None, gamma: float = 2.0, ignore_index: int = -100,
                            reduction: str = "mean", *, scalar_alpha: str = "all", mean_over: str = "targets",
                            empty_mean: str = "nan", sum_rule: str = "plain",
                            probability_clip: float = 0.0) -> dict[str, np.ndarray]:
    """VJP of :func:`softmax_focal_loss` w.r.t. ``input`` (ignored rows get 0). Certified: the
    row's bounds plus the cotangent's weight (2u) and two products: one bit more."""
    with workprec():
        rows, _, grads, bounds = _softmax(input, target, alpha, gamma, ignore_index, reduction, scalar_alpha,
                                          mean_over, empty_mean, sum_rule, probability_clip)
        if reduction == "none":
            g = to_mp(np.broadcast_to(np.asarray(grad_output, dtype=np.float64), rows.lead)).reshape(-1)
        else:
            g = [mpf(float(np.asarray(grad_output, dtype=np.float64).reshape(-1)[0]))] * len(rows.t)
        out, kb = [], []
        prec, rnd = mp._prec_rounding
        zeros = [fzero] * rows.C
        for i, (gi, w, v, gr) in enumerate(zip(g, rows.weights, rows.valid, grads)):
            if not v:
                out.extend(zeros)
            else:  # gi·w·d (the object products' libmp steps)
                gw = mpf_mul(gi._mpf_, w._mpf_, prec, rnd)
                out.extend([mpf_mul(gw, d, prec, rnd) for d in gr])
            if bounds is not None:
                special = not (_finite(gi._mpf_) and _finite(w._mpf_))
                kb.extend(EXACT if special or k == EXACT else k + 1 for k in bounds[i][1])
        shape = (*rows.lead, rows.C)
        result = {"input": np.moveaxis(mp_array([mp.make_mpf(t) for t in out], shape), -1, 1)}
        if bounds is not None:
            certify(result, kb if len(shape) <= 2 else np.moveaxis(mp_array(kb, shape), -1, 1).reshape(-1).tolist())
        return result


def _finite(t: tuple) -> bool:
    """A raw value is finite (zero, or a non-zero mantissa; the specials have man 0, exp ≠ 0)."""
    return bool(t[1]) or not t[2]


# ----------------------------------------------------------------------------------------------
# Reduction sizes (the log2(n) allowance)


def _elements(inputs, params) -> int:
    """Elements summed into one output: all of them under ``sum``/``mean``, one under ``none``."""
    return max(int(np.size(inputs["inputs"])), 1) if params.get("reduction", "none") != "none" else 1


def _positions(inputs, params) -> int:
    """Positions summed into one output under ``sum``/``mean`` (the focal term is per position)."""
    x = inputs["input"]
    if params.get("reduction", "mean") == "none":
        return 1
    return max(int(np.size(x) // max(np.shape(x)[1], 1)) if np.ndim(x) >= 2 else 1, 1)


# ----------------------------------------------------------------------------------------------
# Edge catalogue and generated cases

_F = np.float64
GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)
_LOGIT_LADDER = tuple(v for x in LADDERS["logits"] for v in (x, -x) if not (x == 0 and v is not x))


def _sig_case(id_, x, y, note="", raises=None, **params) -> Case:
    xa = np.asarray(x) if raises is TypeError else np.asarray(x, dtype=_F)
    return Case(id_, {"inputs": xa, "targets": np.asarray(y, dtype=_F)}, params, raises=raises, note=note)


def _sigmoid_cases() -> list[Case]:
    r = rng_for("sigmoid_focal_loss", "edge")
    lad = np.array(_LOGIT_LADDER)
    x45 = logits(r, (4, 5), "half")
    y45 = (r.random((4, 5)) < 0.4).astype(_F)
    cases = []
    for g in GAMMAS:
        cases += [
            _sig_case(f"ladder_hard_g{g}", np.stack([lad, lad]), np.stack([np.ones_like(lad), np.zeros_like(lad)]),
                      gamma=g, note="every logit of the edge ladder against targets 1 and 0"),
            _sig_case(f"soft_g{g}", np.repeat([[-100.0, -20.0, -1.0, 0.0, 0.5, 1.0, 20.0, 100.0]], 7, 0),
                      np.repeat([[0.0], [0.125], [0.25], [0.5], [0.75], [0.9921875], [1.0]], 8, 1),
                      gamma=g, alpha=0.75, note="soft targets, linear p_t"),
            _sig_case(f"soft_f64_g{g}", np.repeat([[-1e4, -40.0, -1.0, 0.5, 40.0, 1e4]], 4, 0),
                      np.repeat([[1e-300], [1e-8], [0.1], [1.0 - 2.0**-53]], 6, 1), gamma=g,
                      note="targets only float64 holds"),
        ]
    for red in ("none", "mean", "sum"):
        cases += [
            _sig_case(f"basic_{red}", x45, y45, reduction=red),
            _sig_case(f"spatial_{red}", logits(r, (2, 3, 2, 2), "half"), (r.random((2, 3, 2, 2)) < 0.5).astype(_F),
                      reduction=red, gamma=1.0, note="(N, C, H, W): MONAI's sum averages over H, W"),
            _sig_case(f"empty_{red}", np.zeros(0), np.zeros(0), reduction=red,
                      note="mean of nothing: NaN" if red == "mean" else ""),
        ]
    cases += [
        _sig_case("tail_tiny_x20_y1", [20.0, 40.0, 100.0], [1.0, 1.0, 1.0],
                  note="loss ~ e^-3x: 1 − p_t must come from σ(−x), not 1 − σ(x)"),
        _sig_case("tail_huge_xm1e4_y1", [-1e4, -100.0, 1e4], [1.0, 1.0, 0.0], note="loss ~ α_t·|x|"),
        _sig_case("saturated_g0.5", [17.0, 20.0, 40.0, 100.0, -17.0, -20.0, -40.0, -100.0],
                  [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0], gamma=0.5,
                  note="γ < 1 at saturation: the gradient tends to 0 (q^γ has an infinite slope)"),
        _sig_case("saturated_g0.5_wrong", [17.0, 100.0, -17.0, -100.0], [0.0, 0.0, 1.0, 1.0], gamma=0.5),
        _sig_case("alpha_disabled", x45, y45, alpha=-1.0, note="α = −1: no α_t weighting"),
        _sig_case("alpha_0", x45, y45, alpha=0.0),
        _sig_case("alpha_1", x45, y45, alpha=1.0),
        _sig_case("alpha_half_soft", x45, probabilities(r, (4, 5), "half"), alpha=0.5, reduction="sum"),
        _sig_case("one_dim", [0.5, -3.0, 7.25], [1.0, 0.0, 1.0], reduction="mean"),
        _sig_case("no_positives_mean", [0.5, -3.0, 7.25, 2.0], [0.0, 0.0, 0.0, 0.0], reduction="mean",
                  note="RetinaNet normalisation: max(1, 0) = 1"),
        _sig_case("nan_logit", [float("nan"), 1.0], [1.0, 0.0], note="NaN propagates"),
        _sig_case("tiny_logits", [2.0**-24, -(2.0**-24), 0.0], [1.0, 0.5, 0.0], gamma=0.5),
    ]
    for grid in GRIDS:
        for i, (red, alpha) in enumerate([("none", 0.25), ("mean", -1.0), ("sum", 0.75), ("none", 0.5)]):
            rg = rng_for("sigmoid_focal_loss", grid, i)
            shape = [(6, 7), (3, 4, 5), (40,), (2, 3, 2)][i]
            y = (rg.random(shape) < 0.3).astype(_F) if i % 2 == 0 else probabilities(rg, shape, grid)
            cases.append(_sig_case(f"random_{grid}_{i}", logits(rg, shape, grid), y, reduction=red, alpha=alpha,
                                   gamma=GAMMAS[(i + GRIDS.index(grid)) % len(GAMMAS)]))
    cases += [
        _sig_case("bad_target_above_1", [0.5, 1.0], [1.5, 0.0], raises=ValueError, note="targets outside [0, 1]"),
        _sig_case("bad_target_negative", [0.5, 1.0], [-0.5, 0.0], raises=ValueError),
        _sig_case("bad_gamma_negative", [0.5, 1.0], [1.0, 0.0], gamma=-1.0, raises=ValueError),
        _sig_case("bad_alpha_above_1", [0.5, 1.0], [1.0, 0.0], alpha=1.5, raises=ValueError),
        _sig_case("bad_alpha_negative", [0.5, 1.0], [1.0, 0.0], alpha=-0.5, raises=ValueError,
                  note="only α = −1 disables the weighting"),
        _sig_case("bad_shape_mismatch", [0.5, 1.0, 2.0], [1.0, 0.0], raises=ValueError),
        _sig_case("bad_reduction", [0.5, 1.0], [1.0, 0.0], reduction="avg", raises=ValueError),
        _sig_case("bad_integer_inputs", np.array([1, 2]), [1.0, 0.0], raises=TypeError, note="non-floating logits"),
    ]
    return cases


def _sm_case(id_, x, t, note="", raises=None, **params) -> Case:
    xa = np.asarray(x) if raises is TypeError else np.asarray(x, dtype=_F)
    t = np.asarray(t)
    ta = t if t.dtype.kind == "f" else t.astype(np.int64)
    return Case(id_, {"input": xa, "target": ta}, params, raises=raises, note=note)


def _softmax_cases() -> list[Case]:
    r = rng_for("softmax_focal_loss", "edge")
    x45 = logits(r, (4, 5), "half")
    margins = [5.0, 20.0, 40.0, 100.0, 1000.0]
    confident = [[m, 0.0, -1.0] for m in margins]
    cases = []
    for red in ("none", "mean", "sum"):
        cases += [
            _sm_case(f"basic_{red}", x45, [0, 4, 2, 1], reduction=red),
            _sm_case(f"spatial_{red}", logits(r, (2, 3, 2, 2), "half"), class_indices(r, (2, 2, 2), 3),
                     reduction=red, gamma=1.0),
            _sm_case(f"spatial_ignore_{red}", logits(r, (2, 3, 2, 2), "half"),
                     [[[0, -100], [2, 1]], [[-100, -100], [1, 0]]], reduction=red, alpha=0.25),
            _sm_case(f"ignore_some_{red}", x45, [0, -100, 3, -100], reduction=red),
            _sm_case(f"ignore_all_{red}", x45, [-100] * 4, reduction=red,
                     note="mean over no target: NaN" if red == "mean" else ""),
            _sm_case(f"empty_batch_{red}", np.zeros((0, 5)), np.zeros(0, np.int64), reduction=red),
        ]
    for g in GAMMAS:
        cases += [
            _sm_case(f"gamma_{g}", x45, [3, 0, 2, 4], gamma=g, reduction="none"),
            _sm_case(f"confident_g{g}", confident, [0] * len(margins), gamma=g, reduction="none",
                     note="p_y → 1: the loss is ~e^{-(γ+1)·margin}"),
        ]
    cases += [
        _sm_case("saturated_g0.5", [[20.0, 0.0], [40.0, -1.0], [100.0, 0.0], [0.0, 1e4]], [0, 0, 0, 1], gamma=0.5,
                 reduction="sum", note="γ < 1, p_y rounds to 1: the gradient tends to 0"),
        _sm_case("wrong_confident", [[m, 0.0, -1.0] for m in margins], [1] * len(margins), reduction="none"),
        _sm_case("huge_1e4", [[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 1e4, -1e4]], [0, 0, 1], reduction="none"),
        _sm_case("alpha_scalar", x45, [0, 4, 2, 0], alpha=0.25, reduction="none",
                 note="one α for every class (kornia/MONAI give class 0 1 − α)"),
        _sm_case("alpha_scalar_mean", x45, [0, 4, 2, 0], alpha=0.25),
        _sm_case("alpha_vector", x45, [0, 4, 2, 1], alpha=(0.25, 0.5, 0.75, 1.0, 0.125), reduction="none"),
        _sm_case("alpha_vector_mean", x45, [0, 4, -100, 1], alpha=(0.25, 0.5, 0.75, 1.0, 0.125)),
        _sm_case("alpha_zero_class", x45, [0, 1, 1, 1], alpha=(0.0, 0.5, 0.75, 1.0, 0.125), reduction="none"),
        _sm_case("single_class", [[3.0], [-1e4]], [0, 0], reduction="none", gamma=0.5, note="p = 1: loss 0"),
        _sm_case("all_equal", np.zeros((3, 4)), [0, 1, 3], reduction="none"),
        _sm_case("neg_inf_logit", [[-np.inf, 0.0, 1.0], [2.0, -np.inf, -np.inf]], [1, 0], reduction="none",
                 note="a −inf logit off the target is a masked class"),
        _sm_case("nan_logit", [[np.nan, 0.0, 1.0], [2.0, 0.5, 0.25]], [1, 0], reduction="none"),
        _sm_case("fp16_overflow_11", [[11.125, -11.125, 0.0]], [1], reduction="none"),
        _sm_case("fp32_overflow_88", [[88.75, -88.75, 0.0], [89.0, 0.0, 0.0]], [1, 0], reduction="none"),
    ]
    for grid in GRIDS:
        for i, (red, alpha) in enumerate([("mean", None), ("sum", 0.25), ("none", "vector"), ("mean", "vector")]):
            rg = rng_for("softmax_focal_loss", grid, i)
            C = int(rg.integers(2, 9))
            a = tuple(float(v) for v in rg.integers(1, 9, C) / 8.0) if alpha == "vector" else alpha
            t = class_indices(rg, (7,), C)
            t[rg.random(7) < 0.2] = -100
            cases.append(_sm_case(f"random_{grid}_{i}", logits(rg, (7, C), grid), t, reduction=red, alpha=a,
                                  gamma=GAMMAS[(i + GRIDS.index(grid)) % len(GAMMAS)]))
    cases += [
        _sm_case("bad_target_class", x45, [0, 1, 5, 2], raises=ValueError, note="class index out of range"),
        _sm_case("bad_target_negative", x45, [0, -1, 2, 2], raises=ValueError, note="negative index, not ignored"),
        _sm_case("bad_target_shape", x45, [0, 1, 2], raises=ValueError),
        _sm_case("bad_target_float", x45, [0.0, 1.0, 2.0, 3.0], raises=TypeError, note="targets are class indices"),
        _sm_case("bad_gamma_negative", x45, [0, 1, 2, 3], gamma=-0.5, raises=ValueError),
        _sm_case("bad_alpha_above_1", x45, [0, 1, 2, 3], alpha=1.5, raises=ValueError),
        _sm_case("bad_alpha_length", x45, [0, 1, 2, 3], alpha=(0.25, 0.5), raises=ValueError),
        _sm_case("bad_alpha_entry", x45, [0, 1, 2, 3], alpha=(0.25, 0.5, 0.75, 2.0, 0.5), raises=ValueError),
        _sm_case("bad_reduction", x45, [0, 1, 2, 3], reduction="avg", raises=ValueError),
        _sm_case("bad_integer_input", [[1, 2], [3, 4]], [0, 1], raises=TypeError, note="non-floating logits"),
        _sm_case("bad_one_dim_input", [0.5, -1.0, 2.0], np.int64(2), raises=ValueError, note="needs (N, C, …)"),
    ]
    return cases


_CLIPS = (1e-7, 1e-8, 1e-12, 1e-15, DTYPE_EPS)  # Keras 1e-7, kornia 1e-8, sklearn the dtype's eps
_SIG_CONVENTIONS = (
    Convention("p_t", "linear", "soft-target p_t: linear (torchvision, Keras, optax) | per_term (kornia) | "
                                "sign (MONAI: σ(−x(2y−1))) | exp_bce (SMP: e^{−BCE})",
               values=("per_term", "sign", "exp_bce")),
    Convention("probability_clip", 0.0, "BCE term from σ(x) clipped to [c, 1 − c] (Keras: 1e-7); no gradient "
                                        "through a clipped probability", values=_CLIPS),
    Convention("mean_over", "elements", "mean denominator: elements | positives (RetinaNet: max(1, #{y = 1}))",
               values=("positives",)),
    Convention("sum_rule", "plain", "sum: plain | spatial_mean (MONAI: Σ over N, C of the mean over H, W, …)",
               values=("spatial_mean",)),
)
_SM_CONVENTIONS = (
    Convention("scalar_alpha", "all", "a scalar α weights: all classes | background (class 0 gets 1 − α: kornia, "
                                      "MONAI)", values=("background",)),
    Convention("mean_over", "targets", "mean denominator: targets (counted) | alpha (Σ α_y) | elements "
                                       "(N·C·d1⋯, ignored included: kornia, MONAI without a mask)",
               values=("alpha", "elements")),
    Convention("empty_mean", "nan", "a mean over nothing: nan (0/0) | zero (kornia, MONAI)", values=("zero",)),
    Convention("sum_rule", "plain", "sum: plain | spatial_mean (MONAI: Σ over N of the mean over counted d1⋯)",
               values=("spatial_mean",)),
    Convention("probability_clip", 0.0, "p clipped to [c, 1 − c] in log p and (1 − p)^γ (Keras: 1e-7)",
               values=_CLIPS),
)

SPECS = (
    Spec(
        name="sigmoid_focal_loss",
        signature='sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="none")',
        definition="α_t (1 − p_t)^γ BCE(x, y); p = σ(x), p_t = p·y + (1 − p)(1 − y), α_t = α·y + (1 − α)(1 − y) "
                   "(α = −1: none); mean over all elements",
        source="Lin et al. 2017, Focal Loss for Dense Object Detection, eqs. (4)-(5); torchvision.ops."
               "sigmoid_focal_loss",
        args=(Arg("inputs", "logits", differentiable=True),
              Arg("targets", "probability_target", differentiable=True)),
        params={"alpha": 0.25, "gamma": 2.0, "reduction": "none"},
        oracle=sigmoid_focal_loss,
        gradient=sigmoid_focal_loss_grad,
        cases=_sigmoid_cases,
        conventions=_SIG_CONVENTIONS,
        reduced_terms=_elements,
        edge_notes=("γ < 1 at saturated logits: the gradient's limit is 0 (finite), not NaN",
                    "mean of an empty tensor: NaN; α = −1 disables α_t",
                    "γ = 0: exactly α_t·BCE-with-logits"),
    ),
    Spec(
        name="softmax_focal_loss",
        signature='softmax_focal_loss(input, target, alpha=None, gamma=2.0, ignore_index=-100, reduction="mean")',
        definition="l_i = −α_y (1 − p_iy)^γ log p_iy, p = softmax over dim 1, 0 if ignored; mean = Σ l / #counted",
        source="Lin et al. 2017, Focal Loss for Dense Object Detection, eq. (5), multi-class form",
        args=(Arg("input", "logits", differentiable=True), Arg("target", "class_index")),
        params={"alpha": None, "gamma": 2.0, "ignore_index": -100, "reduction": "mean"},
        oracle=softmax_focal_loss,
        gradient=softmax_focal_loss_grad,
        cases=_softmax_cases,
        conventions=_SM_CONVENTIONS,
        reduced_terms=_positions,
        edge_notes=("all targets ignored or an empty batch under mean: NaN (0/0); gradient 0",
                    "a single class: p = 1, the loss and its gradient are 0",
                    "γ < 1 with p_y → 1: the gradient's limit is 0 (finite), not NaN"),
    ),
)
