"""mpmath building blocks shared by every oracle, and the oracle precision rule.

Precision rule: every oracle evaluates inside :func:`workprec` at :data:`ORACLE_PREC` bits
(float64 needs 53; the rest are guard bits that absorb the few roundings of a
cancellation-free formula). Inputs are converted exactly (``mpf(float)`` is exact) and
differences of inputs are formed exactly (:func:`exact_sub`), so huge logits (±1e4 against
1e-300) lose nothing. The unrounded mpf is returned; rounding happens once, in the metric.
Tests re-run oracles at :func:`precision` ``2·ORACLE_PREC`` and require identical rounding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import mpmath
import numpy as np
from mpmath import mp, mpf

__all__ = [
    "ORACLE_PREC", "precision", "workprec", "to_mp", "exact_sub", "log1pexp", "sigmoid", "mp_array", "mp_sum",
    "SoftmaxRow", "stable",
]

ORACLE_PREC = 192
_prec = [ORACLE_PREC]


@contextlib.contextmanager
def precision(bits: int) -> Iterator[None]:
    """Temporarily change the oracle working precision (used by the stability tests)."""
    _prec.append(bits)
    try:
        yield
    finally:
        _prec.pop()


def workprec() -> contextlib.AbstractContextManager:
    """The mpmath context every oracle computes in (never mutates the global ``mp.prec``)."""
    return mp.workprec(_prec[-1])


def to_mp(a: object) -> np.ndarray:
    """Exact conversion of a number or array (floats or ints) to an object array of mpf."""
    arr = np.asarray(a)
    out = np.empty(arr.shape, dtype=object)
    flat = out.reshape(-1)
    for i, v in enumerate(arr.reshape(-1).tolist()):
        flat[i] = mpf(v)
    return out


def mp_array(values: list, shape: tuple[int, ...]) -> np.ndarray:
    """An object array of the given shape from a flat list of mpf."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out.reshape(shape)


def exact_sub(a: mpf, b: mpf) -> mpf:
    """``a − b`` without rounding for finite operands (binary floats: the result is a finite
    binary); the extended-real difference (inf, NaN) otherwise."""
    return mpmath.fsub(a, b, exact=True) if mpmath.isfinite(a) and mpmath.isfinite(b) else a - b


def mp_sum(values) -> mpf:
    """Sum of mpf values with a single rounding at the working precision (exact accumulation)."""
    total = mpf(0)
    for v in values:
        if mpmath.isfinite(v) and mpmath.isfinite(total):
            total = mpmath.fadd(total, v, exact=True)
        else:
            total = total + v
    return +total


def log1pexp(x: mpf) -> mpf:
    """``log(1 + e^x)`` (softplus) without overflow for large x."""
    if x > 0:
        return x + mpmath.log1p(mpmath.exp(-x))
    return mpmath.log1p(mpmath.exp(x))



def sigmoid(x: mpf) -> mpf:
    """``σ(x) = 1/(1 + e^{−x})``."""
    return 1 / (1 + mpmath.exp(-x))


class SoftmaxRow:
    """Exact softmax quantities of one row of logits, free of cancellation.

    With ``m = max x`` and ``s = Σ e^{x_j − m}`` (exact differences):
    ``−log p_c = (m − x_c) + log s`` — both terms ≥ 0 — except at the arg-max, where
    ``−log p_c = log1p(Σ_{j≠c} e^{x_j − m})``; likewise ``1 − p_c = (s − e^{x_c−m})/s`` with the
    numerator summed without the c-term.
    """

    def __init__(self, row) -> None:
        self.x = [mpf(v) for v in row]
        finite = [v for v in self.x if v != mpmath.ninf]
        self.bad = any(mpmath.isnan(v) or v == mpmath.inf for v in self.x) or not finite
        if self.bad:
            return
        self.m = max(finite)
        self.e = [mpmath.exp(exact_sub(v, self.m)) if v != mpmath.ninf else mpf(0) for v in self.x]
        self.s = mp_sum(self.e)

    def _sum_except(self, c: int) -> mpf:
        return mp_sum(self.e[j] for j in range(len(self.x)) if j != c)

    def neg_log_p(self, c: int) -> mpf:
        """``−log p_c`` (+inf for a −inf logit; NaN for a row with NaN or +inf)."""
        if self.bad:
            return mpmath.nan
        if self.x[c] == mpmath.ninf:
            return mpmath.inf
        if self.x[c] == self.m:
            return mpmath.log1p(self._sum_except(c))
        return exact_sub(self.m, self.x[c]) + mpmath.log(self.s)

    def p(self, c: int) -> mpf:
        return mpmath.nan if self.bad else self.e[c] / self.s

    def one_minus_p(self, c: int) -> mpf:
        return mpmath.nan if self.bad else self._sum_except(c) / self.s


def _flat(result) -> list:
    if isinstance(result, dict):
        return [v for k in sorted(result) for v in _flat(result[k])]
    if isinstance(result, np.ndarray):
        return result.reshape(-1).tolist()
    return [result]


def stable(fn, max_doublings: int = 3):
    """Evaluate ``fn()`` at the working precision, then at doubled precisions until the
    float64 roundings of every output agree between two consecutive precisions.

    This is the precision rule's runtime check: a cancellation the formula did not remove
    shows up as a disagreement and buys more bits. Returns the higher-precision result.
    """
    from .floats import FORMATS, round_exact

    def rounded(res):
        return [round_exact(v, FORMATS["float64"]) for v in _flat(res)]

    bits = _prec[-1]
    with workprec():
        prev = fn()
    for _ in range(max_doublings):
        bits *= 2
        with precision(bits), workprec():
            cur = fn()
        a, b = rounded(prev), rounded(cur)
        if all((x == y) or (mpmath.isnan(x) and mpmath.isnan(y)) for x, y in zip(a, b)):
            return cur
        prev = cur
    return prev
