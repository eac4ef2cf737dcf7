"""Multi-task weighting kernels, written once for NumPy arrays and torch tensors (float64 operands).

float64 ``sum``/``mean`` results are computed in plain float64 with an a-priori error bound
(:class:`BoundedUW`, :func:`bounded_weights`, the exact-grid :func:`grid_sum`) wherever that bound
fits the faithful budget (2 ULP value / 4 ULP gradient, plus log2 K); the other float64 results
(``none``, one task, the tasks near the optimum of ``∂/∂s``, extreme log-variances) carry every
quantity in double-double (:mod:`.doubledouble`, the ``SHORT`` transcendentals: about 2^-68
relative; the full ``log``) and are rounded once; results rounded to
float32 or narrower are computed in plain float64 (:class:`PlainUW`, :func:`plain_weights`:
about 2^-52 relative, far below their half-ULP, and float32 inputs cannot make ``e^{−s}·L``
overflow float64 where it is finite in float32). Formulas (``lossoracle.reference.multitask``):

- ``c·e^{−s}·L = c·m·e^{−s + e·log 2}`` with ``L = m·2^e`` (``frexp``, exact): the exponent
  ``−s + e·log 2 = log L − s`` is a double-double, so ``e^{−s}`` never overflows on its own
  (``s = −1000`` with ``L = 1e-300`` is finite) and ``L = 0`` never meets an infinity; the power of
  two is applied once, after the last product;
- ``∂/∂s = a·(r'(s) − c·e^{−s}·L)`` as one double-double difference (the cancellation near the
  optimum is the problem's, not ours); ``log(1 + e^s) = max(s, 0) + log1p(e^{−|s|})`` and
  ``σ(s)`` from the same ``e^{−|s|}``;
- ``FL(κ̄; γ) = e^{γ·log1p(−κ̄)}·(−log κ̄)``, the power of two of the exponential applied after the
  product with ``−log κ̄`` and the loss (or the cotangent); ``κ̄ = 1`` gives 0 for every γ;
- results that overflow come back as ±inf (never NaN: a zero cotangent gives 0), NaN inputs as NaN;
  under ``mean`` each term is divided by ``K`` before the sum, so the sum cannot overflow where
  the mean does not.

The callers (:mod:`.multitask_numpy`, :mod:`.multitask_torch`) validate with :func:`check_uw` /
:func:`check_dtp` and convert to float64.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import doubledouble as dd
from .validation import require_floating, require_reduction

Array = Any  # numpy.ndarray or torch.Tensor (float64)
DD = tuple[Array, Array]

FORMS = ("kendall", "simplified", "liebel")
TASK_TYPES = ("regression", "classification")
_T_MAX = 1419.0  # e^t for t beyond: ≥ 2^2047, times any positive double > 2^1024 (and within exp's reduction)


# ----------------------------------------------------------------------------------------------
# Validation (NumPy arrays and torch tensors alike; errors name the argument)


def _require_task_vector(name: str, x: Array) -> None:
    require_floating(name, x)
    if len(tuple(x.shape)) != 1:
        raise ValueError(f"{name} must be 1-D (one entry per task), got shape {tuple(x.shape)}")


def _require_finite(name: str, x: Array, low: float | None = None) -> None:
    """Finite (NaN passes: it propagates) and ``≥ low``."""
    if 0 in tuple(x.shape):
        return
    lo, hi = (float(v) for v in _min_max(x))  # settles the common case; a NaN fails both tests, and goes on
    if hi < float("inf") and (lo > -float("inf") if low is None else lo >= low):
        return
    if bool((abs(x) == float("inf")).any()):
        raise ValueError(f"{name} must be finite, got an infinite entry")
    if low is not None and bool((x < low).any()):
        raise ValueError(f"{name} must be ≥ {low}, got {float(x[x < low].reshape(-1)[0])!r}")


def _min_max(x: Array) -> tuple[Array, Array]:
    """``(x.min(), x.max())`` (NaN if any is NaN); one pass for a tensor."""
    ns = _ns(x)
    return ns.aminmax(x) if hasattr(ns, "aminmax") else (x.min(), x.max())


def coefficients(task_types, form: str, k: int) -> list[float]:
    """``c_i`` of each task (½ or 1), after checking ``form`` and ``task_types``."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if task_types is None:
        types = ["regression"] * k
    else:
        if form != "kendall":
            raise ValueError(f"task_types applies to form='kendall' only (form {form!r} has one term for every "
                             "task)")
        types = list(task_types)
        if len(types) != k or any(t not in TASK_TYPES for t in types):
            raise ValueError(f"task_types must list {k} of {TASK_TYPES} (one per task), got {task_types!r}")
    return [1.0 if form == "simplified" or t == "classification" else 0.5 for t in types]


def coefficient(task_types, form: str, k: int) -> float | list[float]:
    """:func:`coefficients`, as one number when every task shares it (no ``task_types``)."""
    return coefficients(None, form, 1)[0] if task_types is None else coefficients(task_types, form, k)


def check_uw(losses: Array, log_vars: Array, task_types, form: str, reduction: str) -> float | list[float]:
    """Validate an uncertainty-weighting call; returns the coefficients ``c_i`` (:func:`coefficient`)."""
    require_reduction(reduction)
    _require_task_vector("losses", losses)
    _require_task_vector("log_vars", log_vars)
    if tuple(log_vars.shape) != tuple(losses.shape):
        raise ValueError(f"log_vars shape {tuple(log_vars.shape)} does not match losses shape {tuple(losses.shape)}")
    _require_finite("losses", losses, 0.0)
    _require_finite("log_vars", log_vars)
    return coefficient(task_types, form, int(losses.shape[0]))


def check_kpis(kpis: Array, gamma: Array, k: int, kpi_floor) -> None:
    """KPIs in [0, 1] (0 only under a ``kpi_floor`` in (0, 1]), γ ≥ 0 scalar or one per task."""
    _require_task_vector("kpis", kpis)
    if int(kpis.shape[0]) != k:
        raise ValueError(f"kpis has {int(kpis.shape[0])} entries, expected one per task ({k})")
    if kpi_floor is not None and not 0.0 < float(kpi_floor) <= 1.0:
        raise ValueError(f"kpi_floor must lie in (0, 1], got {kpi_floor!r}")
    lo, hi = (float(v) for v in _min_max(kpis)) if k else (1.0, 1.0)
    if not (lo > 0 and hi <= 1):  # the common case settled in one pass (a NaN goes on)
        bad = (kpis < 0) | (kpis > 1)
        if bool(bad.any()):
            raise ValueError(f"kpis must lie in [0, 1], got {float(kpis[bad].reshape(-1)[0])!r}")
        if kpi_floor is None and bool((kpis == 0).any()):
            raise ValueError("kpis must be > 0: a KPI of 0 gives the weight −log 0 = +inf (pass kpi_floor to clamp it)")
    if len(tuple(gamma.shape)) not in (0, 1) or (len(tuple(gamma.shape)) == 1 and int(gamma.shape[0]) != k):
        raise ValueError(f"gamma must be a scalar or have shape ({k},) (one per task), got {tuple(gamma.shape)}")
    gmin, gmax = (float(gamma), float(gamma)) if not len(tuple(gamma.shape)) else (
        (float(v) for v in _min_max(gamma)) if k else (0.0, 0.0))
    if not (gmin >= 0 and gmax < float("inf")) and (  # the common case in one pass; a NaN goes on (it propagates)
            bool((gamma < 0).any()) or bool((abs(gamma) == float("inf")).any())):
        raise ValueError("gamma must be finite and ≥ 0")


def check_dtp(losses: Array, kpis: Array, gamma: Array, reduction: str, kpi_floor) -> None:
    require_reduction(reduction)
    _require_task_vector("losses", losses)
    require_floating("kpis", kpis)
    require_floating("gamma", gamma)
    _require_finite("losses", losses, 0.0)
    check_kpis(kpis, gamma, int(losses.shape[0]), kpi_floor)


# ----------------------------------------------------------------------------------------------
# Helpers


# float64 results: the short double-double functions, but the full ``log`` (the short one starts from a
# product with its argument, which loses the bits of a subnormal KPI)
FLOAT64 = dd.Transcendentals(dd.log, dd.SHORT.log1p, dd.SHORT.exp, dd.SHORT.expm1)


def transcendentals(float64_result: bool) -> dd.Transcendentals | None:
    """The double-double functions for float64 results; None — the plain float64 kernels — otherwise."""
    return FLOAT64 if float64_result else None


def _ns(x: Array):
    return dd.xp(x)


def _full(like: Array, v: float) -> Array:
    return _ns(like).full_like(like, v)


def _finish(v: DD, overflow: Array) -> Array:
    """The rounded double-double, or ``overflow`` (±inf, or 0) where it is not finite."""
    out = v[0] + v[1]
    return _ns(out).where(_ns(out).isfinite(out), out, overflow)


def _cotangent(g: Array, reduction: str, k: int, like: Array) -> DD:
    """Each term's cotangent as a double-double: ``g_i``, ``g``, or ``g/K`` (mean)."""
    ns = _ns(like)
    g = g + ns.zeros_like(like)  # broadcast a scalar cotangent over the tasks
    return dd.div_d(dd.lift(g), float(k)) if reduction == "mean" else dd.lift(g)


def _reduce(terms: DD, finite: Array, reduction: str, k: int) -> Array:
    """``none``: the terms; ``sum``/``mean``: their double-double sum (mean: each term /K first, and
    0/0 = NaN for K = 0), +inf if a term overflowed (every overflowing term here is +inf: a ≥ 0 and
    FL·L ≥ 0)."""
    ns = _ns(finite)
    inf = float("inf")
    if reduction == "none":
        return ns.where(finite, _finish(terms, _full(terms[0], inf)), inf)
    zero = ns.zeros_like(terms[0])
    safe = (ns.where(finite, terms[0], zero), ns.where(finite, terms[1], zero))
    if reduction == "mean" and k:
        safe = dd.div_d(safe, float(k))
    total = dd.sum_last(safe)
    out = _finish(total, ns.full_like(total[0], inf))
    if reduction == "mean" and not k:
        return out * float("nan")
    if not bool(finite.all()):
        out = out * 0 + inf
    return out


_U = 2.0 ** -53  # float64 unit roundoff; libm exp/log/log1p (glibc, SLEEF u10) are within 1 ULP ≤ 2u relative
_TINY = 2.0 ** -1021  # below this a float64 product may have lost bits to underflow


def grid_sum(t: Array) -> tuple[Array, float] | None:
    """``Σ t`` of a finite float64 vector and a bound on its error, in any summation order (None: no
    grid fits): :func:`.doubledouble.extraction_sum` on ``σ = 2^(M + e)``, ``max|t| < 2^e``, plus
    ``u·|S|`` for the last addition."""
    n = int(t.shape[0])
    lo, hi = (float(v) for v in _min_max(t)) if n else (0.0, 0.0)
    mx = max(-lo, hi) if lo == lo and hi == hi else float("nan")  # max|t| from one min/max pass
    if mx == 0.0 or mx != mx:
        return (t.sum(), 0.0) if mx == 0.0 else None
    e = math.frexp(mx)[1] + dd.extraction_exponent(n)
    if e > 1023:
        return None
    hi, lo, bound = dd.extraction_sum(t, 2.0 ** e)
    total = hi + lo
    return total, _U * abs(float(total)) + bound


def _fits(err: float, value: float, budget: float) -> bool:
    """``err ≤ budget`` ULP of the exact result (``ulp(x) > u·|x|``, ``|exact| ≥ |value| − err``),
    half an ULP kept in reserve."""
    return err <= (budget - 0.5) * _U * (abs(value) - err)


def _nan_if(flag: Array, out: Array) -> Array:
    """``out``, or NaN when any entry of ``flag`` holds (a reduced result)."""
    return out * float("nan") if bool(flag.any()) else out


# ----------------------------------------------------------------------------------------------
# Uncertainty weighting


class _UW:
    """The per-task quantities of one call (sanitised: NaN lanes computed on 1 and 0, restored later)."""

    def __init__(self, L: Array, s: Array, c: Array, form: str, T: dd.Transcendentals) -> None:
        ns = _ns(L)
        self.ns, self.form, self.T = ns, form, T
        self.nan = (L != L) | (s != s)
        L = ns.where(self.nan, 1.0, L)
        s = ns.where(self.nan, 0.0, s)
        self.L, self.s, self.c = L, s, c
        pos = L > 0
        m, e = ns.frexp(ns.where(pos, L, 1.0))
        e = e.astype(np.float64) if ns is np else e.to(L.dtype)
        u = dd.add_d(dd.mul_d(dd.LN2, e), -s)  # log L − s, up to the mantissa's log
        big = u[0] > _T_MAX
        E, k = T.exp((ns.where(big, _T_MAX, u[0]), ns.where(big, 0.0, u[1])))
        a = dd.ldexp(dd.mul_d(E, ns.where(pos, m * c, 0.0)), k)  # c·e^{−s}·L, one scaling
        total = a[0] + a[1]
        self.a_finite = ns.isfinite(total)
        zero = ns.zeros_like(L)
        self.a = (ns.where(self.a_finite, a[0], zero), ns.where(self.a_finite, a[1], zero))

    def _exp_abs(self) -> DD:
        E, k = self.T.exp(-abs(self.s))
        return dd.ldexp(E, k)

    def regulariser(self) -> DD:
        ns, s = self.ns, self.s
        if self.form == "kendall":
            return dd.lift(s * 0.5)
        if self.form == "simplified":
            return dd.lift(s)
        return dd.add_d(self.T.log1p(self._exp_abs()), ns.where(s > 0, s, 0.0))  # log(1 + e^s)

    def slope(self) -> DD:
        s = self.s
        if self.form == "kendall":
            return dd.lift(_full(s, 0.5))
        if self.form == "simplified":
            return dd.lift(_full(s, 1.0))
        e = self._exp_abs()
        one_plus = dd.add_d(e, 1.0)
        return dd.where(s >= 0, dd.div(dd.lift(_full(s, 1.0)), one_plus), dd.div(e, one_plus))  # σ(s)

    def restore(self, v: Array) -> Array:
        return self.ns.where(self.nan, float("nan"), v)


_E_CLAMP = 600.0  # e^{−s} of narrow results is evaluated at min(−s, 600) (PlainUW)


class PlainUW:
    """Uncertainty weighting in plain float64, for results rounded to float32 or narrower.

    Every input is then a float32 value (``|L| ≤ 2^128``, ``L ≥ 2^-149`` or 0, a cotangent ``g``
    ≥ 2^-149 in magnitude or 0, over ``K < 2^63`` under ``mean``), and ``e^{−s}`` is evaluated at
    ``min(−s, 600)``: where ``−s > 600`` every exact result that involves ``e^{−s}`` (``c·e^{−s}·L``
    for ``L > 0``, ``g·c·e^{−s}``, ``g·(r' − c·e^{−s}·L)`` for ``g ≠ 0``) exceeds
    ``2^-149·2^-63·½·e^600 > 10^196``, far beyond every narrow format's range, and so does the
    computed one (``e^600 ≈ 3.8e260``), while ``c·e^600·L ≤ 2^128·e^600 < 10^300`` stays finite in
    float64: ``L = 0`` gives 0 and a zero cotangent 0, with no ``0·inf`` to guard. Each result
    carries about ``2^-52`` relative error (``4·K·2^-53`` for a sum of ``K`` terms) before its
    rounding to the output format, far below its half-ULP. ``c`` is one number or one per task."""

    def __init__(self, L: Array, s: Array, c, form: str) -> None:
        ns = _ns(L)
        self.ns, self.k, self.s, self.c, self.form = ns, int(L.shape[0]), s, c, form
        e = s.clip(min=-_E_CLAMP)  # in place from here: no more full-size temporaries than needed
        ns.negative(e, out=e)
        self.e = ns.exp(e, out=e)
        a = L * e
        a *= c  # c·L·e: the scaling by c = ½ or 1 is exact
        self.a = a

    def _exp_abs(self) -> Array:
        return self.ns.exp(-abs(self.s))

    def value(self, reduction: str) -> Array:
        ns, s = self.ns, self.s
        if self.form == "kendall":
            terms = 0.5 * s
        elif self.form == "simplified":
            terms = s + 0.0  # a copy: the sum below is in place
        else:
            terms = ns.log1p(self._exp_abs()) + ns.where(s > 0, s, 0.0)
        terms += self.a  # r(s) + c·e^{−s}·L
        if reduction == "none":
            return terms
        total = terms.sum()
        return total / terms.shape[0] if reduction == "mean" else total  # K = 0: 0/0 = NaN

    def grads(self, g: Array, reduction: str) -> tuple[Array, Array]:
        """``(g·c·e^{−s}, g·(r'(s) − c·e^{−s}·L))``; ``g`` a scalar or one per task."""
        ns, s = self.ns, self.s
        if reduction == "mean":
            g = g / self.k
        if self.form == "kendall":
            slope = 0.5
        elif self.form == "simplified":
            slope = 1.0
        else:
            e = self._exp_abs()
            slope = ns.where(s >= 0, 1 / (1 + e), e / (1 + e))
        gs = slope - self.a
        gs *= g
        return (g * self.c) * self.e, gs


_S_PLAIN = 700.0  # |s| up to this: e^{−s} and e^{−|s|} are normal and finite in plain float64


class BoundedUW:
    """Uncertainty weighting in plain float64 for float64 results, with a-priori error bounds (None
    from :meth:`make` where ``|s| > 700`` somewhere, or ``K < 2``: the double-double path then).

    Per task (libm ``exp``/``log1p`` within 1 ULP ≤ 2u relative): ``a = c·L·e^{−s}`` within 3u·a (c
    exact); ``r`` exact for ``kendall``/``simplified``; ``liebel``: ``e^{−|s|}`` 2u, ``log1p`` 2u
    more (its relative condition ``x/((1 + x)·log1p x) ≤ 1``), the sum with ``max(s, 0)`` u: within
    ``5u·r``; a term ``a + r`` one rounding more: within ``6u·(a + |r|)``. ``σ(s)`` (liebel
    ``r'``): ``e^{−|s|}`` 2u, ``1 + e`` u, the quotient u: 4u. Products that underflow lose at most
    ``2^-1075`` each (an absolute ``K·2^-1073`` covers them)."""

    def __init__(self, L: Array, s: Array, c, form: str) -> None:
        ns = _ns(L)
        self.ns, self.k, self.s, self.c, self.form = ns, int(L.shape[0]), s, c, form
        self.e = ns.exp(-s)
        self.a = L * self.e
        self.a *= c

    @classmethod
    def make(cls, L: Array, s: Array, c, form: str, reduction: str) -> BoundedUW | None:
        if reduction == "none" or int(L.shape[0]) < 2:
            return None
        lo, hi = (float(v) for v in _min_max(s))
        if not (lo >= -_S_PLAIN and hi <= _S_PLAIN):
            return None
        q = cls(L, s, c, form)
        q.lo, q.hi = lo, hi
        return q

    def _regulariser(self) -> Array:
        ns, s = self.ns, self.s
        if self.form == "kendall":
            return 0.5 * s
        if self.form == "simplified":
            return s
        return ns.log1p(ns.exp(-abs(s))) + ns.where(s > 0, s, 0.0)

    def _regulariser_bound(self) -> float:
        """``K·max|r|`` (``≥ Σ|r|``) from the range of ``s``: ``½|s|``, ``|s|``; liebel ``log 2 + max(s, 0)``
        (1% added for the rounding of the bound itself)."""
        m = max(-self.lo, self.hi)
        r = 0.5 * m if self.form == "kendall" else m if self.form == "simplified" else math.log(2) + max(self.hi, 0.0)
        return 1.01 * self.k * r

    def value(self, reduction: str) -> Array | None:
        """``Σ a + r`` (``/K``), or None where the bound exceeds 2 + log2(K) ULP."""
        r = self._regulariser()
        t = r + self.a
        got = grid_sum(t)
        if got is None or not math.isfinite(float(got[0])):
            return None
        total, err = got
        self.asum = float(self.a.sum())

        def accepted(rabs: float) -> Array | None:
            v, e = total, err + 6.06 * _U * (self.asum + rabs) + self.k * 2.0 ** -1073
            if reduction == "mean":
                v = total / self.k
                e = e / self.k + _U * abs(float(v))
            return v if _fits(e, float(v), 2 + math.log2(self.k)) else None

        # Σ|r| ≤ K·max|r| first (the bound grows with it): the sum itself only where that does not fit
        v = accepted(self._regulariser_bound())
        return accepted(float(abs(r).sum())) if v is None else v

    def grads(self, g: Array, reduction: str) -> tuple[Array, Array, Array] | None:
        """``(g'·c·e^{−s}, g'·(r' − a), bad)`` with ``g' = g`` or ``g/K`` (a scalar); None where a
        partial could overflow or underflow (``|g'|``, ``c``, ``e^{−s}`` and ``a`` bound them), or
        ``∂/∂L`` (``g/K``, ``e^{−s}``, the product: within 4.04u) does not fit 4 + log2(K) ULP.

        ``∂/∂s = fl(g'·d̂)``, ``d̂ = fl(r̂' − â)``, errs by at most ``|g'|·(ρ·r' + 3.03u·a) +
        3.01u·|∂/∂s|`` (ρ = 0, or 4.04u for liebel's σ; ``g/K``, the difference and the product
        one rounding each). Within ``B − ½`` ULP (``B = 4 + log2 K``) wherever
        ``κ·|d̂| ≥ ρ/u·r̂' + 3.03·â`` with ``κ = (B − ½)(1 − 4.1u) − 3.02``: ``bad`` marks the other
        tasks (``â`` near ``r'``), computed with the constants rounded outwards (4.05, 3.04,
        ``κ·(1 − 2^-30)``) to cover the test's own roundings, and any task whose ``∂/∂s`` could
        underflow."""
        ns = self.ns
        if reduction == "mean":
            g = g / self.k
        budget = 3.5 + math.log2(self.k)
        gabs = abs(float(g))
        cmin, cmax = (self.c, self.c) if isinstance(self.c, float) else (float(self.c.min()), float(self.c.max()))
        amax = self.asum if hasattr(self, "asum") else float(self.a.max())  # a ≥ 0: Σ a ≥ max a
        if not (4.04 <= budget and (gabs == 0 or gabs * cmin * math.exp(-self.hi) >= 2.0 ** -967)
                and gabs * cmax * math.exp(-self.lo) <= 1e300 and gabs * (1 + amax) <= 1e300):
            return None
        gL = self.e * (g * self.c)
        kappa = ((budget - 0.5) * (1 - 4.1 * _U) - 3.02) * (1 - 2.0 ** -30)
        rhs = 3.04 * self.a
        if self.form == "liebel":
            e = ns.exp(-abs(self.s))
            slope = ns.where(self.s >= 0, 1 / (1 + e), e / (1 + e))
            rhs += 4.05 * slope
        else:
            slope = 0.5 if self.form == "kendall" else 1.0
        gs = slope - self.a
        bad = abs(gs) * kappa < rhs
        gs *= g
        if gabs < 2.0 ** -800 or (self.form == "liebel" and self.lo < -100):
            bad |= abs(gs) < _TINY  # else |d̂| ≥ 0.01·r' ≥ 2^-150 outside the band: ∂/∂s cannot underflow
        return gL, gs, bad


def uw_value(L: Array, s: Array, c: Array, form: str, reduction: str, T: dd.Transcendentals | None) -> Array:
    """``Σ c·e^{−s}·L + r(s)`` (or the terms), float64."""
    if T is None:
        return PlainUW(L, s, c, form).value(reduction)
    fast = BoundedUW.make(L, s, c, form, reduction)
    if fast is not None:
        v = fast.value(reduction)
        if v is not None:
            return v
    q = _UW(L, s, c, form, T)
    terms = dd.add(q.a, q.regulariser())
    finite = q.a_finite & q.ns.isfinite(terms[0] + terms[1])
    if reduction == "none":
        return q.restore(_reduce(terms, finite, "none", int(L.shape[0])))
    return _nan_if(q.nan, _reduce(terms, finite, reduction, int(L.shape[0])))


def uw_grads(g: Array, L: Array, s: Array, c: Array, form: str, reduction: str,
             T: dd.Transcendentals | None, bounded: BoundedUW | None = None, subset=None) -> tuple[Array, Array]:
    """``(g·c·e^{−s}, g·(r'(s) − c·e^{−s}·L))`` per task, float64: bounded plain float64
    (:class:`BoundedUW`, ``bounded`` if the forward made one), double-double for the tasks whose
    bound does not fit (or every task). ``subset(g, L, s, c, form, reduction, K)``: the ``∂/∂s`` of
    those tasks, the same bits as :func:`_uw_grads_dd` (a compiled kernel; default that function)."""
    if T is None:
        return PlainUW(L, s, c, form).grads(g, reduction)
    fast = bounded if bounded is not None else BoundedUW.make(L, s, c, form, reduction)
    got = fast.grads(g, reduction) if fast is not None else None
    if got is not None:
        gL, gs, bad = got
        ns = fast.ns
        idx = ns.nonzero(bad)[0] if ns is np else ns.nonzero(bad)[:, 0]
        if int(idx.shape[0]):  # double-double for those tasks only
            ci = c if isinstance(c, float) or not len(tuple(c.shape)) else c[idx]
            if subset is None:
                gs[idx] = _uw_grads_dd(g, L[idx], s[idx], ci, form, reduction, T, fast.k, need_L=False)[1]
            else:
                gs[idx] = subset(g, L[idx], s[idx], ci, form, reduction, fast.k)
        return gL, gs
    return _uw_grads_dd(g, L, s, c, form, reduction, T, int(L.shape[0]))


def _uw_grads_dd(g: Array, L: Array, s: Array, c: Array, form: str, reduction: str, T: dd.Transcendentals,
                 k: int, need_L: bool = True) -> tuple[Array | None, Array]:
    """:func:`uw_grads` in double-double; ``k`` is the task count of a ``mean`` (``L`` may be a
    subset); ``need_L=False`` skips ``∂/∂L`` (None)."""
    q = _UW(L, s, c, form, T)
    ns = q.ns
    gd = _cotangent(g, reduction, k, L)
    sign_inf = ns.where(gd[0] > 0, float("inf"), -float("inf"))
    gnan = gd[0] != gd[0]
    gL = None
    if need_L:  # ∂/∂L: g·c·e^{−s}, the power of two last (a zero cotangent gives 0, never 0·inf)
        t = -q.s
        big = t > _T_MAX
        E, kk = q.T.exp(ns.where(big, _T_MAX, t))
        gL = _finish(dd.ldexp(dd.mul(E, dd.mul_d(gd, c)), kk), sign_inf)
        # a partial is NaN where an argument it involves is: ∂/∂L = c·e^{−s} involves s only
        gL = ns.where((s != s) | gnan, float("nan"), gL)
    # ∂/∂s: g·(r' − a); where a overflowed, −sign(g)·inf (0 for g = 0)
    diff = dd.sub(q.slope(), q.a)
    gs = _finish(dd.mul(gd, diff), -sign_inf)
    gs = ns.where(q.a_finite, gs, ns.where(gd[0] == 0, 0.0, -sign_inf))
    return gL, ns.where(q.nan | gnan, float("nan"), gs)


# ----------------------------------------------------------------------------------------------
# Dynamic Task Prioritization


class _FL:
    """``FL(κ̄; γ) = E·2^k·(−log κ̄)`` unscaled (``E·2^k = (1 − κ̄)^γ``); κ̄ = 1 and NaN lanes masked."""

    def __init__(self, kappa: Array, gamma: Array, T: dd.Transcendentals) -> None:
        ns = _ns(kappa)
        gamma = gamma + ns.zeros_like(kappa)
        self.ns = ns
        self.nan = (kappa != kappa) | (gamma != gamma)
        self.one = kappa == 1
        kap = ns.where(self.nan | self.one, 0.5, kappa)
        gam = ns.where(self.nan, 0.0, gamma)
        z = dd.mul_d(T.log1p(-kap), gam)  # γ·log(1 − κ̄) ≤ 0 (γ = 0: exactly 0)
        self.E, self.k = T.exp(z)
        self.neglog = dd.neg(T.log(kap))

    def scaled(self, factor: DD, overflow: Array) -> Array:
        """``FL·factor`` rounded once (0 where κ̄ = 1, NaN where κ̄ or γ is NaN)."""
        ns = self.ns
        v = _finish(dd.ldexp(dd.mul(dd.mul(self.E, self.neglog), factor), self.k), overflow)
        return ns.where(self.nan, float("nan"), ns.where(self.one, 0.0, v))


def dtp_weights(kappa: Array, gamma: Array, T: dd.Transcendentals) -> Array:
    """``FL(κ̄_t; γ_t)`` per task, float64 (κ̄ already clamped by any floor)."""
    fl = _FL(kappa, gamma, T)
    return fl.scaled(dd.lift(_full(kappa, 1.0)), _full(kappa, float("inf")))


def plain_weights(kappa: Array, gamma, scratch: bool = False) -> Array:
    """``FL(κ̄; γ) = (1 − κ̄)^γ·(−log κ̄)`` in plain float64 (0 at κ̄ = 1), ``γ`` a number or an array.

    ``1 − κ̄`` is exact for κ̄ ≥ ½ (Sterbenz) and within ``2^-53`` relative below, so its logarithm
    is within ``2^-53`` absolute plus ``log``'s ULP; the power ``e^{γ·log(1 − κ̄)}`` is then within
    about ``(2 + γ·(1 + 2·|log(1 − κ̄)|))·2^-53`` relative, the weight one rounding more: far below
    a float32 half-ULP for every γ ≤ 10^3 (``|log(1 − κ̄)| ≤ 17`` for a float32 κ̄ < 1). γ = 1 is
    ``(κ̄ − 1)·log κ̄`` (two roundings and ``log``'s). ``scratch``: ``kappa``'s memory may be reused."""
    ns = _ns(kappa)
    if isinstance(gamma, float) and gamma == 1.0:
        w = kappa - 1
        w *= ns.log(kappa, out=kappa) if scratch else ns.log(kappa)
        return w  # +0 at κ̄ = 1
    one = kappa == 1
    guard = bool(one.any())
    kap = ns.where(one, 0.5, kappa) if guard else kappa
    w = 0.0 - ns.exp(gamma * ns.log(1 - kap)) * ns.log(kap)
    return ns.where(one & (gamma == gamma), 0.0, w) if guard else w


def bounded_weights(kappa: Array, gamma: Array) -> tuple[Array, float] | None:
    """Plain float64 ``FL(κ̄; γ)`` (:func:`plain_weights`) and ``ε`` with ``|ŵ − w| ≤ ε·w`` for every
    task; None where ``γ·log(1 − κ̄) < −600`` somewhere (an underflowing power), or γ is NaN.

    γ = 1, ``(κ̄ − 1)·log κ̄``: ``κ̄ − 1`` within ``u``, ``log`` 2u, the product u: ``ε = 4u``.
    Otherwise ``d = fl(1 − κ̄)`` within ``u``, ``ℓ = fl(log d)`` within ``2u·|ℓ| + 1.01u`` of
    ``log(1 − κ̄)``, ``z = fl(γ·ℓ)`` within ``3u·|z| + 1.01u·γ``, ``e^z`` 2u more, ``log κ̄`` 2u, the
    product u: ``ε = (5 + 3·max|z| + 1.01·max γ)·u`` to first order (1% added for the rest)."""
    ns = _ns(kappa)
    g = gamma if isinstance(gamma, float) else float(gamma.max())
    if g != g:
        return None
    if g == 1.0 and (isinstance(gamma, float) or float(gamma.min()) == 1.0):
        return plain_weights(kappa, 1.0), 4.04 * _U
    z = gamma * ns.log(1 - kappa)  # −inf at κ̄ = 1 for γ > 0 (weight 0: no error to bound)
    zmin = float(ns.where(kappa == 1, 0.0, z).min())
    if not zmin >= -600.0:
        return None
    return plain_weights(kappa, gamma), (5.05 + 3.03 * -zmin + 1.02 * g) * _U


def bounded_dtp(kappa: Array, gamma: Array, k: int, reduction: str) -> tuple[Array, float] | None:
    """:func:`bounded_weights` for a ``sum``/``mean`` over ``k ≥ 2`` tasks (None otherwise: the
    faithful budget of a single term is too tight for the plain bound)."""
    return None if reduction == "none" or k < 2 else bounded_weights(kappa, gamma)


def dtp_plain_value(L: Array, wb: tuple[Array, float], reduction: str) -> Array | None:
    """``sum``/``mean`` of ``ŵ·L`` (``wb`` from :func:`bounded_dtp`) by :func:`grid_sum`, or None
    where the bound ``(ε + u)·Σ t + grid error + n·2^-1074`` (every term ``t = ŵ·L ≥ 0``, rounded
    once; products that underflow lose at most ``2^-1075`` each), ``/K`` and ``u`` more for
    ``mean``, exceeds 2 + log2(K) ULP."""
    k = int(L.shape[0])
    got = grid_sum(wb[0] * L)
    if got is None or not math.isfinite(float(got[0])):
        return None
    total, err = got
    err += (wb[1] + _U) * 1.01 * (abs(float(total)) + err) + k * 2.0 ** -1074
    if reduction == "mean":
        total = total / k
        err = err / k + _U * abs(float(total))
    return total if _fits(err, float(total), 2 + math.log2(k)) else None


def dtp_plain_grad(g: Array, wb: tuple[Array, float], reduction: str) -> Array | None:
    """``g'·ŵ`` (``g' = g`` or ``g/K``, a scalar): ε + 2u of each partial (the product, ``/K``),
    or None where that exceeds 4 + log2(K) ULP or a partial is not finite or could underflow."""
    ns, k = _ns(wb[0]), int(wb[0].shape[0])
    if (wb[1] + 2 * _U) * 1.01 > (3.5 + math.log2(k)) * _U:
        return None
    out = wb[0] * (g / k if reduction == "mean" else g)
    a = abs(out)
    if bool(((a < _TINY) & (out != 0)).any()) or not bool(ns.isfinite(a.max())):
        return None
    return out


def dtp_value(L: Array, kappa: Array, gamma: Array, reduction: str, T: dd.Transcendentals | None) -> Array:
    ns = _ns(L)
    wb = bounded_dtp(kappa, gamma, int(L.shape[0]), reduction) if T is not None else None
    if wb is not None:
        fast = dtp_plain_value(L, wb, reduction)
        if fast is not None:
            return fast
    if T is None:
        terms = plain_weights(kappa, gamma + ns.zeros_like(kappa)) * L
        if reduction == "none":
            return terms
        total = terms.sum()
        return total / terms.shape[0] if reduction == "mean" else total
    fl = _FL(kappa, gamma, T)
    nan = L != L
    Ls = ns.where(nan, 0.0, L)
    terms = dd.ldexp(dd.mul_d(dd.mul(fl.E, fl.neglog), Ls), fl.k)
    terms = dd.where(fl.one, dd.lift(ns.zeros_like(L)), terms)
    finite = ns.isfinite(terms[0] + terms[1])
    k = int(L.shape[0])
    if reduction == "none":
        out = _reduce(terms, finite, "none", k)
        return ns.where(nan | fl.nan, float("nan"), out)
    return _nan_if(nan | fl.nan, _reduce(terms, finite, reduction, k))


def dtp_grad(g: Array, L: Array, kappa: Array, gamma: Array, reduction: str,
             T: dd.Transcendentals | None) -> Array:
    """``g_t·FL(κ̄_t; γ_t)`` (NaN where the KPI or γ of the task is NaN, whatever its loss)."""
    ns = _ns(L)
    wb = bounded_dtp(kappa, gamma, int(L.shape[0]), reduction) if T is not None else None
    out = dtp_plain_grad(g, wb, reduction) if wb is not None else None
    if out is not None:
        return out
    if T is None:
        g = g + ns.zeros_like(L)
        return plain_weights(kappa, gamma + ns.zeros_like(kappa)) * (g / L.shape[0] if reduction == "mean" else g)
    gd = _cotangent(g, reduction, int(L.shape[0]), L)
    fl = _FL(kappa, gamma, T)
    out = fl.scaled(gd, ns.where(gd[0] > 0, float("inf"), -float("inf")))
    return ns.where(gd[0] != gd[0], float("nan"), out)
