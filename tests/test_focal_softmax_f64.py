"""float64 softmax focal loss through plain float64 with a per-row bound (``focal_softmax_f64``):
faithful against the oracle, the double-double rows engaged exactly where the bound fails."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lossoracle import reference, specs
from lossoracle.floats import FORMATS, ulp_error
from lossoracle.implementations import compiled, focal_softmax_f64, focal_torch

F64 = FORMATS["float64"]
BUDGET = specs.get("softmax_focal_loss").budget


def _worst(got: torch.Tensor, want) -> float:
    want = np.asarray(want, dtype=object).reshape(-1)
    return max(ulp_error(float(g), w, F64) for g, w in zip(got.detach().reshape(-1).tolist(), want))


@pytest.fixture
def redone(monkeypatch):
    """The rows each call sends to double-double: ``{"r": [...], "rows": [...]}`` — the row sums alone
    (``_dd_r``) or the whole row (``_dd_rows``), one list of input rows per call."""
    seen: dict[str, list[list[list[float]]]] = {"r": [], "rows": []}
    for key, name in (("r", "_dd_r"), ("rows", "_dd_rows")):
        real = getattr(focal_softmax_f64, name)

        def spy(x, *args, _real=real, _key=key):
            seen[_key].append(x.tolist())
            return _real(x, *args)

        monkeypatch.setattr(focal_softmax_f64, name, spy)
    return seen


def _count(calls) -> int:
    return sum(len(c) for c in calls)


def _flat(calls) -> list[list[float]]:
    return [r for c in calls for r in c]


def _run(x, t, cot, **kw):
    xi = x.clone().requires_grad_()
    v = focal_torch.softmax_focal_loss(xi, t, **kw)
    (v * cot).sum().backward()
    return v.detach(), xi.grad


@pytest.mark.parametrize("compile_on", [pytest.param(True, marks=pytest.mark.slow), False])
def test_exp_of_zero_is_one_eager_and_compiled(monkeypatch, compile_on):
    """The bound takes the maxima's ``e_j = exp(0)·(1 + 0)`` as exactly 1 (vector loops and their tails)."""
    monkeypatch.setattr(focal_softmax_f64, "_COMPILE_MIN_NUMEL", 1)
    monkeypatch.setitem(compiled.ENABLED, "on", compile_on)
    for C in (1, 3, 8, 37, 1000):
        x = torch.full((5, C), 2.5, dtype=torch.float64)
        m, mn, Q, R, e, _ = focal_softmax_f64._row_sums(x)
        assert bool((e == 1.0).all()) and bool((Q + R == C).all())
        assert bool((torch.exp(torch.zeros(C, dtype=torch.float64)) == 1.0).all())


@pytest.mark.parametrize("compile_on", [pytest.param(True, marks=pytest.mark.slow), False])
def test_corrected_exponentials_are_within_three_units_of_the_exact_ones(monkeypatch, compile_on):
    """``e_j = exp(h_j)(1 + l_j)`` within ``ε = 3u`` of ``e^{x_j − m}`` (mpmath), eager and compiled, on
    rows whose maximum 700.3 makes ``x_j − m`` inexact by up to 2^-44 — without the 2Sum correction (an
    optimiser folding it away) the error would be about 2^-45 relative, 2^8 times ε."""
    import mpmath

    monkeypatch.setattr(focal_softmax_f64, "_COMPILE_MIN_NUMEL", 1)
    monkeypatch.setitem(compiled.ENABLED, "on", compile_on)
    g = torch.Generator().manual_seed(4)
    x = torch.rand(6, 50, generator=g, dtype=torch.float64) * 3 - 1.5
    x[:, 0] = 700.3
    m, mn, Q, R, e, b = focal_softmax_f64._row_sums(x)
    assert not compile_on or focal_softmax_f64._KERNEL.variants
    worst = 0.0
    with mpmath.workprec(200):
        for i in range(6):
            for j in range(50):
                want = mpmath.exp(mpmath.mpf(float(x[i, j])) - mpmath.mpf(float(m[i])))
                worst = max(worst, float(abs(mpmath.mpf(float(e[i, j])) - want) / want))
            T = mpmath.fsum(mpmath.mpf(float(v)) for v in e[i].tolist())
            assert abs(mpmath.mpf(float(Q[i])) + mpmath.mpf(float(R[i])) - T) <= b
    assert worst <= focal_softmax_f64.EPS_E


@pytest.mark.parametrize("compile_on", [pytest.param(True, marks=pytest.mark.slow), False])
@pytest.mark.parametrize("reduction,gamma", [("mean", 2.0), ("sum", 0.5), ("mean", 5.0)])
def test_random_rows_take_the_plain_path_and_are_faithful(monkeypatch, redone, compile_on, reduction, gamma):
    """Logits 3·N(0, 1), a tenth of the targets the row maximum, some ignored, per-class α: most rows
    plain, every value and gradient element within the faithful budget of the oracle."""
    monkeypatch.setattr(focal_softmax_f64, "_COMPILE_MIN_NUMEL", 1 << 10)
    monkeypatch.setitem(compiled.ENABLED, "on", compile_on)
    g = torch.Generator().manual_seed(11)
    N, C = 128, 16
    x = torch.randn(N, C, generator=g, dtype=torch.float64) * 3
    t = torch.randint(0, C, (N,), generator=g)
    t[::10] = x[::10].argmax(-1)
    t[5::17] = -100
    alpha = torch.rand(C, generator=g, dtype=torch.float64)
    v, gx = _run(x, t, 0.7, alpha=alpha, gamma=gamma, reduction=reduction)
    assert not compile_on or focal_softmax_f64._KERNEL.variants
    assert _count(redone["rows"]) == 0 and _count(redone["r"]) <= N // 2  # the plain exponentials serve every row
    kw = dict(alpha=alpha.numpy(), gamma=gamma, reduction=reduction)
    want_v = reference.softmax_focal_loss(x.numpy(), t.numpy(), **kw)
    want_g = reference.softmax_focal_loss_grad(0.7, x.numpy(), t.numpy(), **kw)["input"]
    assert _worst(v, want_v) <= BUDGET.faithful("value", "float64", N)
    assert _worst(gx, want_g) <= BUDGET.faithful("grad", "float64", N)


def _hard_rows(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose target is the maximum and whose other exponentials sum to one dominant
    ``e^{−d}``, ``d ∈ (4, 24)``: ``ℓ ≈ r^{γ+1}``, so ``r``'s rounding is amplified γ + 1 times."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((n, 8), -80.0, dtype=torch.float64)
    x[:, 0] = 0.0
    x[:, 1] = -(4 + 20 * torch.rand(n, generator=g, dtype=torch.float64))
    return x, torch.zeros(n, dtype=torch.int64)


def test_the_bound_is_what_keeps_amplified_rows_faithful(monkeypatch, redone):
    """``reduction='none'`` values (budget 2 ULP) with γ = 5 on rows of :func:`_hard_rows`: with the
    budget test disabled the plain path is beyond 2 ULP somewhere (the fallback is needed); with it,
    every such row takes its ``r`` in double-double and every value is within budget."""
    x, t = _hard_rows(300, 3)
    want = reference.softmax_focal_loss(x.numpy(), t.numpy(), gamma=5.0, reduction="none")
    with torch.no_grad():
        v = focal_torch.softmax_focal_loss(x, t, gamma=5.0, reduction="none")
    assert _count(redone["r"]) == x.shape[0] and _count(redone["rows"]) == 0
    assert _worst(v, want) <= BUDGET.faithful("value", "float64")
    monkeypatch.setattr(focal_softmax_f64, "_budget", lambda q, n: 1e30)
    with torch.no_grad():
        plain = focal_torch.softmax_focal_loss(x, t, gamma=5.0, reduction="none")
    assert _worst(plain, want) > BUDGET.faithful("value", "float64")


@pytest.mark.parametrize("compile_on", [pytest.param(True, marks=pytest.mark.slow), False])
def test_rows_beyond_the_bound_fall_back_and_stay_faithful(monkeypatch, redone, compile_on):
    """A mean with gradients: a row whose plain bound fails (target the maximum, ``r`` ≈ 1e-12, γ = 5)
    takes ``r`` in double-double; a row whose ``r`` ≈ 1e-78 is too small even for that, and one whose
    logits spread beyond 700 (subnormal exponentials) are computed wholly in double-double; all faithful."""
    monkeypatch.setattr(focal_softmax_f64, "_COMPILE_MIN_NUMEL", 1 << 8)
    monkeypatch.setitem(compiled.ENABLED, "on", compile_on)
    g = torch.Generator().manual_seed(5)
    N, C = 64, 12
    x = torch.randn(N, C, generator=g, dtype=torch.float64) * 3
    t = torch.randint(0, C, (N,), generator=g)
    x[0], t[0] = -30.0, 2
    x[0, 2] = 0.0
    x[1, 4] = -750.0
    x[2], t[2] = -180.0, 7
    x[2, 7] = 0.0
    v, gx = _run(x, t, 1.3, gamma=5.0, reduction="mean")
    assert x[0].tolist() in _flat(redone["r"]) and x[0].tolist() not in _flat(redone["rows"])
    assert x[1].tolist() in _flat(redone["rows"]) and x[2].tolist() in _flat(redone["rows"])
    assert _count(redone["rows"]) == 4  # rows 1 and 2, forward (value) and backward (gradient)
    want_v = reference.softmax_focal_loss(x.numpy(), t.numpy(), gamma=5.0)
    want_g = reference.softmax_focal_loss_grad(1.3, x.numpy(), t.numpy(), gamma=5.0)["input"]
    assert _worst(v, want_v) <= BUDGET.faithful("value", "float64", N)
    assert _worst(gx, want_g) <= BUDGET.faithful("grad", "float64", N)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "all"])
def test_non_finite_rows_fall_back(redone, bad):
    """A NaN or +inf logit (NaN loss and row gradient), −inf (a zero probability), or every logit −inf
    (NaN) takes the double-double rows, as before; the other rows' gradients stay finite."""
    g = torch.Generator().manual_seed(9)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    t = torch.randint(0, 6, (40,), generator=g)
    t[3] = 1
    if bad == "all":
        x[3] = -math.inf
    else:
        x[3, 0] = bad
    v, gx = _run(x, t, 1.0, gamma=2.0, reduction="sum")
    assert [len(c) for c in redone["rows"]] == [1, 1]  # the forward's value, the backward's gradient
    want_v = reference.softmax_focal_loss(x.numpy(), t.numpy(), gamma=2.0, reduction="sum")
    want_g = reference.softmax_focal_loss_grad(1.0, x.numpy(), t.numpy(), gamma=2.0, reduction="sum")["input"]
    assert _worst(v, want_v) <= BUDGET.faithful("value", "float64", 40)
    assert _worst(gx, want_g) <= BUDGET.faithful("grad", "float64", 40)


def test_row_bounds_are_the_same_in_torch_and_numpy():
    """The per-row work runs in NumPy for CPU tensors and in torch elsewhere (CUDA): the same bits,
    the same decisions (run here on CPU tensors through the torch branch)."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 30, generator=g, dtype=torch.float64) * 3
    x[:3, 0] = torch.tensor([math.nan, math.inf, 900.0], dtype=torch.float64)
    t = torch.randint(0, 30, (200,), generator=g)
    t[::7] = x[::7].argmax(-1)
    alpha_y = torch.rand(200, generator=g, dtype=torch.float64)
    alpha_y[5] = 0.0
    m, mn, Q, R, e, b = focal_softmax_f64._row_sums(x)
    x_y = x.gather(-1, t[:, None])[:, 0]
    ok = torch.isfinite(m) & (mn - m >= focal_softmax_f64.D_MIN)
    r = focal_softmax_f64.dd.two_sum(Q - 1.0, R)
    args = (r, r[0].abs() * focal_softmax_f64.EPS_E + b, focal_softmax_f64.dd.two_sum(x_y, -m), x_y == m, ok,
            alpha_y, 2.0, True, 6 * focal_softmax_f64.U, 9 * focal_softmax_f64.U)
    on_host = focal_softmax_f64._bounded_rows(*args)
    in_torch = focal_softmax_f64._bounded(*args)
    assert 0 < int(on_host.ok_g.sum()) < 200 and 0 < int(on_host.ok_v.sum()) < 200
    for p, q in zip(focal_softmax_f64._host(tuple(on_host)), focal_softmax_f64._host(tuple(in_torch))):
        for u, v in zip(p if isinstance(p, tuple) else (p,), q if isinstance(q, tuple) else (q,)):
            assert np.array_equal(u, v, equal_nan=True)


def test_values_without_gradients_are_plain_and_within_two_ulp(redone):
    """``reduction='none'`` without gradients (2 ULP per row): random rows keep the plain row sums where
    the bound allows, the others take them from double-double; every value within 2 ULP of the oracle."""
    g = torch.Generator().manual_seed(13)
    x = torch.randn(150, 40, generator=g, dtype=torch.float64) * 3
    t = torch.randint(0, 40, (150,), generator=g)
    with torch.no_grad():
        v = focal_torch.softmax_focal_loss(x, t, gamma=2.0, reduction="none")
    assert 0 < _count(redone["r"]) < 150 // 2 and _count(redone["rows"]) == 0
    want = reference.softmax_focal_loss(x.numpy(), t.numpy(), gamma=2.0, reduction="none")
    assert _worst(v, want) <= BUDGET.faithful("value", "float64")
