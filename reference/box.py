"""Box regression oracles: IoU, GIoU (pairwise N×M) and the GIoU, DIoU and CIoU losses (paired).

Boxes are ``(x1, y1, x2, y2)`` with ``x1 ≤ x2``, ``y1 ≤ y2`` (torchvision's ``xyxy``). For one pair,
box 1 ``(x1, y1, x2, y2)`` and box 2 ``(X1, Y1, X2, Y2)``:

- widths ``w = x2 − x1``, heights ``h = y2 − y1``, areas ``A = w1·h1``, ``B = w2·h2``;
- intersection ``I = [min(x2, X2) − max(x1, X1)]₊ · [min(y2, Y2) − max(y1, Y1)]₊``; union
  ``U = A + B − I``; enclosing box ``C = cw·ch``, ``cw = max(x2, X2) − min(x1, X1)`` (``ch`` alike);
- ``IoU = I/U``; ``GIoU = IoU − (C − U)/C`` (Rezatofighi et al., CVPR 2019, arXiv:1902.09630,
  Algorithm 1);
- with ``eps`` (torchvision's ``ops.generalized_box_iou_loss`` / ``distance_box_iou_loss`` /
  ``complete_box_iou_loss``, 0.29): ``1 − IoU_ε = (U − I + ε)/(U + ε)``,
  ``generalized_box_iou_loss = (U − I + ε)/(U + ε) + (C − U)/(C + ε)``;
  ``distance_box_iou_loss = (U − I + ε)/(U + ε) + ρ²/(c² + ε)`` with the squared distance of the
  centres ``ρ² = Δcx² + Δcy²``, ``Δcx = ((x1 − X1) + (x2 − X2))/2``, and the squared diagonal of the
  enclosing box ``c² = cw² + ch²`` (Zheng et al., AAAI 2020, arXiv:1911.08287, eq. 6);
  ``complete_box_iou_loss = distance_box_iou_loss + α·v`` with
  ``v = (4/π²)(atan(w2/h2) − atan(w1/h1))²`` and ``α = v/((1 − IoU_ε) + v + ε)`` (ibid., eqs. 9–11;
  the ``+ ε`` is torchvision's). ``mean`` averages over the pairs (an empty mean is 0, torchvision's
  ``0.0 * loss.sum()``), ``sum`` adds them.

Conventions and documented values:

- ``eps`` is a parameter like any other: the oracle evaluates the loss exactly for the ε it is
  given (a binary float64), so ``eps = 0`` is the mathematical loss. A denominator can vanish only
  if both boxes have zero area (``U = 0``, hence ``c² = 0`` or ``C = 0`` with it): IoU is ``0/0``
  there and the value is NaN (as torchvision's ``box_iou``); with ``eps > 0`` every loss is finite.
- The aspect angle ``atan(w/h)`` is ``atan2(w, h)``: ``π/2`` for a horizontal segment ``h = 0``; it is
  undefined for a point box ``w = h = 0``, whose CIoU is NaN (torchvision: ``0/0``). The angle
  difference is ``atan2(w2·h1 − w1·h2, h1·h2 + w1·w2)`` (both angles lie in ``[0, π/2]``).
- Where ``v = 0``, ``α·v = 0`` and ``α = 0`` (the limit: ``α·v ≤ v``; with ``eps = 0`` and identical
  boxes ``α`` itself is ``0/0``).
- CIoU's α: ``alpha="exact"`` (default) differentiates α — the derivative of the loss as defined:
  ``d(α v) = α·((2 − α)·dv − α·d(1 − IoU_ε))``; ``alpha="constant"`` treats α as a constant,
  ``d(α v) = α·dv`` (torchvision evaluates α under ``torch.no_grad``).
- ``iou_eps`` (CIoU only): the ε of the IoU and distance terms when it is not ``eps``.
  torchvision's ``complete_box_iou_loss`` calls its DIoU helper without ``eps``, so those terms
  always use 1e-7 and only α's denominator uses the ``eps`` passed.
- ``eps`` for ``box_iou``/``generalized_box_iou`` (no such argument in torchvision, default 0):
  MONAI adds float32's machine epsilon to the union and to the enclosing area.
- Ties. The functions are piecewise smooth; the kinks are at touching edges (an intersection
  side ``[·]₊`` at 0) and at equal coordinates (``min``/``max`` of equal values). At a kink each
  partial derivative is the **mean of its two one-sided partial derivatives** (what a central
  difference gives; where a single ``min``/``max`` is tied, what ``torch.minimum``/``torch.maximum``
  give); where one side leaves the domain (a zero width or height that would turn negative), the
  other one-sided derivative. Identical boxes thus get the gradient 0 at ``eps = 0``. torchvision's
  strict intersection test ``x2ᴵ > x1ᴵ`` takes the disjoint side at touching edges instead.
  Catalogue cases at kinks are marked in their note and come last; every other case is away
  from every kink (generated pairs with a tie are drawn again).

Hazards and remedies. Near-identical boxes make ``1 − IoU`` and ``A + B − 2I`` cancel, nested boxes
make ``C − U`` cancel, boxes far from the origin lose digits in centres ``(x1 + x2)/2``, areas and
centre distances, and ``atan(w2/h2) − atan(w1/h1)`` cancels for similar aspect ratios. The oracle
evaluates every polynomial quantity (areas, ``U − I + ε``, ``C − U``, ``ρ²``, ``c²``, the numerators
of the quotient rule) in exact binary arithmetic (``mpmath`` with ``exact=True``), each loss as one
exact numerator over one exact denominator, rounded once; only the arctangent and α round at
192 bits. The gradients come from forward-mode dual numbers carried through the same exact
arithmetic (so the quotient-rule numerators are exact too), one pass per coordinate and side; at a
tie, ``min``/``max``/``[·]₊`` follow the operand that wins along the direction.
"""

from __future__ import annotations

import mpmath
import numpy as np
from mpmath import mpf

from lossoracle.mpfuncs import mp_array, mp_sum, to_mp, workprec
from lossoracle.spec import DTYPE_EPS, Arg, Case, Convention, Spec
from lossoracle.strategies import GRIDS, rng_for, to_grid

from .common import REDUCTIONS

__all__ = [
    "box_iou", "box_iou_grad", "generalized_box_iou", "generalized_box_iou_grad", "generalized_box_iou_loss",
    "generalized_box_iou_loss_grad", "distance_box_iou_loss", "distance_box_iou_loss_grad",
    "complete_box_iou_loss", "complete_box_iou_loss_grad", "SPECS",
]

_NAN = mpmath.nan
_ALPHAS = ("exact", "constant")


def _add(a: mpf, b: mpf) -> mpf:
    return mpmath.fadd(a, b, exact=True)


def _sub(a: mpf, b: mpf) -> mpf:
    return mpmath.fsub(a, b, exact=True)


def _mul(a: mpf, b: mpf) -> mpf:
    return mpmath.fmul(a, b, exact=True)


_HALF = mpf(0.5)


class _Dual:
    """A value and its directional derivative (``d``: a 1-tuple, or empty for values only), in exact
    binary arithmetic."""

    __slots__ = ("v", "d")

    def __init__(self, v: mpf, d: tuple) -> None:
        self.v, self.d = v, d

    @staticmethod
    def const(c, n: int) -> _Dual:
        return _Dual(mpf(c), (mpf(0),) * n)

    def __add__(self, o: _Dual) -> _Dual:
        return _Dual(_add(self.v, o.v), tuple(_add(a, b) for a, b in zip(self.d, o.d)))

    def __sub__(self, o: _Dual) -> _Dual:
        return _Dual(_sub(self.v, o.v), tuple(_sub(a, b) for a, b in zip(self.d, o.d)))

    def __mul__(self, o: _Dual) -> _Dual:
        return _Dual(_mul(self.v, o.v), tuple(_add(_mul(self.v, b), _mul(o.v, a)) for a, b in zip(self.d, o.d)))

    def half(self) -> _Dual:
        return _Dual(_mul(self.v, _HALF), tuple(_mul(a, _HALF) for a in self.d))


def _min(a: _Dual, b: _Dual) -> _Dual:
    """``min(a, b)``; at a tie, the operand that stays the smaller one along the direction."""
    if a.v != b.v:
        return a if a.v < b.v else b
    return a if not a.d or a.d[0] <= b.d[0] else b


def _max(a: _Dual, b: _Dual) -> _Dual:
    if a.v != b.v:
        return a if a.v > b.v else b
    return a if not a.d or a.d[0] >= b.d[0] else b


def _pos(a: _Dual) -> _Dual:
    """``[a]₊``; at 0, ``a`` if it grows along the direction, else 0."""
    if a.v > 0 or (a.v == 0 and a.d and a.d[0] > 0):
        return a
    return _Dual.const(0, len(a.d))


def _quot(n: _Dual, d: _Dual) -> tuple[mpf, list]:
    """``n/d`` and its derivative ``(dn·d − n·dd)/d²`` (exact numerator, one rounding); NaN where
    ``d = 0``."""
    if d.v == 0:
        return _NAN, [_NAN] * len(n.d)
    dd = _mul(d.v, d.v)
    return n.v / d.v, [_sub(_mul(a, d.v), _mul(n.v, b)) / dd for a, b in zip(n.d, d.d)]


def _sum_quot(n1: _Dual, d1: _Dual, n2: _Dual, d2: _Dual) -> tuple[mpf, list]:
    """``n1/d1 + n2/d2`` as one exact fraction."""
    return _quot(n1 * d2 + n2 * d1, d1 * d2)


class _Pair:
    """Exact geometry of one pair of boxes; ``direction = (k, ±1)`` carries the directional
    derivative along ``±e_k`` (``k`` indexes the 8 coordinates of the pair)."""

    def __init__(self, b1, b2, direction=None) -> None:
        n = 0 if direction is None else 1
        c = [_Dual(v, () if direction is None else (mpf(direction[1] if k == direction[0] else 0),))
             for k, v in enumerate([*b1, *b2])]
        x1, y1, x2, y2, X1, Y1, X2, Y2 = c
        self.n = n
        self.w1, self.h1, self.w2, self.h2 = x2 - x1, y2 - y1, X2 - X1, Y2 - Y1
        ix = _pos(_min(x2, X2) - _max(x1, X1))
        iy = _pos(_min(y2, Y2) - _max(y1, Y1))
        self.I = ix * iy
        self.U = self.w1 * self.h1 + self.w2 * self.h2 - self.I
        self.cw = _max(x2, X2) - _min(x1, X1)
        self.ch = _max(y2, Y2) - _min(y1, Y1)
        self.C = self.cw * self.ch
        self.dcx = ((x1 - X1) + (x2 - X2)).half()
        self.dcy = ((y1 - Y1) + (y2 - Y2)).half()

    def const(self, c) -> _Dual:
        return _Dual.const(c, self.n)

    def one_minus_iou(self, eps: mpf) -> tuple[_Dual, _Dual]:
        """``(U − I + ε, U + ε)``."""
        e = self.const(eps)
        return self.U - self.I + e, self.U + e

    def distance(self, eps: mpf) -> tuple[_Dual, _Dual]:
        """``(ρ², c² + ε)``."""
        return self.dcx * self.dcx + self.dcy * self.dcy, self.cw * self.cw + self.ch * self.ch + self.const(eps)

    def angle(self) -> tuple[mpf, list]:
        """``θ = atan(w2/h2) − atan(w1/h1)`` and its derivative; NaN for a point box."""
        p = self.w2 * self.h1 - self.w1 * self.h2
        q = self.h1 * self.h2 + self.w1 * self.w2
        point = (self.w1.v == 0 and self.h1.v == 0) or (self.w2.v == 0 and self.h2.v == 0)
        if point:
            return _NAN, [_NAN] * self.n
        r2 = _add(_mul(p.v, p.v), _mul(q.v, q.v))
        return mpmath.atan2(p.v, q.v), [_sub(_mul(q.v, a), _mul(p.v, b)) / r2 for a, b in zip(p.d, q.d)]


def _feasible(b1, b2, k: int, side: int) -> bool:
    """Moving coordinate ``k`` along ``side`` keeps ``x1 ≤ x2`` and ``y1 ≤ y2``."""
    box = b1 if k < 4 else b2
    j = k % 4
    if box[(j + 2) % 4] != box[j]:
        return True
    return side > 0 if j >= 2 else side < 0  # a zero width: x2 may only grow, x1 only shrink


def _pair_value(kind: str, b1, b2, eps: mpf, grad: bool, alpha: str = "exact", iou_eps=None):
    """Value of one pair and, with ``grad``, its 8 partial derivatives, each the mean of the two
    one-sided partial derivatives (the feasible one where the other leaves the domain)."""
    value = _pair_direction(kind, b1, b2, eps, None, alpha, iou_eps)[0]
    if not grad:
        return value, []
    if mpmath.isnan(value):
        return value, [_NAN] * 8
    partials = []
    for k in range(8):
        sides = [s for s in (1, -1) if _feasible(b1, b2, k, s)]
        ds = [s * _pair_direction(kind, b1, b2, eps, (k, s), alpha, iou_eps)[1][0] for s in sides]
        partials.append(ds[0] if len(ds) == 1 else (ds[0] + ds[1]) / 2)
    return value, partials


def _pair_direction(kind: str, b1, b2, eps: mpf, direction, alpha: str, iou_eps):
    """Value and directional derivative (a list of 0 or 1 entries) of one pair."""
    g = _Pair(b1, b2, direction)
    if kind == "iou":
        return _quot(g.I, g.U + g.const(eps))
    if kind == "giou":
        e = g.const(eps)
        u, c = g.U + e, g.C + e
        return _quot(g.I * c - (g.C - g.U) * u, u * c)
    if kind == "giou_loss":
        n1, d1 = g.one_minus_iou(eps)
        return _sum_quot(n1, d1, g.C - g.U, g.C + g.const(eps))
    ie = eps if iou_eps is None else mpf(iou_eps)
    n1, d1 = g.one_minus_iou(ie)
    n3, d3 = g.distance(ie)
    value, dvalue = _sum_quot(n1, d1, n3, d3)
    if kind == "diou_loss":
        return value, dvalue
    if alpha not in _ALPHAS:
        raise ValueError(f"alpha must be one of {_ALPHAS}, got {alpha!r}")
    theta, dtheta = g.angle()
    if mpmath.isnan(theta) or mpmath.isnan(value):
        return _NAN, [_NAN] * g.n
    t1, dt1 = _quot(n1, d1)
    k = 4 / mpmath.pi**2
    v = k * theta**2
    dv = [2 * k * theta * x for x in dtheta]
    if v == 0:
        return value, dvalue
    a = v / (t1 + v + eps)
    if alpha == "constant":
        dterm = [a * x for x in dv]
    else:
        dterm = [a * ((2 - a) * x - a * y) for x, y in zip(dv, dt1)]
    return value + a * v, [x + y for x, y in zip(dvalue, dterm)]


# ----------------------------------------------------------------------------------------------
# Arguments


def _boxes(name: str, a) -> np.ndarray:
    """Exact mpf boxes, validated (the oracle's domain: finite coordinates, x1 ≤ x2, y1 ≤ y2)."""
    arr = np.asarray(a)
    if arr.ndim == 0 or arr.shape[-1] != 4:
        raise ValueError(f"{name} must have a last dimension of 4 (x1, y1, x2, y2), got shape {arr.shape}")
    m = to_mp(arr)
    flat = m.reshape(-1, 4)
    for row in flat:
        if not all(mpmath.isfinite(v) for v in row):
            raise ValueError(f"{name} must be finite")
        if row[2] < row[0] or row[3] < row[1]:
            raise ValueError(f"{name} must satisfy x1 <= x2 and y1 <= y2")
    return m


def _eps(eps) -> mpf:
    e = mpf(eps)
    if not (mpmath.isfinite(e) and e >= 0):
        raise ValueError(f"eps must be finite and non-negative, got {eps!r}")
    return e


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


# ----------------------------------------------------------------------------------------------
# Pairwise: box_iou, generalized_box_iou


def _pairwise(kind, boxes1, boxes2, eps, grad_output=None):
    with workprec():
        b1, b2 = _boxes("boxes1", boxes1), _boxes("boxes2", boxes2)
        if b1.ndim != 2 or b2.ndim != 2:
            raise ValueError(f"boxes1 and boxes2 must be (N, 4) and (M, 4), got {b1.shape} and {b2.shape}")
        e = _eps(eps)
        n, m = b1.shape[0], b2.shape[0]
        grad = grad_output is not None
        vals, g1, g2 = [], [[[] for _ in range(4)] for _ in range(n)], [[[] for _ in range(4)] for _ in range(m)]
        gout = to_mp(np.broadcast_to(np.asarray(grad_output, dtype=object), (n, m))) if grad else None
        for i in range(n):
            for j in range(m):
                v, d = _pair_value(kind, b1[i], b2[j], e, grad)
                vals.append(v)
                if grad:
                    for k in range(4):
                        g1[i][k].append(_mul(gout[i, j], d[k]) if mpmath.isfinite(d[k]) else gout[i, j] * d[k])
                        g2[j][k].append(_mul(gout[i, j], d[4 + k]) if mpmath.isfinite(d[4 + k])
                                        else gout[i, j] * d[4 + k])
        if not grad:
            return mp_array(vals, (n, m))
        return {"boxes1": mp_array([mp_sum(s) for row in g1 for s in row], (n, 4)),
                "boxes2": mp_array([mp_sum(s) for row in g2 for s in row], (m, 4))}


def box_iou(boxes1, boxes2, eps=0.0):
    """Exact pairwise IoU ``I/U`` (N×M); NaN where both boxes have zero area."""
    return _pairwise("iou", boxes1, boxes2, eps)


def box_iou_grad(grad_output, boxes1, boxes2, eps=0.0):
    """VJP of :func:`box_iou` w.r.t. both box sets."""
    return _pairwise("iou", boxes1, boxes2, eps, grad_output)


def generalized_box_iou(boxes1, boxes2, eps=0.0):
    """Exact pairwise GIoU ``I/U − (C − U)/C`` (N×M)."""
    return _pairwise("giou", boxes1, boxes2, eps)


def generalized_box_iou_grad(grad_output, boxes1, boxes2, eps=0.0):
    """VJP of :func:`generalized_box_iou` w.r.t. both box sets."""
    return _pairwise("giou", boxes1, boxes2, eps, grad_output)


# ----------------------------------------------------------------------------------------------
# Paired losses


def _paired(kind, boxes1, boxes2, reduction, eps, alpha="exact", iou_eps=None, grad_output=None):
    _check_reduction(reduction)
    with workprec():
        b1, b2 = _boxes("boxes1", boxes1), _boxes("boxes2", boxes2)
        if b1.shape != b2.shape:
            raise ValueError(f"boxes1 shape {b1.shape} does not match boxes2 shape {b2.shape}")
        e = _eps(eps)
        lead = b1.shape[:-1]
        f1, f2 = b1.reshape(-1, 4), b2.reshape(-1, 4)
        n = f1.shape[0]
        grad = grad_output is not None
        out = [_pair_value(kind, f1[i], f2[i], e, grad, alpha, iou_eps) for i in range(n)]
        if not grad:
            vals = [v for v, _ in out]
            if reduction == "none":
                return mp_array(vals, lead)
            total = mp_sum(vals)
            return total if reduction == "sum" else (total / n if n else mpf(0))
        if reduction == "none":
            cot = to_mp(np.broadcast_to(np.asarray(grad_output, dtype=object), lead)).reshape(-1).tolist()
        else:
            a = mpf(np.asarray(grad_output, dtype=object).reshape(-1)[0])
            cot = [a / n if reduction == "mean" else a] * n if n else []
        g1, g2 = [], []
        for (_, d), a in zip(out, cot):
            row = [_mul(a, x) if mpmath.isfinite(x) else a * x for x in d]
            g1 += row[:4]
            g2 += row[4:]
        return {"boxes1": mp_array(g1, b1.shape), "boxes2": mp_array(g2, b2.shape)}


def generalized_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7):
    """Exact ``(U − I + ε)/(U + ε) + (C − U)/(C + ε)`` per pair, reduced."""
    return _paired("giou_loss", boxes1, boxes2, reduction, eps)


def generalized_box_iou_loss_grad(grad_output, boxes1, boxes2, reduction="none", eps=1e-7):
    return _paired("giou_loss", boxes1, boxes2, reduction, eps, grad_output=grad_output)


def distance_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7):
    """Exact ``(U − I + ε)/(U + ε) + ρ²/(c² + ε)`` per pair, reduced."""
    return _paired("diou_loss", boxes1, boxes2, reduction, eps)


def distance_box_iou_loss_grad(grad_output, boxes1, boxes2, reduction="none", eps=1e-7):
    return _paired("diou_loss", boxes1, boxes2, reduction, eps, grad_output=grad_output)


def complete_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7, alpha="exact", iou_eps=None):
    """``distance_box_iou_loss + α·v`` per pair, reduced (``iou_eps``: see the module notes)."""
    return _paired("ciou_loss", boxes1, boxes2, reduction, eps, alpha, iou_eps)


def complete_box_iou_loss_grad(grad_output, boxes1, boxes2, reduction="none", eps=1e-7, alpha="exact",
                               iou_eps=None):
    return _paired("ciou_loss", boxes1, boxes2, reduction, eps, alpha, iou_eps, grad_output=grad_output)


# ----------------------------------------------------------------------------------------------
# Cases

_F = np.float64
_NANF, _INF = float("nan"), float("inf")


def _arr(a) -> np.ndarray:
    return np.asarray(a, dtype=_F)


def random_pairs(rng: np.random.Generator, n: int, grid: str, spread: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs of boxes on ``grid``, away from every kink: box 2 is a jittered copy of box 1
    (overlapping), a box nested in it, or a box elsewhere (disjoint or overlapping), in random
    proportion; sizes log-uniform over [0.5, 50]·spread/50. Pairs with a zero width or height,
    equal coordinates or touching edges (ties) are drawn again."""
    out1, out2 = np.zeros((n, 4)), np.zeros((n, 4))
    for i in range(n):
        while True:
            b1, b2 = _one_pair(rng, grid, spread)
            if not _has_tie(b1, b2):
                out1[i], out2[i] = b1, b2
                break
    return out1, out2


def _one_pair(rng, grid, spread):
    cx, cy = rng.uniform(-spread, spread, 2)
    w, h = np.exp(rng.uniform(np.log(0.5), np.log(50.0), 2)) * spread / 50.0
    kind = rng.integers(0, 3)
    j = rng.normal(0, 0.2, 4)
    if kind == 0:
        c2, s2 = (cx + j[0] * w, cy + j[1] * h), (w * np.exp(j[2]), h * np.exp(j[3]))
    elif kind == 1:
        c2, s2 = (cx + 0.1 * j[0] * w, cy + 0.1 * j[1] * h), (w * 0.5, h * 0.5)
    else:
        c2, s2 = tuple(rng.uniform(-spread, spread, 2)), (w * np.exp(j[2]), h * np.exp(j[3]))

    def box(c, s):  # rounding is monotone: x1 ≤ x2 survives it
        return to_grid(np.array([c[0] - s[0] / 2, c[1] - s[1] / 2, c[0] + s[0] / 2, c[1] + s[1] / 2]), grid)

    return box((cx, cy), (w, h)), box(c2, s2)


def _has_tie(b1, b2) -> bool:
    """A zero width or height, a coordinate shared by the pair, or touching edges."""
    x = [b1[0], b1[2], b2[0], b2[2]]
    y = [b1[1], b1[3], b2[1], b2[3]]
    return len(set(x)) < 4 or len(set(y)) < 4


def _case(id_, b1, b2, note="", raises=None, **params) -> Case:
    return Case(id_, {"boxes1": _arr(b1), "boxes2": _arr(b2)}, params, raises=raises, note=note)


_BASE = [[0.0, 0.0, 4.0, 3.0], [1.0, 2.0, 3.5, 6.0], [-2.5, -1.0, 0.5, 0.25], [10.0, 10.0, 12.0, 11.0]]


def _bad_cases(pairwise: bool) -> list[Case]:
    good = _arr(_BASE[:3])
    inverted_x = good.copy()
    inverted_x[1] = [3.5, 2.0, 1.0, 6.0]
    inverted_y = good.copy()
    inverted_y[2] = [-2.5, 0.25, 0.5, -1.0]
    nan, inf = good.copy(), good.copy()
    nan[0, 1], inf[2, 2] = _NANF, _INF
    cases = [
        _case("bad_x2_below_x1", inverted_x, good, raises=ValueError, note="boxes1 has x2 < x1"),
        _case("bad_y2_below_y1", good, inverted_y, raises=ValueError, note="boxes2 has y2 < y1"),
        _case("bad_last_dim", good[:, :3], good[:, :3], raises=ValueError, note="last dimension 3, not 4"),
        _case("bad_nan", nan, good, raises=ValueError, note="NaN coordinate in boxes1"),
        _case("bad_inf", good, inf, raises=ValueError, note="infinite coordinate in boxes2"),
    ]
    if pairwise:
        cases.append(_case("bad_ndim", good[0], good, raises=ValueError, note="boxes1 is not (N, 4)"))
    else:
        cases += [
            _case("bad_pair_count", good, good[:2], raises=ValueError, note="3 boxes against 2"),
            _case("bad_reduction", good, good, reduction="avg", raises=ValueError, note="unknown reduction"),
            _case("bad_negative_eps", good, good, eps=-1e-7, raises=ValueError, note="eps < 0"),
        ]
    return cases


_KINK = "at a kink: "


def _geometry_pairs() -> dict[str, tuple[list, list, str]]:
    """Named configurations of paired boxes. Those whose note starts with ``_KINK`` sit on a kink
    (a tie: the gradient convention); the others are away from every kink."""
    return {
        "nearly_identical": ([[0.0, 0.0, 4.0, 3.0], [1.5, -2.0, 2.25, 8.0], [100.0, 50.0, 164.0, 90.0]],
                             [[0.0078125, -0.00390625, 3.9921875, 3.00390625], [1.501953125, -2.0078125, 2.2578125,
                                                                               7.96875],
                              [100.0625, 49.9375, 164.25, 90.25]],
                             "nearly identical boxes: 1 − IoU and A + B − 2I cancel"),
        "nearly_identical_float32": ([[0.0, 0.0, 4.0, 3.0], [1.5, -2.0, 2.25, 8.0], [1000.0, 50.0, 1064.0, 90.0]],
                                     [[2.0**-22, -(2.0**-22), 4.0 + 2.0**-21, 3.0 + 2.0**-21],
                                      [1.5 + 2.0**-22, -2.0 - 2.0**-21, 2.25 - 2.0**-22, 8.0 - 2.0**-21],
                                      [1000.0 + 2.0**-14, 50.0 - 2.0**-18, 1064.0 + 2.0**-13, 90.0 + 2.0**-17]],
                                     "nearly identical boxes: loss of order 2^-22"),
        "nearly_identical_float64": ([[0.0, 0.0, 4.0, 3.0], [1.5, -2.0, 2.25, 8.0]],
                                     [[2.0**-52, -(2.0**-51), 4.0 - 2.0**-50, 3.0 + 2.0**-51],
                                      [1.5 + 2.0**-51, -2.0 + 2.0**-50, 2.25 - 2.0**-51, 8.0 - 2.0**-49]],
                                     "nearly identical boxes: loss of order 2^-51"),
        "disjoint": ([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [-5.0, 2.0, -4.0, 7.0]],
                     [[2.0, 0.25, 3.0, 1.5], [0.5, 3.0, 1.5, 3.5], [2.0, 2.0, 3.0, 3.0], [6.0, -8.0, 9.0, -7.5]],
                     "apart in x, in y, in both"),
        "nested": ([[0.0, 0.0, 8.0, 6.0], [-4.0, -4.0, 4.0, 4.0], [1.0, 1.0, 1.5, 1.25]],
                   [[1.0, 2.0, 3.0, 5.0], [-1.0, -1.0, 1.0, 1.0], [0.5, 0.25, 8.0, 8.0]],
                   "one box inside the other: C = U; concentric boxes: ρ = 0"),
        "crossing": ([[-4.0, -1.0, 4.0, 1.0], [0.0, 0.0, 6.0, 2.0]], [[-1.0, -4.0, 1.0, 4.0], [1.0, -1.0, 5.0, 3.0]],
                     "a plus sign: four empty corners in the enclosing box"),
        "far_float32": ([[1e6 + 0.375, 2e6 + 0.25, 1e6 + 8.5, 2e6 + 4.75], [5e6 + 0.5, 5e6, 5e6 + 100.0, 5e6 + 1.5],
                         [1e6, 1e6 + 0.0625, 1e6 + 1.0625, 1e6 + 0.5]],
                        [[1e6 + 0.5, 2e6 + 0.125, 1e6 + 9.0, 2e6 + 5.0], [5e6 + 1.0, 5e6 + 0.5, 5e6 + 99.5, 5e6 + 2.0],
                         [1e6 + 2.0, 1e6 + 0.25, 1e6 + 3.0625, 1e6 + 0.75]],
                        "offset 1e6–5e6, fractional coordinates: exact float32 widths, inexact centres and areas"),
        "far_float64": ([[1e15 + 0.375, 3e15, 1e15 + 8.5, 3e15 + 4.75], [1e12 + 0.5, 0.0, 1e12 + 1.5, 2.0]],
                        [[1e15 + 0.5, 3e15 + 0.125, 1e15 + 9.0, 3e15 + 5.0], [1e12 + 1.0, 0.5, 1e12 + 2.25, 3.0]],
                        "offset 1e12–3e15 with fractions"),
        "tiny": ([[0.0, 0.0, 1e-6, 2e-6], [1.0, 1.0, 1.0 + 2.0**-20, 1.0 + 2.0**-19], [1e-6, 1e-6, 3e-6, 2e-6]],
                 [[5e-7, 1e-6, 1.5e-6, 2.5e-6], [1.0 + 2.0**-21, 1.0 + 2.0**-22, 1.0 + 2.0**-19, 1.0 + 2.0**-20],
                  [1.25e-6, 0.5e-6, 2.5e-6, 1.5e-6]], "boxes of size 1e-6: ε dominates U"),
        "huge": ([[0.0, 0.0, 1e30, 2e30], [-1e30, -1e30, 1e30, 1e30]],
                 [[5e29, 1e30, 1.5e30, 3e30], [0.5e30, 0.25e30, 2e30, 4e30]],
                 "boxes of size 1e30: areas overflow float32"),
        "aspect": ([[0.0, 0.0, 1e-6, 1.0], [0.0, 0.0, 1e6, 1.0], [0.0, 0.0, 1.0, 1e-6], [0.0, 0.0, 1.0, 1.0]],
                   [[-1e-6, 0.5, 2e-6, 1.5], [0.5, -1e6, 1.5, 1e6], [-1e6, -1.0, 1e6, 1.0], [0.25, 0.5, 0.75, 1e3]],
                   "aspect ratios 1e-6..1e6 (CIoU's arctangent)"),
        "identical": ([[0.0, 0.0, 4.0, 3.0], [1.5, -2.0, 2.25, 8.0], [-3.0, -3.0, -1.0, -2.5]],
                      [[0.0, 0.0, 4.0, 3.0], [1.5, -2.0, 2.25, 8.0], [-3.0, -3.0, -1.0, -2.5]],
                      _KINK + "identical boxes: loss ε/(U + ε) (0 at ε = 0)"),
        "touching": ([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]],
                     [[1.0, 0.25, 2.0, 1.5], [0.5, 1.0, 1.5, 3.0], [1.0, 1.0, 2.0, 2.0]],
                     _KINK + "touching edges and corners"),
        "shared_coordinates": ([[0.0, 0.0, 4.0, 3.0], [0.0, 0.0, 4.0, 3.0]],
                               [[0.0, 1.0, 2.0, 5.0], [1.0, 0.5, 4.0, 2.0]],
                               _KINK + "equal coordinates in min/max"),
        "zero_area": ([[0.0, 0.0, 4.0, 0.0], [1.0, 1.0, 1.0, 3.0], [0.0, 0.0, 2.0, 2.0], [2.0, 1.0, 3.0, 1.0]],
                      [[1.0, -1.0, 3.0, 2.0], [0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 1.0], [2.0, 1.0, 3.0, 1.0]],
                      _KINK + "segments; identical segments give 1 with ε > 0 (torchvision#7746)"),
    }


def _to_grid_rows(a, grid):
    return to_grid(_arr(a), grid)


_F32_GRID = ("far_float32", "tiny", "huge", "aspect")  # float32-exact versions of these values


def _paired_cases(name: str) -> list[Case]:
    r = rng_for(name, "edge")
    b1, b2 = random_pairs(r, 6, "half")
    cases, kinks = [], []
    for red in REDUCTIONS:
        cases += [
            _case(f"basic_{red}", b1, b2, reduction=red),
            _case(f"empty_{red}", np.zeros((0, 4)), np.zeros((0, 4)), reduction=red, note="an empty mean is 0"),
        ]
    for key, (p, q, note) in _geometry_pairs().items():
        if key in _F32_GRID:
            p, q = _to_grid_rows(p, "float32"), _to_grid_rows(q, "float32")
        (kinks if note.startswith(_KINK) else cases).append(_case(key, p, q, note=note))
        if key in ("identical", "nested", "disjoint", "nearly_identical", "crossing"):
            (kinks if note.startswith(_KINK) else cases).append(_case(f"{key}_eps0", p, q, eps=0.0,
                                                                      note=note + "; ε = 0"))
    b3 = random_pairs(r, 6, "half")
    cases += [
        _case("eps_large", b1, b2, eps=0.5, note="ε = 0.5"),
        _case("single_pair", [0.0, 0.0, 4.0, 3.0], [1.0, 0.5, 5.0, 2.0], note="shape (4,)"),
        Case("batched_3d", {"boxes1": b3[0].reshape(2, 3, 4), "boxes2": b3[1].reshape(2, 3, 4)}, {"reduction": "sum"},
             note="shape (2, 3, 4), sum"),
    ]
    for grid in GRIDS:
        for i, red in enumerate(("none", "mean", "sum")):
            rg = rng_for(name, grid, i)
            p, q = random_pairs(rg, 8, grid, spread=50.0 if i != 2 else 2000.0)
            cases.append(_case(f"random_{grid}_{i}", p, q, reduction=red))
    kinks += [
        _case("zero_area_eps0", [[0.0, 0.0, 4.0, 0.0], [1.0, 1.0, 1.0, 3.0]],
              [[1.0, -1.0, 3.0, 2.0], [1.0, 0.0, 1.0, 2.0]],
              eps=0.0, note=_KINK + "a segment against a box (defined); two segments: U = 0, NaN"),
        _case("point_box", [[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]], [[0.0, 0.0, 2.0, 2.0], [0.5, 0.5, 0.5, 0.5]],
              note=_KINK + "a point box: its aspect angle is undefined (CIoU NaN)"),
    ]
    return cases + kinks + _bad_cases(pairwise=False)


def _pairwise_cases(name: str) -> list[Case]:
    r = rng_for(name, "edge")
    geo = _geometry_pairs()
    cases = [_case("basic", *random_pairs(r, 4, "half")),
             _case("empty", np.zeros((0, 4)), _arr(_BASE[:3]), note="no boxes1: a (0, 3) result")]
    kinks = []
    for key in ("nearly_identical", "disjoint", "nested", "crossing", "far_float32", "far_float64", "tiny", "huge",
                "identical", "touching", "zero_area"):
        p, q, note = geo[key]
        if key in _F32_GRID:
            p, q = _to_grid_rows(p, "float32"), _to_grid_rows(q, "float32")
        if key == "zero_area":
            p, q = p[:3], q[:2]  # no pair of two zero-area boxes (U = 0: NaN) in the N×M product
        (kinks if note.startswith(_KINK) else cases).append(_case(key, p, q, note=note))
    kinks.append(_case("zero_area_both", [[0.0, 0.0, 4.0, 0.0]], [[1.0, 0.0, 3.0, 0.0], [0.0, 0.0, 1.0, 1.0]],
                       note=_KINK + "two segments: U = 0, IoU = 0/0 = NaN"))
    for grid in GRIDS:
        for i in range(2):
            rg = rng_for(name, grid, i)
            p, q = random_pairs(rg, 3, grid)
            q = np.concatenate([q, random_pairs(rg, 2, grid)[1]])
            cases.append(_case(f"random_{grid}_{i}", p, q))
    return cases + kinks + _bad_cases(pairwise=True)


def _reduced_terms(inputs, params) -> int:
    b = inputs["boxes1"]
    return max(1, int(np.size(b) // 4)) if params.get("reduction", "none") != "none" else 1


_ARGS = (Arg("boxes1", "boxes", differentiable=True), Arg("boxes2", "boxes", differentiable=True))
_SRC_GIOU = "Rezatofighi et al., Generalized Intersection over Union, CVPR 2019 (arXiv:1902.09630), Alg. 1"
_SRC_DIOU = ("Zheng et al., Distance-IoU Loss, AAAI 2020 (arXiv:1911.08287), eqs. 6 (DIoU) and 9–11 (CIoU); "
             "torchvision.ops (0.29) signatures and ε placement")
_PAIRWISE_EPS = Convention("eps", 0.0, "added to the union (and to the enclosing area for GIoU): MONAI's box_utils "
                                       "uses float32's machine epsilon 2^-23; torchvision none",
                           values=(2.0**-23, 1e-7, DTYPE_EPS))
_TIES = ("at a kink (touching edges, equal coordinates) each partial derivative is the mean of its two one-sided "
         "derivatives (the feasible one where a zero width or height would turn negative); torchvision's strict "
         "test takes the disjoint side at touching edges")
_EMPTY = "an empty mean is 0 (torchvision: 0.0 * loss.sum())"
_ZERO = "ε = 0 and both boxes of zero area: U = 0, IoU = 0/0, NaN"

def _pair_tolerance(inputs, params) -> dict[str, np.ndarray]:
    """Every coordinate of a pair is perturbed relative to the pair's size, the largest side of
    either box: the losses depend on coordinate differences only, so the distance of the boxes
    from the origin is not a scale of the problem (the float32 rounding of a centre 1e6 away is)."""
    b1, b2 = (np.asarray(inputs[k], dtype=np.float64) for k in ("boxes1", "boxes2"))
    if b1.size == 0:
        return {"boxes1": b1, "boxes2": b2}
    size = np.maximum(_sides(b1), _sides(b2))[..., None]
    return {"boxes1": np.broadcast_to(size, b1.shape), "boxes2": np.broadcast_to(size, b2.shape)}


def _box_tolerance(inputs, params) -> dict[str, np.ndarray]:
    """Pairwise IoU/GIoU: each box's coordinates relative to its own largest side (a point box is
    exact)."""
    return {k: np.broadcast_to(_sides(np.asarray(inputs[k], dtype=np.float64))[..., None],
                               np.shape(inputs[k])) for k in ("boxes1", "boxes2")}


def _sides(b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.maximum(b[..., 2] - b[..., 0], b[..., 3] - b[..., 1])


SPECS = (
    Spec(
        name="box_iou",
        signature="box_iou(boxes1, boxes2)",
        definition="IoU_ij = I/U for every pair (N×M); I the intersection area, U = A + B − I",
        source="torchvision.ops.box_iou (xyxy)",
        args=_ARGS, params={}, oracle=box_iou, gradient=box_iou_grad, cases=lambda: _pairwise_cases("box_iou"),
        conventions=(_PAIRWISE_EPS,), reduced_terms=_reduced_terms, tolerance=_box_tolerance, unit_tail_scale=True,
        edge_notes=("both boxes of zero area: U = 0, NaN", _TIES),
    ),
    Spec(
        name="generalized_box_iou",
        signature="generalized_box_iou(boxes1, boxes2)",
        definition="GIoU_ij = I/U − (C − U)/C for every pair (N×M); C the enclosing box's area",
        source=_SRC_GIOU + "; torchvision.ops.generalized_box_iou",
        args=_ARGS, params={}, oracle=generalized_box_iou, gradient=generalized_box_iou_grad,
        cases=lambda: _pairwise_cases("generalized_box_iou"), conventions=(_PAIRWISE_EPS,),
        reduced_terms=_reduced_terms, tolerance=_box_tolerance, unit_tail_scale=True,
        edge_notes=("U = 0 or C = 0: NaN", _TIES),
    ),
    Spec(
        name="generalized_box_iou_loss",
        signature='generalized_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7)',
        definition="l = (U − I + ε)/(U + ε) + (C − U)/(C + ε) per pair of boxes",
        source=_SRC_GIOU + "; torchvision.ops.generalized_box_iou_loss",
        args=_ARGS, params={"reduction": "none", "eps": 1e-7}, oracle=generalized_box_iou_loss,
        gradient=generalized_box_iou_loss_grad, cases=lambda: _paired_cases("generalized_box_iou_loss"),
        reduced_terms=_reduced_terms, tolerance=_pair_tolerance, unit_tail_scale=True,
        edge_notes=(_ZERO, _EMPTY, _TIES),
    ),
    Spec(
        name="distance_box_iou_loss",
        signature='distance_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7)',
        definition="l = (U − I + ε)/(U + ε) + ρ²/(c² + ε); ρ the distance of the centres, c the enclosing "
                   "box's diagonal",
        source=_SRC_DIOU,
        args=_ARGS, params={"reduction": "none", "eps": 1e-7}, oracle=distance_box_iou_loss,
        gradient=distance_box_iou_loss_grad, cases=lambda: _paired_cases("distance_box_iou_loss"),
        reduced_terms=_reduced_terms, tolerance=_pair_tolerance, unit_tail_scale=True,
        edge_notes=(_ZERO, _EMPTY, _TIES),
    ),
    Spec(
        name="complete_box_iou_loss",
        signature='complete_box_iou_loss(boxes1, boxes2, reduction="none", eps=1e-7)',
        definition="l = DIoU loss + α·v, v = (4/π²)(atan(w2/h2) − atan(w1/h1))², α = v/((1 − IoU_ε) + v + ε)",
        source=_SRC_DIOU,
        args=_ARGS, params={"reduction": "none", "eps": 1e-7}, oracle=complete_box_iou_loss,
        gradient=complete_box_iou_loss_grad, cases=lambda: _paired_cases("complete_box_iou_loss"),
        conventions=(
            Convention("alpha", "exact", "'exact': α is differentiated (the derivative of the loss as defined); "
                                         "'constant': α is a constant in the gradient (torchvision: torch.no_grad)",
                       values=("constant",)),
            Convention("iou_eps", None, "ε of the IoU and distance terms if not eps (torchvision: always 1e-7, "
                                        "only α's denominator uses eps)", values=(1e-7,)),
        ),
        reduced_terms=_reduced_terms, tolerance=_pair_tolerance, unit_tail_scale=True,
        edge_notes=(_ZERO, "a point box (w = h = 0): aspect angle undefined, NaN", "v = 0: α·v = 0", _EMPTY, _TIES),
    ),
)
