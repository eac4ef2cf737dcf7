"""Element-wise comparison of a computed array with the exact (oracle) values, and grading.

Grades, best to worst (DESIGN.md, accuracy vocabulary):

- ``correctly_rounded``: every element within 0.5 ULP of the exact value;
- ``faithful``: within the spec's ULP budget (plus the reduction allowance);
- ``scale_accurate``: otherwise within ``k·eps_T·scale`` absolutely, ``scale`` being the
  spec's natural scale of the computation (e.g. the largest |logit| of the row);
- ``deviates``: anything else, and any non-finite mismatch (non-finite where the exact value
  rounds to a finite one, or the reverse).

A deviating element whose relative error exceeds 0.5 or whose sign is wrong is *gross*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mpmath
import numpy as np
from mpmath import mpf

from .floats import FloatFormat, round_exact, ulp_error

__all__ = ["GRADES", "Comparison", "compare", "worst_grade"]

GRADES = ("correctly_rounded", "faithful", "scale_accurate", "deviates")


def worst_grade(grades) -> str | None:
    """The worst of several grades (None when there are none)."""
    ranks = [GRADES.index(g) for g in grades if g is not None]
    return GRADES[max(ranks)] if ranks else None


@dataclass
class Comparison:
    """Per-element errors of one quantity of one case."""

    ulp: np.ndarray  # float64, inf where non-finite mismatch
    rel: np.ndarray
    grade: np.ndarray  # object array of grade names
    nonfinite_mismatch: int
    gross: int

    @property
    def n(self) -> int:
        return int(self.ulp.size)

    def worst_index(self) -> int | None:
        if self.ulp.size == 0:
            return None
        ranks = np.array([GRADES.index(g) for g in self.grade.reshape(-1)])
        order = np.lexsort((np.nan_to_num(self.ulp.reshape(-1), posinf=1e308), ranks))
        return int(order[-1])

    @property
    def cell_grade(self) -> str | None:
        return worst_grade(self.grade.reshape(-1).tolist())


def _grade_one(got: float, exact: mpf, fmt: FloatFormat, budget: float, scale: float, k: float):
    rounded = round_exact(exact, fmt)
    exact_nonfinite = not mpmath.isfinite(rounded)
    if exact_nonfinite or not math.isfinite(got):
        ok = (math.isnan(got) and mpmath.isnan(rounded)) or (not math.isnan(got) and mpf(got) == rounded)
        if ok:
            return 0.0, 0.0, "correctly_rounded", False, False
        return math.inf, math.inf, "deviates", True, False
    u = ulp_error(got, exact, fmt)
    diff = abs(mpf(got) - exact)
    rel = float(diff / abs(exact)) if exact != 0 else (0.0 if got == 0 else math.inf)
    if u <= 0.5:
        grade = "correctly_rounded"
    elif u <= budget:
        grade = "faithful"
    elif scale is not None and float(diff) <= k * fmt.eps * scale:
        grade = "scale_accurate"
    else:
        grade = "deviates"
    gross = grade == "deviates" and (rel > 0.5 or (got != 0 and exact != 0 and (got > 0) != (exact > 0)))
    return u, rel, grade, False, gross


def compare(got: np.ndarray, exact, fmt: FloatFormat, budget: float, scale=None, k: float = 8.0) -> Comparison:
    """Compare ``got`` (any float array, values of format ``fmt``) with the exact mpf values.

    ``scale`` is broadcast to the shape of ``exact``; None disables scale-accurate grading.
    """
    exact_arr = np.asarray(exact, dtype=object)
    got_arr = np.asarray(got, dtype=np.float64)
    if got_arr.shape != exact_arr.shape:
        raise ValueError(f"result shape {got_arr.shape} differs from the exact shape {exact_arr.shape}")
    n = exact_arr.size
    scales = [None] * n if scale is None else np.broadcast_to(
        np.asarray(scale, dtype=np.float64), exact_arr.shape).reshape(-1).tolist()
    ulps, rels, grades = np.empty(n), np.empty(n), np.empty(n, dtype=object)
    mismatches = gross = 0
    for i, (g, e, s) in enumerate(zip(got_arr.reshape(-1).tolist(), exact_arr.reshape(-1).tolist(), scales)):
        e = e if isinstance(e, mpf) else mpf(e)  # mpf(an_mpf) would round the oracle to 53 bits
        ulps[i], rels[i], grades[i], mism, grs = _grade_one(g, e, fmt, budget, s, k)
        mismatches += mism
        gross += grs
    shape = exact_arr.shape
    return Comparison(ulps.reshape(shape), rels.reshape(shape), grades.reshape(shape), mismatches, gross)
