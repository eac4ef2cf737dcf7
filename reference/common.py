"""Layout and reduction helpers shared by the oracles (object arrays of mpf)."""

from __future__ import annotations

import math

import mpmath
import numpy as np

from lossoracle.mpfuncs import mp_sum, to_mp

REDUCTIONS = ("none", "mean", "sum")


def is_floating(a) -> bool:
    """A floating array — float dtype, or an object array of mpf (as the gradient tests pass)."""
    a = np.asarray(a)
    return a.dtype.kind == "f" or (a.dtype == object and a.size > 0 and isinstance(a.reshape(-1)[0], mpmath.mpf))


def class_last(a: np.ndarray, dim: int) -> np.ndarray:
    """Move the class axis ``dim`` to the end (no copy of values)."""
    a = np.asarray(a)
    return a if dim == -1 or dim == a.ndim - 1 else np.moveaxis(a, dim, -1)


def rows(x: np.ndarray, dim: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """Exact mpf rows ``(M, C)`` with the class axis last, and the shape of the other axes."""
    xl = class_last(to_mp(x), dim)
    lead = xl.shape[:-1]
    return xl.reshape(math.prod(lead), xl.shape[-1]), lead  # (also for C = 0)


def reduce(values: np.ndarray, reduction: str, denominator=None):
    """Apply ``none`` (the array), ``sum`` (exact sum) or ``mean`` (sum / denominator, default count).

    An empty mean, or a zero denominator, is 0/0 = NaN.
    """
    if reduction == "none":
        return values
    total = mp_sum(values.reshape(-1).tolist())
    if reduction == "sum":
        return total
    if reduction != "mean":
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    den = mpmath.mpf(values.size) if denominator is None else denominator
    return mpmath.nan if den == 0 else total / den
