"""Element-wise comparison of a computed array with the exact (oracle) values, and grading.

One rule for every loss (DESIGN.md, accuracy vocabulary; Higham, *Accuracy and Stability of
Numerical Algorithms*, ch. 1–3). For an element with exact value ``f``, componentwise condition
``c`` (:mod:`lossoracle.conditioning`) and tail scale ``S``, in output format T:

- ``correctly_rounded``: within 0.5 ULP;
- ``faithful``: within the spec's ULP budget (plus ``log2(n)`` for a sum of ``n`` terms);
- ``stable``: ``|err| ≤ k·(u_c·c + u_T·|f|) + η_T`` — as accurate as the problem's conditioning
  allows (``u_T`` the unit roundoff of T, ``u_c`` that of float32 for float16/bfloat16 inputs and
  ``u_T`` otherwise, ``η_T`` the subnormal spacing of T);
- ``tail``: ``|err| ≤ k·u_T·S`` — absolute accuracy against a normwise scale of the inputs
  only; relative accuracy is lost where the loss is tiny;
- ``deviates``: anything else.

Whatever the bounds say, an element deviates on a NaN/inf mismatch, on a non-zero result of the
wrong sign where the sign is determined (``k·u_c·c < |f|``), and on a relative error above 0.5
where ``|f|`` exceeds the tail bound. ``k`` is :data:`K` plus the reduction allowance, fixed
here and never per spec.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import mpmath
import numpy as np
from mpmath import mpf

from .floats import FORMATS, FloatFormat, round_exact, ulp_error

__all__ = ["GRADES", "K", "FINDINGS", "Comparison", "compare", "worst_grade", "unit_roundoff", "reduction_allowance"]

GRADES = ("correctly_rounded", "faithful", "stable", "tail", "deviates")
K = 8.0  # the safety factor of the stable and tail bounds, the same for every loss

FINDINGS = {
    "nonfinite": "non-finite mismatch",
    "sign": "wrong sign",
    "gross": "gross error (relative error > 0.5)",
    "inaccurate": "beyond the conditioning and tail bounds",
    "tail": "accurate only to the tail bound (relative accuracy lost where the result is tiny)",
}


def worst_grade(grades) -> str | None:
    """The worst of several grades (None when there are none)."""
    ranks = [GRADES.index(g) for g in grades if g is not None]
    return GRADES[max(ranks)] if ranks else None


def unit_roundoff(fmt: FloatFormat) -> float:
    """``u = 2^-p``: half the machine epsilon."""
    return fmt.eps / 2


def reduction_allowance(n_terms: int) -> float:
    """Documented allowance for a reduction over ``n_terms`` terms: ``log2(n)`` (ULP and ``k``)."""
    return math.log2(n_terms) if n_terms > 1 else 0.0


@dataclass
class Comparison:
    """Per-element errors and grades of one quantity of one case."""

    ulp: np.ndarray  # float64, inf where non-finite mismatch
    rel: np.ndarray
    cond_err: np.ndarray  # |err| / (u_c·c + u_T·|f| + η_T/k): stable ⟺ ≤ k
    grade: np.ndarray  # object array of grade names
    finding: np.ndarray  # object array: None or a FINDINGS key
    well_conditioned: np.ndarray  # bool: c ≤ 4·|f| (where ours must be faithful)
    k: float

    @property
    def n(self) -> int:
        return int(self.ulp.size)

    def count(self, finding: str) -> int:
        return int(sum(1 for f in self.finding.reshape(-1) if f == finding))

    def worst_index(self) -> int | None:
        """The worst element: worst grade first, then the largest error against its bound."""
        if self.ulp.size == 0:
            return None
        ranks = np.array([GRADES.index(g) for g in self.grade.reshape(-1)])
        key = np.nan_to_num(self.cond_err.reshape(-1), nan=np.inf, posinf=1e308)
        return int(np.lexsort((key, ranks))[-1])

    @property
    def cell_grade(self) -> str:
        """The worst element's grade (an empty result of the right shape is exact)."""
        return worst_grade(self.grade.reshape(-1).tolist()) or "correctly_rounded"

    @property
    def well_conditioned_grade(self) -> str:
        """The worst grade among the elements with ``c ≤ 4·|f|`` (where ours must be faithful)."""
        return worst_grade(self.grade[self.well_conditioned].tolist()) or "correctly_rounded"


def _grade_one(got: float, exact: mpf, fmt: FloatFormat, budget: float, cond: float, scale: float,
               u_c: float, k: float, u: float | None):
    """(ulp, rel, cond_err, grade, finding) of one element; ``u`` is its ULP error, computed once
    by :func:`_ulp_errors` (None when ``got`` or ``exact`` is not finite)."""
    rounded = round_exact(exact, fmt)
    if not mpmath.isfinite(rounded) or not math.isfinite(got):
        ok = (math.isnan(got) and mpmath.isnan(rounded)) or (not math.isnan(got) and mpf(got) == rounded)
        return (0.0, 0.0, 0.0, "correctly_rounded", None) if ok else (math.inf, math.inf, math.inf, "deviates",
                                                                      "nonfinite")
    u_t, eta = unit_roundoff(fmt), math.ldexp(1.0, fmt.emin - fmt.p + 1)
    err = float(abs(mpf(got) - exact))
    f = abs(float(exact))
    rel = err / f if f else (0.0 if got == 0 else math.inf)
    bound = u_c * cond + u_t * f  # the conditioning bound u·c, before the factor k and the floor η
    cond_err = 0.0 if err == 0 else err / max(bound + eta / k, 5e-324)
    if u <= 0.5:
        return u, rel, cond_err, "correctly_rounded", None
    if got != 0 and exact != 0 and (got > 0) != (exact > 0) and k * u_c * cond < f:
        return u, rel, cond_err, "deviates", "sign"
    tail = k * u_t * scale
    if rel > 0.5 and f > tail:  # gross whatever the condition says
        return u, rel, cond_err, "deviates", "gross"
    if u <= budget:
        return u, rel, cond_err, "faithful", None
    if err <= k * bound + eta:
        return u, rel, cond_err, "stable", None
    if err <= tail:
        return u, rel, cond_err, "tail", "tail"
    return u, rel, cond_err, "deviates", "inaccurate"


def _ulp_errors(got: list, exact: list, fmt: FloatFormat) -> list[float | None]:
    """Each element's ULP error where ``got`` and ``exact`` are both finite (None elsewhere):
    computed once, for the condition test and for the grade."""
    return [ulp_error(g, e, fmt) if math.isfinite(g) and mpmath.isfinite(e) else None for g, e in zip(got, exact)]


def _needs_condition(got: list, exact: list, ulps: list, budget: float, gross_above: float) -> bool:
    """Some element's grade depends on its condition: a wrong sign, or beyond the ULP budget
    without being gross whatever the condition (relative error > 0.5 on ``|f|`` above
    ``gross_above``, an upper bound of the tail bound)."""
    for g, e, u in zip(got, exact, ulps):
        if u is None:
            continue
        if g != 0 and e != 0 and (g > 0) != (e > 0):
            return True
        if u > budget:
            f = abs(float(e))
            if not (f > gross_above and float(abs(mpf(g) - e)) > 0.5 * f):
                return True
    return False


def compare(got: np.ndarray, exact, fmt: FloatFormat, budget: float, conditioning: Callable[[], tuple],
            input_dtype: str, n_terms: int = 1, scale_max: float = math.inf) -> Comparison:
    """Compare ``got`` (values of format ``fmt``) with the exact mpf values.

    ``conditioning()`` returns the per-element condition and tail scale (shaped like ``exact``);
    it is called only when some element is beyond the ULP budget or of the wrong sign (the
    condition is expensive, and within budget it changes no grade); otherwise the condition is
    taken as ``|f|`` — the least it can be — so ``cond_err`` is an upper bound there.
    ``input_dtype`` fixes ``u_c``; ``n_terms`` the reduction allowance added to ``k``;
    ``scale_max`` bounds every element's tail scale from above (elements that are gross even
    against it need no condition).
    """
    exact_arr = np.asarray(exact, dtype=object)
    got_arr = np.asarray(got, dtype=np.float64)
    if got_arr.shape != exact_arr.shape:
        raise ValueError(f"result shape {got_arr.shape} differs from the exact shape {exact_arr.shape}")
    shape, n = exact_arr.shape, exact_arr.size
    wide = input_dtype in ("float16", "bfloat16")
    u_c = unit_roundoff(FORMATS["float32"]) if wide else unit_roundoff(fmt)
    k = K + reduction_allowance(n_terms)
    flat_got = got_arr.reshape(-1).tolist()
    # mpf(an_mpf) would round the oracle to 53 bits: only plain numbers are converted
    flat_exact = [e if isinstance(e, mpf) else mpf(e) for e in exact_arr.reshape(-1).tolist()]
    ulps = _ulp_errors(flat_got, flat_exact, fmt)
    if _needs_condition(flat_got, flat_exact, ulps, budget, k * unit_roundoff(fmt) * scale_max):
        cond, scale = conditioning()
        conds = np.broadcast_to(np.asarray(cond, dtype=np.float64), shape).reshape(-1)
        scales = np.broadcast_to(np.asarray(scale, dtype=np.float64), shape).reshape(-1)
    else:  # the least the condition can be; a gross element stays gross against the largest scale
        conds = np.array([abs(float(e)) if mpmath.isfinite(e) else np.inf for e in flat_exact], dtype=np.float64)
        scales = np.full(n, scale_max if math.isfinite(scale_max) else 1.0)
    ulp_arr, rels, cerr = np.empty(n), np.empty(n), np.empty(n)
    grades, findings = np.empty(n, dtype=object), np.empty(n, dtype=object)
    well = np.zeros(n, dtype=bool)
    for i, (g, e) in enumerate(zip(flat_got, flat_exact)):
        ulp_arr[i], rels[i], cerr[i], grades[i], findings[i] = _grade_one(
            g, e, fmt, budget, float(conds[i]), float(scales[i]), u_c, k, ulps[i])
        well[i] = bool(mpmath.isfinite(e)) and conds[i] <= 4 * abs(float(e))
    return Comparison(ulp_arr.reshape(shape), rels.reshape(shape), cerr.reshape(shape), grades.reshape(shape),
                      findings.reshape(shape), well.reshape(shape), k)
