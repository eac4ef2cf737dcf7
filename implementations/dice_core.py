"""Soft Dice / Jaccard / Tversky / generalized Dice kernels, written once for NumPy arrays and torch tensors.

The definitions, conventions and the cancellation-free forms are those of
``lossoracle.reference.dice``: every loss is ``num/D`` with ``num`` (= ``D − N``) and ``D`` summed
from non-negative terms — ``FP = Σ p(1 − y)``, ``FN = Σ (1 − p)y`` with ``1 − p`` taken from the
activation itself (``σ(−x)``; the softmax's sum of the other classes at the arg-max), never
``1 − ratio``. The kernels run in a *compute* dtype chosen by the callers — float64 for
float16/bfloat16/float32 data (products of two float32 values are exact in float64 and the sums
are far below one float32 ULP), NumPy's long double (64-bit significand) for float64 data on the
CPU — and the callers round once to the input's dtype.

The gradient is the analytic VJP: per group ``∂ℓ/∂I = −d_I·num/D²``, ``∂ℓ/∂FP = α·N/D²``,
``∂ℓ/∂FN = β·N/D²`` (α = β = 1 for dice/jaccard, whose ``M = FP + FN``; ``∂ℓ/∂M = N/D²`` for
the squared form), spread to the positions as ``y·(∂I − ∂FN) + (1 − y)·∂FP`` (two terms of
opposite sign only for soft labels), then through the activation: ``σ'``: ``p(1 − p)``; softmax:
``p_c·(h_c − Σ_j p_j h_j)`` with ``h = g − g_argmax`` (the large arg-max term never cancels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .doubledouble import xp as namespace
from .validation import REDUCTIONS, is_floating, require_floating, require_range, require_reduction

Array = Any  # numpy.ndarray or torch.Tensor

ACTIVATIONS = ("none", "sigmoid", "softmax")
W_TYPES = ("square", "simple", "uniform")
LONG_DOUBLE = np.longdouble if np.finfo(np.longdouble).nmant > 52 else None


@dataclass(frozen=True)
class Params:
    kind: str  # dice | jaccard | tversky | generalized_dice
    activation: str = "none"
    include_background: bool = True
    squared: bool = False
    batch: bool = False
    smooth_nr: float = 1e-5
    smooth_dr: float = 1e-5
    ignore_index: int = -100
    reduction: str = "mean"
    alpha: float = 0.5
    beta: float = 0.5
    w_type: str = "square"

    @property
    def pooled(self) -> bool:
        return self.kind == "generalized_dice"


# ----------------------------------------------------------------------------------------------
# Validation (clear errors naming the argument)


def _shape(a) -> tuple[int, ...]:
    return tuple(a.shape)


def _is_integer(a) -> bool:
    if isinstance(a, np.ndarray):
        return a.dtype.kind in "iu"
    return not a.is_floating_point() and not a.is_complex() and a.dtype.__str__() != "torch.bool"


def _index_range(target: Array, C: int) -> bool:
    """Every class index lies in ``[0, C)`` (True for an empty target)."""
    if 0 in _shape(target):
        return True
    lo, hi = (target.min(), target.max()) if isinstance(target, np.ndarray) else namespace(target).aminmax(target)
    return 0 <= int(lo) and int(hi) < C


def check(input: Array, target: Array, weight: Array | None, prm: Params) -> bool:
    """Validate a call; returns True for floating (one-hot / soft) targets."""
    require_floating("input", input)
    shape = _shape(input)
    if len(shape) < 2:
        raise ValueError(f"input must have shape (N, C, ...) with the classes on axis 1, got shape {shape}")
    C = shape[1]
    if prm.activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {prm.activation!r}")
    if prm.activation == "softmax" and C < 2:
        raise ValueError(f"activation='softmax' over the class axis 1 of size {C} is constant 1: the softmax would "
                         f"run over the wrong axis (use activation='sigmoid' for one channel)")
    if not prm.include_background and C < 2:
        raise ValueError("include_background=False needs at least 2 classes on axis 1")
    require_reduction(prm.reduction)
    for name in ("smooth_nr", "smooth_dr", "alpha", "beta"):
        v = getattr(prm, name)
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not (
                0 <= float(v) < float("inf")):
            raise ValueError(f"{name} must be a finite non-negative number, got {v!r}")
    if prm.kind == "generalized_dice" and prm.w_type not in W_TYPES:
        raise ValueError(f"w_type must be one of {W_TYPES}, got {prm.w_type!r}")
    if prm.activation == "none":
        require_range("input", input, 0.0, 1.0)
    if weight is not None:
        require_floating("weight", weight)
        if _shape(weight) != (C,):
            raise ValueError(f"weight must have shape ({C},) (one per class of input), got {_shape(weight)}")
        require_range("weight", weight, 0.0, float("inf"))
    if is_floating(target):
        if _shape(target) != shape:
            raise ValueError(f"target shape {_shape(target)} does not match input shape {shape} (one-hot or soft "
                             f"labels), nor the class-index shape {(shape[0], *shape[2:])}")
        require_range("target", target, 0.0, 1.0)
        return True
    if not _is_integer(target):
        raise TypeError(f"target must be floating (one-hot / soft labels) or integer (class indices), got "
                        f"dtype {target.dtype}")
    want = (shape[0], *shape[2:])
    if _shape(target) != want:
        raise ValueError(f"class-index target shape {_shape(target)} does not match the expected {want} for input "
                         f"{shape}")
    if _index_range(target, C):  # one reduction; the masks below only when some index lies outside [0, C)
        return False
    live = target != prm.ignore_index
    if bool((((target < 0) | (target >= C)) & live).any()):
        raise ValueError(f"target class indices must lie in [0, {C - 1}] (or equal ignore_index={prm.ignore_index})")
    return False


# ----------------------------------------------------------------------------------------------
# Forward


@dataclass
class Prepared:
    """Per-position quantities, shape (N, C, S) in the compute dtype: ``p``, ``q = 1 − p``, the labels
    ``y`` and ``ny = 1 − y`` (for class indices the one-hot masks, 0 at ignored positions in both).
    Selections are products with exact 0/1 masks (``v·1 = v``, ``v·0 = 0`` for the finite values
    here), which torch evaluates several times faster than ``where``."""

    p: Array
    q: Array
    y: Array
    ny: Array
    top: Array | None  # softmax: 1 at the class(es) attaining the maximum, else 0
    k: Array | None  # softmax: how many classes attain the maximum (N, 1, S)
    live: Array | None = None  # class indices with ignored positions: 1 at the live ones (N, 1, S)
    soft: bool = False  # labels given as probabilities (N, C, S)


def _mask(b: Array, like: Array) -> Array:
    """A boolean array as exact 0/1 values of ``like``'s dtype."""
    return b.astype(like.dtype) if isinstance(b, np.ndarray) else b.to(like.dtype)


def _amax(a: Array, axis: int) -> Array:
    return a.max(axis, keepdims=True) if isinstance(a, np.ndarray) else a.amax(axis, keepdim=True)


def _arange(n: int, like: Array) -> Array:
    return np.arange(n) if isinstance(like, np.ndarray) else namespace(like).arange(n, device=like.device)


def prepare(x: Array, target: Array, soft: bool, prm: Params) -> Prepared:
    """Activation and labels. ``x`` (N, C, S) in the compute dtype; ``target`` (N, C, S) of that dtype
    or class indices (N, S)."""
    xp = namespace(x)
    top = k = None
    if prm.activation == "none":
        p, q = x, 1 - x
    elif prm.activation == "sigmoid":
        e = xp.exp(-abs(x))
        big = 1 / (1 + e)
        small = e * big
        pos = _mask(x >= 0, x)
        p, q = pos * big + (1 - pos) * small, pos * small + (1 - pos) * big
    else:
        m = _amax(x, 1)
        top = _mask(x == m, x)  # the class(es) at the maximum: e = 1 exactly there
        k = top.sum(1)[:, None, :]
        e = xp.exp(x - m)
        rest = (e - e * top).sum(1)[:, None, :]  # Σ of the other classes: ≥ 0, no cancellation
        s = rest + k
        p = e / s
        q = top * ((rest + (k - 1)) / s) + (1 - top) * (1 - p)  # elsewhere p ≤ ½: 1 − p is accurate
    if soft:
        return Prepared(p, q, target, 1 - target, top, k, soft=True)
    C = x.shape[1]
    y = _mask(target[:, None, :] == _arange(C, x)[None, :, None], x)
    ny = 1 - y
    live = None
    if prm.ignore_index is not None:
        alive = target != prm.ignore_index
        if not bool(alive.all()):
            live = _mask(alive[:, None, :], x)
            y, ny = y * live, ny * live
    return Prepared(p, q, y, ny, top, k, live)


def _diff(pr: Prepared) -> Array:
    """``p − y``, as ``(1 − y) − (1 − p)`` where ``y ≥ ½`` (``−(1 − p)`` for a one-hot 1; 0 off the live
    positions of class-index targets)."""
    hi = _mask(pr.y >= 0.5, pr.p)
    d = hi * (pr.ny - pr.q) + (1 - hi) * (pr.p - pr.y)
    return d if pr.live is None else d * pr.live


def stats(pr: Prepared, prm: Params) -> dict[str, Array]:
    """Sums over the positions of every (sample, class): shape (N, C) (see :func:`finish`)."""
    out = {"I": (pr.p * pr.y).sum(-1), "FP": (pr.p * pr.ny).sum(-1), "FN": (pr.q * pr.y).sum(-1)}
    if prm.pooled or pr.soft:
        out["G"] = pr.y.sum(-1)
    if pr.soft:
        out["P"] = pr.p.sum(-1)  # with G: the soft labels' gradients (:func:`soft_coefficients`)
    if prm.squared:
        d = _diff(pr)
        out["M"] = (d * d).sum(-1)
    return out


def finish(out: dict[str, Array], prm: Params) -> dict[str, Array]:
    """The (N, C) sums of :func:`stats` summed over the batch with ``batch``, ``M = FP + FN`` unless
    squared, the background class dropped unless included: shape (G, C′)."""
    if prm.batch:
        out = {k: v.sum(0)[None] for k, v in out.items()}
    if not prm.squared:
        out["M"] = out["FP"] + out["FN"]
    if not prm.include_background:
        out = {k: v[:, 1:] for k, v in out.items()}
    return out


def add_stats(a: dict[str, Array] | None, b: dict[str, Array]) -> dict[str, Array]:
    """Stats of two blocks of positions (before the ratios)."""
    return dict(b) if a is None else {k: a[k] + b[k] for k in a}


def gdl_weights(G: Array, w_type: str) -> Array:
    """``1/G²`` (``1/G``, 1) per (group, class); an absent class takes its group's largest finite weight
    (0 if none) — MONAI's rule."""
    xp = namespace(G)
    if w_type == "uniform":
        return G * 0 + 1
    w = 1 / (G * G) if w_type == "square" else 1 / G
    inf = xp.isinf(w)
    w = xp.where(inf, 0, w)
    top = _amax(w, 1) if w.shape[1] else w
    return xp.where(inf, top, w)


@dataclass
class Ratios:
    """Per output element (G, C′) — or (G,) pooled — the loss and its pieces."""

    value: Array
    N: Array
    D: Array
    num: Array
    w: Array | None  # generalized Dice class weights (G, C′)
    sums: dict[str, Array]  # the finished sums of :func:`finish`


def _scalar(v: float, like: Array) -> Array:
    """A 0-d array of ``like``'s dtype holding the Python number ``v``."""
    if isinstance(like, np.ndarray):
        return np.asarray(v, dtype=like.dtype)
    return namespace(like).tensor(v, dtype=like.dtype, device=like.device)


def ratios(s: dict[str, Array], prm: Params) -> Ratios:
    snr, sdr = _scalar(prm.smooth_nr, s["I"]), _scalar(prm.smooth_dr, s["I"])
    ds = sdr - snr
    w = None
    I, FP, FN, M = s["I"], s["FP"], s["FN"], s["M"]
    if prm.pooled:
        w = gdl_weights(s["G"], prm.w_type)
        I, M = (w * I).sum(-1), (w * M).sum(-1)
    if prm.kind == "tversky":
        core = prm.alpha * FP + prm.beta * FN
        N, D, num = I + snr, I + core + sdr, core + ds
    else:
        two = 1 if prm.kind == "jaccard" else 2
        tI = two * I
        N, D, num = tI + snr, tI + M + sdr, M + ds
    return Ratios(num / D, N, D, num, w, s)


def output_shape(prm: Params, N: int, C1: int) -> tuple[int, ...]:
    if prm.pooled:
        return () if prm.batch else (N,)
    return (C1,) if prm.batch else (N, C1)


def reduce(v: Array, prm: Params, shape: tuple[int, ...]) -> Array:
    if prm.reduction == "none":
        return v.reshape(shape)
    total = v.sum()
    if prm.reduction == "sum":
        return total
    n = int(np.prod(v.shape))
    return total / n if n else total * float("nan")


def elementwise(r: Ratios, weight: Array | None, prm: Params) -> Array:
    """The (group, class) losses times the class weights (not for the pooled form)."""
    if weight is None or prm.pooled:
        return r.value
    w = weight[1:] if not prm.include_background else weight
    return r.value * w


# ----------------------------------------------------------------------------------------------
# Backward


def cotangent(grad_output: Array, r: Ratios, weight: Array | None, prm: Params) -> Array:
    """What each (group, class) loss — or pooled group — receives, class weight included."""
    a = grad_output
    shape = r.value.shape
    if prm.reduction == "none":
        a = a.reshape(shape)
    else:
        n = int(np.prod(shape))
        a = (a / n if prm.reduction == "mean" and n else a) + r.value * 0
    if weight is not None and not prm.pooled:
        a = a * (weight[1:] if not prm.include_background else weight)
    return a


def coefficients(r: Ratios, a: Array, prm: Params) -> tuple[Array, Array, Array, Array]:
    """``(∂/∂I, ∂/∂FP, ∂/∂FN, ∂/∂M)`` of ``Σ a·ℓ`` per (group, class), shape (G, C) (0 for a dropped
    background class)."""
    D2 = r.D * r.D
    two = 1 if prm.kind in ("jaccard", "tversky") else 2
    cI = -two * a * r.num / D2
    g = a * r.N / D2
    if prm.pooled:  # the group's coefficients, times each class's weight
        cI, g = cI[:, None] * r.w, g[:, None] * r.w
    cFP, cFN = (prm.alpha * g, prm.beta * g) if prm.kind == "tversky" else (g, g)
    return _with_background((cI, cFP, cFN, g), prm)


def _with_background(cols: tuple[Array, ...], prm: Params) -> tuple[Array, ...]:
    """Per-class columns with a zero column for a dropped background class."""
    if prm.include_background:
        return cols
    zero = cols[0][:, :1] * 0
    cat = np.concatenate if isinstance(zero, np.ndarray) else namespace(zero).cat
    return tuple(cat([zero, c], 1) for c in cols)


def soft_coefficients(r: Ratios, a: Array, prm: Params) -> tuple[tuple[Array, ...], tuple[Array, ...]]:
    """``(A, B, Cq, I, S)`` per (group, class), shape (G, C), of the soft labels' gradients in the form
    ``A·(I₋ₖ − v_k·S₋ₖ) − v_k·B + nv_k·Cq`` (input: ``v = y``, ``S = P = Σ p``; target: ``v = p``,
    ``S = G = Σ y``; ``₋ₖ``: the sum without position k; not squared, not pooled).

    ``∂/∂y_k = p_k·(∂I − ∂FP) + q_k·∂FN`` holds two terms of opposite sign that cancel where one position
    dominates ``I`` and ``FN`` (a single positive with a tiny ``p``: both ≈ ``2p``, the gradient ≈ ``p²``).
    With ``N = t·I + snr``, ``num = α·FP + β·FN + ds`` (``t`` = 2 for dice, else 1; α, β the Tversky
    weights, else 1) and ``q_j = 1 − p_j``, the cancelling part has a closed form:
    ``q_k·I − p_k·FN = Σ_j y_j (q_k p_j − p_k q_j) = Σ_{j≠k} y_j (p_j − p_k) = I₋ₖ − p_k·G₋ₖ``, so
    ``∂/∂y_k·D²/a = t·β·(I₋ₖ − p_k·G₋ₖ) − p_k·(t·(α·FP + ds) + α·N) + β·q_k·snr``: every remaining
    difference is between distinct monomials of the inputs (inherent: within the conditioning). By the
    symmetry p ↔ y (FP ↔ FN, α ↔ β), ``∂/∂p_k·D²/a = t·α·(I₋ₖ − y_k·P₋ₖ) − y_k·(t·(β·FN + ds) + β·N) +
    α·(1 − y_k)·snr`` (before the activation)."""
    s = r.sums
    t = 1 if prm.kind in ("jaccard", "tversky") else 2
    alpha, beta = (prm.alpha, prm.beta) if prm.kind == "tversky" else (1, 1)
    snr = _scalar(prm.smooth_nr, r.D)
    ds = _scalar(prm.smooth_dr, r.D) - snr  # as :func:`ratios` forms it
    scale = a / (r.D * r.D)
    gx = (t * alpha * scale, scale * (t * (beta * s["FN"] + ds) + beta * r.N), alpha * snr * scale, s["I"], s["P"])
    gy = (t * beta * scale, scale * (t * (alpha * s["FP"] + ds) + alpha * r.N), beta * snr * scale, s["I"], s["G"])
    cols = _with_background(gx + gy, prm)
    return cols[:5], cols[5:]


def _excluding(w: Array, total: Array) -> Array:
    """``Σ_{j≠k} w_j`` at every position k of the last axis, ``w ≥ 0``, without subtracting ``w_k``: the sums
    before and after k (cumulative sums shifted by one), plus ``total`` less the row's own sum — the other
    blocks of positions or samples of the group (``total`` is :func:`stats`' sum: exactly 0 for one block
    of one sample; else within a few ulp of ``total``, as accurate as the plain form)."""
    xp = namespace(w)
    zero = w[..., :1] * 0
    cat = np.concatenate if isinstance(w, np.ndarray) else xp.cat
    before = cat([zero, xp.cumsum(w, -1)[..., :-1]], -1)
    after = cat([xp.flip(xp.cumsum(xp.flip(w, (-1,)), -1), (-1,))[..., 1:], zero], -1)
    return before + after + (total - w.sum(-1)[..., None])


def _soft_gradient(v: Array, nv: Array, other: Array, c: tuple[Array, ...]) -> Array:
    """``A·(I₋ₖ − v_k·S₋ₖ) − v_k·B + nv_k·Cq`` (:func:`soft_coefficients`; ``other`` the labels when ``v``
    is ``p`` and the reverse, so that ``I = Σ v·other``)."""
    A, B, Cq, I, S = c
    return A * (_excluding(v * other, I) - v * _excluding(other, S)) - v * B + nv * Cq


def backward(pr: Prepared, r: Ratios, a: Array, prm: Params, want_target: bool):
    """``(∂/∂x, ∂/∂y)`` of ``Σ a·ℓ`` (``∂/∂y`` None unless ``want_target``)."""
    cI, cFP, cFN, g = (c[..., None] for c in coefficients(r, a, prm))  # (G, C, 1): over positions (and batch)
    gy = None
    if prm.squared:
        d2 = 2 * _diff(pr)
        gp = cI * pr.y + g * d2
        gy = cI * pr.p - g * d2 if want_target else None
    else:
        if pr.soft and not prm.pooled:
            cx, cy = (tuple(c[..., None] for c in cols) for cols in soft_coefficients(r, a, prm))
            gp = _soft_gradient(pr.y, pr.ny, pr.p, cx)
            gy = _soft_gradient(pr.p, pr.q, pr.y, cy) if want_target else None
        else:  # hard labels (no cancellation: one term per position), or the pooled form
            gp = pr.y * (cI - cFN) + pr.ny * cFP
            gy = pr.p * (cI - cFP) + pr.q * cFN if want_target else None
    if prm.activation == "sigmoid":
        gp = gp * pr.p * pr.q
    elif prm.activation == "softmax":  # pivot on the arg-max class(es): the large term never cancels
        pivot = (gp * pr.top).sum(1)[:, None, :] / pr.k
        h = gp - pivot
        t = (pr.p * h).sum(1)[:, None, :]
        gp = pr.p * (h - t)
    return gp, gy


__all__ = ["Params", "ACTIVATIONS", "W_TYPES", "LONG_DOUBLE", "REDUCTIONS", "check", "prepare", "stats", "finish",
           "add_stats", "ratios", "reduce", "elementwise", "cotangent", "coefficients", "soft_coefficients",
           "backward", "output_shape"]
