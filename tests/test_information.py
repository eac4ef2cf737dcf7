"""Entropy, kl_div and KL divergence: oracle properties at high precision, boundary conventions,
gradients at boundary-adjacent points, the double-double kernels, third-party conventions and
bad-input errors (expected third-party verdicts: ``tests/expected/information.toml``; conformance
of ours on every catalogued case: test_conformance.py)."""

import math
import warnings

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from mpmath import mpf

from lossoracle import catalog, specs
from lossoracle.engine import check
from lossoracle.floats import FORMATS, ulp_error
from lossoracle.implementations import doubledouble as dd
from lossoracle.implementations import information_core as C
from lossoracle.implementations import information_torch as TI
from lossoracle.implementations import numpy_impl as N
from lossoracle.implementations import torch_impl as T
from lossoracle.mpfuncs import ORACLE_PREC, precision, to_mp
from lossoracle.reference import information as R

F64 = FORMATS["float64"]
HIGH = 2 * ORACLE_PREC


def _flat(x):
    return np.asarray(x, dtype=object).reshape(-1).tolist()


def _rows(seed: int, shape=(3, 6), zeros: bool = True) -> np.ndarray:
    """Probability-like rows with exact zeros, tiny and near-one entries (not normalised)."""
    rng = np.random.default_rng(seed)
    p = rng.random(shape)
    p = np.where(rng.random(shape) < 0.2, np.exp(-rng.random(shape) * 700.0), p)
    if zeros:
        p = np.where(rng.random(shape) < 0.15, 0.0, p)
    return p


# ----------------------------------------------------------------------------------------------
# Oracle properties at high precision


@pytest.mark.parametrize("seed", range(4))
def test_kl_of_a_distribution_with_itself_is_exactly_zero(seed):
    p = _rows(seed)
    with precision(HIGH):
        assert all(v == 0 for v in _flat(R.kl_divergence(p, p)))
        assert all(v == 0 for v in _flat(R.kl_divergence(p, p, generalized=True)))
        assert all(v == 0 for v in _flat(R.kl_div(np.log(p + 1.0), np.log(p + 1.0), "none", log_target=True)))


@pytest.mark.parametrize("seed", range(4))
def test_gibbs_inequality(seed):
    """D(u‖v) ≥ 0 for rows normalised exactly (normalize=True) and the generalized form ≥ 0 for any
    non-negative rows; equality only at u = v."""
    p, q = _rows(seed, zeros=False), _rows(seed + 100, zeros=False)
    with precision(HIGH):
        for conv in ({"normalize": True}, {"generalized": True}):
            assert all(v > 0 for v in _flat(R.kl_divergence(p, q, **conv)))


@pytest.mark.parametrize("seed", range(4))
def test_cross_entropy_is_entropy_plus_kl(seed):
    """H(p, q) = −Σ p log q (computed here directly with mpmath) equals H(p) + D(p‖q)."""
    p, q = _rows(seed), _rows(seed + 200, zeros=False)
    with precision(HIGH), mpmath.mp.workprec(HIGH):
        h = R.entropy(p)
        d = R.kl_divergence(p, q)
        for i, (hp, dp) in enumerate(zip(_flat(h), _flat(d))):
            cross = -mpmath.fsum(mpf(a) * mpmath.log(mpf(b)) for a, b in zip(p[i], q[i]) if a != 0)
            assert abs((hp + dp) - cross) <= abs(cross) * mpf(2) ** -(ORACLE_PREC + 20)


@pytest.mark.parametrize("seed", range(3))
def test_kl_div_is_negative_entropy_minus_cross_term(seed):
    """Σ p(log p − x) = −H(p) − Σ p·x, with x any float64 input; log_target: Σ e^t(t − x)."""
    p, x = _rows(seed), -np.abs(np.random.default_rng(seed).standard_normal((3, 6))) * 5
    t = -np.abs(np.random.default_rng(seed + 1).standard_normal((3, 6))) * 5
    with precision(HIGH), mpmath.mp.workprec(HIGH):
        want = -mpmath.fsum(_flat(R.entropy(p))) - mpmath.fsum(mpf(a) * mpf(b) for a, b in zip(p.flat, x.flat))
        got = R.kl_div(x, p, "sum")
        assert abs(got - want) <= abs(want) * mpf(2) ** -(ORACLE_PREC + 20)
        want_lt = mpmath.fsum(mpmath.exp(mpf(a)) * (mpf(a) - mpf(b)) for a, b in zip(t.flat, x.flat))
        assert abs(R.kl_div(x, t, "sum", log_target=True) - want_lt) <= abs(want_lt) * mpf(2) ** -(ORACLE_PREC + 20)


def test_kl_div_reductions_are_related():
    x, t = -np.arange(1.0, 13.0).reshape(3, 4) / 4, np.arange(12.0).reshape(3, 4) / 16
    total = R.kl_div(x, t, "sum")
    with mpmath.mp.workprec(ORACLE_PREC):
        assert R.kl_div(x, t, "mean") == total / 12
        assert R.kl_div(x, t, "batchmean") == total / 3
        assert abs(mpmath.fsum(_flat(R.kl_div(x, t, "none"))) - total) <= abs(total) * mpf(2) ** -(ORACLE_PREC - 8)
    assert R.kl_div(np.float64(-1.0), np.float64(0.5), "batchmean") == R.kl_div(np.float64(-1.0), np.float64(0.5),
                                                                                 "sum")  # 0-dim: no division
    assert mpmath.isnan(R.kl_div(np.zeros((0, 3)), np.zeros((0, 3)), "batchmean"))


def test_normalized_entropy_is_scale_invariant():
    p = _rows(7)
    a, b = R.entropy(p, normalize=True), R.entropy(p * 2.0**-40, normalize=True)  # exact scaling
    assert _flat(a) == _flat(b)


# ----------------------------------------------------------------------------------------------
# Boundary values and gradient conventions of the spec


def test_boundary_values():
    inf = mpmath.inf
    assert R.entropy(np.array([0.0, 1.0])) == 0
    assert R.entropy_grad(np.float64(1.0), np.array([0.0, 0.5]))["p"][0] == inf  # −(log 0 + 1)
    v = R.kl_div(np.array([-np.inf, -np.inf, -1.0]), np.array([0.0, 0.5, 0.0]), "none")
    assert _flat(v)[:3] == [0, inf, 0]
    g = R.kl_div_grad(np.ones(3), np.array([-np.inf, -np.inf, -1.0]), np.array([0.0, 0.5, 0.0]), "none")
    assert mpmath.isnan(g["target"][0]) and g["target"][1] == inf and g["target"][2] == -inf
    assert _flat(g["input"]) == [0, -0.5, 0]
    g = R.kl_div_grad(np.ones(2), np.array([-1.0, -np.inf]), np.array([-np.inf, -np.inf]), "none", log_target=True)
    assert g["target"][0] == 0 and mpmath.isnan(g["target"][1])
    gk = R.kl_divergence_grad(np.float64(1.0), np.array([0.0, 0.0, 0.5]), np.array([0.0, 0.5, 0.0]))
    assert mpmath.isnan(gk["p"][0]) and gk["p"][1] == -inf and gk["p"][2] == inf
    assert gk["q"][0] == 0 and gk["q"][1] == 0 and gk["q"][2] == -inf
    g_nan = R.kl_div_grad(np.ones(1), np.array([-1.0]), np.array([0.0]), "none", zero_target_grad="nan")
    assert mpmath.isnan(g_nan["target"][0])
    assert mpmath.isnan(R.kl_div(np.array([np.nan]), np.array([0.0]), "sum"))  # 0·NaN stays NaN


def test_ours_follow_the_boundary_conventions():
    assert N.entropy_grad(np.float64(1.0), np.array([0.0, 0.5]))["p"][0] == math.inf
    pt = torch.tensor([0.0, 0.5], requires_grad=True)
    T.entropy(pt).backward()
    assert pt.grad[0].item() == math.inf
    x, t = torch.tensor([-math.inf, -1.0, -1.0], requires_grad=True), torch.tensor([0.0, 0.0, 0.5],
                                                                                  requires_grad=True)
    T.kl_div(x, t, reduction="sum").backward()
    assert T.kl_div(x, t, reduction="none")[0].item() == 0.0
    assert math.isnan(t.grad[0].item()) and t.grad[1].item() == -math.inf


def _numeric_vjp(spec, case_inputs, kw, name, k, g, rel_step):
    x = case_inputs[name]
    x_mp = to_mp(x).reshape(-1)
    h = abs(x_mp[k]) * rel_step

    def f(d):
        xs = x_mp.copy()
        xs[k] = xs[k] + d
        out = spec.oracle(**{**case_inputs, name: xs.reshape(x.shape)}, **kw)
        return mpmath.fsum(a * b for a, b in zip(_flat(g), _flat(out)))

    # central difference, truncation O(h²) ≈ 2^-240 relative; 2400 bits resolve a step of 2^-120·5e-324
    # against values of order 1e3 (~2^1200 apart) with 1000 bits to spare
    with precision(2400), mpmath.mp.workprec(2400):
        return (f(h) - f(-h)) / (2 * h)


BOUNDARY_ADJACENT = [
    ("entropy", {"p": np.array([[5e-324, 1e-300, 2.0**-1022, 1.0 - 2.0**-53, 0.36787944117144233, 1.5]])}, {}),
    ("kl_div", {"input": np.array([[-1e-300, -745.0, -1.0, -0.6931471805599453]]),
                "target": np.array([[1e-300, 5e-324, 1.0 - 2.0**-53, 0.5]])}, {"reduction": "none"}),
    ("kl_div", {"input": np.array([[-1.0, 0.5, -0.5 - 2.0**-40]]), "target": np.array([[-744.0, -700.0, -0.5]])},
     {"reduction": "sum", "log_target": True}),
    ("kl_divergence", {"p": np.array([[1e-300, 0.5, 5e-324, 1.0 - 2.0**-53]]),
                       "q": np.array([[1e-300 * (1 + 2.0**-40), 0.5 + 2.0**-30, 1e-310, 1.0]])}, {}),
]


@pytest.mark.parametrize(("loss", "inputs", "params"), BOUNDARY_ADJACENT,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BOUNDARY_ADJACENT)])
def test_oracle_gradient_at_boundary_adjacent_points(loss, inputs, params):
    """Analytic VJP = central difference with a step relative to each entry (the generic test's
    absolute step 2^-90 would leave the domain at p = 1e-300)."""
    spec = specs.get(loss)
    kw = {**spec.params, **params}
    value = spec.oracle(**inputs, **kw)
    g = np.resize(np.array([1.0, 0.5, 2.0, 0.75]), np.shape(value)) if np.ndim(value) else np.array(1.0)
    with precision(2 * ORACLE_PREC):
        grads = spec.gradient(g, **inputs, **kw)
    for name in spec.differentiable:
        for k, want in enumerate(_flat(grads[name])):
            numeric = _numeric_vjp(spec, inputs, kw, name, k, g, mpf(2) ** -120)
            assert abs(numeric - want) <= abs(want) * mpf(2) ** -80, (name, k, numeric, want)


# ----------------------------------------------------------------------------------------------
# Double-double kernels


def test_double_double_log_exp_and_sums_agree_with_mpmath():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.random(300), np.exp(rng.uniform(-744, 709, 300)), [5e-324, 1e-310, 1.0 - 2.0**-53,
                                                                              2.0**-1022, 1.7976931348623157e308]])
    t = np.concatenate([rng.uniform(-745, 709, 300), [0.0, -1e-300, 709.78]])
    with mpmath.mp.workprec(300):
        for backend in (np.asarray, torch.tensor):
            hi, lo = (np.asarray(a) for a in dd.log(backend(x)))
            for v, h, lv in zip(x.tolist(), hi.tolist(), lo.tolist()):
                exact = mpmath.log(mpf(v))
                assert exact == 0 or abs(mpf(h) + mpf(lv) - exact) <= abs(exact) * mpf(2) ** -100
            (eh, el), k = dd.exp(backend(t))
            eh, el, k = np.asarray(eh), np.asarray(el), np.asarray(k)
            for v, h, lv, kk in zip(t.tolist(), eh.tolist(), el.tolist(), k.tolist()):
                exact = mpmath.exp(mpf(v))
                assert abs((mpf(h) + mpf(lv)) * mpf(2) ** int(kk) - exact) <= exact * mpf(2) ** -100
        a = rng.standard_normal((4, 37))
        hi, lo = dd.sum_last((a, a * 2.0**-60))
        for row, h, lv in zip(a, hi, lo):
            exact = mpmath.fsum([mpf(v) for v in row] + [mpf(v) * mpf(2) ** -60 for v in row])
            assert abs(mpf(h) + mpf(lv) - exact) <= abs(exact) * mpf(2) ** -100


def test_double_double_functions_of_double_doubles_agree_with_mpmath():
    """log, log1p, exp and expm1 of ``hi + lo`` on their whole domains (log1p and expm1 to full
    relative accuracy near 0), bit-identical on NumPy and torch."""
    rng = np.random.default_rng(6)
    tiny = 10.0 ** -rng.integers(1, 300, 40)
    args = {
        "log": np.concatenate([np.exp(rng.uniform(-700, 700, 60)), 1.0 + rng.uniform(-1, 1, 40) * tiny]),
        "log1p": np.concatenate([rng.uniform(-0.999, 3.0, 60), np.exp(rng.uniform(0, 700, 20)),
                                 rng.uniform(-0.3, 0.4, 40) * tiny, [0.41421356, -0.29289, 2.0**-500]]),
        "exp": np.concatenate([rng.uniform(-1400, 709, 60), rng.uniform(-0.4, 0.4, 40) * tiny]),
        "expm1": np.concatenate([rng.uniform(-800, 709, 60), rng.uniform(-0.4, 0.4, 40) * tiny, [0.3466, -0.3466]]),
    }
    with mpmath.mp.workprec(300):
        for name, hi in args.items():
            lo = np.where(np.abs(hi) > 1e-280, hi * 2.0**-54 * rng.uniform(-1, 1, hi.size), 0.0)
            got = [getattr(dd, name)((backend(hi), backend(lo))) for backend in (np.asarray, torch.tensor)]
            if name == "exp":
                got = [(*e, k) for e, k in got]
            assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(got[0], got[1])), name
            scale = got[0][2] if name == "exp" else np.zeros_like(hi)
            for h, lv, k, v, vl in zip(got[0][0].tolist(), got[0][1].tolist(), scale.tolist(), hi.tolist(),
                                       lo.tolist()):
                exact = getattr(mpmath, name)(mpf(v) + mpf(vl))
                err = abs((mpf(h) + mpf(lv)) * mpf(2) ** int(k) - exact)
                assert err <= abs(exact) * mpf(2) ** -100, (name, v, vl)


def test_numpy_and_torch_kernels_agree_bitwise():
    """The double-double kernels (torch's float64 losses use plain arithmetic where a bound proves it
    within budget, so the losses themselves may differ in the last place; see below)."""
    p, q = _rows(11), _rows(12)
    tp, tq = torch.tensor(p), torch.tensor(q)
    assert np.array_equal(C.kl_divergence(p, q), C.kl_divergence(tp, tq).numpy(), equal_nan=True)
    assert np.array_equal(C.entropy(p), C.entropy(tp).numpy(), equal_nan=True)
    g = np.array([[1.0], [0.75], [1.75]])
    assert np.array_equal(C.entropy_grad(p, g), C.entropy_grad(tp, torch.tensor(g)).numpy(), equal_nan=True)


# ----------------------------------------------------------------------------------------------
# torch float64: plain arithmetic where an a-priori bound proves it within budget


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _ulps(got, want) -> np.ndarray:
    """|got − want| in ULPs of ``want`` (a double-double result: within 2^-100 of the exact value)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    return np.abs(got - want) / np.spacing(np.abs(want))


def _forbid(monkeypatch, *names):
    def refuse(*args, **kwargs):
        raise AssertionError("the double-double kernel was called")
    for name in names:
        monkeypatch.setattr(C, name, refuse)


def test_torch_float64_random_inputs_take_the_plain_path_and_stay_within_budget(monkeypatch):
    rng = np.random.default_rng(7)
    p = _softmax(rng.standard_normal((64, 512)) * 2)
    x, t = np.log(_softmax(rng.standard_normal((64, 512)) * 3)), _softmax(rng.standard_normal((64, 512)) * 2)
    g = np.resize([1.0, 0.5, 2.0, 0.25], 64)  # mantissa 1 (training's cotangent); others below
    want_h, want_g = C.entropy(p), C.entropy_grad(p, g[:, None])
    want_kl = {r: C.kl_div(x.reshape(-1), t.reshape(-1), False, d, True) for r, d in
               (("sum", None), ("mean", float(x.size)), ("batchmean", 64.0))}
    _forbid(monkeypatch, "entropy", "kl_div", "kl_div_grad")
    seen = []
    real = C.entropy_grad
    monkeypatch.setattr(C, "entropy_grad", lambda pp, gg, precise: seen.append(pp.numpy()) or real(pp, gg, precise))
    tp = torch.tensor(p, requires_grad=True)
    h = T.entropy(tp)
    h.backward(torch.tensor(g))
    # double-double only where log p + 1 cancels (kept faithful there, as the double-double kernel is)
    assert len(seen) == 1 and np.all(np.abs(np.log(seen[0]) + 1.0) < 0.5)
    assert 0 < seen[0].size <= np.sum(np.abs(np.log(p) + 1.0) < 0.5)
    assert _ulps(h.detach(), want_h).max() <= specs.get("entropy").budget.faithful("value", "float64", 512)
    assert _ulps(tp.grad, want_g).max() <= specs.get("entropy").budget.faithful("grad", "float64")
    for reduction, want in want_kl.items():
        tx = torch.tensor(x, requires_grad=True)
        v = T.kl_div(tx, torch.tensor(t), reduction)
        v.backward(torch.tensor(0.75))
        assert _ulps(v.detach(), want) <= specs.get("kl_div").budget.faithful("value", "float64", x.size)
        div = {"sum": 1.0, "mean": float(x.size), "batchmean": 64.0}[reduction]
        assert _ulps(tx.grad, -0.75 * t / div).max() <= 2.0  # t·fl(−a/div): two roundings
    monkeypatch.undo()
    g = np.resize([0.75, 1.25, 1.75], 64)  # where ulp(log p) = 2·ulp(log p + 1), the bound may exceed 4 ULP
    tp = torch.tensor(p, requires_grad=True)
    T.entropy(tp).backward(torch.tensor(g))
    budget = specs.get("entropy").budget.faithful("grad", "float64")
    assert _ulps(tp.grad, C.entropy_grad(p, g[:, None])).max() <= budget


def test_torch_float64_bound_checks_reject_what_they_cannot_prove(monkeypatch):
    # the order-free sum's check: cancellation to 2^-40 of the terms cannot be proved faithful
    terms = torch.tensor([[1.0, -1.0 + 2.0**-40, 2.0**-60], [1.0, 0.5, 0.25]], dtype=torch.float64)
    _, ok = TI._faithful_sum(terms, terms.abs(), terms.abs().sum(-1) * 3 * 2.0**-53, 12.0)
    assert ok.tolist() == [False, True]
    calls = []
    real = {n: getattr(C, n) for n in ("entropy", "entropy_grad")}
    for name in real:
        monkeypatch.setattr(C, name, lambda *a, _n=name: calls.append((_n, a[0].numel())) or real[_n](*a))
    # a row whose terms of both signs cancel: the double-double row, faithful
    p = np.array([[np.exp(-2.0), 1.5, 0.25, 0.9], [0.1, 0.2, 0.3, 0.4]])
    rest = sum(mpf(a) * mpmath.log(mpf(a)) for a in p[0, [0, 2, 3]])
    p[0, 1] = float(mpmath.findroot(lambda v: v * mpmath.log(v) + rest, 1.5))  # the row's H ≈ 2^-50·its terms
    h = T.entropy(torch.tensor(p))
    assert calls == [("entropy", 4)]
    _assert_faithful(h.numpy(), R.entropy(p), 2.0 + 2.0)
    # a gradient element where the bound exceeds 4 ULP (|g|·ulp(log p) with ulp(log p) = 2·ulp(log p + 1)
    # and a cotangent mantissa of 1.75): that element alone in double-double
    calls.clear()
    p = np.array([[np.exp(-2.1), 0.01, 0.05]])
    tp = torch.tensor(p, requires_grad=True)
    T.entropy(tp).backward(torch.tensor([1.75]))
    assert calls == [("entropy", 3), ("entropy_grad", 1)] or calls == [("entropy_grad", 1)]
    _assert_faithful(tp.grad.numpy(), R.entropy_grad(np.array([1.75]), p)["p"], 4.0)
    # kl_div with input ≈ log target: the terms cancel, the double-double sum decides
    t = np.array([0.25, 0.5, 0.125, 0.125])
    x = np.log(t) * (1 + 2.0**-45)
    assert TI._kl_div_total_fast(torch.tensor(x), torch.tensor(t), 4.0) is None
    _assert_faithful(T.kl_div(torch.tensor(x), torch.tensor(t)).numpy(), R.kl_div(x, t), 2.0 + 2.0)


# ----------------------------------------------------------------------------------------------
# Hypothesis: ours faithful on arbitrary rows (subnormals, zeros, entries above 1)

_PROB = st.floats(min_value=0.0, max_value=4.0, allow_subnormal=True)
_ROW = st.lists(_PROB, min_size=1, max_size=6)


def _assert_faithful(got, exact, budget):
    for gv, ev in zip(np.asarray(got, dtype=np.float64).reshape(-1).tolist(), _flat(exact)):
        assert ulp_error(gv, ev, F64) <= budget, (gv, ev)


@given(_ROW)
def test_hypothesis_entropy_faithful(row):
    p = np.array([row])
    exact = R.entropy(p)
    _assert_faithful(N.entropy(p), exact, 2.0)
    _assert_faithful(N.entropy_grad(np.array([1.0]), p)["p"], R.entropy_grad(np.array([1.0]), p)["p"], 4.0)


@given(st.lists(st.tuples(_PROB, _PROB), min_size=1, max_size=6))
def test_hypothesis_kl_divergence_faithful_and_zero_on_itself(pairs):
    p, q = np.array([[a for a, _ in pairs]]), np.array([[b for _, b in pairs]])
    _assert_faithful(N.kl_divergence(p, q), R.kl_divergence(p, q), 2.0)
    grads = N.kl_divergence_grad(np.array([1.0]), p, q)
    exact = R.kl_divergence_grad(np.array([1.0]), p, q)
    _assert_faithful(grads["p"], exact["p"], 4.0)
    _assert_faithful(grads["q"], exact["q"], 4.0)
    assert N.kl_divergence(p, p)[0] == 0.0


@given(st.lists(st.tuples(st.floats(-800.0, 5.0), _PROB), min_size=1, max_size=6),
       st.sampled_from(["none", "sum", "mean", "batchmean"]), st.booleans())
def test_hypothesis_kl_div_faithful(pairs, reduction, log_target):
    x = np.array([[a for a, _ in pairs]])
    t = np.array([[-b * 100.0 if log_target else b for _, b in pairs]])
    with np.errstate(divide="ignore"):
        if not log_target and any(v > 0 and abs(a - math.log(v)) <= 2.0**-40 * abs(a) for a, v in zip(x[0], t[0])):
            return  # the documented region input ≈ log p
    exact = R.kl_div(x, t, reduction, log_target)
    _assert_faithful(N.kl_div(x, t, reduction, log_target), exact, 2.0 + (math.log2(x.size) if reduction != "none"
                                                                          and x.size > 1 else 0.0))


# ----------------------------------------------------------------------------------------------
# Conventions (the expected third-party verdicts are data: tests/expected/information.toml)


def _run(name: str, loss: str, **options):
    impl = next(i for i in catalog.implementations(loss) if i.name == name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return catalog.run(impl, **options)


def _rows_of(report, case=None, quantity=None):
    return [r for r in report.results
            if (case is None or r.case == case) and (quantity is None or r.quantity == quantity)]


def test_torch_kl_div_target_gradient_conforms_under_the_nan_convention():
    cases = ["zero_target_none", "zero_target_sum", "basic_mean"]
    plain = _run("torch.nn.functional.kl_div", "kl_div", dtypes=["float64"], cases=cases)
    assert all(r.verdict == "deviates" for r in _rows_of(plain, quantity="grad:target"))
    impl = next(i for i in catalog.implementations("kl_div") if i.name == "torch.nn.functional.kl_div")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = check(torch.nn.functional.kl_div, "kl_div", "torch", conventions={"zero_target_grad": "nan"},
                    dtypes=["float64"], cases=cases, name=impl.name)
    assert all(r.verdict == "conforms" for r in rep.results), [r.detail for r in rep.results if r.verdict != "conforms"]


def test_torch_kl_div_log_target_subnormal_exp_is_tail_only():
    """e^t is rounded to a subnormal (t = −745 → 2^-1074, 75 % too large) before × (t − input): the
    element's relative accuracy is gone (hundreds of ULP of a subnormal), its absolute error far
    below k·u·|t| — tail, not stable and not a deviation."""
    rep = _run("torch.nn.functional.kl_div", "kl_div", dtypes=["float64"], cases=["log_target_subnormal_exp"])
    value = _rows_of(rep, "log_target_subnormal_exp", "value")[0]
    assert value.verdict == "tail" and value.finding == "tail" and value.max_ulp > 100


@pytest.mark.parametrize(("name", "loss", "convention"), [
    ("scipy.special.kl_div", "kl_divergence", {"generalized": True}),
    ("scipy.stats.entropy", "kl_divergence", {"normalize": True}),
    ("scipy.stats.entropy", "entropy", {"normalize": True}),
])
def test_scipy_conforms_only_under_its_documented_convention(name, loss, convention):
    impl = next(i for i in catalog.implementations(loss) if i.name == name)
    assert dict(impl.conventions) == convention
    cases = ["unnormalised", "random_float64_0"] if loss == "kl_divergence" else ["unnormalised_below_one",
                                                                               "random_float64_0"]
    fn = catalog.resolve(impl.target)
    under = check(fn, loss, "numpy", conventions=convention, dtypes=["float64"], cases=cases)
    assert all(r.verdict == "conforms" for r in under.results)
    default = check(fn, loss, "numpy", dtypes=["float64"], cases=cases)
    assert any(r.verdict == "deviates" for r in default.results)


def test_scipy_entropy_default_axis_would_be_wrong():
    """scipy.stats.entropy reduces axis 0 by default: the adapter must pass axis=dim."""
    import scipy.stats

    p = np.array([[0.25, 0.75], [0.5, 0.5], [1.0, 0.0]])
    assert scipy.stats.entropy(p).shape == (2,)
    fn = catalog.resolve(next(i for i in catalog.implementations("entropy") if i.name == "scipy.stats.entropy").target)
    assert fn(p).shape == (3,)


# ----------------------------------------------------------------------------------------------
# Bad input: clear errors naming the argument (NumPy and torch)

_BAD = [
    (lambda m, a: m.entropy(a(np.array([[0.5, -0.25]]))), ValueError, "p must lie"),
    (lambda m, a: m.entropy(a(np.array([[0.5, 0.5]])), dim=2), ValueError, "dim 2 is out of range"),
    (lambda m, a: m.entropy(a(np.array([[1, 2]]))), TypeError, "p must be a floating-point"),
    (lambda m, a: m.kl_div(a(np.zeros((2, 3))), a(np.zeros((2, 4)))), ValueError, "target shape (2, 4)"),
    (lambda m, a: m.kl_div(a(np.zeros((2, 3))), a(np.zeros((1, 3)))), ValueError, "target shape (1, 3)"),
    (lambda m, a: m.kl_div(a(np.zeros((2, 3))), a(np.zeros((2, 3))), reduction="avg"), ValueError, "reduction"),
    (lambda m, a: m.kl_div(a(np.zeros((2, 3))), a(-np.ones((2, 3)))), ValueError, "target must lie"),
    (lambda m, a: m.kl_div(a(np.zeros((2, 3), np.int64)), a(np.zeros((2, 3)))), TypeError, "input must be"),
    (lambda m, a: m.kl_divergence(a(np.ones((2, 3))), a(np.ones((2, 2)))), ValueError, "q shape (2, 2)"),
    (lambda m, a: m.kl_divergence(a(np.ones((2, 3))), a(-np.ones((2, 3)))), ValueError, "q must lie"),
]


@pytest.mark.parametrize("module", [N, T], ids=["numpy", "torch"])
@pytest.mark.parametrize(("call", "exc", "text"), _BAD, ids=[b[2] for b in _BAD])
def test_bad_input_errors_name_the_argument(module, call, exc, text):
    convert = np.asarray if module is N else torch.as_tensor
    with pytest.raises(exc) as info:
        call(module, convert)
    assert text in str(info.value)


def test_nan_propagates_in_ours():
    p = np.array([[np.nan, 0.5], [0.25, 0.75]])
    h = N.entropy(p)
    assert math.isnan(h[0]) and not math.isnan(h[1])
    assert math.isnan(N.kl_div(np.array([np.nan]), np.array([0.0]), reduction="sum"))
    assert math.isnan(T.kl_divergence(torch.tensor([0.0, 0.5]), torch.tensor([np.nan, 0.5])).item())
