"""Box IoU family: oracle properties and identities at high precision, the gradient convention at
kinks against one-sided differences, ours on bad input and on large far-from-origin float32
batches, and the third-party findings that matter."""

import mpmath
import numpy as np
import pytest
import torch
from mpmath import mpf

from lossoracle import reference
from lossoracle.floats import FORMATS, ulp_error
from lossoracle.implementations import numpy_impl, torch_impl
from lossoracle.mpfuncs import ORACLE_PREC, precision
from lossoracle.reference import box as ref_box
from lossoracle.strategies import rng_for

LOSSES = ("generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss")
PAIRWISE = ("box_iou", "generalized_box_iou")


def _a(rows):
    return np.asarray(rows, dtype=np.float64)


def _f(x):
    return [float(v) for v in np.asarray(x, dtype=object).reshape(-1)]


# ----------------------------------------------------------------------------------------------
# Oracle properties (exact or 192-bit)


B1 = _a([[0.0, 0.0, 4.0, 3.0], [1.0, 2.0, 3.5, 6.0], [-2.5, -1.0, 0.5, 0.25], [0.0, 0.0, 1.0, 1.0]])
B2 = _a([[1.0, 0.5, 5.0, 2.0], [0.0, 0.0, 2.0, 5.0], [-1.0, -2.0, 3.0, 1.0], [3.0, 2.0, 4.0, 5.0]])


@pytest.mark.parametrize("loss", LOSSES)
def test_identical_boxes_give_exactly_zero_at_eps_zero(loss):
    values = getattr(reference, loss)(B1, B1.copy(), eps=0.0)
    assert all(v == 0 for v in values)
    grads = getattr(reference, loss + "_grad")(np.ones(4), B1, B1.copy(), eps=0.0)
    assert all(v == 0 for g in grads.values() for v in g.reshape(-1)), "the mean of one-sided slopes is 0"


@pytest.mark.parametrize("loss", LOSSES)
def test_identical_boxes_give_eps_over_union_plus_eps(loss):
    """With ε > 0 the loss of identical boxes is ε/(A + ε) (ρ = 0, v = 0): 1.19e-7·… not 0."""
    eps = 1e-7
    with mpmath.workprec(ORACLE_PREC):
        want = [mpf(eps) / (mpf(w) * mpf(h) + mpf(eps)) for w, h in zip(B1[:, 2] - B1[:, 0], B1[:, 3] - B1[:, 1])]
    got = getattr(reference, loss)(B1, B1.copy(), eps=eps)
    assert all(abs(g - w) <= w * mpf(2) ** -180 for g, w in zip(got, want))


def test_giou_is_at_most_iou_and_both_are_symmetric():
    r = rng_for("test_box", "giou_le_iou")
    p, q = ref_box.random_pairs(r, 5, "float64")
    iou, giou = reference.box_iou(p, q), reference.generalized_box_iou(p, q)
    assert all(g <= i for g, i in zip(giou.reshape(-1), iou.reshape(-1)))
    assert all(-1 < g <= 1 for g in giou.reshape(-1))
    assert np.all(reference.box_iou(q, p).T == iou)
    assert np.all(reference.generalized_box_iou(q, p).T == giou)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("k", [-40, 37])
def test_scale_and_translation_invariance_at_eps_zero(loss, k):
    """Scaling every coordinate by 2^k (exact) leaves the loss unchanged and scales the gradient by 2^-k;
    a shift by an exact amount changes nothing."""
    base = getattr(reference, loss)(B1, B2, eps=0.0)
    scaled = getattr(reference, loss)(np.ldexp(B1, k), np.ldexp(B2, k), eps=0.0)
    shifted = getattr(reference, loss)(B1 + 1024.0, B2 + 1024.0, eps=0.0)
    assert all(abs(a - b) <= abs(a) * mpf(2) ** -180 for a, b in zip(base, scaled))
    assert all(abs(a - b) <= abs(a) * mpf(2) ** -180 for a, b in zip(base, shifted))
    g = getattr(reference, loss + "_grad")(np.ones(4), B1, B2, eps=0.0)["boxes1"].reshape(-1)
    gs = getattr(reference, loss + "_grad")(np.ones(4), np.ldexp(B1, k), np.ldexp(B2, k), eps=0.0)["boxes1"].reshape(-1)
    assert all(a == mpmath.ldexp(b, k) for a, b in zip(g, gs)), "exact numerators scale exactly"


def test_documented_values_where_a_denominator_vanishes():
    seg = _a([[0.0, 0.0, 4.0, 0.0]])
    other = _a([[1.0, 0.0, 3.0, 0.0]])
    for loss in LOSSES:
        assert mpmath.isnan(getattr(reference, loss)(seg, other, eps=0.0)[0]), "U = 0 at ε = 0: 0/0"
        assert getattr(reference, loss)(seg, other)[0] == 1, "ε > 0: 1 − 0/ε + 0 (same centre, same angle)"
    assert mpmath.isnan(reference.box_iou(seg, other)[0, 0])
    # torchvision#7746: identical segments give exactly 1 with ε > 0
    assert reference.generalized_box_iou_loss(seg, seg.copy())[0] == 1
    # a point box has no aspect angle: CIoU NaN, GIoU/DIoU defined with ε > 0
    point, box = _a([[1.0, 1.0, 1.0, 1.0]]), _a([[0.0, 0.0, 2.0, 2.0]])
    assert mpmath.isnan(reference.complete_box_iou_loss(point, box)[0])
    assert mpmath.isfinite(reference.distance_box_iou_loss(point, box)[0])


def test_ciou_equals_diou_where_aspect_ratios_agree():
    p, q = _a([[0.0, 0.0, 2.0, 1.0]]), _a([[1.0, 0.25, 5.0, 2.25]])  # both 2:1
    assert reference.complete_box_iou_loss(p, q)[0] == reference.distance_box_iou_loss(p, q)[0]
    gc = reference.complete_box_iou_loss_grad(np.ones(1), p, q)
    gd = reference.distance_box_iou_loss_grad(np.ones(1), p, q)
    for k in gc:  # v = 0 and ∂v = 0 (θ = 0): the α term contributes nothing
        assert all(a == b for a, b in zip(gc[k].reshape(-1), gd[k].reshape(-1)))


def _numeric_partial(fn, boxes, which, k, side, h_bits=110):
    """One-sided (side = ±1) or central (side = 0) difference of ``fn`` w.r.t. one coordinate."""
    h = mpf(2) ** -h_bits
    with precision(3 * ORACLE_PREC), mpmath.mp.workprec(3 * ORACLE_PREC):
        def at(t):
            arrs = [np.asarray(boxes[0], dtype=object).copy(), np.asarray(boxes[1], dtype=object).copy()]
            flat = arrs[which].reshape(-1)
            flat[k] = mpf(flat[k]) + t
            return fn(*arrs)
        if side == 0:
            return (at(h) - at(-h)) / (2 * h)
        return side * (at(side * h) - at(mpf(0))) / h


def _loss_sum(loss, **kw):
    return lambda b1, b2: mpmath.fsum(getattr(reference, loss)(b1, b2, reduction="none", **kw))


@pytest.mark.parametrize(("loss", "alpha"),
                         [(loss, "exact") for loss in LOSSES] + [("complete_box_iou_loss", "constant")])
def test_oracle_gradient_matches_central_differences_away_from_kinks(loss, alpha):
    kw = {"alpha": alpha} if loss == "complete_box_iou_loss" else {}
    p, q = B1[:3], B2[:3]
    grads = getattr(reference, loss + "_grad")(np.ones(3), p, q, **kw)
    for which, name in enumerate(("boxes1", "boxes2")):
        for k in range(12):
            want = grads[name].reshape(-1)[k]
            if alpha == "constant":  # the oracle's gradient treats α as a constant: compare to α-frozen
                continue
            num = _numeric_partial(_loss_sum(loss), (p, q), which, k, 0)
            with mpmath.workprec(3 * ORACLE_PREC):
                assert abs(num - want) <= max(abs(want), mpf(1)) * mpf(2) ** -90, (name, k, num, want)
    if alpha == "constant":  # exact − constant = α²·(v-part + (1 − IoU)-part): they differ off v = 0
        exact = getattr(reference, loss + "_grad")(np.ones(3), p, q)
        assert any(a != b for a, b in zip(exact["boxes1"].reshape(-1), grads["boxes1"].reshape(-1)))


KINKS = {
    "touching_edge": (_a([[0.0, 0.0, 1.0, 1.0]]), _a([[1.0, 0.25, 2.0, 1.5]])),
    "touching_corner": (_a([[0.0, 0.0, 1.0, 1.0]]), _a([[1.0, 1.0, 2.0, 2.0]])),
    "shared_coordinate": (_a([[0.0, 0.0, 4.0, 3.0]]), _a([[0.0, 1.0, 2.0, 5.0]])),
    "identical": (_a([[0.0, 0.0, 4.0, 3.0]]), _a([[0.0, 0.0, 4.0, 3.0]])),
}


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("kink", sorted(KINKS))
def test_gradient_at_a_kink_is_the_mean_of_the_one_sided_derivatives(loss, kink):
    """The convention: at a tie each partial is the mean of its right and left derivatives."""
    p, q = KINKS[kink]
    grads = getattr(reference, loss + "_grad")(np.ones(1), p, q)
    for which, name in enumerate(("boxes1", "boxes2")):
        for k in range(4):
            right = _numeric_partial(_loss_sum(loss), (p, q), which, k, 1)
            left = _numeric_partial(_loss_sum(loss), (p, q), which, k, -1)
            want = grads[name].reshape(-1)[k]
            with mpmath.workprec(3 * ORACLE_PREC):
                assert abs((right + left) / 2 - want) <= mpf(2) ** -80, (name, k, right, left, want)


def test_zero_width_box_takes_the_feasible_side():
    """x2 of a zero-width box cannot decrease: its partial is the right derivative alone."""
    p, q = _a([[1.0, 0.0, 1.0, 2.0]]), _a([[0.0, 0.5, 3.0, 3.0]])
    g = reference.generalized_box_iou_loss_grad(np.ones(1), p, q)["boxes1"].reshape(-1)
    right = _numeric_partial(_loss_sum("generalized_box_iou_loss"), (p, q), 0, 2, 1)
    with mpmath.workprec(3 * ORACLE_PREC):
        assert abs(g[2] - right) <= mpf(2) ** -80


def test_ciou_constant_alpha_matches_torchvision_in_float64():
    """torchvision's CIoU (α under no_grad, IoU and distance with ε = 1e-7) is the oracle under its
    two conventions, to float64 accuracy, on smooth cases."""
    from torchvision.ops import complete_box_iou_loss

    t1, t2 = torch.tensor(B1, requires_grad=True), torch.tensor(B2, requires_grad=True)
    out = complete_box_iou_loss(t1, t2, eps=1e-3)
    out.backward(torch.ones(4, dtype=torch.float64))
    kw = {"eps": 1e-3, "alpha": "constant", "iou_eps": 1e-7}
    want = reference.complete_box_iou_loss(B1, B2, **kw)
    g = reference.complete_box_iou_loss_grad(np.ones(4), B1, B2, **kw)
    assert np.allclose(out.detach().numpy(), _f(want), rtol=1e-13, atol=0)
    assert np.allclose(t1.grad.numpy(), np.asarray(_f(g["boxes1"])).reshape(4, 4), rtol=1e-10, atol=1e-13)
    # and without the conventions it is not the spec's loss: eps enters only α's denominator
    assert abs(float(out[0].detach()) - float(reference.complete_box_iou_loss(B1, B2, eps=1e-3)[0])) > 1e-5


# ----------------------------------------------------------------------------------------------
# Ours


BAD = [
    ("boxes1", _a([[0.0, 0.0, -1.0, 1.0]]), _a([[0.0, 0.0, 1.0, 1.0]]), "x1 <= x2"),
    ("boxes2", _a([[0.0, 0.0, 1.0, 1.0]]), _a([[0.0, 2.0, 1.0, 1.0]]), "x1 <= x2"),
    ("boxes1", _a([[0.0, 0.0, 1.0]]), _a([[0.0, 0.0, 1.0]]), "last dimension of 4"),
    ("boxes1", _a([[0.0, np.nan, 1.0, 1.0]]), _a([[0.0, 0.0, 1.0, 1.0]]), "finite"),
    ("boxes2", _a([[0.0, 0.0, 1.0, 1.0]]), _a([[0.0, 0.0, np.inf, 1.0]]), "finite"),
]


@pytest.mark.parametrize("framework", ["numpy", "torch"])
@pytest.mark.parametrize("loss", LOSSES + PAIRWISE)
@pytest.mark.parametrize("bad", range(len(BAD)))
def test_ours_reject_bad_boxes_naming_the_argument(framework, loss, bad):
    name, p, q, phrase = BAD[bad]
    mod = numpy_impl if framework == "numpy" else torch_impl
    args = (p, q) if framework == "numpy" else (torch.tensor(p), torch.tensor(q))
    with pytest.raises(ValueError, match=name) as e:
        getattr(mod, loss)(*args)
    assert phrase in str(e.value)


@pytest.mark.parametrize("framework", ["numpy", "torch"])
def test_ours_reject_mismatched_pairs_and_integers(framework):
    mod = numpy_impl if framework == "numpy" else torch_impl
    conv = (lambda a: a) if framework == "numpy" else torch.tensor
    with pytest.raises(ValueError, match="boxes1 shape .* does not match boxes2"):
        mod.generalized_box_iou_loss(conv(B1), conv(B2[:3]))
    with pytest.raises(ValueError, match=r"boxes1 must have shape \(N, 4\)"):
        mod.box_iou(conv(B1[0]), conv(B2))
    with pytest.raises(TypeError, match="boxes1 must be a floating-point"):
        mod.distance_box_iou_loss(conv(B1.astype(np.int64)), conv(B2))
    with pytest.raises(ValueError, match="eps"):
        mod.complete_box_iou_loss(conv(B1), conv(B2), eps=-1.0)


def _far_batch(n=256):
    """float32 boxes offset by 1e6–1e7 with fractional coordinates (sizes 0.5–64)."""
    r = rng_for("test_box", "far", n)
    off = r.uniform(1e6, 1e7, (n, 1))
    p, q = ref_box.random_pairs(r, n, "float64", spread=32.0)
    return ((p + off).astype(np.float32).astype(np.float64), (q + off).astype(np.float32).astype(np.float64))


@pytest.mark.parametrize("loss", ["distance_box_iou_loss", "complete_box_iou_loss"])
def test_ours_are_correctly_rounded_far_from_the_origin_in_float32(loss):
    """Centres, areas and centre distances of boxes at 1e6–1e7 in float32: ours (float64 inside,
    coordinate differences first) stay within 1 ULP where a float32 evaluation loses digits."""
    p, q = _far_batch()
    keep = np.array([(a[2] > a[0]) and (a[3] > a[1]) and (b[2] > b[0]) and (b[3] > b[1]) for a, b in zip(p, q)])
    p, q = p[keep], q[keep]
    want = getattr(reference, loss)(p, q)
    f32 = FORMATS["float32"]
    got_np = getattr(numpy_impl, loss)(p.astype(np.float32), q.astype(np.float32))
    got_t = getattr(torch_impl, loss)(torch.tensor(p, dtype=torch.float32), torch.tensor(q, dtype=torch.float32))
    assert max(ulp_error(float(g), w, f32) for g, w in zip(got_np, want)) <= 1.0
    assert max(ulp_error(float(g), w, f32) for g, w in zip(got_t.numpy(), want)) <= 1.0


def test_ours_float64_huge_and_tiny_boxes_do_not_overflow():
    """Products of four coordinates: 1e200 boxes overflow float64 but not long double."""
    p, q = _a([[0.0, 0.0, 1e200, 2e200]]), _a([[5e199, 1e200, 1.5e200, 3e200]])
    want = float(reference.generalized_box_iou_loss(p, q, eps=0.0)[0])
    assert numpy_impl.generalized_box_iou_loss(p, q, eps=0.0)[0] == pytest.approx(want, rel=1e-15)
    g = numpy_impl.generalized_box_iou_loss_grad(np.ones(1), p, q, eps=0.0)["boxes1"]
    assert np.all(np.isfinite(g)) and np.any(g != 0)


def test_ours_gradient_at_identical_boxes_is_the_spec_value():
    """The tie rule, in ours: identical boxes, ε = 1e-7, gradient −h·ε/(2(A + ε)²) on x2."""
    p = _a([[0.0, 0.0, 4.0, 3.0]])
    want = reference.generalized_box_iou_loss_grad(np.ones(1), p, p.copy())["boxes1"].reshape(-1)
    got = numpy_impl.generalized_box_iou_loss_grad(np.ones(1), p, p.copy())["boxes1"].reshape(-1)
    t = torch.tensor(p, requires_grad=True)
    torch_impl.generalized_box_iou_loss(t, torch.tensor(p)).sum().backward()
    for g in (got, t.grad.numpy().reshape(-1)):
        assert all(ulp_error(float(a), w, FORMATS["float64"]) <= 1 for a, w in zip(g, want))


def _grid_boxes(r, n):
    """Boxes on a coarse grid: touching edges, shared coordinates, identical boxes, zero widths and heights."""
    lo = r.integers(0, 8, (n, 2)).astype(np.float64)
    size = r.integers(0, 4, (n, 2)).astype(np.float64)
    return np.concatenate([lo, lo + size], axis=1) * 0.75


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_ours_pairwise_iou_computes_every_pair_that_is_not_exactly_zero(dtype):
    """The pairwise IoU runs its kernel on the live pairs only (overlapping or touching in both axes, two
    zero-area boxes, a non-finite cotangent): it must equal the kernel run on every pair — touching
    edges keep their one-sided mean slopes, 0/0 its NaN, a NaN or inf cotangent its NaN."""
    from lossoracle.implementations import box_core

    r = rng_for("test_box", "pairwise_live", dtype)
    b1, b2 = _grid_boxes(r, 23), _grid_boxes(r, 17)
    b1[0], b2[0] = [1.5, 1.5, 1.5, 3.0], [4.5, 0.0, 4.5, 0.75]  # two disjoint zero-area boxes: NaN
    cot = r.standard_normal((23, 17))
    cot[3, 4], cot[5, 6] = np.inf, np.nan
    dt = getattr(torch, dtype)
    t1, t2 = torch.tensor(b1, dtype=dt, requires_grad=True), torch.tensor(b2, dtype=dt, requires_grad=True)
    value = torch_impl.box_iou(t1, t2)
    value.backward(torch.tensor(cot, dtype=dt))
    wide = np.longdouble if dtype == "float64" else np.float64
    p, q = t1.detach().numpy().astype(wide), t2.detach().numpy().astype(wide)
    c = torch.tensor(cot, dtype=dt).numpy().astype(wide)
    with np.errstate(all="ignore"):
        v, (g1, g2) = box_core.pair_kernel(np, p[:, None, :], q[None, :, :], "iou", 0.0, cot=c)
    assert np.isnan(v[0, 0]) and (v == 0).mean() > 0.3, "the draw exercises NaN and dead pairs"
    assert np.array_equal(value.detach().numpy(), v.astype(dtype), equal_nan=True)
    for got, want in ((t1.grad, g1.sum(axis=1)), (t2.grad, g2.sum(axis=0))):
        assert _within_one_ulp(got.numpy(), want.astype(dtype)), "≤ 1 ULP apart (sums in another order)"


def _within_one_ulp(got: np.ndarray, want: np.ndarray) -> bool:
    """Equal (NaN to NaN, inf to inf) or one ULP of ``want``'s format apart."""
    with np.errstate(all="ignore"):
        near = np.abs(got - want) <= np.spacing(np.abs(want))
    return bool(np.all((got == want) | (np.isnan(got) & np.isnan(want)) | near))


@pytest.mark.slow
def test_fused_pairwise_giou_matches_the_eager_blocks(monkeypatch):
    """The torch.compile path of the pairwise GIoU (narrow CPU boxes) computes what the eager row blocks
    compute: the same float64 arithmetic per pair, sums in another order (≤ 1 float32 ULP apart)."""
    from lossoracle.implementations import box_torch, compiled

    monkeypatch.setattr(box_torch, "_COMPILE_MIN_PAIRS", 1 << 8)
    monkeypatch.setattr(box_torch, "_BLOCK", 1 << 7)  # several row blocks
    r = rng_for("test_box", "pairwise_fused")
    b1, b2 = _grid_boxes(r, 40), _grid_boxes(r, 31)
    cot = torch.tensor(r.standard_normal((40, 31)), dtype=torch.float32)
    out = {}
    for on in (False, True):
        monkeypatch.setitem(compiled.ENABLED, "on", on)
        t1 = torch.tensor(b1, dtype=torch.float32, requires_grad=True)
        t2 = torch.tensor(b2, dtype=torch.float32, requires_grad=True)
        v = torch_impl.generalized_box_iou(t1, t2)
        v.backward(cot)
        out[on] = (v.detach(), t1.grad, t2.grad)
    assert box_torch._PAIRWISE.compiled, "the fused kernel was not used"
    (v0, a0, b0), (v1, a1, b1_) = out[False], out[True]
    assert v0.isnan().any() and np.array_equal(v0.numpy(), v1.numpy(), equal_nan=True)
    assert _within_one_ulp(a1.numpy(), a0.numpy()) and _within_one_ulp(b1_.numpy(), b0.numpy())
    want = numpy_impl.generalized_box_iou(b1.astype(np.float32), b2.astype(np.float32))
    assert np.array_equal(v1.numpy(), want, equal_nan=True)
