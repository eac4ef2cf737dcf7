"""The C++ long double box kernel (``implementations/native/box.cpp``) that float64 CPU boxes take from
2^16 pairs: bit for bit the NumPy long double kernel (``box_core`` on ``np.longdouble``, the fallback) on
drawn pairs full of ties, touching edges, nested and zero-width boxes; conforming against the oracle on
the catalogue and on hypothesis draws; the pairwise GIoU's compensated gradient sums within their
derived bound of the oracle, which a plain float64 kernel (the mutant) exceeds; the losses dispatch
to it, with the same numbers as without it."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lossoracle import catalog, reference, specs, strategies
from lossoracle.implementations import box_core, box_torch, compiled, native, torch_impl
from lossoracle.strategies import rng_for

from test_conformance import _per_element_failures

pytestmark = pytest.mark.skipif(native.module("box") is None or box_torch._WIDE is None,
                                reason="native kernels off (LOSSORACLE_COMPILE=0) or not built, or no long double")
LD = np.longdouble
KINDS = box_core.KINDS
LOSSES = ("generalized_box_iou", "generalized_box_iou_loss", "distance_box_iou_loss",
          "complete_box_iou_loss")  # those the kernel serves (the pairwise IoU runs its live pairs alone)


def _mod():
    return native.module("box")


def _grid_pairs(r, n: int, scale: float, offset: float):
    """Pairs with coordinates on a small integer grid (ties, touching edges, nested and zero-width
    boxes are common), scaled and shifted."""
    a = np.sort(r.integers(0, 6, (n, 2, 2)), axis=1).astype(np.float64) * scale + offset
    b = np.sort(r.integers(0, 6, (n, 2, 2)), axis=1).astype(np.float64) * scale + offset
    box = lambda t: np.stack([t[:, 0, 0], t[:, 0, 1], t[:, 1, 0], t[:, 1, 1]], 1)  # noqa: E731
    return box(a), box(b)


def _random_pairs(r, n: int, far: float):
    """Nearby pairs with sizes over eight decades (the regression regime), optionally far from the origin."""
    c = r.uniform(0, 1000, (n, 2)) + far
    s = np.exp(r.normal(0, 3, (n, 2)))
    c2 = c + r.normal(0, 1, (n, 2)) * s * r.uniform(0, 1, (n, 1))
    s2 = s * np.exp(r.normal(0, 0.3, (n, 2)))
    return np.concatenate([c - s, c + s], 1), np.concatenate([c2 - s2, c2 + s2], 1)


def _native_paired(p, q, kind, eps, alpha, cot):
    args = (KINDS.index(kind), eps, eps, alpha != "constant")
    t1, t2 = torch.tensor(p), torch.tensor(q)
    v = _mod().paired_value(t1, t2, *args).numpy()
    g1, g2 = _mod().paired_grad(t1, t2, torch.tensor(cot), *args)
    return v, g1.numpy(), g2.numpy()


def _long_double_paired(p, q, kind, eps, alpha, cot):
    with np.errstate(all="ignore"):
        v, (g1, g2) = box_core.pair_kernel(np, p.astype(LD), q.astype(LD), kind, eps, alpha, None, cot.astype(LD))
    return v.astype(np.float64), g1.astype(np.float64), g2.astype(np.float64)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), grid=st.booleans(), scale=st.sampled_from([1.0, 0.1, 2.0**-40, 3e30]),
       offset=st.sampled_from([0.0, -7.5, 1e6]), kind=st.sampled_from(KINDS),
       alpha=st.sampled_from(["exact", "constant"]), eps=st.sampled_from([0.0, 1e-7]))
def test_native_is_the_long_double_kernel_bit_for_bit(seed, grid, scale, offset, kind, alpha, eps):
    """Values and all 8 VJP entries of 64 pairs equal the NumPy long double kernel's rounded to
    float64 (NaN where it is NaN): the same operations in the same order."""
    r = np.random.default_rng(seed)
    p, q = _grid_pairs(r, 64, scale, offset) if grid else _random_pairs(r, 64, offset)
    cot = r.normal(size=64)
    got, want = _native_paired(p, q, kind, eps, alpha, cot), _long_double_paired(p, q, kind, eps, alpha, cot)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_native_pairwise_value_is_the_long_double_kernel_bit_for_bit():
    r = rng_for("test_box_native", "pairwise", 0)
    p, q = _grid_pairs(r, 40, 0.5, 3.0)
    for kind in ("iou", "giou"):
        got = _mod().pairwise_value(torch.tensor(p), torch.tensor(q), KINDS.index(kind)).numpy()
        with np.errstate(all="ignore"):
            want = box_core.pair_kernel(np, p.astype(LD)[:, None], q.astype(LD)[None], kind, 0.0)[0]
        np.testing.assert_array_equal(got, want.astype(np.float64))


def _pairwise_terms(p, q, cot):
    """The per-pair VJP terms of the pairwise GIoU in long double: (N, M) arrays, box 1's 4 then box 2's."""
    with np.errstate(all="ignore"):
        return box_core.pair_kernel(np, p.astype(LD)[:, None], q.astype(LD)[None], "giou", 0.0,
                                    cot=cot.astype(LD), stacked=False)[1]


def _magnitudes(terms):
    """``Σ|t|`` over each VJP entry's terms: (N, 4) for box 1, (M, 4) for box 2."""
    return (np.stack([abs(t).sum(1) for t in terms[:4]], -1).astype(np.float64),
            np.stack([abs(t).sum(0) for t in terms[4:]], -1).astype(np.float64))


def _native_pairwise_grad(p, q, cot):
    g1, g2 = _mod().pairwise_grad(torch.tensor(p), torch.tensor(q), torch.tensor(cot), KINDS.index("giou"))
    return g1.numpy(), g2.numpy()


def _plain_pairwise_grad(p, q, cot):
    """The mutant: the same kernel in plain float64 (no guard bits), summed in float64."""
    d = box_core.pair_kernel(torch, torch.tensor(p)[:, None], torch.tensor(q)[None], "giou", 0.0,
                             cot=torch.tensor(cot), stacked=False)[1]
    return (torch.stack([t.sum(1) for t in d[:4]], -1).numpy(), torch.stack([t.sum(0) for t in d[4:]], -1).numpy())


def _pairwise_grad_errors(grad_fn, p, q, cot):
    """Each entry's error against the oracle in units of its bound ``½ulp(f) + 2^-56·Σ|t|`` (the
    terms ``t`` it sums: ≤ 2·2^-64·Σ|t| for Neumaier's sum in long double, γ_60 = 60·2^-64 of each
    term's magnitude for the kernel, well below 2^-56·Σ|t|, then one rounding to float64)."""
    want = reference.generalized_box_iou_grad(cot, p, q)
    terms = _pairwise_terms(p, q, cot)
    mags = _magnitudes(terms)
    worst = 0.0
    for got, exact, mag in zip(grad_fn(p, q, cot), (want["boxes1"], want["boxes2"]), mags):
        for i, k in np.ndindex(got.shape):
            f = exact[i, k]
            bound = 0.5 * np.spacing(abs(float(f))) + 2.0**-56 * mag[i, k]
            worst = max(worst, float(abs(got[i, k] - f)) / bound)
    return worst


def test_native_pairwise_gradient_sums_are_within_their_bound_and_the_plain_mutant_is_not():
    """16 × 16 pairs (touching, nested, disjoint; random-sign cotangent: the sums cancel): the native
    VJPs within the derived bound of the oracle's; the plain float64 kernel exceeds it."""
    r = rng_for("test_box_native", "pairwise-grad", 0)
    p, q = _grid_pairs(r, 16, 0.1, 1e4)
    cot = r.normal(size=(16, 16))
    assert _pairwise_grad_errors(_native_pairwise_grad, p, q, cot) <= 1.0
    assert _pairwise_grad_errors(_plain_pairwise_grad, p, q, cot) > 1.0


_BOX_IMPLS = [pytest.param(i, id=i.loss) for i in catalog.implementations() if i.ours and i.framework == "torch"
              and i.loss in LOSSES]


@pytest.fixture
def native_always(monkeypatch):
    """Every float64 CPU call through the C++ kernel, whatever its size (forked workers inherit it)."""
    monkeypatch.setattr(box_torch, "_COMPILE_MIN_PAIRS", 1)
    one = torch.zeros((1, 4), dtype=torch.float64)
    assert box_torch._native_module(one, one, 1) is not None


@pytest.mark.parametrize("impl", _BOX_IMPLS)
def test_native_conforms_on_the_catalogue(impl, native_always):
    """float64 through the C++ kernel on every catalogue case: faithful where well conditioned, stable everywhere."""
    report = catalog.run(impl, dtypes=["float64"])
    assert any(r.scored for r in report.results)
    bad = [f"{r.case} {r.quantity}: {r.verdict} {r.detail}" for r in report.results if r.verdict != "conforms"]
    assert not bad, "\n".join(bad[:10])
    failures = _per_element_failures(report)
    assert not failures, "\n".join(failures[:10])


@pytest.mark.parametrize("impl", _BOX_IMPLS)
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # a constant
@given(data=st.data())
def test_native_is_faithful_on_hypothesis_inputs(impl, native_always, data):
    spec = specs.get(impl.loss)
    case = data.draw(strategies.spec_cases(spec, data.draw(st.sampled_from(["half", "float32"]))))
    report = catalog.run(impl, cases=[case], dtypes=["float64"])
    failures = _per_element_failures(report)
    assert not failures, f"{case.inputs} {case.params}: " + "\n".join(failures[:5])


@pytest.mark.parametrize("loss", ["generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss"])
def test_losses_take_the_native_kernel_with_the_fallbacks_numbers(loss):
    """2^16 pairs, float64: ``mean`` and ``none`` values and gradients through the C++ kernel equal those
    with native kernels off (the NumPy long double kernel, and the bounded plain value for the mean)."""
    r = rng_for("test_box_native", loss, 0)
    n = box_torch._COMPILE_MIN_PAIRS
    p, q = _random_pairs(r, n, 0.0)
    cot = torch.tensor(r.normal(size=n))
    fn = getattr(torch_impl, loss)
    out = {}
    try:
        for on in (True, False):
            compiled.ENABLED["on"] = on
            for reduction in ("mean", "none"):
                t1, t2 = (torch.tensor(a, requires_grad=True) for a in (p, q))
                v = fn(t1, t2, reduction=reduction)
                v.backward(torch.ones(()) if reduction == "mean" else cot)
                out[on, reduction] = (v.detach(), t1.grad, t2.grad)
    finally:
        compiled.ENABLED["on"] = True
    for reduction in ("mean", "none"):
        for a, b in zip(out[True, reduction], out[False, reduction]):
            assert torch.equal(a, b)


def test_mixed_dtype_pairs_keep_the_fallback():
    """float64 boxes1 with float32 boxes2 (2^16 pairs): the C++ kernel reads two float64 tensors, so this
    takes the long double fallback — a value, not the kernel's dtype error — the same as with native off."""
    r = rng_for("test_box_native", "mixed", 0)
    n = box_torch._COMPILE_MIN_PAIRS
    p, q = _random_pairs(r, n, 0.0)
    b1, b2 = torch.tensor(p), torch.tensor(q).to(torch.float32)
    v = torch_impl.generalized_box_iou_loss(b1, b2, reduction="none")
    try:
        compiled.ENABLED["on"] = False
        assert torch.equal(v, torch_impl.generalized_box_iou_loss(b1, b2, reduction="none"))
    finally:
        compiled.ENABLED["on"] = True


def test_pairwise_giou_takes_the_native_kernel():
    """256 × 256 float64 boxes: values bit for bit the eager long double blocks'; gradients within
    the summation's bound of them (two orders of summing 256 long double terms: ≤ 2^-56·Σ|t| + ½ulp each)."""
    r = rng_for("test_box_native", "pairwise-dispatch", 0)
    p, q = _random_pairs(r, 256, 0.0)
    cot = torch.tensor(r.normal(size=(256, 256)))
    out = {}
    try:
        for on in (True, False):
            compiled.ENABLED["on"] = on
            t1, t2 = (torch.tensor(a, requires_grad=True) for a in (p, q))
            v = torch_impl.generalized_box_iou(t1, t2)
            v.backward(cot)
            out[on] = (v.detach(), t1.grad, t2.grad)
    finally:
        compiled.ENABLED["on"] = True
    assert torch.equal(out[True][0], out[False][0])
    mags = _magnitudes(_pairwise_terms(p, q, cot.numpy()))
    for k in (1, 2):
        a, b = out[True][k].numpy(), out[False][k].numpy()
        assert (np.abs(a - b) <= np.spacing(np.abs(b)) + 2.0**-55 * mags[k - 1]).all()
