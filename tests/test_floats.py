"""Exact rounding and the ULP metric, proved exhaustively for float16/bfloat16 and by hypothesis
for float32/float64 against NumPy's correctly rounded conversions and ``np.spacing``."""

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from mpmath import mpf

from lossoracle.floats import FORMATS, format_of, round_exact, ulp, ulp_error


def _all_finite(name: str) -> np.ndarray:
    """Every finite value of a 16-bit format, as float64, ascending."""
    bits = np.arange(0, 1 << 16, dtype=np.uint32).astype(np.uint16)
    if name == "float16":
        v = bits.view(np.float16).astype(np.float64)
    else:
        v = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).to(torch.float64).numpy()
    v = np.unique(v[np.isfinite(v)])
    return v


@np.errstate(over="ignore")
def _round_reference(x: np.ndarray, name: str) -> np.ndarray:
    """The platform's correctly rounded conversion from float64 (numpy for float16; torch's
    float32→bfloat16 is round-half-even and the midpoints are exact in float32)."""
    if name == "float16":
        return x.astype(np.float16).astype(np.float64)
    return torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16).to(torch.float64).numpy()


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_every_16_bit_value_and_midpoint_rounds_like_the_hardware(name):
    fmt = FORMATS[name]
    v = _all_finite(name)
    mids = (v[:-1] + v[1:]) / 2  # exact in float64 (and float32 for bfloat16)
    # neighbours of the midpoints in the reference conversion's source type (float32 for bfloat16)
    src = np.float64 if name == "float16" else np.float32
    up = np.nextafter(mids.astype(src), src(np.inf)).astype(np.float64)
    down = np.nextafter(mids.astype(src), src(-np.inf)).astype(np.float64)
    beyond = np.array([fmt.max + ulp(mpf(fmt.max), fmt) / 2, -(fmt.max + ulp(mpf(fmt.max), fmt) / 2)],
                      dtype=np.float64)
    probes = np.concatenate([v, mids, up, down, beyond])
    ours = np.array([float(round_exact(mpf(x), fmt)) for x in probes.tolist()])
    np.testing.assert_array_equal(ours, _round_reference(probes, name))


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_ulp_error_of_neighbours_and_midpoints(name):
    fmt = FORMATS[name]
    v = _all_finite(name)
    v = v[v > 0]
    for a, b in zip(v[:-1].tolist(), v[1:].tolist()):
        mid = (mpf(a) + mpf(b)) / 2
        # the spacing at ``a`` is b − a, so the neighbour is exactly 1 ULP away and a midpoint 0.5
        assert ulp_error(b, mpf(a), fmt) == 1.0
        assert ulp_error(a, mid, fmt) == 0.5
        assert ulp(mpf(a), fmt) == mpf(b) - mpf(a)


def test_binade_boundary_and_subnormals():
    f32 = FORMATS["float32"]
    below = mpf(1) - mpf(2) ** -30  # just below 1: the ULP is 2^-24, not 2^-23
    assert ulp(below, f32) == mpf(2) ** -24
    assert ulp_error(1.0, below, f32) < 0.5  # 1.0 is the correct rounding of `below`
    assert ulp(mpf(0), f32) == mpf(2) ** -149
    assert ulp(mpf(2) ** -140, f32) == mpf(2) ** -149
    assert round_exact(mpf(2) ** -150, f32) == 0  # tie to even: 0
    assert round_exact(mpf(3) * mpf(2) ** -151, f32) == mpf(2) ** -149


def test_overflow_threshold_and_nonfinite():
    f16 = FORMATS["float16"]
    assert round_exact(mpf(65519.99), f16) == 65504
    assert round_exact(mpf(65520), f16) == mpmath.inf  # the midpoint to 2^16 rounds up to inf
    assert round_exact(mpf(-1e6), f16) == mpmath.ninf
    assert ulp_error(math.inf, mpf(1e6), f16) == 0.0  # exact overflows to inf: inf is right
    assert ulp_error(math.inf, mpf(1000), f16) == math.inf
    assert ulp_error(math.nan, mpmath.nan, f16) == 0.0
    assert ulp_error(0.0, mpmath.nan, f16) == math.inf


def test_format_of_names_and_dtypes():
    assert format_of("float32") is FORMATS["float32"]
    assert format_of(np.float16) is FORMATS["float16"]
    assert format_of(torch.bfloat16) is FORMATS["bfloat16"]
    with pytest.raises(TypeError, match="dtype"):
        format_of(np.int32)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float32_rounding_matches_numpy(x):
    fmt = FORMATS["float32"]
    with np.errstate(over="ignore"):
        want = float(np.float32(x))
    got = round_exact(mpf(x), fmt)
    assert (got == want) if math.isfinite(want) else (got == mpf(want))


@given(st.floats(allow_nan=False, allow_infinity=False, width=64), st.integers(-2, 2))
def test_float64_rounding_of_quarter_ulp_offsets(x, k):
    """x + k/4 of the gap towards its neighbour rounds to x for |k| ≤ 1; |k| = 2 is a tie, which
    goes to the neighbour with an even significand."""
    fmt = FORMATS["float64"]
    if k == 0 or abs(x) >= float(np.nextafter(fmt.max, 0)):
        assert round_exact(mpf(x), fmt) == mpf(x)
        return
    nb = float(np.nextafter(x, math.copysign(math.inf, k)))
    probe = mpf(x) + (mpf(nb) - mpf(x)) * abs(k) / 4
    got = round_exact(probe, fmt)
    if abs(k) == 1:
        assert got == mpf(x)
    else:
        even = x if (np.array(x).view(np.int64) & 1) == 0 else nb
        assert got == mpf(even)


@given(st.floats(min_value=-1e300, max_value=1e300, allow_nan=False))
def test_ulp_matches_numpy_spacing(x):
    for name, cast in (("float64", np.float64), ("float32", np.float32)):
        with np.errstate(over="ignore"):
            if not np.isfinite(cast(x)):
                continue
            spacing = np.spacing(cast(abs(x)))
        if np.isfinite(spacing):  # np.spacing of the largest finite value is inf (no next value)
            assert ulp(mpf(float(cast(x))), FORMATS[name]) == mpf(float(spacing))
