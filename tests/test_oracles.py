"""Generic oracle checks over every registered spec: analytic gradients against mpmath's
numerical differentiation, and rounding stability under doubled working precision."""

import itertools

import mpmath
import numpy as np
import pytest

from lossoracle import specs
from lossoracle.floats import FORMATS, round_exact
from lossoracle.frameworks import cotangent
from lossoracle.mpfuncs import ORACLE_PREC, precision, to_mp

F64 = FORMATS["float64"]
MAX_CASES = 6
MAX_ELEMENTS = 12  # oracle evaluation budget per case (mpmath is slow)


KINK = "at a kink: "  # a case's note that starts so sits on a tie of a piecewise loss (box family)


def _sample_cases(spec):
    cases = [c for c in spec.cases() if c.raises is None and all(
        a is None or a.size <= 64 for a in c.inputs.values())]
    step = max(1, len(cases) // MAX_CASES)
    return cases[::step][:MAX_CASES]


def _all_cases():
    return [pytest.param(spec, case, id=f"{spec.name}-{case.id}")
            for spec in specs.all_specs() for case in _sample_cases(spec)]


def _kwargs(spec, case):
    return {**spec.params, **case.params}


def _flat(x):
    return np.asarray(x, dtype=object).reshape(-1).tolist()


@pytest.mark.parametrize(("spec", "case"), _all_cases())
def test_oracle_rounding_is_stable_under_doubled_precision(spec, case):
    """The float64 rounding of every value and gradient is the same at ORACLE_PREC and 2×."""
    kw = _kwargs(spec, case)

    def run():
        value = spec.oracle(**case.inputs, **kw)
        grads = spec.gradient(cotangent(np.shape(value)), **case.inputs, **kw) if spec.gradient else {}
        return [value] + [grads[k] for k in sorted(grads)]

    base = run()
    with precision(2 * ORACLE_PREC):
        high = run()
    for a, b in zip(base, high):
        ra = [round_exact(v, F64) for v in _flat(a)]
        rb = [round_exact(v, F64) for v in _flat(b)]
        assert all(x == y or (mpmath.isnan(x) and mpmath.isnan(y)) for x, y in zip(ra, rb)), (ra, rb)


@pytest.mark.parametrize(("spec", "case"), _all_cases())
def test_oracle_gradient_matches_numerical_differentiation(spec, case):
    """∂⟨g, f⟩/∂x_k by mpmath.diff (at 2× precision) equals the analytic VJP entry."""
    if spec.gradient is None:
        pytest.skip(f"{spec.name} has no gradient")
    if case.note.startswith(KINK):  # a central difference is O(h) off there; test_box checks the tie rule
        pytest.skip("at a kink the spec's derivative is the mean of the one-sided ones")
    kw = _kwargs(spec, case)
    value = spec.oracle(**case.inputs, **kw)
    g = cotangent(np.shape(value))
    grads = spec.gradient(g, **case.inputs, **kw)
    checked = edges = 0
    for name, analytic in grads.items():
        base = case.inputs[name]
        flat_analytic = _flat(analytic)
        for k in itertools.islice(range(base.size), 0, base.size, max(1, base.size // 4)):
            want = flat_analytic[k]
            if not mpmath.isfinite(want) or not np.isfinite(base.reshape(-1)[k]):
                continue
            x_mp = to_mp(base)

            def f(t, k=k, name=name, x_mp=x_mp):
                xs = x_mp.copy().reshape(-1)
                xs[k] = xs[k] + t
                out = spec.oracle(**{**case.inputs, name: xs.reshape(base.shape)}, **kw)
                return mpmath.fsum(a * b for a, b in zip(_flat(g), _flat(out)))

            with precision(2 * ORACLE_PREC), mpmath.mp.workprec(2 * ORACLE_PREC):
                try:
                    numeric = mpmath.diff(f, 0, h=mpmath.mpf(2) ** -90)  # O(h²) ≈ 2^-180 truncation
                except (ValueError, ZeroDivisionError):
                    edges += 1
                    continue  # the perturbation leaves the domain (e.g. a probability at 0)
                total = f(0)
            if not mpmath.isfinite(numeric) or isinstance(numeric, mpmath.mpc):
                edges += 1
                continue
            # what a difference of the total can resolve at this precision (a sum of 1e464 hides 1e-30:
            # uncertainty_weighted_loss's simplified_ladder_sum fails without it)
            resolution = abs(total) * mpmath.mpf(2) ** (150 - 2 * ORACLE_PREC) if mpmath.isfinite(total) else 0
            scale = max(abs(want), mpmath.mpf(2) ** -100, resolution)
            assert abs(numeric - want) <= scale * mpmath.mpf(2) ** -60, (name, k, numeric, want)
            checked += 1
            if checked >= MAX_ELEMENTS:
                break
    if np.size(value) and any(np.size(case.inputs[n]) for n in grads) and all(
            mpmath.isfinite(v) for v in _flat(value)):
        # edges: every entry on the domain's boundary (dice/tversky "perfect": probabilities exactly 0 or 1,
        # which a central difference leaves on one side) — none of the case's entries can be differenced
        assert checked or edges, "no gradient entry could be checked"
