"""Running error bounds for the box kernels in plain float64 (torch tensors).

The kernels of :mod:`.box_core` run unchanged on :class:`Tracked` values: each carries its float64
value ``v`` and a bound ``e`` on ``|v − v*|``, ``v*`` the value the same formula takes in exact
arithmetic on the exact inputs (running error analysis; Higham, *Accuracy and Stability of
Numerical Algorithms*, §3.3). Callers accept an element when its bound places it within the
faithful budget, and recompute the others with guard bits (long double).

**Error model.** ``u = 2^-53``; ``+ − × ÷`` round to nearest once: ``fl(x ∘ y) = (x ∘ y)/(1 + δ)``,
``|δ| ≤ u`` (Higham (2.5)), so the rounding adds at most ``u·|v|`` with ``v`` the rounded result,
plus :data:`ETA` (half the subnormal spacing) where a product or quotient underflows (sums of
floats are exact there). With ``|a − a*| ≤ eₐ`` and ``|b − b*| ≤ e_b``:

- ``a ± b``: ``eₐ + e_b + u|v|``;
- ``a·b``: ``|a|·e_b + |b|·eₐ + eₐ·e_b + u|v| + η`` (exact: ``a*b* − ab = a·db + b·da + da·db``);
- ``a/b``: ``(eₐ + |a/b|·e_b)/(|b| − e_b) + u|v| + η`` (``a*/b* − a/b = (da·b − a·db)/(b·b*)``,
  ``|b*| ≥ |b| − e_b``); infinite unless ``e_b < |b|``;
- ``min``, ``max``, ``|·|``, ``−``: 1-Lipschitz, exact on floats: ``max(eₐ, e_b)`` or ``eₐ``; a
  product by a power of two ``η`` only;
- ``atan2(p, q)``: the angle between ``(p, q)`` and ``(p*, q*)`` is at most
  ``(e_p + e_q)/(max(|p|, |q|) − e_p − e_q)``, and the libm result is within 1 ULP ≤ ``2u|θ|`` (SLEEF's
  ``_u10`` functions that ATen and Inductor vectorize with, glibc's scalar ``atan2``) plus ``η``;
- a comparison of tracked values whose bounds could change its outcome (``|a − b| ≤ eₐ + e_b``
  with a bound ≠ 0) flags the element :attr:`Namespace.unsure`: the kernel may have taken the
  other branch of a ``where`` than the exact arithmetic would; callers treat it as failed. Exact
  quantities (the inputs, masks, ``ε``) have no bound (``None``) and cost nothing.

The bounds are themselves computed in float64: each is a sum and product of non-negative terms, at
most a few hundred operations deep, so its computed value is below the exact one by a factor
``(1 − u)^k`` at most; :data:`SLACK` (``1 + 2^-30``) covers it. A non-finite value or bound (an
overflow, ``0/0``, the NaN of a point box) fails every test.
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor
U = 2.0**-53
ETA = 2.0**-1075
SLACK = 1 + 2.0**-30


_POW2 = (0.5, 2, 0.25, 4, -0.5, -2, -0.25, -4)  # the scalars box_core scales by exactly


def _plus(*es):
    """The sum of the bounds that are not None (None when all are)."""
    es = [e for e in es if e is not None]
    if not es:
        return None
    out = es[0]
    for e in es[1:]:
        out = out + e
    return out


class Tracked:
    """A float64 tensor ``v`` and a bound ``e`` (a tensor, or None: exact) on its error. A *mask*
    (``mask=True``) holds values in {0, ±1/2, ±1}: sums, differences, products and halvings of
    masks (all the kernels form) are exact, a product by one only underflows."""

    __slots__ = ("v", "e", "ns", "mask")

    def __init__(self, v: Tensor, e: Tensor | None, ns: Namespace, mask: bool = False) -> None:
        self.v, self.e, self.ns, self.mask = v, e, ns, mask

    # what box_core asks of an array
    @property
    def dtype(self):
        return self.v.dtype

    def tracked_const(self, c) -> Tracked:
        return self.ns.const(c, self.v)

    def tracked_mask(self, b: Tensor) -> Tracked:
        return Tracked(b.to(self.v.dtype), None, self.ns, True)

    def __getitem__(self, k) -> Tracked:
        return Tracked(self.v[k], None if self.e is None else self.e[k], self.ns, self.mask)

    # arithmetic
    def _lift(self, o) -> Tracked:
        if isinstance(o, Tracked):
            return o
        if isinstance(o, (int, float)):
            return Tracked(o, None, self.ns, o in (0, 1, -1, 0.5, -0.5))
        return Tracked(o, None, self.ns)

    def _sum(self, o, v):
        if self.mask and o.mask:
            return Tracked(v, None, self.ns, True)
        return Tracked(v, _plus(self.e, o.e, U * v.abs()), self.ns)

    def __add__(self, o):
        if isinstance(o, (int, float)) and o == 0:
            return self
        o = self._lift(o)
        return self._sum(o, self.v + o.v)

    __radd__ = __add__

    def __neg__(self):
        return Tracked(-self.v, self.e, self.ns, self.mask)

    def __sub__(self, o):
        o = self._lift(o)
        return self._sum(o, self.v - o.v)

    def __rsub__(self, o):
        return self._lift(o) - self

    def __mul__(self, o):
        if isinstance(o, (int, float)):
            if o in (1, -1):
                return self if o == 1 else -self
            v = self.v * o
            if self.mask and o in (0.5, -0.5, 0):
                return Tracked(v, None, self.ns, True)
            e = None if self.e is None else self.e * abs(o)
            if o in _POW2:
                return Tracked(v, None if o == 0 else _plus(e, ETA), self.ns)
            return Tracked(v, _plus(e, U * v.abs() + ETA), self.ns)
        o = self._lift(o)
        v = self.v * o.v
        if self.mask or o.mask:
            if self.mask and o.mask:
                return Tracked(v, None, self.ns, True)
            m, t = (self, o) if self.mask else (o, self)
            return Tracked(v, _plus(None if t.e is None else t.e * m.v.abs(), ETA), self.ns)
        terms = [U * v.abs() + ETA]
        if o.e is not None:
            terms.append(self.v.abs() * o.e)
        if self.e is not None:
            terms.append(o.v.abs() * self.e)
            if o.e is not None:
                terms.append(self.e * o.e)
        return Tracked(v, _plus(*terms), self.ns)

    __rmul__ = __mul__

    def __truediv__(self, o):
        o = self._lift(o)
        v = self.v / o.v
        r = U * v.abs() + ETA
        if o.e is None:
            e = r if self.e is None else self.e / o.v.abs() + r
        else:
            num = v.abs() * o.e if self.e is None else self.e + v.abs() * o.e
            den = o.v.abs() - o.e
            e = torch.where(den > 0, num / den, math.inf) + r
        return Tracked(v, e, self.ns)

    def __rtruediv__(self, o):
        return self._lift(o) / self

    # comparisons: plain booleans; a possibly wrong outcome flags the element
    def _cmp(self, o, op):
        if isinstance(o, (int, float)):
            if self.e is not None:
                self.ns.flag((self.v - o).abs() <= self.e)
            return op(self.v, o)
        o = self._lift(o)
        e = _plus(self.e, o.e)
        if e is not None:
            self.ns.flag((self.v - o.v).abs() <= e)
        return op(self.v, o.v)

    def __lt__(self, o):
        return self._cmp(o, torch.lt)

    def __le__(self, o):
        return self._cmp(o, torch.le)

    def __gt__(self, o):
        return self._cmp(o, torch.gt)

    def __ge__(self, o):
        return self._cmp(o, torch.ge)

    def __eq__(self, o):  # type: ignore[override]
        return self._cmp(o, torch.eq)

    __hash__ = None  # type: ignore[assignment]


class Namespace:
    """The array namespace :mod:`.box_core` calls (``xp.where``, ``xp.minimum``, …) for tracked
    values; :attr:`unsure` collects the elements whose branches the bounds cannot vouch for."""

    def __init__(self) -> None:
        self.unsure: Tensor | bool = False

    def flag(self, mask: Tensor) -> None:
        self.unsure = self.unsure | mask

    def exact(self, v: Tensor) -> Tracked:
        return Tracked(v, None, self)

    def const(self, c, like: Tensor) -> Tracked:
        """The constant ``c`` rounded to float64: a number is exact, a decimal string (4/π²) within ``u``."""
        f = float(c)
        v = like.new_tensor(f)
        return Tracked(v, like.new_tensor(U * abs(f)) if isinstance(c, str) else None, self)

    def _lift(self, a) -> Tracked:
        return a if isinstance(a, Tracked) else Tracked(a, None, self)

    def where(self, c: Tensor, a, b):
        if not isinstance(a, Tracked) and not isinstance(b, Tracked):
            return torch.where(c, a, b)
        a, b = self._lift(a), self._lift(b)
        if a.mask and b.mask:
            return Tracked(torch.where(c, a.v, b.v), None, self, True)
        if a.e is None and b.e is None:
            e = None
        else:
            e = torch.where(c, 0.0 if a.e is None else a.e, 0.0 if b.e is None else b.e)
        return Tracked(torch.where(c, a.v, b.v), e, self)

    def minimum(self, a, b):
        a, b = self._lift(a), self._lift(b)
        e = a.e if b.e is None else b.e if a.e is None else torch.maximum(a.e, b.e)
        return Tracked(torch.minimum(a.v, b.v), e, self)

    def maximum(self, a, b):
        a, b = self._lift(a), self._lift(b)
        e = a.e if b.e is None else b.e if a.e is None else torch.maximum(a.e, b.e)
        return Tracked(torch.maximum(a.v, b.v), e, self)

    def abs(self, a):
        a = self._lift(a)
        return Tracked(a.v.abs(), a.e, self)

    def arctan2(self, p, q):
        p, q = self._lift(p), self._lift(q)
        v = torch.atan2(p.v, q.v)
        r = 2 * U * v.abs() + ETA
        d = _plus(p.e, q.e)
        if d is None:
            return Tracked(v, r, self)
        den = torch.maximum(p.v.abs(), q.v.abs()) - d
        return Tracked(v, torch.where(den > 0, d / den, math.inf) + r, self)


_MANTISSA = (1 << 52) - 1


def binade(x: Tensor) -> Tensor:
    """``2^⌊log2 x⌋`` for positive normal ``x`` (its mantissa bits cleared: no ``frexp``, which
    Inductor cannot lower); ``ulp(x) = 2^-52·binade(x)``."""
    return (x.view(torch.int64) & ~_MANTISSA).view(torch.float64)


def passes(t: Tracked, budget: float, unsure) -> Tensor:
    """Elements of ``t`` within ``budget`` ULPs of the exact value ``f``, proved by the bound ``e``:
    ``|f| ≥ lo = |v| − e`` and ``ulp(f) ≥ ulp(lo)``; never where :attr:`Namespace.unsure`."""
    av = t.v.abs()
    if t.e is None:
        ok = av.isfinite()
    else:
        e = t.e * SLACK
        lo = av - e
        normal = (lo >= 2.0**-1022) & (av <= 1.7976931348623157e308)
        ulp = binade(torch.where(normal, lo, 1.0)) * 2.0**-52
        ok = normal & (e <= budget * ulp)
    return ok & ~unsure if isinstance(unsure, Tensor) else ok
