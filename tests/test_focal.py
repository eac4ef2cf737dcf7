"""Focal losses: oracle properties at high precision, the conventions and their libraries, the
double-double kernels, bad input, NaN propagation, hypothesis properties of ours, and the
verdicts expected of the third-party implementations (CONVENTIONS.md §6)."""

import functools
import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from mpmath import mpf

from lossoracle import catalog, reference, specs
from lossoracle.engine import check
from lossoracle.floats import FORMATS, ulp_error
from lossoracle.implementations import dd_arithmetic, numpy_impl, torch_impl
from lossoracle.mpfuncs import log1pexp, sigmoid, workprec

SIG, SM = "sigmoid_focal_loss", "softmax_focal_loss"
GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)
TIGHT = mpf(2) ** -170  # the oracle works at 192 bits; a few roundings stay far below this


def _a(*v, dtype=np.float64):
    return np.array(v, dtype=dtype)


def _close(got, want, rel=TIGHT):
    got, want = np.asarray(got, dtype=object).reshape(-1), np.asarray(want, dtype=object).reshape(-1)
    return all(abs(g - w) <= rel * abs(w) for g, w in zip(got, want))


def _impl(name):
    return next(i for i in catalog.implementations() if i.name == name)


def _rows(report, case, quantity=None, dtype=None):
    return [r for r in report.results if r.case == case and (quantity is None or r.quantity == quantity)
            and (dtype is None or r.dtype == dtype)]


# ----------------------------------------------------------------------------------------------
# Oracle properties


@pytest.mark.parametrize("alpha", [0.25, 0.75, -1.0])
def test_sigmoid_gamma_zero_is_alpha_weighted_bce_with_logits(alpha):
    x, y = _a(-1e4, -20.0, -0.5, 0.0, 3.0, 40.0), _a(1.0, 0.25, 0.0, 0.5, 1.0, 0.0)
    got = reference.sigmoid_focal_loss(x, y, alpha=alpha, gamma=0.0)
    bce = reference.binary_cross_entropy_with_logits(x, y, reduction="none")
    with workprec():
        at = [1 if alpha < 0 else alpha * mpf(t) + (1 - mpf(alpha)) * (1 - mpf(t)) for t in y]
        want = [a * b for a, b in zip(at, bce)]
    assert _close(got, want)


def test_softmax_gamma_zero_is_cross_entropy():
    x = _a(3.0, -1.0, 0.5, 1e3, 0.0, -2.0, 0.25, 0.125, 8.0).reshape(3, 3)
    t = np.array([0, 1, 2])
    got = reference.softmax_focal_loss(x, t, gamma=0.0, reduction="none")
    assert _close(got, reference.cross_entropy(x, t, reduction="none"))
    w = (0.25, 0.5, 1.0)
    weighted = reference.softmax_focal_loss(x, t, alpha=w, gamma=0.0, reduction="mean", mean_over="alpha")
    assert _close([weighted], [reference.cross_entropy(x, t, weight=np.array(w), reduction="mean")])


@pytest.mark.parametrize("gamma", GAMMAS)
def test_sigmoid_hard_targets_follow_the_paper(gamma):
    """Lin et al. eq. (5): FL = −α_t (1 − p_t)^γ log p_t with p_t = σ(x) (y = 1), σ(−x) (y = 0)."""
    x = _a(-30.0, -1.0, 0.5, 7.0, 100.0)
    for y, sign, at in ((1.0, 1, 0.25), (0.0, -1, 0.75)):
        got = reference.sigmoid_focal_loss(x, np.full(5, y), alpha=0.25, gamma=gamma)
        with mpmath.workprec(600):  # 1 − σ(100) cancels 144 bits: the paper's form needs the extra precision
            want = [at * (1 - sigmoid(sign * mpf(v))) ** gamma * log1pexp(-sign * mpf(v)) if gamma else
                    at * log1pexp(-sign * mpf(v)) for v in x]
        assert _close(got, want)


def test_sigmoid_conventions_agree_on_hard_targets_and_differ_on_soft():
    x, hard, soft = _a(-3.0, 0.5, 2.0), _a(1.0, 0.0, 1.0), _a(0.25, 0.375, 0.875)
    base = reference.sigmoid_focal_loss(x, hard, alpha=0.25)
    for p_t in ("per_term", "sign", "exp_bce"):
        assert _close(reference.sigmoid_focal_loss(x, hard, alpha=0.25, p_t=p_t), base)
        other = reference.sigmoid_focal_loss(x, soft, alpha=0.25, p_t=p_t)
        linear = reference.sigmoid_focal_loss(x, soft, alpha=0.25)
        assert all(abs(a - b) > mpf(10) ** -6 * abs(b) for a, b in zip(other[:2], linear[:2])), p_t


@pytest.mark.parametrize("x", [40.0, 100.0, 1e4])
def test_saturated_gradient_tends_to_zero_for_gamma_below_one(x):
    """y = 1, x → ∞: ℓ ≈ α e^{−(1+γ)x}, so ∂ℓ/∂x ≈ −α(1 + γ)e^{−(1+γ)x} — finite, never NaN."""
    g = reference.sigmoid_focal_loss_grad(_a(1.0), _a(x), _a(1.0), alpha=0.25, gamma=0.5)["inputs"][0]
    with workprec():
        want = -mpf(0.25) * mpf(1.5) * mpmath.exp(-mpf(1.5) * x)
    assert mpmath.isfinite(g) and g < 0
    assert abs(g - want) <= abs(want) * mpf(10) ** -10


def test_two_class_softmax_focal_is_sigmoid_focal_of_the_logit_difference():
    z = _a(-40.0, -2.5, 0.0, 0.75, 30.0)
    x = np.stack([np.zeros_like(z), z], 1)
    for gamma in (0.5, 2.0):
        soft = reference.softmax_focal_loss(x, np.ones(5, np.int64), gamma=gamma, reduction="none")
        sig = reference.sigmoid_focal_loss(z, np.ones(5), alpha=-1.0, gamma=gamma)
        assert _close(soft, sig, rel=mpf(2) ** -150)


def test_softmax_mean_variants_differ_only_in_the_denominator():
    x = _a(3.0, -1.0, 0.5, 2.0, 0.0, -2.0, 0.25, 0.125, 8.0, 1.0, 1.0, 1.0).reshape(4, 3)
    t = np.array([0, -100, 2, 1])
    a = (0.25, 0.5, 0.75)
    total = reference.softmax_focal_loss(x, t, alpha=a, reduction="sum")
    with workprec():
        want = [total / 3, total / mpf(1.5), total / 12]
    assert _close([reference.softmax_focal_loss(x, t, alpha=a)], want[:1])
    assert _close([reference.softmax_focal_loss(x, t, alpha=a, mean_over="alpha")], want[1:2])
    assert _close([reference.softmax_focal_loss(x, t, alpha=a, mean_over="elements")], want[2:])
    assert mpmath.isnan(reference.softmax_focal_loss(x, np.full(4, -100)))
    assert reference.softmax_focal_loss(x, np.full(4, -100), empty_mean="zero") == 0


def test_scalar_alpha_conventions():
    x, t = _a(0.5, 1.0, -1.0, 2.0).reshape(2, 2), np.array([0, 1])
    plain = reference.softmax_focal_loss(x, t, reduction="none")
    every = reference.softmax_focal_loss(x, t, alpha=0.25, reduction="none")
    background = reference.softmax_focal_loss(x, t, alpha=0.25, reduction="none", scalar_alpha="background")
    with workprec():
        want_every, want_bg = plain * mpf(0.25), [plain[0] * mpf(0.75), plain[1] * mpf(0.25)]
    assert _close(every, want_every)
    assert _close(background, want_bg)


def test_retinanet_normalisation_divides_by_the_positives():
    x, y = _a(0.5, -3.0, 7.25, 2.0, -1.0), _a(1.0, 0.0, 1.0, 0.5, 0.0)
    total = reference.sigmoid_focal_loss(x, y, reduction="sum")
    with workprec():
        half = total / 2
    assert _close([reference.sigmoid_focal_loss(x, y, reduction="mean", mean_over="positives")], [half])
    none = _a(0.0, 0.25)
    assert _close([reference.sigmoid_focal_loss(_a(1.0, 2.0), none, reduction="mean", mean_over="positives")],
                  [reference.sigmoid_focal_loss(_a(1.0, 2.0), none, reduction="sum")])


def test_keras_clip_convention_saturates_the_bce_term():
    """σ(−20) < 1e-7: the BCE term is −log(1e-7) for y = 1, the modulating factor stays unclipped."""
    got = reference.sigmoid_focal_loss(_a(-20.0), _a(1.0), alpha=-1.0, gamma=2.0, probability_clip=1e-7)[0]
    with workprec():
        want = (1 - sigmoid(mpf(-20))) ** 2 * -mpmath.log(mpf(1e-7))
    assert abs(got - want) <= abs(want) * TIGHT
    g = reference.sigmoid_focal_loss_grad(_a(1.0), _a(-20.0), _a(1.0), alpha=-1.0, probability_clip=1e-7)
    with workprec():
        want = 2 * (1 - sigmoid(mpf(-20))) * -sigmoid(mpf(-20)) * sigmoid(mpf(20)) * -mpmath.log(mpf(1e-7))
    assert abs(g["inputs"][0] - want) <= abs(want) * TIGHT


# ----------------------------------------------------------------------------------------------
# The wide arithmetic


def test_double_double_elementary_functions_reach_2_to_the_minus_100():
    rng = np.random.default_rng(7)
    # results above 2^-900, where the low part of a double-double is still a normal number
    a = np.concatenate([rng.uniform(-600, 0, 60), rng.uniform(-1, 1, 60), rng.uniform(-1e-9, 1e-9, 20)])
    A = dd_arithmetic
    checks = [(A.exp, mpmath.exp, a), (A.expm1, mpmath.expm1, a), (A.log, mpmath.log, np.abs(a) + 1e-300),
              (A.log1p, mpmath.log1p, np.abs(a))]
    with mpmath.workprec(300):
        for fn, ref, arg in checks:
            hi, lo = fn(A.lift(arg))
            for h, l, v in zip(hi.tolist(), lo.tolist(), arg.tolist()):
                want = ref(mpf(v))
                assert abs(mpf(h) + mpf(l) - want) <= abs(want) * mpf(2) ** -100, (fn.__name__, v)


def test_double_double_is_the_same_on_numpy_and_torch():
    """Only + − × ÷, rounding to integers, table look-ups, frexp and exact scaling: bit-identical."""
    a = np.linspace(-50.0, 3.0, 41)
    An = At = dd_arithmetic
    for name in ("exp", "expm1", "log", "log1p"):
        arg = np.abs(a) if name.startswith("log") else a
        hn = getattr(An, name)(An.lift(arg))
        ht = getattr(At, name)(At.lift(torch.tensor(arg)))
        assert np.array_equal(hn[0], ht[0].numpy()) and np.array_equal(hn[1], ht[1].numpy()), name


# ----------------------------------------------------------------------------------------------
# Ours: accuracy, saturation, NaN, bad input


@pytest.mark.parametrize("name", [f"lossoracle.implementations.numpy_impl.{SIG}",
                                  f"lossoracle.implementations.numpy_impl.{SM}",
                                  f"lossoracle.implementations.torch_impl.{SM}"])
def test_ours_are_correctly_rounded_on_the_tail_cases(name):
    """Within 1 ULP (measured: ≤ 0.5) in every dtype on the tails where focal losses fail — except torch's
    softmax gradient below float64: ``fl32(c)·fl32(e_j)`` in float32 arithmetic (the exponentials kept from
    the forward, see focal_torch), ≤ 3 ULP by the bound derived there (measured: ≤ 1.45)."""
    cases = ["tail_tiny_x20_y1", "tail_huge_xm1e4_y1", "saturated_g0.5", "ladder_hard_g5.0", "soft_f64_g5.0",
             "confident_g5.0", "confident_g0.5", "huge_1e4", "wrong_confident"]
    report = catalog.run(_impl(name), cases=cases)
    measured = [r for r in report.results if r.max_ulp is not None]
    assert measured and all(r.verdict == "conforms" for r in report.results)

    def limit(r) -> float:
        kept = name.endswith(f"torch_impl.{SM}") and r.quantity == "grad:input" and r.dtype != "float64"
        return 3.0 if kept else 1.0

    assert all(r.max_ulp <= limit(r) for r in measured)


@pytest.mark.parametrize("gamma", [0.25, 0.5, 0.75])
def test_ours_return_the_finite_limit_at_saturation(gamma):
    x = torch.tensor([20.0, 40.0, 100.0, 1e4, -100.0], dtype=torch.float32, requires_grad=True)
    y = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0], requires_grad=True)
    gx, gy = torch.autograd.grad(torch_impl.sigmoid_focal_loss(x, y, gamma=gamma).sum(), [x, y])
    assert torch.isfinite(gx).all() and torch.isfinite(gy).all()
    logits = torch.tensor([[100.0, 0.0], [1e4, -1e4], [40.0, 0.0]], requires_grad=True)
    (g,) = torch.autograd.grad(torch_impl.softmax_focal_loss(logits, torch.tensor([0, 0, 0]), gamma=gamma),
                               [logits])
    assert torch.isfinite(g).all()
    grads = numpy_impl.sigmoid_focal_loss_grad(np.ones(5, np.float32), x.detach().numpy(), y.detach().numpy(),
                                               gamma=gamma)
    assert all(np.isfinite(v).all() for v in grads.values())


def test_softmax_accepts_any_integer_target_dtype():
    x = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, 1.0]], requires_grad=True)
    want = torch_impl.softmax_focal_loss(x, torch.tensor([0, 2]))
    for dt in (torch.int32, torch.uint8):
        assert torch.equal(torch_impl.softmax_focal_loss(x, torch.tensor([0, 2], dtype=dt)), want)
    assert numpy_impl.softmax_focal_loss(x.detach().numpy(), np.array([0, 2], np.int32)) == want.item()


def test_nan_propagates():
    v = numpy_impl.sigmoid_focal_loss(_a(np.nan, 1.0), _a(1.0, 0.0))
    assert np.isnan(v[0]) and np.isfinite(v[1])
    x = torch.tensor([[np.nan, 0.0, 1.0], [2.0, 0.5, 0.25]], requires_grad=True)
    out = torch_impl.softmax_focal_loss(x, torch.tensor([1, 0]), reduction="none")
    assert torch.isnan(out[0]) and torch.isfinite(out[1])
    out.sum().backward()
    assert torch.isnan(x.grad[0]).all() and torch.isfinite(x.grad[1]).all()


_SIG_BAD = [
    (dict(targets=_a(1.5, 0.0)), ValueError, "targets"),
    (dict(targets=_a(-0.5, 0.0)), ValueError, "targets"),
    (dict(gamma=-1.0), ValueError, "gamma"),
    (dict(gamma=float("nan")), ValueError, "gamma"),
    (dict(alpha=1.5), ValueError, "alpha"),
    (dict(alpha=-0.5), ValueError, "alpha"),
    (dict(targets=_a(1.0, 0.0, 1.0)), ValueError, "targets shape"),
    (dict(reduction="avg"), ValueError, "reduction"),
    (dict(inputs=np.array([1, 2])), TypeError, "inputs"),
    (dict(mean_over="batch"), ValueError, "mean_over"),
]


@pytest.mark.parametrize(("change", "exc", "names"), _SIG_BAD)
def test_sigmoid_bad_input_names_the_argument(change, exc, names):
    kw = {"inputs": _a(0.5, 1.0), "targets": _a(1.0, 0.0)} | change
    with pytest.raises(exc, match=names):
        numpy_impl.sigmoid_focal_loss(**kw)


_SM_BAD = [
    (dict(target=[0, 1, 5, 2]), ValueError, "target class indices"),
    (dict(target=[0, -1, 2, 2]), ValueError, "target class indices"),
    (dict(target=[0, 1, 2]), ValueError, "target shape"),
    (dict(target=[0.0, 1.0, 2.0, 3.0]), TypeError, "target must hold class indices"),
    (dict(gamma=-0.5), ValueError, "gamma"),
    (dict(alpha=1.5), ValueError, "alpha"),
    (dict(alpha=(0.25, 0.5)), ValueError, "alpha"),
    (dict(alpha=(0.25, 0.5, 0.75, 2.0, 0.5)), ValueError, "alpha"),
    (dict(reduction="avg"), ValueError, "reduction"),
    (dict(input=[[1, 2, 3, 4, 5]] * 4), TypeError, "input"),
    (dict(input=[0.5, -1.0, 2.0], target=2), ValueError, "input must have shape"),
]


@pytest.mark.parametrize("framework", ["numpy", "torch"])
@pytest.mark.parametrize(("change", "exc", "names"), _SM_BAD)
def test_softmax_bad_input_names_the_argument(framework, change, exc, names):
    kw = {"input": np.zeros((4, 5)), "target": [0, 1, 2, 3]} | change
    x, t = np.asarray(kw.pop("input")), np.asarray(kw.pop("target"))
    if t.dtype.kind == "i":
        t = t.astype(np.int64)
    if framework == "torch":
        fn, x, t = torch_impl.softmax_focal_loss, torch.as_tensor(x), torch.as_tensor(t)
    else:
        fn = numpy_impl.softmax_focal_loss
    with pytest.raises(exc, match=names):
        fn(x, t, **kw)


def test_retinanet_option_of_ours_conforms_under_its_convention():
    fn = functools.partial(numpy_impl.sigmoid_focal_loss, mean_over="positives")
    grad = functools.partial(numpy_impl.sigmoid_focal_loss_grad, mean_over="positives")
    report = check(fn, SIG, "numpy", grad=grad, conventions={"mean_over": "positives"},
                   cases=["basic_mean", "spatial_mean", "no_positives_mean", "one_dim", "random_half_1"])
    assert report.results and all(r.verdict == "conforms" for r in report.results)
    assert max(r.max_ulp for r in report.results if r.max_ulp is not None) <= 1.0


# ----------------------------------------------------------------------------------------------
# Hypothesis properties of ours

_logit = st.floats(-1e4, 1e4, width=32)
_target = st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0, width=32))


@given(st.lists(st.tuples(_logit, _target), min_size=1, max_size=4), st.sampled_from(GAMMAS),
       st.sampled_from([0.25, -1.0, 0.75]))
def test_numpy_sigmoid_float32_is_within_one_ulp_of_the_oracle(pairs, gamma, alpha):
    x, y = (np.array(v, dtype=np.float32) for v in zip(*pairs))
    got = numpy_impl.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma)
    want = reference.sigmoid_focal_loss(x.astype(np.float64), y.astype(np.float64), alpha=alpha, gamma=gamma)
    assert all(ulp_error(float(g), w, FORMATS["float32"]) <= 1.0 for g, w in zip(got, want))


@given(st.lists(st.tuples(_logit, _target), min_size=1, max_size=6), st.sampled_from(GAMMAS))
def test_focal_never_exceeds_the_weighted_bce(pairs, gamma):
    """(1 − p_t)^γ ≤ 1: the focal loss is at most α_t·BCE, with equality at γ = 0."""
    x, y = (np.array(v, dtype=np.float64) for v in zip(*pairs))
    focal = numpy_impl.sigmoid_focal_loss(x, y, alpha=0.25, gamma=gamma)
    bce = numpy_impl.sigmoid_focal_loss(x, y, alpha=0.25, gamma=0.0)
    assert np.all(focal <= bce)


@given(st.integers(2, 6), st.integers(1, 4), st.sampled_from(GAMMAS), st.integers(0, 2**31 - 1))
def test_torch_and_numpy_softmax_agree_and_scale_with_alpha(C, N, gamma, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((N, C)) * 10.0 ** rng.integers(0, 4)).astype(np.float32)
    t = rng.integers(0, C, N)
    a = numpy_impl.softmax_focal_loss(x, t, gamma=gamma, reduction="none")
    b = torch_impl.softmax_focal_loss(torch.tensor(x), torch.tensor(t), gamma=gamma, reduction="none").numpy()
    assert np.array_equal(a, b)
    half = numpy_impl.softmax_focal_loss(x, t, alpha=0.5, gamma=gamma, reduction="none")
    normal = np.abs(a) >= 2 * np.finfo(np.float32).tiny  # halving a subnormal rounds a second time
    assert np.array_equal(half[normal], (a * np.float32(0.5))[normal])


# ----------------------------------------------------------------------------------------------
# Third-party verdicts (the libraries are optional)


def _run(name, cases, dtypes=None, **conventions):
    impl = _impl(name)
    if conventions:
        impl = catalog.Implementation(**{**impl.__dict__, "conventions": {**impl.conventions, **conventions}})
    return catalog.run(impl, cases=cases, dtypes=dtypes)


@pytest.mark.thirdparty
def test_kornia_binary_is_finite_at_saturation_and_uses_per_term_soft_targets():
    pytest.importorskip("kornia")
    name = "kornia.losses.binary_focal_loss_with_logits"
    rep = _run(name, ["saturated_g0.5", "soft_g2.0"], ["float32", "float64"])
    assert all(r.nonfinite_mismatch == 0 for r in rep.results)
    assert all(r.verdict == "conforms" for r in _rows(rep, "soft_g2.0", dtype="float32"))
    linear = _run(name, ["soft_g2.0"], ["float64"], p_t="linear")
    (row,) = _rows(linear, "soft_g2.0", "value")
    assert row.verdict == "deviates" and "gross error" in row.detail


@pytest.mark.thirdparty
def test_monai_sigmoid_is_finite_at_saturation_and_sums_to_a_mean_on_2d_input():
    pytest.importorskip("monai")
    rep = _run("monai.losses.FocalLoss(use_softmax=False)", ["saturated_g0.5", "basic_sum", "spatial_sum"],
               ["float32"])
    assert all(r.nonfinite_mismatch == 0 for r in _rows(rep, "saturated_g0.5"))
    (s,) = _rows(rep, "basic_sum", "value")
    assert s.verdict == "deviates" and math.isclose(s.worst["got"] * 20, float(mpf(s.worst["want"])), rel_tol=1e-5)
    (sp,) = _rows(rep, "spatial_sum", "value")
    assert sp.verdict == "conforms"  # Σ over (N, C) of the spatial mean, under its convention


@pytest.mark.thirdparty
def test_kornia_softmax_scalar_alpha_is_the_binary_convention():
    """A scalar α in kornia weighs class 0 by 1 − α (``scalar_alpha="binary"``), not every class by α."""
    pytest.importorskip("kornia")
    kornia = _run("kornia.losses.focal_loss", ["alpha_scalar"], ["float32"])
    assert all(r.verdict == "conforms" for r in _rows(kornia, "alpha_scalar"))
    every = _run("kornia.losses.focal_loss", ["alpha_scalar"], ["float32"], scalar_alpha="all")
    assert _rows(every, "alpha_scalar", "value")[0].verdict == "deviates"


@pytest.mark.thirdparty
def test_keras_float64_losses_carry_float32_precision():
    """Keras's ops.mean computes in result_type(float64, 'float32') = float32."""
    pytest.importorskip("keras")
    from lossoracle.ecosystem.focal import keras_binary_focal

    x, y = _a(0.5, -1.0, 3.0), _a(1.0, 1.0, 0.0)
    got = keras_binary_focal(torch.tensor(x), torch.tensor(y))
    want = reference.sigmoid_focal_loss(x, y)
    assert got.dtype == torch.float64
    rel = [abs(mpf(float(g)) - w) / w for g, w in zip(got, want)]
    assert max(rel) > 2.0**-40 and max(rel) < 2.0**-22
    assert all(float(g) == float(np.float32(g)) for g in got)  # float32 values in a float64 tensor


def test_a_missing_library_is_reported_not_installed():
    impl = catalog.Implementation(SIG, "nolib.sigmoid_focal_loss", "torch", "nolib:sigmoid_focal_loss",
                                  requires=("nolib_that_is_not_there",))
    (row,) = catalog.run(impl).results
    assert row.verdict == "not_installed" and row.detail.startswith("not installed")
    assert not catalog.run(impl).passes()  # nothing scored


def _edge_logits(n: int, dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64) * 12
    edges = [0.0, -0.0, 1e-300, -1e-300, 36.7, -36.7, 40.0, -40.0, 372.0, -372.0, 700.0, -700.0, 746.0, -746.0,
             1e308, -1e308, math.inf, -math.inf, math.nan, 5e-324, 1e-20, -1e-20]
    x[:len(edges)] = torch.tensor(edges, dtype=torch.float64)
    return x.to(dtype)


@pytest.mark.slow
@pytest.mark.parametrize("soft", [False, True])
def test_sigmoid_float64_compiled_kernels_are_the_eager_blocks_bit_for_bit(monkeypatch, soft):
    """The double-double kernels traced by torch.compile (large CPU float64 inputs) give the eager blocks'
    bits: every operation of :mod:`.doubledouble`/:mod:`.dd_branchfree` is one IEEE operation in both (Inductor
    compiles with -ffp-contract=off and no unsafe math), the saturated and non-finite logits included."""
    from lossoracle.implementations import compiled, focal_torch

    monkeypatch.setattr(focal_torch, "_COMPILE_MIN_NUMEL", 1 << 10)
    g = torch.Generator().manual_seed(5)
    x = _edge_logits(3000, torch.float64, 4)
    y = torch.rand(3000, generator=g, dtype=torch.float64) if soft else (torch.rand(3000, generator=g) < 0.3).double()
    if soft:
        y[:60:3], y[1:60:3] = 0.0, 1.0
    w = torch.rand(3000, generator=g, dtype=torch.float64) * 4 - 2
    out = {}
    for on in (False, True):
        monkeypatch.setitem(compiled.ENABLED, "on", on)
        xi, yi = x.clone().requires_grad_(), y.clone().requires_grad_(soft)
        v = focal_torch.sigmoid_focal_loss(xi, yi, alpha=0.25, gamma=1.5 if soft else 2.0, reduction="none")
        (v * w).sum().backward()
        out[on] = (v.detach(), xi.grad, yi.grad)
    assert compiled.ENABLED["on"], "torch.compile failed"
    used = (focal_torch._dd_value, focal_torch._dd_grad) if soft else (focal_torch._dd_value_dx, focal_torch._dd_scale)
    assert all(focal_torch._KERNELS[fn].variants for fn in used)
    for a, b in zip(out[False], out[True]):
        if a is not None:
            assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_softmax_compiled_kernels_match_the_eager_blocks(monkeypatch, dtype):
    """The fused row kernels (large CPU inputs) compute what the eager blocks compute: the same float32
    arithmetic per element, the row sums in another order — at most 1 ULP of the data's dtype apart after the
    one rounding, NaN rows and ignored targets alike. (float32 logits take float32 exponentials when compiled,
    float64 ones in the eager blocks: each is held to the oracle instead, below.)"""
    from lossoracle.implementations import compiled, focal_torch

    monkeypatch.setattr(focal_torch, "_SM_COMPILE_MIN_NUMEL", 1 << 10)
    g = torch.Generator().manual_seed(6)
    x = (torch.randn(96, 37, generator=g) * 8).to(dtype)
    x[0], x[1], x[2, 3], x[3, 1], x[4, :2], x[5, 0] = 0.0, -math.inf, math.nan, math.inf, 30.0, 90.0
    t = torch.randint(0, 37, (96,), generator=g)
    t[4], t[7:9] = 1, -100
    w = torch.rand(96, generator=g) * 4 - 2
    out = {}
    for on in (False, True):
        monkeypatch.setitem(compiled.ENABLED, "on", on)
        xi = x.clone().requires_grad_()
        v = focal_torch.softmax_focal_loss(xi, t, alpha=0.25, gamma=2.0, reduction="none")
        (v * w.to(dtype)).sum().backward()
        out[on] = (v.detach(), xi.grad)
    assert compiled.ENABLED["on"], "torch.compile failed"
    kernels = focal_torch._SM_KERNELS
    assert kernels[focal_torch._sm_rows].variants
    for a, b in zip(out[False], out[True]):
        assert torch.equal(a.isnan(), b.isnan())
        a, b = a.double().nan_to_num(0.0), b.double().nan_to_num(0.0)
        ulp = torch.finfo(dtype).eps * a.abs().clamp_min(torch.finfo(dtype).tiny)
        assert bool(((a - b).abs() <= ulp).all())


@pytest.mark.slow
@pytest.mark.parametrize("gamma", [2.0, 0.5])
@pytest.mark.parametrize("compile_on", [True, False])
def test_softmax_float32_gradient_from_the_kept_exponentials_meets_its_bound(monkeypatch, gamma, compile_on):
    """float32 ∂ℓ/∂x from the forward's exponentials: each element of the eager blocks (``fl32(e_j)`` of float64
    exponentials) within the 3 ULP derived in focal_torch, of the oracle; of the fused kernel (float32
    exponentials, each row accepted by its a-priori bound only within the faithful budget, else recomputed as
    in the eager blocks) within that budget — the rows where a cotangent above 1 would lift an exponential
    that float32 holds as subnormal or 0 (e^-110 ≈ 1.7e-48 times 1e10) or where ``|c| > 2^127`` (γ = 0.5,
    target the maximum, ``S`` ≈ 1e-20, cotangent 1e30) included."""
    from lossoracle.floats import FORMATS, ulp_error
    from lossoracle.implementations import compiled, focal_torch

    monkeypatch.setattr(focal_torch, "_SM_COMPILE_MIN_NUMEL", 1 << 10)
    monkeypatch.setitem(compiled.ENABLED, "on", compile_on)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(48, 40, generator=g) * 6
    t = torch.randint(0, 40, (48,), generator=g)
    w = torch.rand(48, generator=g) * 4 - 2
    x[0], t[0], w[0] = -90.0, 0, 1e10
    x[0, :2] = torch.tensor([0.0, 20.0])
    x[1], t[1], w[1] = -46.0, 0, 1e30
    x[1, 0] = 0.0
    x[2], t[2], w[2] = -105.0, 3, 3e38
    x[2, 3] = 0.0
    t[7] = -100
    xi = x.clone().requires_grad_()
    v = focal_torch.softmax_focal_loss(xi, t, alpha=0.25, gamma=gamma, reduction="none")
    (v * w).sum().backward()
    assert not compile_on or focal_torch._SM_KERNELS[focal_torch._sm_rows].variants
    want = reference.softmax_focal_loss_grad(w.double().numpy(), x.double().numpy(), t.numpy(), alpha=0.25,
                                             gamma=gamma, reduction="none")["input"]
    f32 = FORMATS["float32"]
    worst = max(ulp_error(float(a), e, f32) for a, e in zip(xi.grad.reshape(-1).tolist(), want.reshape(-1)))
    # the fused kernel accepts a row only where its bound is within the spec's budget (else recomputes it);
    # the eager blocks have their own derived 3 ULP
    assert worst <= (specs.get(SM).budget.faithful("grad", "float32") if compile_on else 3.0)


def _sm32_worst(x, t, w, gamma):
    """Worst ULP errors (value, gradient) of our float32 softmax focal loss (``reduction='none'``, α = 0.25,
    cotangent ``w``) against the oracle."""
    from lossoracle.implementations import focal_torch

    xi = x.clone().requires_grad_()
    v = focal_torch.softmax_focal_loss(xi, t, alpha=0.25, gamma=gamma, reduction="none")
    (v * w).sum().backward()
    x64, tn = x.double().numpy(), t.numpy()
    want_v = reference.softmax_focal_loss(x64, tn, alpha=0.25, gamma=gamma, reduction="none")
    want_g = reference.softmax_focal_loss_grad(w.double().numpy(), x64, tn, alpha=0.25, gamma=gamma,
                                               reduction="none")["input"]
    f32 = FORMATS["float32"]
    return tuple(max(ulp_error(a, e, f32) for a, e in zip(got.detach().reshape(-1).tolist(), want.reshape(-1)))
                 for got, want in ((v, want_v), (xi.grad, want_g)))


@pytest.mark.slow
@pytest.mark.parametrize("gamma", [2.0, 0.5])
def test_softmax_float32_exponentials_stay_within_the_faithful_budget(monkeypatch, gamma):
    """The fused float32 kernel (float32 exponentials, a per-row a-priori bound; focal_torch steps 1–5): every
    value and gradient element within the faithful budget of the oracle, on wide logits (|x − m| up to ~60),
    ties, confident rows whose target is (the bound sends them to float64) or is not the maximum, underflowing
    exponentials, ±inf, NaN and ignored targets; rows both accepted and recomputed. Bites: without the TwoSum
    correction of ``x − m`` (mutant below, run unfused) the gradient of the wide rows is far beyond 8 ULP."""
    from lossoracle.implementations import compiled, focal_torch

    monkeypatch.setattr(focal_torch, "_SM_COMPILE_MIN_NUMEL", 1 << 10)
    monkeypatch.setitem(compiled.ENABLED, "on", True)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(96, 37, generator=g) * 12
    t = torch.randint(0, 37, (96,), generator=g)
    w = torch.rand(96, generator=g) * 4 - 2
    x[0], x[1], x[2, 3], x[3, 1], x[4, :2], x[5, 0] = 0.0, -math.inf, math.nan, math.inf, 30.0, 90.0
    t[4], t[7:9] = 1, -100
    for i, margin in zip(range(10, 16), (3.0, 12.0, 40.0, 80.0, 120.0, 1e-3)):  # confident rows
        x[i, t[i]] = x[i].amax() + margin
        x[i + 10, (t[i + 10] + 1) % 37] = x[i + 10].amax() + margin  # ... whose target is not the maximum
    x[30, 5] = -math.inf
    assert not focal_torch._mostly_on_target(x, t.clamp_min(0))  # a few of 96 rows: the float32 kernel (speed only)
    assert focal_torch._mostly_on_target(x[10:16], t[10:16])  # a trained model's rows: float64 throughout
    rows = []
    wide = focal_torch._sm_forward_wide
    monkeypatch.setattr(focal_torch, "_sm_forward_wide", lambda x, *a: rows.append(x.shape[0]) or wide(x, *a))
    worst_v, worst_g = _sm32_worst(x, t, w, gamma)
    assert focal_torch._SM_KERNELS[focal_torch._sm_rows32].variants, "torch.compile failed"
    assert rows and 0 < rows[0] < 96, rows  # some rows recomputed, most accepted
    budget = specs.get(SM).budget
    assert worst_v <= budget.faithful("value", "float32") and worst_g <= budget.faithful("grad", "float32")
    monkeypatch.setattr(focal_torch, "_sm_compiled", lambda fn, variant, x, *args: fn(x, *args))
    monkeypatch.setattr(focal_torch, "_sm_exp32", lambda x, m: torch.exp(x - m[:, None]))
    assert _sm32_worst(x, t, w, gamma)[1] > 2 * budget.faithful("grad", "float32")
