"""Running error bounds of the float64 box kernels (:mod:`lossoracle.implementations.box_bounds`)
and the reduced float64 losses whose value uses them (``box_torch._PlainBoxFn``): the bounds hold
against the oracle (values and gradients), they bite (a bound without rounding terms is violated),
a value they accept is within the faithful budget, one they reject is recomputed with guard bits."""

import numpy as np
import pytest
import torch

from lossoracle import reference, specs
from lossoracle.implementations import box_bounds, box_core, box_torch, torch_impl
from lossoracle.strategies import rng_for

KINDS = (("giou_loss", "generalized_box_iou_loss", "exact"), ("diou_loss", "distance_box_iou_loss", "exact"),
         ("ciou_loss", "complete_box_iou_loss", "exact"), ("ciou_loss", "complete_box_iou_loss", "constant"))


def _pairs(n: int, seed: str, far: float = 0.0):
    """Nearby pairs (the regression regime) with sizes over eight decades, optionally far from the origin."""
    r = rng_for("test_box_bounds", seed, n)
    c = r.uniform(0, 1000, (n, 2)) + far
    s = np.exp(r.normal(0, 3, (n, 2)))
    c2 = c + r.normal(0, 1, (n, 2)) * s * r.uniform(0, 1, (n, 1))
    s2 = s * np.exp(r.normal(0, 0.3, (n, 2)))
    return np.concatenate([c - s, c + s], 1), np.concatenate([c2 - s2, c2 + s2], 1)


def _tracked(kind, alpha, p, q, cot=None):
    ns = box_bounds.Namespace()
    out = box_core.pair_kernel(ns, ns.exact(torch.tensor(p)), ns.exact(torch.tensor(q)), kind, 1e-7, alpha,
                               cot=None if cot is None else torch.tensor(cot), stacked=False)
    return out, ns.unsure


@pytest.mark.parametrize(("kind", "loss", "alpha"), KINDS)
@pytest.mark.parametrize("far", [0.0, 1e6])
def test_running_bounds_hold_against_the_oracle(kind, loss, alpha, far):
    """``|v − f| ≤ e`` for the value and all 8 gradient elements of every pair, ``f`` the oracle's."""
    p, q = _pairs(12, f"{kind}{alpha}{far}", far)
    cot = np.linspace(0.5, 2.0, 12)
    (v, _), unsure = _tracked(kind, alpha, p, q)
    (_, g), unsure_g = _tracked(kind, alpha, p, q, cot)
    fn = getattr(reference, loss)
    grad = getattr(reference, loss + "_grad")
    kw = {"alpha": alpha} if loss == "complete_box_iou_loss" else {}
    want_v = np.asarray(fn(p, q, eps=1e-7, **kw), dtype=object)
    want_g = grad(cot, p, q, eps=1e-7, **kw)
    sure = ~(unsure if isinstance(unsure, torch.Tensor) else torch.zeros(12, dtype=torch.bool))
    assert sure.all(), "no branch is in doubt for these pairs"
    for i in range(12):
        assert abs(v.v[i].item() - want_v[i]) <= v.e[i].item() * box_bounds.SLACK
        for k in range(8):
            exact = (want_g["boxes1"] if k < 4 else want_g["boxes2"])[i][k % 4]
            assert abs(g[k].v[i].item() - exact) <= g[k].e[i].item() * box_bounds.SLACK


def test_running_bounds_bite(monkeypatch):
    """Without the rounding terms (u = 0) the bounds are violated: the test above can fail."""
    monkeypatch.setattr(box_bounds, "U", 0.0)
    p, q = _pairs(12, "bite")
    (v, _), _ = _tracked("giou_loss", "exact", p, q)
    want = np.asarray(reference.generalized_box_iou_loss(p, q, eps=1e-7), dtype=object)
    assert any(abs(v.v[i].item() - want[i]) > v.e[i].item() for i in range(12))


def test_an_unsure_branch_fails_the_element():
    """DIoU's ``Δc ≥ 0`` branch on a centre difference the bound cannot sign: the pair is flagged."""
    p = np.array([[0.1, 0.0, 0.3, 1.0]])
    q = np.array([[0.0, 0.0, 0.4, 1.0]])  # Δcx = ((0.1 − 0) + (0.3 − 0.4))/2: 0 exactly, rounded ≠ 0
    (_, g), unsure = _tracked("diou_loss", "exact", p, q, np.ones(1))
    assert isinstance(unsure, torch.Tensor) and bool(unsure[0])
    assert not bool(box_bounds.passes(g[0], 1e9, unsure)[0])


def _eager_kernel(monkeypatch, min_pairs):
    """The tracked value kernel run eagerly (no compilation in a test) from ``min_pairs`` pairs, as it
    runs where the C++ kernel is not available (tests/test_box_native.py tests that one)."""
    monkeypatch.setattr(box_torch, "_COMPILE_MIN_PAIRS", min_pairs)
    monkeypatch.setattr(box_torch, "_native_module", lambda b1, b2, pairs: None)
    monkeypatch.setattr(box_torch, "_TRACKED_VALUE", lambda variant, *a: box_torch._tracked_value_kernel(*a))


_KIND = {"generalized_box_iou_loss": "giou_loss", "distance_box_iou_loss": "diou_loss",
         "complete_box_iou_loss": "ciou_loss"}


def _guarded(loss, p, q, reduction):
    """Ours through the guarded (long double) path alone."""
    t1, t2 = (torch.tensor(a, requires_grad=True) for a in (p, q))
    out = box_torch._reduce(box_torch._BoxFn.apply(t1, t2, _KIND[loss], 1e-7, "exact", None), reduction)
    out.backward()
    return out.detach(), t1.grad, t2.grad


@pytest.mark.parametrize(("loss", "reduction"), [("generalized_box_iou_loss", "mean"),
                                                  ("distance_box_iou_loss", "sum")])
def test_plain_value_is_within_budget_and_gradients_are_the_guarded_ones(monkeypatch, loss, reduction):
    """n = 150,000 pairs: the reduced value from the tracked kernel (its bound, ~17u, passes 2 + log2 n ≈ 19.2 ULP)
    within that budget of the guarded path's; the gradients are the guarded path's, bit for bit. (CIoU's
    bounds, ~18u, pass from about 2^18 pairs: too many for a test; its bounds are checked above.)"""
    _eager_kernel(monkeypatch, 64)
    n = 150_000
    p, q = _pairs(n, f"plain{loss}")
    t1, t2 = (torch.tensor(a, requires_grad=True) for a in (p, q))
    assert box_torch._plain_reduced(t1.detach(), t2.detach(), _KIND[loss], 1e-7, "exact", None, reduction) is not None
    out = getattr(torch_impl, loss)(t1, t2, reduction=reduction)
    assert "PlainBoxFn" in type(out.grad_fn).__name__
    out.backward()
    v0, a0, b0 = _guarded(loss, p, q, reduction)
    # the guarded value is within 0.5 ULP + a few 2^-64 of the exact one: budget + 1 between the two
    budget = specs.get(loss).budget.faithful("value", "float64", n) + 1
    assert abs(out.item() - v0.item()) <= budget * np.spacing(abs(v0.item()))
    assert torch.equal(t1.grad, a0) and torch.equal(t2.grad, b0)


@pytest.mark.parametrize("n", [100, 150_000])
def test_reduced_value_falls_back_where_its_bound_fails(monkeypatch, n):
    """A NaN pair (two zero-area boxes at eps = 0) has no bound, and 100 pairs allow 2 + log2 100 ≈ 8.6
    ULP, below the ~17u the bounds prove: the value is recomputed with guard bits, the guarded
    path's exactly. An unreduced loss never takes the plain path."""
    _eager_kernel(monkeypatch, 64)
    p, q = _pairs(n, "fallback")
    if n > 100:
        p[7] = q[7] = [1.0, 1.0, 1.0, 1.0]
    eps = 0.0 if n > 100 else 1e-7
    t1, t2 = torch.tensor(p), torch.tensor(q)
    assert box_torch._plain_reduced(t1, t2, "giou_loss", eps, "exact", None, "mean") is None
    got = torch_impl.generalized_box_iou_loss(t1, t2, reduction="mean", eps=eps)
    want = box_torch._reduce(box_torch._BoxFn.apply(t1, t2, "giou_loss", eps, "exact", None), "mean")
    assert torch.equal(got, want) or (got.isnan() and want.isnan())
    assert bool(got.isnan()) == (n > 100)
    none = torch_impl.generalized_box_iou_loss(t1.requires_grad_(), t2, reduction="none")
    assert "PlainBoxFn" not in type(none.grad_fn).__name__
