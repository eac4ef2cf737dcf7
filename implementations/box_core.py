"""Kernels of the box losses shared by NumPy and torch: values and analytic VJPs, cancellation-free.

Definitions and conventions are the oracle's (``lossoracle.reference.box``). One pair has box 1
``[p1, p2] × …`` and box 2 ``[q1, q2] × …``; per axis (x shown; y alike):

- signed overlap ``r = min(p2, q2) − max(p1, q1)``, clamped ``i = [r]₊``; excesses
  ``a1 = [q1 − p1]₊ + [p2 − q2]₊ = w1 − r`` and ``a2 = w2 − r`` (each a difference of two inputs,
  rounded once — exact for nearby coordinates by Sterbenz); enclosing extent ``c``; centre
  difference ``Δc = ((p1 − q1) + (p2 − q2))/2`` (never the difference of two rounded centres).
- ``A − I = a1·h1 + b1·ix`` and ``B − I = a2·h2 + b2·ix`` where the boxes overlap (else ``A``, ``B``),
  so ``1 − IoU_ε = (P1 + P2 + ε)/(I + P1 + P2 + ε)`` is a ratio of sums of non-negative terms:
  nothing cancels for identical or nearly identical boxes.
- ``C − U`` is the empty part of the enclosing box: overlapping boxes leave at most four empty
  corner cells ``e_col·e_row`` (a corner is empty iff different boxes stick out on its two sides);
  boxes apart in x leave ``w1·b2 + w2·b1 + g·ch`` (``g`` the gap, ``b`` the y-excesses) — again
  sums of non-negative terms (nested boxes give exactly 0).
- CIoU's angle difference is ``atan2(δw·h1 − w1·δh, h1·h2 + w1·w2)`` with ``δw = w2 − w1`` formed
  from coordinate differences; ``∂θ/∂w1 = −h1/(w1² + h1²)`` etc. (Lagrange's identity).
- Gradients: on each smooth piece, the partial derivatives of ``1 − IoU_ε`` are single-signed
  products, ``−s·iy·(a1·h1 + B + ε) + (1 − s)·I·h1`` over ``D²`` for ``x2`` (``s`` the weight with which
  ``x2`` moves the intersection); the tie weights ``s``, ``u`` are the means of the two one-sided
  weights (the feasible side only where a zero width would turn negative), so the VJP is the
  mean of the one-sided partial derivatives at every kink, as the spec defines it.

Every function takes the array namespace ``xp`` (the ``numpy`` or ``torch`` module, as
:func:`doubledouble.xp` gives it) and arrays already in the compute dtype (float64 for
float16/bfloat16/float32 input; long double or float64 for float64).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

REDUCTIONS = ("none", "mean", "sum")
KINDS = ("iou", "giou", "giou_loss", "diou_loss", "ciou_loss")
_K = "0.40528473456935108577551785283891056"  # 4/π², parsed in the compute dtype (long double too)


def _cast(b, like):
    """A boolean mask in the arrays' dtype (NumPy or torch; an exact mask for a value with a running
    error bound, :class:`.box_bounds.Tracked`)."""
    if isinstance(like, (np.ndarray, np.generic)):
        return b.astype(like.dtype)
    tracked = getattr(like, "tracked_mask", None)
    return b.to(like.dtype) if tracked is None else tracked(b)


def _const(v, like):
    """The constant ``v`` (a number or a decimal string) in the arrays' dtype, long double included
    (with its rounding error for a value with a running error bound, :class:`.box_bounds.Tracked`)."""
    if isinstance(like, (np.ndarray, np.generic)):
        return like.dtype.type(v)
    tracked = getattr(like, "tracked_const", None)
    return like.new_tensor(float(v)) if tracked is None else tracked(v)


# ----------------------------------------------------------------------------------------------
# Validation (NumPy arrays or detached tensors)


def check_boxes(name: str, b: Any) -> None:
    dtype = b.dtype
    floating = dtype.kind == "f" if isinstance(b, np.ndarray) else bool(b.is_floating_point())
    if not floating:
        raise TypeError(f"{name} must be a floating-point array of boxes, got dtype {dtype}")
    shape = tuple(b.shape)
    if len(shape) == 0 or shape[-1] != 4:
        raise ValueError(f"{name} must have a last dimension of 4 (x1, y1, x2, y2), got shape {shape}")
    if 0 in shape:
        return
    finite = np.isfinite(b).all() if isinstance(b, np.ndarray) else b.isfinite().all()
    if not bool(finite):
        raise ValueError(f"{name} must be finite (got NaN or inf coordinates)")
    if bool((b[..., 2] < b[..., 0]).any()) or bool((b[..., 3] < b[..., 1]).any()):
        raise ValueError(f"{name} must satisfy x1 <= x2 and y1 <= y2 (x, y) = (x1, y1, x2, y2)")


def check_eps(eps: float) -> None:
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite non-negative number, got {eps!r}")


def check_paired(boxes1, boxes2, reduction: str, eps: float) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    check_eps(eps)
    check_boxes("boxes1", boxes1)
    check_boxes("boxes2", boxes2)
    if tuple(boxes1.shape) != tuple(boxes2.shape):
        raise ValueError(f"boxes1 shape {tuple(boxes1.shape)} does not match boxes2 shape {tuple(boxes2.shape)}: "
                         "the losses compare boxes pair by pair")


def check_pairwise(boxes1, boxes2) -> None:
    check_boxes("boxes1", boxes1)
    check_boxes("boxes2", boxes2)
    for name, b in (("boxes1", boxes1), ("boxes2", boxes2)):
        if len(b.shape) != 2:
            raise ValueError(f"{name} must have shape (N, 4), got {tuple(b.shape)}")


# ----------------------------------------------------------------------------------------------
# Geometry of a pair


class _Axis:
    """One axis of a pair: box 1 ``[p1, p2]``, box 2 ``[q1, q2]``."""

    def __init__(self, xp, p1, p2, q1, q2) -> None:
        zero = _const(0, p1)
        self.dl, self.dr = p1 - q1, p2 - q2
        self.w1, self.w2 = p2 - p1, q2 - q1
        self.r = xp.minimum(p2, q2) - xp.maximum(p1, q1)
        self.i = xp.maximum(self.r, zero)
        self.c = xp.maximum(p2, q2) - xp.minimum(p1, q1)
        self.e1 = xp.maximum(-self.dl, zero) + xp.maximum(self.dr, zero)  # box 1 outside box 2: w1 − r
        self.e2 = xp.maximum(self.dl, zero) + xp.maximum(-self.dr, zero)
        self.dc = (self.dl + self.dr) * 0.5
        self.p1, self.p2, self.q1, self.q2 = p1, p2, q1, q2

    def weights(self, xp):
        """Mean one-sided weights ``(s, u)`` of the 4 coordinates ``p1, p2, q1, q2``: ``s`` with which
        the coordinate moves the clamped overlap ``i`` (sign: +1 for p2/q2, −1 for p1/q1, applied by
        the caller), ``u`` with which it moves the enclosing extent ``c``."""
        p1, p2, q1, q2, r = self.p1, self.p2, self.q1, self.q2, self.r
        fl = _cast
        pos, nonneg = fl(r > 0, r), fl(r >= 0, r)

        def upper(a, b, w):  # a in min(a, b) for i, in max(a, b) for c; w the width of a's box
            s_plus, s_minus = fl(a < b, r) * nonneg, fl(a <= b, r) * pos
            u_plus, u_minus = fl(a >= b, r), fl(a > b, r)
            flat = w == 0  # a zero width may only grow: the right side alone
            return xp.where(flat, s_plus, (s_plus + s_minus) * 0.5), xp.where(flat, u_plus, (u_plus + u_minus) * 0.5)

        def lower(a, b, w):  # a in max(a, b) for i, in min(a, b) for c
            s_plus, s_minus = fl(a >= b, r) * pos, fl(a > b, r) * nonneg
            u_plus, u_minus = fl(a < b, r), fl(a <= b, r)
            flat = w == 0  # a zero width may only shrink from the left: the left side alone
            return (xp.where(flat, s_minus, (s_plus + s_minus) * 0.5),
                    xp.where(flat, u_minus, (u_plus + u_minus) * 0.5))

        return lower(p1, q1, self.w1), upper(p2, q2, self.w1), lower(q1, p1, self.w2), upper(q2, p2, self.w2)


class _Geometry:
    def __init__(self, xp, b1, b2) -> None:
        self.xp = xp
        self.x = _Axis(xp, b1[..., 0], b1[..., 2], b2[..., 0], b2[..., 2])
        self.y = _Axis(xp, b1[..., 1], b1[..., 3], b2[..., 1], b2[..., 3])
        x, y = self.x, self.y
        self.A, self.B = x.w1 * y.w1, x.w2 * y.w2
        self.I = x.i * y.i
        both = (x.r >= 0) & (y.r >= 0)
        self.P1 = xp.where(both, x.e1 * y.w1 + y.e1 * x.i, self.A)  # A − I
        self.P2 = xp.where(both, x.e2 * y.w2 + y.e2 * x.i, self.B)  # B − I
        self.U = self.I + self.P1 + self.P2
        self.C = x.c * y.c
        self.E = self._empty(xp, both)  # C − U

    def _empty(self, xp, both):
        x, y = self.x, self.y
        fl = _cast
        oL, oR, oB, oT = x.dl < 0, x.dr > 0, y.dl < 0, y.dr > 0
        eL, eR, eB, eT = xp.abs(x.dl), xp.abs(x.dr), xp.abs(y.dl), xp.abs(y.dr)
        corners = (fl(oL != oB, eL) * (eL * eB) + fl(oL != oT, eL) * (eL * eT)
                   + fl(oR != oB, eL) * (eR * eB) + fl(oR != oT, eL) * (eR * eT))
        apart_x = x.w1 * y.e2 + x.w2 * y.e1 + (-x.r) * y.c
        apart_y = y.w1 * x.e2 + y.w2 * x.e1 + (-y.r) * x.c
        return xp.where(both, corners, xp.where(x.r < 0, apart_x, apart_y))


# ----------------------------------------------------------------------------------------------
# Value and VJP


def pair_kernel(xp, b1, b2, kind: str, eps: float, alpha: str = "exact", iou_eps: float | None = None,
                cot=None, stacked: bool = True):
    """Per-pair value (shape ``b1.shape[:-1]``) and, with a cotangent ``cot`` of that shape, the
    VJPs ``(g1, g2)`` (shape of ``b1``/``b2``). ``b1``, ``b2`` broadcast against each other.
    ``stacked=False`` gives the VJPs as 8 arrays instead, ``x1, y1, x2, y2`` of box 1 then of box 2
    (a pairwise caller reduces each over its own axis)."""
    g = _Geometry(xp, b1, b2)
    x, y = g.x, g.y
    ie = eps if iou_eps is None else iou_eps
    if kind in ("iou", "giou"):
        ie = eps
    N1, D1 = g.P1 + g.P2 + ie, g.U + ie
    if kind == "iou":
        value = g.I / D1
    elif kind == "giou":
        value = g.I / D1 - g.E / (g.C + eps)
    else:
        value = N1 / D1
        if kind == "giou_loss":
            value = value + g.E / (g.C + eps)
        else:
            rho2 = x.dc * x.dc + y.dc * y.dc
            c2 = x.c * x.c + y.c * y.c + ie
            value = value + rho2 / c2
            if kind == "ciou_loss":
                zero = _const(0, x.w1)
                p = (x.dl - x.dr) * y.w1 - x.w1 * (y.dl - y.dr)  # w2·h1 − w1·h2
                q = y.w1 * y.w2 + x.w1 * x.w2
                point = ((x.w1 == 0) & (y.w1 == 0)) | ((x.w2 == 0) & (y.w2 == 0))
                theta = xp.where(point, _const(float("nan"), x.w1), xp.arctan2(p, q))
                kk = _const(_K, x.w1)
                v = kk * (theta * theta)
                t1 = N1 / D1
                a = xp.where(v == 0, zero, v / (t1 + v + eps))
                value = value + a * v
    if cot is None:
        return value, None

    # partial derivatives w.r.t. the 8 coordinates (x1, y1, x2, y2, X1, Y1, X2, Y2), times cot
    (sx1, ux1), (sx2, ux2), (sX1, uX1), (sX2, uX2) = x.weights(xp)
    (sy1, uy1), (sy2, uy2), (sY1, uY1), (sY2, uY2) = y.weights(xp)

    def t1_num(s, cross, e_self, len_self, other_area):
        """``(1 − s)·I·len_self − s·cross·other_area − s·cross·(e_self·len_self + ε)``: single-signed off
        the ties; at a tie (``s = ½``) the first two cancel exactly for identical boxes, leaving ε's term."""
        return ((1 - s) * (g.I * len_self) - s * (cross * other_area)) - s * cross * (e_self * len_self + ie)

    # ∂(1 − IoU)/∂z numerators (over D1²): x-axis uses the y-overlap and heights, and vice versa
    n_x2 = t1_num(sx2, y.i, x.e1, y.w1, g.B)
    n_x1 = -t1_num(sx1, y.i, x.e1, y.w1, g.B)
    n_X2 = t1_num(sX2, y.i, x.e2, y.w2, g.A)
    n_X1 = -t1_num(sX1, y.i, x.e2, y.w2, g.A)
    n_y2 = t1_num(sy2, x.i, y.e1, x.w1, g.B)
    n_y1 = -t1_num(sy1, x.i, y.e1, x.w1, g.B)
    n_Y2 = t1_num(sY2, x.i, y.e2, x.w2, g.A)
    n_Y1 = -t1_num(sY1, x.i, y.e2, x.w2, g.A)
    dt1 = [(n / D1) / D1 for n in (n_x1, n_y1, n_x2, n_y2, n_X1, n_Y1, n_X2, n_Y2)]
    sign = -1.0 if kind in ("iou", "giou") else 1.0  # IoU = 1 − (1 − IoU)
    grads = [sign * d for d in dt1]

    if kind in ("giou", "giou_loss"):
        ce = g.C + eps
        # d[(C − U)/(C + ε)] = (dC·(U + ε) − dU·(C + ε))/(C + ε)². For x2 (weights u in the enclosure,
        # s in the intersection): dC = u·ch, dU = (1 − s)·h1 + s·hx1 with hx1 = h1 − iy (the part of the
        # moved edge outside box 2), and the identity ch·U − h1·C = ch·(P2 − h1·a2) (a2 = cw − w1, box 2's
        # x-excess) turns the numerator into u·(ch·(P2 − h1·a2) + ε·b2) + m·(C + ε),
        # m = (u − 1 + s)·h1 − s·hx1: the cancellation of ch·U against h1·C (exact for a segment inside
        # the other box's height) never happens in floating point.
        hx1 = xp.where(y.r >= 0, y.e1, y.w1)
        hx2 = xp.where(y.r >= 0, y.e2, y.w2)
        wy1 = xp.where(x.r >= 0, x.e1, x.w1)
        wy2 = xp.where(x.r >= 0, x.e2, x.w2)

        def t2(u, s, across, length, part, p_other, excess_other, excess_across):
            m = (u - 1 + s) * length - s * part
            return (u * (across * (p_other - length * excess_other) + eps * excess_across) + m * ce) / ce / ce

        d2 = [
            -t2(ux1, sx1, y.c, y.w1, hx1, g.P2, x.e2, y.e2),
            -t2(uy1, sy1, x.c, x.w1, wy1, g.P2, y.e2, x.e2),
            t2(ux2, sx2, y.c, y.w1, hx1, g.P2, x.e2, y.e2),
            t2(uy2, sy2, x.c, x.w1, wy1, g.P2, y.e2, x.e2),
            -t2(uX1, sX1, y.c, y.w2, hx2, g.P1, x.e1, y.e1),
            -t2(uY1, sY1, x.c, x.w2, wy2, g.P1, y.e1, x.e1),
            t2(uX2, sX2, y.c, y.w2, hx2, g.P1, x.e1, y.e1),
            t2(uY2, sY2, x.c, x.w2, wy2, g.P1, y.e1, x.e1),
        ]
        grads = [a + (-b if kind == "giou" else b) for a, b in zip(grads, d2)]
    if kind in ("diou_loss", "ciou_loss"):
        # d[ρ²/(c² + ε)] = (dρ²·c² − ρ²·dc² + dρ²·ε)/(c² + ε)² (ε's term apart, never absorbed). Where the
        # coordinate is the enclosure's extreme (weight u), dρ²·c² − ρ²·dc² = ±Φ(D) with D = ±Δcx and
        # Φ = q·(q·cw − (cw − ch)(cw + ch))/2 − cw·qo·(ch + 2|Δcy|)/2, q = cw + 2D and qo = ch − 2|Δcy|
        # formed from coordinate differences: the terms D·c² and 2cw·ρ² cancel in closed form (a box
        # whose centre distance meets half the enclosure), not in floating point.
        c2n = x.c * x.c + y.c * y.c
        zero = _const(0, x.w1)

        def pos(t):
            return xp.maximum(t, zero)

        def q_other(ax):  # c − 2|Δc| from coordinate differences (each term one rounding, no cancellation)
            up = pos(ax.q2 - ax.p2) + pos(ax.q1 - ax.p1) + (ax.q2 - ax.p1)
            down = pos(ax.p2 - ax.q2) + pos(ax.p1 - ax.q1) + (ax.p2 - ax.q1)
            return xp.where(ax.dc >= 0, up, down)

        def t3_axis(ax, ox, u1, u2, uq1, uq2):
            """Numerators for p1, p2, q1, q2 of axis ``ax`` (``ox`` the other axis)."""
            qo = q_other(ox)
            tail = ax.c * qo * (ox.c + 2 * xp.abs(ox.dc)) * 0.5
            diff = (ax.c - ox.c) * (ax.c + ox.c)

            def phi(q):
                return q * (q * ax.c - diff) * 0.5 - tail

            base = ax.dc * c2n
            q_p1 = (ax.p2 - ax.q1) + pos(ax.p2 - ax.q2)
            q_p2 = (ax.q2 - ax.p1) + pos(ax.q1 - ax.p1)
            q_q1 = (ax.q2 - ax.p1) + pos(ax.q2 - ax.p2)
            q_q2 = (ax.p2 - ax.q1) + pos(ax.p1 - ax.q1)
            e = ax.dc * ie
            return ((1 - u1) * base + u1 * phi(q_p1) + e, (1 - u2) * base - u2 * phi(q_p2) + e,
                    -(1 - uq1) * base + uq1 * phi(q_q1) - e, -(1 - uq2) * base - uq2 * phi(q_q2) - e)

        n_x = t3_axis(x, y, ux1, ux2, uX1, uX2)
        n_y = t3_axis(y, x, uy1, uy2, uY1, uY2)
        d3 = [n / c2 / c2 for n in (n_x[0], n_y[0], n_x[1], n_y[1], n_x[2], n_y[2], n_x[3], n_y[3])]
        grads = [a + b for a, b in zip(grads, d3)]
    if kind == "ciou_loss":
        r1 = x.w1 * x.w1 + y.w1 * y.w1
        r2 = x.w2 * x.w2 + y.w2 * y.w2
        dw1, dh1 = -y.w1 / r1, x.w1 / r1
        dw2, dh2 = y.w2 / r2, -x.w2 / r2
        dtheta = [-dw1, -dh1, dw1, dh1, -dw2, -dh2, dw2, dh2]
        k2 = (2 * kk) * theta
        if alpha == "constant":
            d4 = [a * (k2 * d) for d in dtheta]
        else:
            d4 = [a * ((2 - a) * (k2 * d) - a * t) for d, t in zip(dtheta, dt1)]
        d4 = [xp.where(v == 0, zero, d) for d in d4]
        grads = [a + b for a, b in zip(grads, d4)]
    grads = [d * cot for d in grads]
    if not stacked:
        return value, grads
    return value, (xp.stack(grads[:4], -1), xp.stack(grads[4:], -1))
