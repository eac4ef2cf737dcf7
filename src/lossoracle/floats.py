"""Binary floating-point formats, exact rounding of mpmath values, and the ULP metric.

A format with precision ``p`` (significand bits, hidden bit included), minimum normal exponent
``emin`` and maximum exponent ``emax`` represents ``±m·2^q`` with ``m < 2^p`` and
``q ≥ emin − p + 1``. Rounding here works on the exact binary value of an ``mpf``
(``man·2^exp``) with integer arithmetic, so no float64 intermediate ever touches the value:
round-half-to-even, gradual underflow to subnormals, overflow to ±inf when the rounded
magnitude reaches ``2^(emax+1)``.

ULP metric (DESIGN.md): ``ulp_err = |got − exact| / ulp_T(exact)`` where ``ulp_T(x)`` is the
spacing of format T in the binade of ``x`` (``2^(max(e, emin) − p + 1)`` with
``e = floor(log2 |x|)``); below the smallest normal it is the subnormal spacing. A correctly
rounded result scores ≤ 0.5 ULP, also across binade boundaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mpmath
import numpy as np
from mpmath import mpf

__all__ = ["FloatFormat", "FORMATS", "format_of", "round_exact", "is_representable", "ulp", "ulp_error"]


@dataclass(frozen=True)
class FloatFormat:
    """An IEEE-754-style binary format: ``p`` significand bits, exponent range ``[emin, emax]``."""

    name: str
    p: int
    emin: int
    emax: int

    @property
    def eps(self) -> float:
        """Machine epsilon ``2^(1−p)``."""
        return math.ldexp(1.0, 1 - self.p)

    @property
    def tiny(self) -> float:
        """Smallest positive normal ``2^emin``."""
        return math.ldexp(1.0, self.emin)

    @property
    def max(self) -> float:
        """Largest finite value ``(2 − 2^(1−p))·2^emax``."""
        return math.ldexp(2.0 - math.ldexp(1.0, 1 - self.p), self.emax)



FORMATS: dict[str, FloatFormat] = {
    "float16": FloatFormat("float16", 11, -14, 15),
    "bfloat16": FloatFormat("bfloat16", 8, -126, 127),
    "float32": FloatFormat("float32", 24, -126, 127),
    "float64": FloatFormat("float64", 53, -1022, 1023),
}


def format_of(dtype: object) -> FloatFormat:
    """The format of a dtype given as a name, a NumPy dtype or a torch dtype."""
    name = str(dtype).replace("torch.", "")
    if name in FORMATS:
        return FORMATS[name]
    try:
        return FORMATS[np.dtype(dtype).name]
    except (TypeError, KeyError):
        raise TypeError(f"dtype {dtype!r} is not a binary floating-point format lossoracle knows") from None


def _exact(x) -> mpf:
    """``x`` as an mpf without rounding (``mpf(an_mpf)`` rounds to the global 53-bit precision)."""
    return x if isinstance(x, mpf) else mpf(x)


def _exponent(x: mpf) -> int:
    """``floor(log2 |x|)`` of a finite non-zero mpf, exactly."""
    _, man, exp, bc = x._mpf_
    return exp + bc - 1


def round_exact(x: mpf, fmt: FloatFormat) -> mpf:
    """Round ``x`` to the nearest value of ``fmt`` (ties to even); returns an exact mpf (or ±inf/nan)."""
    x = _exact(x)
    if not mpmath.isfinite(x) or x == 0:
        return x
    sign, man, exp, _ = x._mpf_
    q = max(_exponent(x), fmt.emin) - fmt.p + 1  # quantum of the target binade
    shift = q - exp
    if shift <= 0:
        r = man << -shift
    else:
        r, rem = divmod(man, 1 << shift)
        half = 1 << (shift - 1)
        if rem > half or (rem == half and r & 1):
            r += 1
    if r.bit_length() + q > fmt.emax + 1:  # rounded magnitude reached 2^(emax+1)
        return mpmath.ninf if sign else mpmath.inf
    value = mpmath.ldexp(mpf(r), q)
    return -value if sign else value


def is_representable(x: float, fmt: FloatFormat) -> bool:
    """Whether the float64 value ``x`` is exactly a value of ``fmt`` (non-finite values are)."""
    if not math.isfinite(x):
        return True
    return round_exact(mpf(x), fmt) == x


def ulp(x: mpf, fmt: FloatFormat) -> mpf:
    """Spacing of ``fmt`` in the binade of ``x`` (the subnormal spacing below ``2^emin`` and at 0)."""
    x = _exact(x)
    e = fmt.emin if x == 0 else max(_exponent(x), fmt.emin)
    return mpmath.ldexp(mpf(1), min(e, fmt.emax) - fmt.p + 1)


def ulp_error(got: float, exact: mpf, fmt: FloatFormat) -> float:
    """``|got − exact| / ulp_fmt(exact)`` as a float (inf when exactly one side is non-finite).

    Both NaN score 0; an infinite result scores 0 when the exact value rounds to that infinity.
    """
    exact = _exact(exact)
    if math.isnan(got) or mpmath.isnan(exact):
        return 0.0 if (math.isnan(got) and mpmath.isnan(exact)) else math.inf
    if math.isinf(got) or mpmath.isinf(exact):  # overflow of the exact value to ±inf matches
        return 0.0 if mpf(got) == round_exact(exact, fmt) else math.inf
    return float(abs(mpmath.fsub(mpf(got), exact, exact=True)) / ulp(exact, fmt))
