"""The raw-tuple helpers of ``mpfuncs`` return bit for bit what the object-level mpmath formulas
they replace return (the oracles' values must not move), and the memo caches are keyed by the
working precision."""

import mpmath
import numpy as np
import pytest
from mpmath import mpf

from lossoracle import mpfuncs, specs
from lossoracle.frameworks import cotangent
from lossoracle.mpfuncs import ORACLE_PREC, precision, workprec


def _values():
    r = np.random.default_rng(7)
    mags = [0.0, 2.0**-1074, 1e-300, 1e-30, 2.0**-60, 1e-8, 0.125, 0.5, 1.0, 1.5, 3.0, 17.0, 40.0, 700.0, 1e4, 1e300]
    out = [s * m for m in mags for s in (1.0, -1.0)]
    out += list(r.standard_normal(60) * 10.0 ** r.integers(-20, 5, 60))
    return out + [np.inf, -np.inf, np.nan]


def _log1pexp_objects(x):
    if x > 0:
        return x + mpmath.log1p(mpmath.exp(-x))
    return mpmath.log1p(mpmath.exp(x))


def _same(a, b) -> bool:
    return (mpmath.isnan(a) and mpmath.isnan(b)) or a._mpf_ == b._mpf_


@pytest.mark.parametrize("bits", [ORACLE_PREC, 2 * ORACLE_PREC])
def test_elementary_helpers_are_the_object_formulas_bit_for_bit(bits):
    with precision(bits), workprec():
        xs = [mpf(v) for v in _values()]
        xs += [x / 3 for x in xs[:40]]  # values with a full working-precision mantissa
        for x in xs:
            assert _same(mpfuncs.log1pexp(x), _log1pexp_objects(x)), x
            assert _same(mpfuncs.sigmoid(x), 1 / (1 + mpmath.exp(-x))), x
            for y in xs[::7]:
                want = mpmath.fsub(x, y, exact=True) if mpmath.isfinite(x) and mpmath.isfinite(y) else x - y
                assert _same(mpfuncs.exact_sub(x, y), want)


def _sum_objects(values):
    total = mpf(0)
    for v in values:
        total = mpmath.fadd(total, v, exact=True) if mpmath.isfinite(v) and mpmath.isfinite(total) else total + v
    return +total


def test_mp_sum_is_the_exact_sum_rounded_once():
    with workprec():
        xs = [mpf(v) for v in _values()]
        finite = [x for x in xs if mpmath.isfinite(x)]
        assert _same(mpfuncs.mp_sum(finite), _sum_objects(finite))
        assert _same(mpfuncs.mp_sum([mpf(1), mpf(2) ** -400, mpf(-1)]), mpf(2) ** -400)  # no rounding inside
        for tail in ([mpmath.inf], [mpmath.inf, mpmath.ninf], [mpmath.nan], [mpmath.inf, mpf(1)]):
            assert _same(mpfuncs.mp_sum(finite[:5] + tail + finite[5:9]), _sum_objects(finite[:5] + tail + finite[5:9]))


class _RowObjects:
    """The object-level SoftmaxRow formulas (the reference the raw class must equal)."""

    def __init__(self, row):
        self.x = [mpf(v) for v in row]
        finite = [v for v in self.x if v != mpmath.ninf]
        self.bad = any(mpmath.isnan(v) or v == mpmath.inf for v in self.x) or not finite
        if not self.bad:
            self.m = max(finite)
            self.e = [mpmath.exp(mpmath.fsub(v, self.m, exact=True)) if v != mpmath.ninf else mpf(0) for v in self.x]
            self.s = _sum_objects(self.e)

    def rest(self, c):
        return _sum_objects(self.e[j] for j in range(len(self.x)) if j != c)

    def neg_log_p(self, c):
        if self.bad:
            return mpmath.nan
        if self.x[c] == mpmath.ninf:
            return mpmath.inf
        if self.x[c] == self.m:
            return mpmath.log1p(self.rest(c))
        return mpmath.fsub(self.m, self.x[c], exact=True) + mpmath.log(self.s)


@pytest.mark.parametrize("bits", [ORACLE_PREC, 2 * ORACLE_PREC])
def test_softmax_row_is_the_object_formulas_bit_for_bit(bits):
    r = np.random.default_rng(3)
    rows = [r.standard_normal(5) * s for s in (1e-3, 1.0, 30.0, 1e3)]
    rows += [[1e4, -1e4, 0.0], [3.0], [-np.inf, 0.0, 1.0], [0.0, 0.0, 0.0], [np.nan, 1.0], [np.inf, 0.0],
             [-np.inf, -np.inf], [1000.0, 0.0, 0.0, -1.0], [2.0**-60, 0.0]]
    with precision(bits), workprec():
        for row in rows:
            xs = [mpf(v) for v in row]
            fast, ref = mpfuncs.SoftmaxRow(xs), _RowObjects(xs)
            assert fast.bad == ref.bad
            for c in range(len(xs)):
                assert _same(fast.neg_log_p(c), ref.neg_log_p(c)), (row, c)
                if not ref.bad:
                    assert _same(fast.p(c), ref.e[c] / ref.s)
                    assert _same(fast.one_minus_p(c), ref.rest(c) / ref.s)
            assert mpfuncs.softmax_row(xs) is mpfuncs.softmax_row(list(xs))  # kept by exact values


def test_memo_is_keyed_by_the_working_precision():
    calls = []

    @mpfuncs.memo
    def third(x):
        calls.append(x)
        return x / 3

    with workprec():
        a = third(mpf(1))
        assert third(mpf(1)) is a and len(calls) == 1
    with precision(2 * ORACLE_PREC), workprec():
        b = third(mpf(1))
    assert len(calls) == 2 and a != b


def test_to_mp_is_exact():
    a = np.array([[0.1, -0.0, 5e-324], [np.inf, np.nan, 1e308]])
    with workprec():
        got = mpfuncs.to_mp(a)
    assert got.shape == a.shape
    assert all(_same(g, mpf(v)) for g, v in zip(got.reshape(-1), a.reshape(-1).tolist()))
    assert mpfuncs.to_mp(np.array(2.5)).shape == ()


def test_float64_agreement_is_round_exact_agreement():
    from lossoracle.floats import FORMATS, round_exact

    f64 = FORMATS["float64"]
    with workprec():
        one = mpf(1)
        xs = [mpf(v) for v in _values()]
        xs += [one + mpf(2) ** -53, one + mpf(2) ** -53 + mpf(2) ** -150, one + 3 * mpf(2) ** -53,
               mpf(2) ** -1075, mpf(2) ** -1075 + mpf(2) ** -1200, mpf(2) ** -1080, mpf(2) ** 1024,
               (2 - mpf(2) ** -53) * mpf(2) ** 1023, mpf(2) ** -1022 * (1 - mpf(2) ** -60), mpf(0), -mpf(0)]
        for x in xs:
            for y in xs:
                u, v = round_exact(x, f64), round_exact(y, f64)
                want = (u == v) or (mpmath.isnan(u) and mpmath.isnan(v))
                assert mpfuncs._same_float64(x, y) == want, (x, y)


def test_sums_except_are_the_sums_of_the_others():
    with workprec():
        xs = [mpf(v) for v in _values() if np.isfinite(v)][:30] + [mpf(1) / 3]
        got = mpfuncs.sums_except(xs)
        assert all(_same(g, _sum_objects(x for k, x in enumerate(xs) if k != j)) for j, g in enumerate(got))
        odd = [mpf(1), mpmath.inf, mpf(2)]
        assert all(_same(g, _sum_objects(x for k, x in enumerate(odd) if k != j))
                   for j, g in enumerate(mpfuncs.sums_except(odd)))


def test_memo_keys_arrays_by_their_contents():
    calls = []

    @mpfuncs.memo
    def total(a):
        calls.append(1)
        return float(np.sum(a))

    assert total(np.array([1.0, 2.0])) == total(np.array([1.0, 2.0])) == 3.0 and len(calls) == 1
    assert total(np.array([1.0, 3.0])) == 4.0 and len(calls) == 2
    assert total(np.array([1.0, 2.0], dtype=np.float32)) == 3.0 and len(calls) == 3


# Certified agreement: the bounds an oracle states hold, and stable() trusts only what they prove.

CERTIFIED = ("binary_cross_entropy", "binary_cross_entropy_with_logits", "entropy", "kl_div", "kl_divergence",
             "softmax", "log_softmax", "cross_entropy", "nll_loss", "sigmoid_focal_loss", "softmax_focal_loss")


def _evaluations(spec, case):
    kw = {**spec.params, **case.params}
    yield lambda: spec.oracle(**case.inputs, **kw)
    if spec.gradient is not None:
        with workprec():
            shape = np.shape(spec.oracle(**case.inputs, **kw))
        yield lambda: spec.gradient(cotangent(shape), **case.inputs, **kw)


@pytest.mark.parametrize("loss", CERTIFIED)
def test_certified_bounds_hold_at_the_working_precision(loss):
    """Every certified output of every catalogue case: its ORACLE_PREC value is within the stated
    bound of its doubled-precision value (EXACT: the same bits)."""
    spec, checked = specs.get(loss), 0
    for case in spec.cases():
        if case.raises is not None or any(a is not None and a.size > 64 for a in case.inputs.values()):
            continue
        for fn in _evaluations(spec, case):
            with precision(2 * ORACLE_PREC), workprec():
                high, bounds = mpfuncs.certified(fn)
            if bounds is None:
                continue
            with workprec():
                low = fn()
            for a, b, k in zip(mpfuncs._flat(low), mpfuncs._flat(high), bounds, strict=True):
                if k is None:
                    continue
                if k == mpfuncs.EXACT:
                    assert _same(a, b), (case.id, a, b)
                else:
                    assert abs(a - b) <= mpmath.ldexp(abs(b), k + 1 - ORACLE_PREC), (case.id, a, b, k)
                checked += 1
    assert checked > 20  # the raw paths do certify


def test_certificate_check_rejects_values_near_a_float64_rounding_boundary():
    with precision(2 * ORACLE_PREC), workprec():
        mid = mpf(1) + mpf(2) ** -53  # the midpoint between 1 and its float64 successor
        near = mid + mpf(2) ** -195
        clear = mid + mpf(2) ** -150
    bits = ORACLE_PREC
    assert not mpfuncs._certified(mid, [0], bits)
    assert not mpfuncs._certified(near, [0], bits)  # within 2^(1−192)·|y| of the midpoint
    assert mpfuncs._certified(clear, [0], bits)
    assert not mpfuncs._certified(clear, [45], bits)  # a bound of 2^(46−192) relative reaches the midpoint
    assert not mpfuncs._certified(clear, [None], bits)
    assert mpfuncs._certified(mpmath.inf, [mpfuncs.EXACT], bits)
    assert not mpfuncs._certified(mpmath.inf, [3], bits)
    assert not mpfuncs._certified(mpf(2) ** -1030 * 3, [0], bits)  # subnormal range: no promise


def test_stable_skips_the_working_precision_only_on_a_certificate():
    calls = []

    def fn(bound):
        def run():
            calls.append(mpmath.mp.prec)
            out = mpf(1) / 3
            mpfuncs.certify(out, [bound])
            return out
        return run

    with workprec():
        want = mpfuncs.stable(lambda: mpf(1) / 3)
    for bound, evaluations in ((2, [2 * ORACLE_PREC]), (None, [2 * ORACLE_PREC, ORACLE_PREC])):
        calls.clear()
        got = mpfuncs.stable(fn(bound))
        assert calls == evaluations and got._mpf_ == want._mpf_
