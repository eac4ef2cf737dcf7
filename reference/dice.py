"""Soft Dice, Jaccard (soft IoU), Tversky and generalized Dice losses: one exact, parameterised family.

Definition (per sample ``b`` and class ``c``; sums over the spatial positions ``i``, and over the
batch too when ``batch=True``). Input ``x`` of shape (N, C, d1, …, dk); the activation gives
``p = x`` (``"none"``: probabilities in [0, 1]), ``σ(x)`` (``"sigmoid"``) or ``softmax`` over the
class axis 1 (``"softmax"``). Targets ``y`` are one-hot / soft labels of the input's shape, or
class indices of shape (N, d1, …, dk) (one-hot; a position labelled ``ignore_index`` leaves every
sum, prediction and label alike). With ``k = 2`` when ``squared`` (Milletari's V-Net form), else 1::

    I = Σ p·y      P = Σ p^k      G = Σ y^k      FP = Σ p·(1 − y)      FN = Σ (1 − p)·y
    dice      = 1 − (2I + s_nr)/(P + G + s_dr)
    jaccard   = 1 − (I + s_nr)/(P + G − I + s_dr)
    tversky   = 1 − (I + s_nr)/(I + α·FP + β·FN + s_dr)          (= dice at α = β = ½ with s halved)
    gen. dice = 1 − (2·Σ_c w_c I_c + s_nr)/(Σ_c w_c (P_c + G_c) + s_dr),   w_c = 1/G_c² (Sudre)

(``s_nr`` = ``smooth_nr``, ``s_dr`` = ``smooth_dr``). Generalized Dice sums the classes of one
sample (of the batch when ``batch``) into one ratio; its weights are ``1/G²`` (``w_type="square"``),
``1/G`` (``"simple"``) or 1 (``"uniform"``), and a class absent from the target (``G_c = 0``, an
infinite weight) takes the largest finite weight of its group, or 0 if there is none — MONAI's
documented rule (Sudre et al. give none). ``include_background=False`` drops class 0 after the
activation (it still enters the softmax). Class weights ``weight`` (one per input class) multiply
each (sample, class) loss. Reductions over the (sample, class) losses: ``none`` (shape (N, C′),
(C′,) with ``batch``; generalized Dice (N,) or a scalar), ``mean`` (Σ/count, weights not
normalised), ``sum``. A ratio 0/0 (empty prediction and target, no smoothing) is NaN.

Sources: Milletari, Navab, Ahmadi, "V-Net", 3DV 2016, eq. (1) (squared denominators, no
smoothing); Salehi, Erdogmus, Gholipour, "Tversky loss function for image segmentation", 2017,
eq. (3) (α weights false positives, β false negatives); Sudre et al., "Generalised Dice overlap
as a deep learning loss function for highly unbalanced segmentations", DLMIA 2017, eq. (2);
CONVENTIONS.md §7 for the libraries.

Hazard and remedy: near a perfect prediction the loss is ``1 − ratio`` with ratio → 1, and
computing it that way loses every digit. The oracle (and ours) form the loss as
``(D − N)/D`` with the numerator ``D − N`` summed from non-negative terms: for ``k = 1``
``D − N = Σ (p(1 − y) + y(1 − p)) + (s_dr − s_nr)`` (dice, jaccard), for ``k = 2``
``Σ (p − y)² + (s_dr − s_nr)``, for Tversky ``α·FP + β·FN + (s_dr − s_nr)``, for generalized
Dice ``Σ_c w_c·(FP_c + FN_c) + (s_dr − s_nr)``; the denominators likewise (``P + G − I = I + FP +
FN``). ``1 − p`` comes from the activation itself (``σ(−x)``, the softmax's sum of the other
classes), never by rounding ``1 − p``. With ``activation="none"`` every product and sum is exact
(binary inputs, exact mpmath additions) and the single division rounds once.

Gradients (VJP, analytic through the activation): with ``ℓ = num/D`` per group and
``∂ℓ/∂I``, ``∂ℓ/∂FP``, ``∂ℓ/∂FN`` (or ``∂ℓ/∂M``, ``M = Σ (p − y)²``) from the quotient rule
(``−2·num/D²`` and ``N/D²`` for dice, ``−num/D²`` and ``N/D²`` for jaccard, ``−num/D²``,
``αN/D²``, ``βN/D²`` for Tversky), ``∂ℓ/∂p = ∂I·y + ∂FP·(1 − y) − ∂FN·y`` and
``∂ℓ/∂y = ∂I·p − ∂FP·p + ∂FN·(1 − p)``; sigmoid ``∂x = ∂p·p(1 − p)``; softmax
``∂x_c = p_c·Σ_j p_j (∂p_c − ∂p_j)``. Targets are differentiated for soft labels (not class
indices, and not for generalized Dice, whose weights are functions of the labels through the
piecewise empty-class rule: labels are data there).

Conventions (oracle parameters that no canonical argument reaches; ours implement the canonical
ones only): ``pool_classes`` — one ratio per sample over all classes, class weights inside the
sums (kornia ``average="micro"``, Keras ``axis=None``); ``empty_target_loss`` — the loss of a
(sample, class) whose target sum is 0 (SMP, pytorch-toolbelt: 0, whatever is predicted);
``denominator_floor`` — ``D = max(D, floor)`` (SMP/toolbelt ``clamp_min(eps)``).
"""

from __future__ import annotations

import mpmath
import numpy as np
from mpmath import mpf

from lossoracle.mpfuncs import SoftmaxRow, exact_sub, mp_array, sigmoid, to_mp, workprec
from lossoracle.spec import Arg, Case, Convention, Spec
from lossoracle.strategies import GRIDS, class_indices, logits, probabilities, rng_for

from .common import REDUCTIONS, is_floating

ACTIVATIONS = ("none", "sigmoid", "softmax")
W_TYPES = ("square", "simple", "uniform")
_ONE = mpf(1)


def _xm(a: mpf, b: mpf) -> mpf:
    return mpmath.fmul(a, b, exact=True)


def _xa(a: mpf, b: mpf) -> mpf:
    return mpmath.fadd(a, b, exact=True)


def _xsum(values) -> mpf:
    total = mpf(0)
    for v in values:
        total = mpmath.fadd(total, v, exact=True)
    return total


def _div(num: mpf, den: mpf) -> mpf:
    """``num/den`` with ``0/0 = NaN`` and ``x/0 = ±inf``."""
    if den == 0:
        return mpmath.nan if num == 0 else mpmath.inf * mpmath.sign(num)
    return num / den


# ----------------------------------------------------------------------------------------------
# Validation and layout


def _check_params(activation, reduction, smooth_nr, smooth_dr, alpha=0.5, beta=0.5) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    for name, v in (("smooth_nr", smooth_nr), ("smooth_dr", smooth_dr), ("alpha", alpha), ("beta", beta)):
        if not v >= 0:
            raise ValueError(f"{name} must be non-negative, got {v!r}")


class _Layout:
    """Exact per-element quantities of one call: ``p``, ``1 − p``, ``y``, ``1 − y`` as
    ``[n][c][i]`` lists of mpf (``i`` the flattened spatial index), the valid-position mask
    ``[n][i]``, and the classes taking part."""

    def __init__(self, input, target, weight, activation, include_background, ignore_index):
        x = np.asarray(input) if not isinstance(input, np.ndarray) else input
        if np.ndim(x) < 2:
            raise ValueError(f"input must have shape (N, C, ...) with the classes on axis 1, got shape {np.shape(x)}")
        self.shape = np.shape(x)
        N, C = self.shape[:2]
        S = int(np.prod(self.shape[2:])) if len(self.shape) > 2 else 1
        self.N, self.C, self.S = N, C, S
        if activation == "softmax" and C < 2:
            raise ValueError("activation='softmax' over a class axis of size 1 is constant (did you mean 'sigmoid'?)")
        if not include_background and C < 2:
            raise ValueError("include_background=False needs at least 2 classes")
        xm = to_mp(x).reshape(N, C, S)
        self.classes = list(range(C)) if include_background else list(range(1, C))
        self.weight = [_ONE] * C if weight is None else to_mp(weight).reshape(-1).tolist()
        if weight is not None and len(self.weight) != C:
            raise ValueError(f"weight must have shape ({C},), got {np.shape(weight)}")
        self.p = [[[None] * S for _ in range(C)] for _ in range(N)]
        self.q = [[[None] * S for _ in range(C)] for _ in range(N)]
        for n in range(N):
            for i in range(S):
                col = [xm[n, c, i] for c in range(C)]
                if activation == "softmax":
                    row = SoftmaxRow(col)
                    for c in range(C):
                        self.p[n][c][i], self.q[n][c][i] = row.p(c), row.one_minus_p(c)
                for c in range(C):
                    v = col[c]
                    if activation == "none":
                        if not 0 <= v <= 1:
                            raise ValueError(f"input must lie in [0, 1] without an activation; got {float(v)!r}")
                        self.p[n][c][i], self.q[n][c][i] = v, exact_sub(_ONE, v)
                    elif activation == "sigmoid":
                        self.p[n][c][i], self.q[n][c][i] = sigmoid(v), sigmoid(-v)
        self.soft = is_floating(target)
        if self.soft:
            if np.shape(target) != self.shape:
                raise ValueError(f"target shape {np.shape(target)} does not match input shape {self.shape}")
            t = to_mp(target).reshape(N, C, S)
            self.y = [[[t[n, c, i] for i in range(S)] for c in range(C)] for n in range(N)]
            for v in t.reshape(-1):
                if not 0 <= v <= 1:
                    raise ValueError(f"target must lie in [0, 1]; got {float(v)!r}")
            self.valid = [[True] * S for _ in range(N)]
        else:
            t = np.asarray(target)
            want = (N, *self.shape[2:])
            if t.shape != want:
                raise ValueError(f"class-index target shape {t.shape} does not match the expected {want}")
            t = t.reshape(N, S)
            bad = (t != ignore_index) & ((t < 0) | (t >= C))
            if bad.any():
                raise ValueError(f"target class indices must lie in [0, {C - 1}] (or equal ignore_index)")
            self.valid = [[bool(t[n, i] != ignore_index) for i in range(S)] for n in range(N)]
            self.y = [[[mpf(int(t[n, i] == c)) for i in range(S)] for c in range(C)] for n in range(N)]
        self.ny = [[[exact_sub(_ONE, v) for v in yc] for yc in yn] for yn in self.y]

    def stats(self, n: int, c: int, squared: bool, intersection: str = "product") -> dict[str, mpf]:
        """Exact sums over the valid positions of sample ``n``, class ``c``."""
        I, FP, FN, G, M2 = [], [], [], [], []
        for i in range(self.S):
            if not self.valid[n][i]:
                continue
            p, q, y, ny = self.p[n][c][i], self.q[n][c][i], self.y[n][c][i], self.ny[n][c][i]
            if intersection == "min":  # min(p, y), max(p − y, 0), max(y − p, 0)
                d = self._diff(n, c, i)
                I.append(p if d <= 0 else y)
                FP.append(max(d, mpf(0)))
                FN.append(max(-d, mpf(0)))
            else:
                I.append(_xm(p, y))
                FP.append(_xm(p, ny))
                FN.append(_xm(q, y))
            G.append(y)
            if squared:
                d = self._diff(n, c, i)
                M2.append(_xm(d, d))
        out = {"I": _xsum(I), "FP": _xsum(FP), "FN": _xsum(FN), "G": _xsum(G)}
        out["M"] = _xsum(M2) if squared else _xa(out["FP"], out["FN"])
        return out

    def _diff(self, n: int, c: int, i: int) -> mpf:
        """``p − y``, as ``(1 − y) − (1 − p)`` where ``y ≥ ½`` (1 − p is the accurate one there)."""
        p, q, y, ny = self.p[n][c][i], self.q[n][c][i], self.y[n][c][i], self.ny[n][c][i]
        return exact_sub(ny, q) if y >= 0.5 else exact_sub(p, y)


def _add_stats(a: dict, b: dict, w: mpf = _ONE) -> dict:
    return {k: _xa(a[k], _xm(w, b[k])) for k in a}


_ZERO_STATS = {k: mpf(0) for k in ("I", "FP", "FN", "G", "M")}


# ----------------------------------------------------------------------------------------------
# The ratio of one group and its partial derivatives


class _Ratio:
    """``ℓ = num/D`` of one group's (possibly weighted) stats, and ``∂ℓ/∂I``, ``∂ℓ/∂FP``,
    ``∂ℓ/∂FN``, ``∂ℓ/∂M`` (``M`` only for ``squared``: ``Σ (p − y)²``)."""

    def __init__(self, kind: str, s: dict, smooth_nr, smooth_dr, alpha, beta, squared: bool,
                 empty_target_loss=None, denominator_floor=None) -> None:
        snr, sdr = mpf(smooth_nr), mpf(smooth_dr)
        ds = exact_sub(sdr, snr)
        a, b = mpf(alpha), mpf(beta)
        I, FP, FN, M = s["I"], s["FP"], s["FN"], s["M"]
        self.d = {"I": mpf(0), "FP": mpf(0), "FN": mpf(0), "M": mpf(0)}
        if empty_target_loss is not None and s["G"] == 0:
            self.value = mpf(empty_target_loss)
            return
        if kind == "tversky":
            N = _xa(I, snr)
            core = _xa(_xm(a, FP), _xm(b, FN))
            D, num = _xa(_xa(I, core), sdr), _xa(core, ds)
            dI, dN = 1, _ONE
        else:
            two = 2 if kind == "dice" else 1
            N = _xa(_xm(mpf(two), I), snr)
            D, num = _xa(_xa(_xm(mpf(two), I), M), sdr), _xa(M, ds)
            dI, dN = two, _ONE
        if denominator_floor is not None and D < denominator_floor:
            D = mpf(denominator_floor)
            self.value = _div(exact_sub(D, N), D)
            self.d["I"] = -dI / D
            return
        self.value = _div(num, D)
        if D == 0:
            nan = mpmath.nan
            self.d = {"I": nan, "FP": nan, "FN": nan, "M": nan}
            return
        D2 = D * D
        self.d["I"] = -dI * num / D2
        g = dN * N / D2
        if kind == "tversky":
            self.d["FP"], self.d["FN"] = a * g, b * g
        elif squared:
            self.d["M"] = g
        else:
            self.d["FP"] = self.d["FN"] = g


def _gdl_weights(G: list[mpf], w_type: str) -> list[mpf]:
    """Sudre's weights ``1/G²`` (``1/G``, 1), an absent class taking the largest finite weight of
    the group (0 if none) — MONAI's rule."""
    if w_type == "uniform":
        return [_ONE] * len(G)
    w = [None if g == 0 else (1 / (g * g) if w_type == "square" else 1 / g) for g in G]
    finite = [v for v in w if v is not None]
    top = max(finite) if finite else mpf(0)
    return [top if v is None else v for v in w]


# ----------------------------------------------------------------------------------------------
# Evaluation shared by value and gradient


class _Eval:
    """Groups, their ratios and the output layout of one call."""

    def __init__(self, kind, input, target, weight=None, activation="none", include_background=True,
                 squared=False, batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100,
                 reduction="mean", alpha=0.5, beta=0.5, w_type="square", pool_classes=False,
                 empty_target_loss=None, denominator_floor=None, intersection="product"):
        _check_params(activation, reduction, smooth_nr, smooth_dr, alpha, beta)
        if intersection not in ("product", "min") or (intersection == "min" and squared):
            raise ValueError(f"intersection must be 'product' or (unsquared) 'min', got {intersection!r}")
        self.intersection = intersection
        if kind == "generalized_dice":
            if w_type not in W_TYPES:
                raise ValueError(f"w_type must be one of {W_TYPES}, got {w_type!r}")
            pool_classes = True
        self.kind, self.squared, self.reduction = kind, bool(squared), reduction
        L = self.L = _Layout(input, target, weight, activation, include_background, ignore_index)
        self.activation = activation
        samples = [list(range(L.N))] if batch else [[n] for n in range(L.N)]
        self.samples, self.pooled = samples, pool_classes
        per = {(n, c): L.stats(n, c, self.squared, intersection) for n in range(L.N) for c in L.classes}
        ratio_kind = "dice" if kind == "generalized_dice" else kind
        conv = {"empty_target_loss": empty_target_loss, "denominator_floor": denominator_floor}
        args = (smooth_nr, smooth_dr, alpha, beta, self.squared)
        # each output element: (ratio, [(n, c, stat weight)], loss factor)
        self.elements = []
        for group in samples:
            summed = {c: _ZERO_STATS for c in L.classes}
            for c in L.classes:
                for n in group:
                    summed[c] = _add_stats(summed[c], per[(n, c)])
            if pool_classes:
                if kind == "generalized_dice":
                    cw = dict(zip(L.classes, _gdl_weights([summed[c]["G"] for c in L.classes], w_type)))
                else:
                    cw = {c: L.weight[c] for c in L.classes}
                tot = _ZERO_STATS
                for c in L.classes:
                    tot = _add_stats(tot, summed[c], cw[c])
                r = _Ratio(ratio_kind, tot, *args, **conv)
                self.elements.append((r, [(n, c, cw[c]) for n in group for c in L.classes], _ONE))
            else:
                for c in L.classes:
                    r = _Ratio(ratio_kind, summed[c], *args, **conv)
                    self.elements.append((r, [(n, c, _ONE) for n in group], L.weight[c]))
        if pool_classes:
            self.shape = () if batch else (L.N,)
        else:
            C1 = len(L.classes)
            self.shape = (C1,) if batch else (L.N, C1)

    def values(self) -> list[mpf]:
        return [f * r.value if f != 1 else r.value for r, _, f in self.elements]

    def value(self):
        vals = self.values()
        if self.reduction == "none":
            return mp_array(vals, self.shape) if self.shape else vals[0]
        total = mpmath.fsum(vals)
        if self.reduction == "sum":
            return total
        return mpmath.nan if not vals else total / len(vals)

    def cotangents(self, grad_output) -> list[mpf]:
        n = len(self.elements)
        if self.reduction == "none":
            return to_mp(np.asarray(grad_output, dtype=np.float64)).reshape(-1).tolist()
        a = mpf(float(np.asarray(grad_output, dtype=np.float64).reshape(-1)[0]))
        return [a / n if self.reduction == "mean" else a] * n

    def grads(self, grad_output) -> dict[str, np.ndarray]:
        L = self.L
        gp = [[[mpf(0)] * L.S for _ in range(L.C)] for _ in range(L.N)]
        gy = [[[mpf(0)] * L.S for _ in range(L.C)] for _ in range(L.N)]
        for (r, members, f), a in zip(self.elements, self.cotangents(grad_output)):
            af = a * f
            for n, c, w in members:
                dI, dFP, dFN, dM = (af * w * r.d[k] for k in ("I", "FP", "FN", "M"))
                for i in range(L.S):
                    if not L.valid[n][i]:
                        continue
                    p, q, y, ny = L.p[n][c][i], L.q[n][c][i], L.y[n][c][i], L.ny[n][c][i]
                    if self.squared:
                        d2 = 2 * L._diff(n, c, i)
                        gp[n][c][i] += dI * y + dM * d2
                        gy[n][c][i] += dI * p - dM * d2
                    elif self.intersection == "min":  # sign(0) = 0: the mean of the one-sided slopes
                        sg = mpmath.sign(L._diff(n, c, i))
                        lo, hi = (1 - sg) / 2, (1 + sg) / 2
                        gp[n][c][i] += dI * lo + dFP * hi - dFN * lo
                        gy[n][c][i] += dI * hi - dFP * hi + dFN * lo
                    else:
                        gp[n][c][i] += dI * y + dFP * ny - dFN * y
                        gy[n][c][i] += dI * p - dFP * p + dFN * q
        gx = self._through_activation(gp)
        out = {"input": mp_array([v for a in gx for b in a for v in b], L.shape)}
        if L.soft and self.kind != "generalized_dice":
            out["target"] = mp_array([v for a in gy for b in a for v in b], L.shape)
        return out

    def _through_activation(self, gp):
        L = self.L
        if self.activation == "none":
            return gp
        if self.activation == "sigmoid":
            return [[[g * L.p[n][c][i] * L.q[n][c][i] for i, g in enumerate(gc)] for c, gc in enumerate(gn)]
                    for n, gn in enumerate(gp)]
        gx = [[[mpf(0)] * L.S for _ in range(L.C)] for _ in range(L.N)]
        for n in range(L.N):
            for i in range(L.S):
                for c in range(L.C):
                    gc = gp[n][c][i]
                    acc = mpmath.fsum(L.p[n][j][i] * (gc - gp[n][j][i]) for j in range(L.C) if j != c)
                    gx[n][c][i] = L.p[n][c][i] * acc
        return gx


# ----------------------------------------------------------------------------------------------
# Public oracles


def dice_loss(input, target, weight=None, activation="none", include_background=True, squared=False, batch=False,
              smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean", pool_classes=False,
              empty_target_loss=None, denominator_floor=None, intersection="product"):
    """Exact soft Dice loss ``1 − (2I + s_nr)/(P + G + s_dr)`` per (sample, class), reduced."""
    with workprec():
        return _Eval("dice", **_kw(locals())).value()


def dice_loss_grad(grad_output, input, target, weight=None, activation="none", include_background=True,
                   squared=False, batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean",
                   pool_classes=False, empty_target_loss=None, denominator_floor=None, intersection="product"):
    """VJP of :func:`dice_loss` w.r.t. ``input`` (and soft ``target``)."""
    with workprec():
        return _Eval("dice", **_kw(locals())).grads(grad_output)


def jaccard_loss(input, target, weight=None, activation="none", include_background=True, squared=False, batch=False,
                 smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean", pool_classes=False,
                 empty_target_loss=None, denominator_floor=None, intersection="product"):
    """Exact soft Jaccard loss ``1 − (I + s_nr)/(P + G − I + s_dr)`` per (sample, class), reduced."""
    with workprec():
        return _Eval("jaccard", **_kw(locals())).value()


def jaccard_loss_grad(grad_output, input, target, weight=None, activation="none", include_background=True,
                      squared=False, batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100,
                      reduction="mean", pool_classes=False, empty_target_loss=None, denominator_floor=None,
                      intersection="product"):
    """VJP of :func:`jaccard_loss`."""
    with workprec():
        return _Eval("jaccard", **_kw(locals())).grads(grad_output)


def tversky_loss(input, target, weight=None, alpha=0.5, beta=0.5, activation="none", include_background=True,
                 batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean",
                 pool_classes=False, empty_target_loss=None, denominator_floor=None, intersection="product"):
    """Exact Tversky loss ``1 − (I + s_nr)/(I + α·FP + β·FN + s_dr)`` per (sample, class), reduced."""
    with workprec():
        return _Eval("tversky", **_kw(locals())).value()


def tversky_loss_grad(grad_output, input, target, weight=None, alpha=0.5, beta=0.5, activation="none",
                      include_background=True, batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100,
                      reduction="mean", pool_classes=False, empty_target_loss=None, denominator_floor=None,
                      intersection="product"):
    """VJP of :func:`tversky_loss`."""
    with workprec():
        return _Eval("tversky", **_kw(locals())).grads(grad_output)


def generalized_dice_loss(input, target, w_type="square", activation="none", include_background=True, batch=False,
                          smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean"):
    """Exact generalized Dice loss (Sudre) per sample (per batch with ``batch``), reduced."""
    with workprec():
        return _Eval("generalized_dice", **_kw(locals())).value()


def generalized_dice_loss_grad(grad_output, input, target, w_type="square", activation="none",
                               include_background=True, batch=False, smooth_nr=1e-5, smooth_dr=1e-5,
                               ignore_index=-100, reduction="mean"):
    """VJP of :func:`generalized_dice_loss` w.r.t. ``input`` (the weights are functions of the labels)."""
    with workprec():
        return _Eval("generalized_dice", **_kw(locals())).grads(grad_output)


def _kw(scope: dict) -> dict:
    return {k: v for k, v in scope.items() if k != "grad_output"}


# ----------------------------------------------------------------------------------------------
# Large inputs: exact sums of the float inputs, the ratio in mpmath


def large_dice_reference(p, y, smooth_nr=1e-5, smooth_dr=1e-5, batch=False, kind="dice", alpha=0.5, beta=0.5,
                         q=None) -> np.ndarray:
    """The ``none`` losses (N, C) of dice/jaccard/tversky for big probability maps, fast.

    ``p``, ``y``: float arrays (N, C, …) (float32 or float64), ``activation="none"``, k = 1.
    ``q`` (optional): ``1 − p`` computed elsewhere (e.g. ``σ(−x)`` in float64 for logits);
    by default ``1 − p`` exactly. Each elementwise product of two float32 values is exact in
    float64, and ``math.fsum`` rounds the exact sum once, so I, FP, FN are the float64 roundings of
    the exact sums (float64 inputs: the products round once each, ≤ 2^-53 relative, all terms
    non-negative). The ratio is then formed in mpmath from those sums. Returns an object array of mpf.
    """
    import math

    p64 = np.asarray(p, dtype=np.float64)
    y64 = np.asarray(y, dtype=np.float64)
    q64 = 1.0 - p64 if q is None else np.asarray(q, dtype=np.float64)
    N, C = p64.shape[:2]
    if batch:
        p64, y64, q64 = (np.moveaxis(a, 1, 0).reshape(1, C, -1) for a in (p64, y64, q64))
    else:
        p64, y64, q64 = (a.reshape(N, C, -1) for a in (p64, y64, q64))
    out = np.empty(p64.shape[:2], dtype=object)
    with workprec():
        for n in range(p64.shape[0]):
            for c in range(C):
                pc, yc, qc = p64[n, c], y64[n, c], q64[n, c]
                s = {"I": mpf(math.fsum(pc * yc)), "FP": mpf(math.fsum(pc * (1.0 - yc))),
                     "FN": mpf(math.fsum(qc * yc)), "G": mpf(math.fsum(yc))}
                s["M"] = _xa(s["FP"], s["FN"])
                out[n, c] = _Ratio(kind, s, smooth_nr, smooth_dr, alpha, beta, False).value
    return out[0] if batch else out


# ----------------------------------------------------------------------------------------------
# Reduction sizes (the log2(n) allowance)


def _reduced_terms(inputs, params) -> int:
    """Terms summed into one output element: the positions of a group (× batch, × classes when the
    classes are pooled) times the (sample, class) losses a ``sum``/``mean`` adds up."""
    shape = np.shape(inputs["input"])
    if len(shape) < 2:
        return 1
    N, C = shape[:2]
    S = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    C1 = C - (0 if params.get("include_background", True) else 1)
    pooled = params.get("pool_classes", False) or "w_type" in params
    per_group = S * (N if params.get("batch") else 1) * (C1 if pooled else 1)
    outputs = (1 if params.get("batch") else N) * (1 if pooled else C1)
    return max(1, per_group * (outputs if params.get("reduction", "mean") != "none" else 1))


# ----------------------------------------------------------------------------------------------
# Edge catalogue and generated cases

_F = np.float64


def _case(id_, x, t, weight=None, note="", raises=None, **params) -> Case:
    keep = raises is TypeError
    x = np.asarray(x) if keep else np.asarray(x, dtype=_F)
    t = np.asarray(t)
    if t.dtype.kind == "f" or (t.dtype.kind != "i" and not keep):
        t = t.astype(_F)
    inputs = {"input": x, "target": t}
    if weight is not None:
        inputs["weight"] = np.asarray(weight, dtype=_F)
    return Case(id_, inputs, params, raises=raises, note=note)


def _onehot(t: np.ndarray, C: int) -> np.ndarray:
    return np.moveaxis(np.eye(C)[t], -1, 1)


def _soft(rng, shape, grid) -> np.ndarray:
    """Soft labels mixing exact 0/1 with values on ``grid``."""
    soft = probabilities(rng, shape, grid)
    hard = (rng.random(shape) < 0.5).astype(_F)
    return np.where(rng.random(shape) < 0.5, hard, soft)


def _common_cases(loss: str, extra: dict | None = None) -> list[Case]:
    """The catalogue shared by dice, jaccard and tversky (``extra``: parameters of every case)."""
    kw = dict(extra or {})
    r = rng_for(loss, "edge")
    shape = (2, 3, 4)  # N = 2, C = 3, four positions
    p = probabilities(r, shape, "half")
    y = _soft(r, shape, "half")
    t = class_indices(r, (2, 4), 3)
    yh = _onehot(t, 3)
    x = logits(r, shape, "half", 2.0)
    cases = []
    for red in REDUCTIONS:
        cases += [
            _case(f"soft_{red}", p, y, reduction=red, **kw),
            _case(f"sigmoid_{red}", x, yh, activation="sigmoid", reduction=red, **kw),
            _case(f"softmax_index_{red}", x, t, activation="softmax", reduction=red, **kw),
        ]
    y2 = _onehot(np.array([[0, 0, 1, 1], [2, 2, 1, 1]]), 3)
    near = np.where(yh == 1, 1 - 2.0**-11, 2.0**-11)  # float16's 1 − ulp
    near32 = np.where(yh == 1, 1 - 2.0**-24, 2.0**-24)
    near64 = np.where(yh == 1, 1 - 2.0**-53, 2.0**-60)
    cases += [
        _case("perfect", yh, yh, reduction="none", note="p = y: loss 0 exactly", **kw),
        _case("perfect_no_smoothing", yh, yh, reduction="none", smooth_nr=0.0, smooth_dr=0.0, **kw),
        _case("all_wrong", 1 - yh, yh, reduction="none", **kw),
        _case("empty_masks", np.zeros(shape), np.zeros(shape), reduction="none",
              note="Σp = Σy = 0: 1 − s_nr/s_dr = 0", **kw),
        _case("empty_masks_unsmoothed", np.zeros(shape), np.zeros(shape), reduction="none", smooth_nr=0.0,
              smooth_dr=0.0, note="0/0: NaN", **kw),
        _case("empty_masks_dr_only", np.zeros(shape), np.zeros(shape), reduction="none", smooth_nr=0.0,
              smooth_dr=1e-7, note="eps in the denominator only: loss 1 (Keras, kornia)", **kw),
        _case("empty_target_predicted", p, np.zeros(shape), reduction="none", note="loss ≈ 1", **kw),
        _case("single_positive_pixel", p, _onehot(np.zeros((2, 4), dtype=np.int64), 3) * [[[1, 0, 0, 0]]],
              reduction="none", **kw),
        _case("all_background", p, _onehot(np.zeros((2, 4), dtype=np.int64), 3), reduction="none", **kw),
        _case("near_perfect_half", near, yh, reduction="none", smooth_nr=0.0, smooth_dr=0.0,
              note="loss ≈ 1e-3 formed without cancellation", **kw),
        _case("near_perfect_float32", near32, yh, reduction="none", smooth_nr=0.0, smooth_dr=0.0, **kw),
        _case("near_perfect_float64", near64, yh, reduction="none", smooth_nr=0.0, smooth_dr=0.0, **kw),
        _case("near_perfect_sigmoid", np.where(yh == 1, 20.0, -20.0), yh, activation="sigmoid", reduction="none",
              smooth_nr=0.0, smooth_dr=0.0, note="confident logits: loss ≈ e^-20, 1 − ratio keeps nothing", **kw),
        _case("near_perfect_softmax", np.where(yh == 1, 24.0, -16.0), t, activation="softmax", reduction="none",
              smooth_nr=0.0, smooth_dr=0.0, note="loss ≈ e^-40", **kw),
        _case("huge_logits_sigmoid", np.where(r.random(shape) < 0.5, 1e4, -1e4), yh, activation="sigmoid",
              reduction="none", note="σ(±1e4) saturates", **kw),
        _case("huge_logits_softmax", np.where(yh == 1, 1e4, -1e4) * np.where(r.random(shape) < 0.2, -1, 1), t,
              activation="softmax", reduction="none", **kw),
        _case("ignore_index", x, np.where(r.random((2, 4)) < 0.3, -100, t), activation="softmax", reduction="none",
              note="positions labelled −100 leave every sum", **kw),
        _case("ignore_index_custom", x, np.where(r.random((2, 4)) < 0.3, 255, t), activation="softmax",
              ignore_index=255, reduction="sum", **kw),
        _case("no_background", p, y, include_background=False, reduction="none", **kw),
        _case("no_background_softmax", x, t, activation="softmax", include_background=False, reduction="mean", **kw),
        _case("batch", p, y, batch=True, reduction="none", **kw),
        _case("batch_softmax_mean", x, t, activation="softmax", batch=True, reduction="mean", **kw),
        _case("weights", p, y, weight=[0.5, 2.0, 0.0], reduction="none", **kw),
        _case("weights_mean", x, t, weight=[1.0, 0.25, 4.0], activation="softmax", reduction="mean", **kw),
        _case("smoothing_one", p, y, smooth_nr=1.0, smooth_dr=1.0, reduction="none", **kw),
        _case("smoothing_dr_only", p, y, smooth_nr=0.0, smooth_dr=1e-8, reduction="none", **kw),
        _case("smoothing_unequal", p, y, smooth_nr=0.5, smooth_dr=2.0, reduction="none", **kw),
        _case("scale_1000_variant", p, y, smooth_nr=1e-5 * 1000, smooth_dr=1e-5 * 1000, reduction="none",
              note="numerator 2Σ(p/1000)·y + eps over Σ(p/1000) + Σ(y/1000) + eps, eps = 1e-5", **kw),
        _case("spatial_2d", probabilities(r, (1, 2, 3, 3), "half"), _soft(r, (1, 2, 3, 3), "half"),
              reduction="mean", **kw),
        _case("binary_one_channel", logits(r, (3, 1, 5), "half", 3.0), (r.random((3, 1, 5)) < 0.5).astype(_F),
              activation="sigmoid", reduction="mean", **kw),
        # two positives per present class: with a single positive at p = 2^-149 our float64 (long
        # double) target gradient loses the −6e-87 result entirely (tail) — a known gap of our
        # kernel, not of the spec, pinned by test_dice.test_single_subnormal_positive_is_a_known_gap
        _case("subnormal_float32", np.where(y2 == 1, 2.0**-149, 2.0**-140), y2, smooth_nr=0.0, smooth_dr=0.0,
              reduction="none", note="tiny predictions, two positives per present class", **kw),
    ]
    if loss == "dice_loss":
        cases += [
            _case("squared", p, y, squared=True, reduction="none", **kw),
            _case("squared_softmax", x, t, activation="softmax", squared=True, reduction="mean", **kw),
            _case("squared_near_perfect_sigmoid", np.where(yh == 1, 18.0, -18.0), yh, activation="sigmoid",
                  squared=True, smooth_nr=0.0, smooth_dr=0.0, reduction="none", **kw),
        ]
    if loss == "jaccard_loss":
        cases.append(_case("squared", p, y, squared=True, reduction="none", **kw))
    for grid in GRIDS:
        for i, (act, red, hard) in enumerate([("none", "mean", False), ("sigmoid", "none", True),
                                              ("softmax", "sum", True), ("none", "none", False)]):
            rg = rng_for(loss, grid, i)
            shp = (2, 3, 5) if i % 2 else (1, 4, 2, 3)
            xin = probabilities(rg, shp, grid) if act == "none" else logits(rg, shp, grid, 3.0)
            if act == "softmax":
                tg = class_indices(rg, (shp[0], *shp[2:]), shp[1])
            else:
                tg = _soft(rg, shp, grid) if not hard else (rg.random(shp) < 0.4).astype(_F)
            cases.append(_case(f"random_{grid}_{i}", xin, tg, activation=act, reduction=red, **kw))
    cases += _bad_cases(p, y, x, t, kw)
    return cases


def _bad_cases(p, y, x, t, kw) -> list[Case]:
    bad_p = p.copy()
    bad_p[0, 0, 0] = 1.5
    bad_y = y.copy()
    bad_y[0, 1, 0] = -0.5
    return [
        _case("bad_target_shape", p, y[:, :2], raises=ValueError, note="target shape differs from input", **kw),
        _case("bad_index_shape", x, t[:, :3], activation="softmax", raises=ValueError,
              note="class-index target of the wrong shape", **kw),
        _case("bad_class_index", x, np.where(t == 0, 3, t), activation="softmax", raises=ValueError,
              note="class index 3 with C = 3", **kw),
        _case("bad_negative_index", x, np.where(t == 0, -1, t), activation="softmax", raises=ValueError,
              note="class index −1, not ignore_index", **kw),
        _case("bad_smooth_nr", p, y, smooth_nr=-1e-5, raises=ValueError, note="negative smoothing", **kw),
        _case("bad_smooth_dr", p, y, smooth_dr=-1.0, raises=ValueError, note="negative smoothing", **kw),
        _case("bad_probability_above_one", bad_p, y, raises=ValueError,
              note="input > 1 without an activation", **kw),
        _case("bad_probability_negative", -p - 0.25, y, raises=ValueError, note="input < 0 without an activation",
              **kw),
        _case("bad_target_range", p, bad_y, raises=ValueError, note="soft label < 0", **kw),
        _case("bad_softmax_axis", x[:, :1], y[:, :1], activation="softmax", raises=ValueError,
              note="softmax over a class axis of size 1 (the wrong axis: constant 1)", **kw),
        _case("bad_activation", x, y, activation="tanh", raises=ValueError, note="unknown activation", **kw),
        _case("bad_reduction", p, y, reduction="avg", raises=ValueError, note="unknown reduction", **kw),
        _case("bad_weight_shape", p, y, weight=[1.0, 2.0], raises=ValueError, note="weight of length 2, C = 3", **kw),
        _case("bad_no_class_axis", p[0, 0], y[0, 0], raises=ValueError, note="1-D input: no class axis", **kw),
        _case("bad_integer_input", (p > 0.5).astype(np.int64), y, raises=TypeError, note="non-floating input", **kw),
    ]


def _dice_cases() -> list[Case]:
    return _common_cases("dice_loss")


def _jaccard_cases() -> list[Case]:
    return _common_cases("jaccard_loss")


def _tversky_cases() -> list[Case]:
    r = rng_for("tversky_loss", "alpha")
    p, y = probabilities(r, (2, 3, 4), "half"), _soft(r, (2, 3, 4), "half")
    x, t = logits(r, (2, 3, 4), "half", 2.0), class_indices(r, (2, 4), 3)
    cases = _common_cases("tversky_loss", {"alpha": 0.3, "beta": 0.7})
    cases += [
        _case("dice_point", p, y, alpha=0.5, beta=0.5, reduction="none", note="α = β = ½: Dice"),
        _case("jaccard_point", p, y, alpha=1.0, beta=1.0, reduction="none", note="α = β = 1: Jaccard"),
        _case("fp_only", x, t, activation="softmax", alpha=1.0, beta=0.0, reduction="none"),
        _case("fn_heavy_near_perfect", np.where(_onehot(t, 3) == 1, 20.0, -20.0), _onehot(t, 3),
              activation="sigmoid", alpha=0.25, beta=4.0, smooth_nr=0.0, smooth_dr=0.0, reduction="none"),
        _case("bad_alpha", p, y, alpha=-0.5, raises=ValueError, note="negative α"),
        _case("bad_beta", p, y, beta=-1.0, raises=ValueError, note="negative β"),
    ]
    return cases


def _gdl_cases() -> list[Case]:
    r = rng_for("generalized_dice_loss", "edge")
    shape = (2, 3, 4)
    p, y = probabilities(r, shape, "half"), _soft(r, shape, "half")
    t = class_indices(r, (2, 4), 3)
    t[0] = np.where(t[0] == 2, 1, t[0])  # class 2 absent from sample 0: the empty-class rule
    yh = _onehot(t, 3)
    x = logits(r, shape, "half", 2.0)
    cases = []
    for red in REDUCTIONS:
        cases += [
            _case(f"soft_{red}", p, y, reduction=red),
            _case(f"softmax_index_{red}", x, t, activation="softmax", reduction=red,
                  note="class 2 absent from sample 0: it takes the largest finite weight"),
            _case(f"sigmoid_{red}", x, yh, activation="sigmoid", reduction=red),
        ]
    cases += [
        _case("simple_weights", p, y, w_type="simple", reduction="none"),
        _case("uniform_weights", p, y, w_type="uniform", reduction="none"),
        _case("batch", x, t, activation="softmax", batch=True, reduction="none"),
        _case("no_background", x, t, activation="softmax", include_background=False, reduction="none"),
        _case("perfect", yh, yh, reduction="none", note="loss 0"),
        _case("empty_target", p, np.zeros(shape), reduction="none",
              note="every weight infinite: all 0, loss 1 − s_nr/s_dr"),
        _case("empty_masks", np.zeros(shape), np.zeros(shape), reduction="none"),
        _case("near_perfect_softmax", np.where(yh == 1, 24.0, -16.0), t, activation="softmax", smooth_nr=0.0,
              smooth_dr=0.0, reduction="none"),
        _case("near_perfect_float32", np.where(yh == 1, 1 - 2.0**-24, 2.0**-24), yh, smooth_nr=0.0, smooth_dr=0.0,
              reduction="none"),
        _case("ignore_index", x, np.where(r.random((2, 4)) < 0.3, -100, t), activation="softmax", reduction="none"),
        _case("smoothing_one", p, y, smooth_nr=1.0, smooth_dr=1.0, reduction="none"),
    ]
    for grid in GRIDS:
        for i, (act, red) in enumerate([("none", "mean"), ("softmax", "none"), ("sigmoid", "sum")]):
            rg = rng_for("generalized_dice_loss", grid, i)
            shp = (2, 3, 2, 2)
            xin = probabilities(rg, shp, grid) if act == "none" else logits(rg, shp, grid, 3.0)
            tg = class_indices(rg, (2, 2, 2), 3) if act == "softmax" else _soft(rg, shp, grid)
            cases.append(_case(f"random_{grid}_{i}", xin, tg, activation=act, reduction=red))
    cases += [c for c in _bad_cases(p, y, x, t, {}) if c.id not in ("bad_weight_shape",)]
    cases.append(_case("bad_w_type", p, y, w_type="cube", raises=ValueError, note="unknown w_type"))
    return cases


_COMMON_CONV = (
    Convention("pool_classes", False, "one ratio per sample over all classes and positions, class weights inside "
                                      "the sums: 1 − (2Σ_c w_c I_c + s_nr)/(Σ_c w_c (P_c + G_c) + s_dr) (kornia "
                                      "average='micro'; Keras axis=None with batch=True)", values=(True,)),
    Convention("empty_target_loss", None, "the loss of a (sample, class) whose target sum is 0, whatever is "
                                          "predicted (SMP, pytorch-toolbelt: 0); None: the ratio", values=(0.0, 1.0)),
    Convention("denominator_floor", None, "D = max(D, floor) (SMP, pytorch-toolbelt: clamp_min(eps = 1e-7)); "
                                          "None: no floor", values=(1e-7,)),
    Convention("intersection", "product", "'min': I = Σ min(p, y) = (ΣP + ΣG − ‖p − y‖₁)/2, FP = Σ max(p − y, 0), "
                                          "FN = Σ max(y − p, 0) — the soft-label Dice/Jaccard semimetric (Wang & "
                                          "Blaschko 2023; SMP ≥ 0.5, MONAI soft_label=True); equal to the product "
                                          "form for hard labels", values=("min",)),
)

MAPPING = """library settings (the adapter's translation; conventions in brackets):
  MONAI DiceLoss(sigmoid|softmax, squared_pred, include_background, batch, smooth_nr, smooth_dr, weight,
        to_onehot_y for indices, ignore_index)   = dice_loss(same names; activation=…, squared=squared_pred)
  MONAI DiceLoss(jaccard=True, smooth_nr=a, smooth_dr=b) = jaccard_loss(smooth_nr=a/2, smooth_dr=b/2)
        (MONAI's Jaccard is (2I + a)/(2(P + G − I) + b): the smoothing is not halved)
  MONAI TverskyLoss(alpha, beta, …)             = tversky_loss(alpha, beta, …) (no class weights)
  MONAI GeneralizedDiceLoss(w_type, …)          = generalized_dice_loss(w_type, …)
  MONAI DiceLoss(soft_label=True)               = dice_loss(…) [intersection='min'] (unsquared)
  SMP DiceLoss(mode, smooth=s, eps)             = dice_loss(batch=True, smooth_nr=smooth_dr=2s)
        [empty_target_loss=0, denominator_floor=eps, intersection='min']; mode multiclass: softmax + indices,
        binary/multilabel: sigmoid; mean over classes; class_weights normalise by Σw (not expressed)
  SMP JaccardLoss(smooth=s)                     = jaccard_loss(batch=True, smooth_nr=smooth_dr=s) [same]
  SMP TverskyLoss(alpha, beta, smooth=s, gamma=1) = tversky_loss(alpha, beta, batch=True, smooth_nr=smooth_dr=s)
        [same]; gamma ≠ 1 (a power of the mean) is not expressed
  pytorch-toolbelt DiceLoss(smooth=s)           = dice_loss(batch=True, smooth_nr=smooth_dr=s)
        [empty_target_loss=0, denominator_floor=eps] (product intersection)
  pytorch-toolbelt JaccardLoss(smooth=s)        = jaccard_loss(batch=True, smooth_nr=smooth_dr=s) [same]
  kornia dice_loss(average='micro', eps, weight) = dice_loss(activation='softmax', indices, smooth_nr=0,
        smooth_dr=eps) [pool_classes]; average='macro' (mean over the classes present) is not expressed
  Keras Dice(axis=spatial dims)                 = dice_loss(smooth_nr=0, smooth_dr=1e-7), channels last;
        axis=None: [pool_classes] with batch=True
  Keras Tversky(alpha=a, beta=b)                = tversky_loss(alpha=b, beta=a, smooth_nr=0, smooth_dr=1e-7):
        Keras's alpha weights Σ(1 − p)·y, the false negatives, though documented for false positives
  optax dice_loss(smooth=s, alpha, beta)        = tversky_loss(alpha, beta, smooth_nr=smooth_dr=s), channels
        last; at α = β = ½ dice_loss(smooth_nr=smooth_dr=2s); apply_softmax: softmax (sigmoid for one channel)
  optax multiclass_generalized_dice_loss        not expressed: a weighted mean of per-class Dice losses with
        weights 1/(G² + 1e-7) renormalised over the batch, not Sudre's ratio of weighted sums
  "scale" variant (2Σ(p/s)y + eps)/(Σ(p/s) + Σ(y/s) + eps) = dice_loss(smooth_nr=smooth_dr=eps·s)"""

_SIG = ("input, target, weight=None, *, activation='none', include_background=True, {extra}batch=False, "
        "smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction='mean'")

_ARGS = (Arg("input", "probabilities", differentiable=True), Arg("target", "probability_target", differentiable=True),
         Arg("weight", "weight", positional=False))
_PARAMS = {"activation": "none", "include_background": True, "batch": False, "smooth_nr": 1e-5, "smooth_dr": 1e-5,
           "ignore_index": -100, "reduction": "mean"}
_EDGE = (
    "empty prediction and target: 1 − s_nr/s_dr (0 with MONAI's equal smoothing, 1 with eps in the denominator "
    "only, NaN without smoothing)",
    "a position labelled ignore_index leaves every sum (class-index targets only)",
    "near a perfect prediction the loss is formed as a sum of non-negative terms over D, never as 1 − ratio",
    "input of activation 'none' must lie in [0, 1]; softmax needs a class axis of size ≥ 2",
)
_SOURCE_DICE = "Milletari et al., V-Net, 3DV 2016, eq. (1); MONAI DiceLoss; CONVENTIONS.md §7"

SPECS = (
    Spec(
        name="dice_loss",
        signature=f"dice_loss({_SIG.format(extra='squared=False, ')})",
        definition="1 − (2Σp·y + s_nr)/(Σp^k + Σy^k + s_dr) per (sample, class), k = 2 if squared; p = activation("
                   "input) over the class axis 1\n" + MAPPING,
        source=_SOURCE_DICE,
        args=_ARGS,
        params={**_PARAMS, "squared": False},
        oracle=dice_loss,
        gradient=dice_loss_grad,
        cases=_dice_cases,
        conventions=_COMMON_CONV,
        reduced_terms=_reduced_terms,
        edge_notes=_EDGE,
    ),
    Spec(
        name="jaccard_loss",
        signature=f"jaccard_loss({_SIG.format(extra='squared=False, ')})",
        definition="1 − (Σp·y + s_nr)/(Σp^k + Σy^k − Σp·y + s_dr) per (sample, class) (soft IoU)\n" + MAPPING,
        source="Jaccard index / soft IoU (Rahman & Wang 2016); MONAI DiceLoss(jaccard=True); CONVENTIONS.md §7",
        args=_ARGS,
        params={**_PARAMS, "squared": False},
        oracle=jaccard_loss,
        gradient=jaccard_loss_grad,
        cases=_jaccard_cases,
        conventions=_COMMON_CONV,
        reduced_terms=_reduced_terms,
        edge_notes=_EDGE,
    ),
    Spec(
        name="tversky_loss",
        signature="tversky_loss(" + _SIG.format(extra="").replace("weight=None, *, ",
                                                                  "weight=None, *, alpha=0.5, beta=0.5, ") + ")",
        definition="1 − (I + s_nr)/(I + α·Σp(1 − y) + β·Σ(1 − p)y + s_dr) per (sample, class); α weights false "
                   "positives\n" + MAPPING,
        source="Salehi et al., Tversky loss function for image segmentation, 2017, eq. (3); MONAI TverskyLoss",
        args=_ARGS,
        params={**_PARAMS, "alpha": 0.5, "beta": 0.5},
        oracle=tversky_loss,
        gradient=tversky_loss_grad,
        cases=_tversky_cases,
        conventions=_COMMON_CONV,
        reduced_terms=_reduced_terms,
        edge_notes=_EDGE,
    ),
    Spec(
        name="generalized_dice_loss",
        signature="generalized_dice_loss(input, target, *, w_type='square', activation='none', "
                  "include_background=True, batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, "
                  "reduction='mean')",
        definition="1 − (2Σ_c w_c Σp·y + s_nr)/(Σ_c w_c Σ(p + y) + s_dr) per sample, w_c = 1/(Σy_c)² (square), "
                   "1/Σy_c (simple), 1 (uniform); an absent class takes the largest finite weight of its sample "
                   "(0 if none)\n" + MAPPING,
        source="Sudre et al., Generalised Dice overlap, DLMIA 2017, eq. (2); MONAI GeneralizedDiceLoss",
        args=(Arg("input", "probabilities", differentiable=True), Arg("target", "probability_target")),
        params={k: v for k, v in _PARAMS.items()} | {"w_type": "square"},
        oracle=generalized_dice_loss,
        gradient=generalized_dice_loss_grad,
        cases=_gdl_cases,
        reduced_terms=_reduced_terms,
        edge_notes=_EDGE[:2] + ("a class absent from the target: the largest finite weight of its sample "
                                "(MONAI's rule); no class present: every weight 0, loss 1 − s_nr/s_dr",),
    ),
)
