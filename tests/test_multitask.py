"""Multi-task weighting family: oracle properties (optima, closed forms, mpmath.diff), the DTP moving
average against its exact closed form (drift bound), the stateful objects (initialisation,
state_dict), form identification of textbook implementations, bad input of ours, and the third
parties (torchjd's exp(−s) overflow, LibMTL not importable)."""

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mpmath import mpf

from lossoracle import specs
from lossoracle.ecosystem.multitask import CANDIDATE_FORMS, identify_form
from lossoracle.floats import FORMATS, ulp_error
from lossoracle.implementations import numpy_impl, torch_impl
from lossoracle.mpfuncs import ORACLE_PREC, precision
from lossoracle.reference import multitask as ref

UW, DTP = "uncertainty_weighted_loss", "dynamic_task_priority"
FORMS = [("kendall", "regression"), ("kendall", "classification"), ("simplified", "regression"),
         ("liebel", "regression")]
TINY = mpf(2) ** -150


def _close(a, b, rel=TINY):
    """``|a − b| ≤ rel·max(1, |b|)``, evaluated at 400 bits (mpmath's default 53 would round both)."""
    with mpmath.workprec(400):
        b = b() if callable(b) else b
        return abs(a - b) <= rel * max(1, abs(b))


def _a(*v):
    return np.array(v, dtype=np.float64)


def _obj(*v):
    out = np.empty(len(v), dtype=object)
    out[:] = [x if isinstance(x, mpf) else mpf(x) for x in v]  # mpf(an_mpf) would round it to 53 bits
    return out


def _kw(form, task_type, k=1):
    return {"form": form, "task_types": None if task_type == "regression" else (task_type,) * k}


# ----------------------------------------------------------------------------------------------
# Oracle properties: optima, closed forms, derivatives


@pytest.mark.parametrize(("form", "task_type"), FORMS)
@pytest.mark.parametrize("loss", [1e-30, 1e-6, 0.25, 1.0, 3.0, 1e30])
def test_gradient_in_s_vanishes_at_the_analytic_optimum(form, task_type, loss):
    """At s* (closed form, 192 bits) ∂ℓ/∂s = 0 and ℓ(s*) is the closed-form value; s* is a minimum."""
    s_star, f_star = ref.uncertainty_optimum(loss, form, task_type)
    kw = _kw(form, task_type)
    g = ref.uncertainty_weighted_loss_grad(np.array(1.0), _a(loss), _obj(s_star), **kw)["log_vars"][0]
    assert abs(g) < TINY
    value = ref.uncertainty_weighted_loss(_a(loss), _obj(s_star), **kw)
    assert abs(value - f_star) <= TINY * max(1, abs(f_star))
    for step in (mpf(2) ** -20, mpf(1)):
        for side in (-1, 1):
            with mpmath.workprec(ORACLE_PREC):
                moved = s_star + side * step
            assert ref.uncertainty_weighted_loss(_a(loss), _obj(moved), **kw) > value


def test_optimum_closed_forms():
    """The documented closed forms at L = 1: kendall s* = 0, value ½; classification s* = log 2,
    value (1 + log 2)/2; simplified s* = 0, value 1; liebel x = (1 + 3)/4 = 1, value ½ + log 2."""
    assert ref.uncertainty_optimum(1.0, "kendall") == (0, mpf(1) / 2)
    s, f = ref.uncertainty_optimum(1.0, "kendall", "classification")
    assert _close(s, lambda: mpmath.log(2)) and _close(f, lambda: (1 + mpmath.log(2)) / 2)
    assert ref.uncertainty_optimum(1.0, "simplified") == (0, 1)
    s, f = ref.uncertainty_optimum(1.0, "liebel")
    assert abs(s) < TINY and _close(f, lambda: mpf(1) / 2 + mpmath.log(2))
    with pytest.raises(ValueError):
        ref.uncertainty_optimum(0.0)


@pytest.mark.parametrize(("form", "task_type"), FORMS)
def test_uncertainty_oracle_gradient_matches_mpmath_diff(form, task_type):
    L, s = (0.375, 2.0, 1e-20), (-0.75, 1.5, -40.0)
    kw = _kw(form, task_type, 3)
    cot = _a(1.0, -0.5, 2.0)
    g = ref.uncertainty_weighted_loss_grad(cot, _a(*L), _a(*s), reduction="none", **kw)
    for arg, values in (("losses", L), ("log_vars", s)):
        for i in range(3):
            def f(t, i=i, arg=arg, values=values):
                x = _obj(*values)
                x[i] += t
                args = {"losses": _obj(*L), "log_vars": _obj(*s), arg: x}
                return ref.uncertainty_weighted_loss(args["losses"], args["log_vars"], reduction="none", **kw)[i]

            with precision(2 * ORACLE_PREC), mpmath.workprec(2 * ORACLE_PREC):
                numeric = cot[i] * mpmath.diff(f, 0, h=mpf(2) ** -80 * max(1, abs(mpf(values[i]))))
            assert abs(numeric - g[arg][i]) <= abs(g[arg][i]) * mpf(2) ** -60 + mpf(2) ** -120


def test_uncertainty_oracle_extremes_never_nan():
    """L = 0 at s = −1000: the regulariser alone (e^{1000}·0 is 0, not NaN); L = 1e30 at s = 1000."""
    v = ref.uncertainty_weighted_loss(_a(0.0, 1e30, 1e-30), _a(-1000.0, 1000.0, -50.0), reduction="none")
    assert v[0] == -500 and abs(v[1] - 500) < mpf(2) ** -1000
    with mpmath.workprec(300):
        assert abs(v[2] - (mpf(1e-30) * mpmath.exp(50) / 2 - 25)) < mpf(2) ** -180
    g = ref.uncertainty_weighted_loss_grad(_a(1.0, 1.0, 1.0), _a(0.0, 1e30, 1e-30), _a(-1000.0, 1000.0, -50.0),
                                           reduction="none")
    assert g["log_vars"][0] == mpf(1) / 2 and mpmath.isfinite(g["losses"][0])


def test_reductions_and_task_types():
    L, s = _a(0.5, 2.0, 0.125), _a(0.25, -1.5, 3.0)
    none = ref.uncertainty_weighted_loss(L, s, task_types=("regression", "classification", "regression"),
                                         reduction="none")
    total = ref.uncertainty_weighted_loss(L, s, task_types=("regression", "classification", "regression"))
    mean = ref.uncertainty_weighted_loss(L, s, task_types=("regression", "classification", "regression"),
                                         reduction="mean")
    assert _close(total, lambda: mpmath.fsum(none)) and _close(mean, lambda: total / 3)
    assert _close(none[1], lambda: 2 * mpmath.exp(1.5) - mpf(0.75))
    with pytest.raises(ValueError, match="task_types applies to form='kendall' only"):
        ref.uncertainty_weighted_loss(L, s, task_types=("regression",) * 3, form="liebel")


def test_dtp_oracle_edges_and_closed_forms():
    # κ̄ = 1 mutes the task for every γ (0^0·log 1 = 0: no 0·∞); γ = 0 is −log κ̄
    w = ref.dtp_weights(_a(1.0, 1.0, 1.0, 0.25), _a(0.0, 0.5, 2.0, 0.0))
    assert list(w[:3]) == [0, 0, 0] and _close(w[3], lambda: mpmath.log(4))
    # γ < 1 near κ̄ = 1: (2^-53)^0.25·53·log 2·2^-53-ish, positive and tiny
    w = ref.dtp_weights(_a(1.0 - 2.0**-53), 0.25)
    with mpmath.workprec(400):
        k = 1 - mpf(2) ** -53
        assert abs(w[0] - (mpf(2) ** -53) ** mpf(0.25) * -mpmath.log(k)) < TINY * w[0]
    # the floor clamps 0 (and anything below it)
    w = ref.dtp_weights(_a(0.0, 1e-9, 0.5), 1.0, kpi_floor=1e-6)
    assert w[0] == w[1] and _close(w[0], lambda: (1 - mpf(1e-6)) * -mpmath.log(mpf(1e-6)))
    assert ref.dtp_weights(_a(0.0), 2.0)[0] == mpmath.inf  # the mathematics; ours raise instead
    # the gradient is the weight, whatever the loss (no gradient through the KPIs)
    g = ref.dynamic_task_priority_grad(np.array(2.0), _a(3.0, np.nan), _a(0.25, 0.5), _a(2.0, 1.0))["losses"]
    assert _close(g[0], lambda: 2 * ref.dtp_weights(_a(0.25), 2.0)[0]) and mpmath.isfinite(g[1])


def test_dtp_oracle_gradient_matches_mpmath_diff():
    L, k, gam = (0.5, 3.0), (0.125, 0.875), (2.0, 0.5)
    g = ref.dynamic_task_priority_grad(np.array(1.0), _a(*L), _a(*k), _a(*gam), reduction="mean")["losses"]
    for i in range(2):
        def f(t, i=i):
            x = _obj(*L)
            x[i] += t
            return ref.dynamic_task_priority(x, _a(*k), _a(*gam), reduction="mean")

        with precision(2 * ORACLE_PREC), mpmath.workprec(2 * ORACLE_PREC):
            numeric = mpmath.diff(f, 0, h=mpf(2) ** -80)
        assert abs(numeric - g[i]) <= abs(g[i]) * mpf(2) ** -60


# ----------------------------------------------------------------------------------------------
# The moving average: exact closed form, drift bound, state


def _history(T, K, seed):
    r = np.random.default_rng(seed)
    h = r.uniform(0.0, 1.0, (T, K))
    h[r.random((T, K)) < 0.05] = 1.0
    h[r.random((T, K)) < 0.05] = 0.0
    return h


@pytest.mark.parametrize("alpha", [0.5, 0.1, 0.01])
@pytest.mark.parametrize("initial", [None, 0.5])
def test_moving_average_stays_within_the_drift_bound_of_the_closed_form(alpha, initial):
    """After T = 10^4 updates the float64 averages (NumPy and torch, bit for bit the same) are within
    3u/α of the exact closed form, and the weights within |FL'(κ̄)|·3u/α + 4 ULP of FL(exact κ̄)."""
    T, K = 10_000, 3
    h = _history(T, K, seed=int(alpha * 1000) + (initial is None))
    ours_np = numpy_impl.DynamicTaskPriority(K, alpha, gamma=[0.5, 1.0, 2.0], initial=initial)
    ours_t = torch_impl.DynamicTaskPriority(K, alpha, gamma=[0.5, 1.0, 2.0], initial=initial)
    for row in h:
        ours_np.update(row)
        ours_t.update(torch.from_numpy(row))
    assert np.array_equal(ours_np.kpi_ema, ours_t.kpi_ema.numpy())
    exact = ref.dtp_moving_average(h, alpha, initial)
    bound = ref.ema_drift_bound(alpha)
    drift = max(abs(float(mpf(float(a)) - e)) for a, e in zip(ours_np.kpi_ema, exact))
    assert drift <= bound, (drift, bound)
    # the weights: FL of the exact average, up to the drift times the slope of FL
    w = ours_np.weights()
    assert np.array_equal(w, ours_t.weights().numpy())
    want = ref.dtp_weights(np.array(exact, dtype=object), _a(0.5, 1.0, 2.0))
    for wi, e, kap, gam in zip(w, want, exact, (0.5, 1.0, 2.0)):
        slope = abs(float((1 - kap) ** (gam - 1) * (gam * mpmath.log(kap) - (1 - kap) / kap)))
        assert abs(float(mpf(float(wi)) - e)) <= slope * bound + 4 * abs(float(e)) * 2.0**-52


def test_the_drift_bound_holds_in_float32_too_and_is_not_vacuous():
    """The same recurrence in float32 stays within 3·2^-24/α, and drifts well beyond the float64 bound."""
    alpha, T = 0.01, 10_000
    h = _history(T, 1, seed=7)[:, 0]
    a32, ema = np.float32(alpha), np.float32(h[0])
    for k in h[1:].astype(np.float32):
        ema = ema + a32 * (k - ema)
    exact = ref.dtp_moving_average(h.astype(np.float32).astype(np.float64)[:, None], float(a32))[0]
    drift = abs(float(mpf(float(ema)) - exact))
    assert drift <= ref.ema_drift_bound(float(a32), 2.0**-24)
    assert drift > ref.ema_drift_bound(float(a32))


def test_moving_average_closed_form_is_the_recurrence_exactly():
    """Small T in exact rational arithmetic: the closed form equals the recurrence (both ways of
    initialising)."""
    from fractions import Fraction

    h = _history(6, 2, seed=3)
    for initial in (None, 0.25):
        a = Fraction(0.3)
        ema = [Fraction(v) for v in h[0]] if initial is None else [Fraction(initial)] * 2
        for row in (h[1:] if initial is None else h):
            ema = [e + a * (Fraction(k) - e) for e, k in zip(ema, row)]
        got = ref.dtp_moving_average(h, 0.3, initial)
        for g, e in zip(got, ema):
            assert _close(g, lambda e=e: mpf(e.numerator) / e.denominator)


@pytest.mark.parametrize("impl", [numpy_impl, torch_impl], ids=["numpy", "torch"])
def test_dtp_state_initialisation_and_state_dict(impl):
    dtp = impl.DynamicTaskPriority(2, 0.25, gamma=2.0)
    with pytest.raises(RuntimeError, match="no KPI observed yet"):
        dtp.weights()
    dtp.update([0.0, 0.5])  # the first observation is taken as it is: κ̄ = 0 for task 0
    with pytest.raises(ValueError, match="kpi_floor"):
        dtp.weights()
    started = impl.DynamicTaskPriority(2, 0.25, gamma=2.0, initial=0.5)
    w = np.asarray(started.weights())
    assert w[0] == w[1] and abs(w[0] - float(ref.dtp_weights(_a(0.5), 2.0)[0])) <= 2.0**-52 * w[0]
    floored = impl.DynamicTaskPriority(2, 0.25, kpi_floor=1e-6)
    floored.update([0.0, 1.0])
    assert np.asarray(floored.weights())[1] == 0 and np.isfinite(np.asarray(floored.weights())[0])
    # save, restore into a fresh object, continue both: identical
    a = impl.DynamicTaskPriority(3, 0.1, gamma=[0.0, 1.0, 3.0])
    h = _history(60, 3, seed=11)
    for row in h[:30]:
        a.update(row)
    b = impl.DynamicTaskPriority(3, 0.1, gamma=[0.0, 1.0, 3.0])
    b.load_state_dict(a.state_dict())
    for row in h[30:]:
        a.update(row)
        b.update(row)
    assert np.array_equal(np.asarray(a.weights()), np.asarray(b.weights()))
    with pytest.raises(ValueError, match="alpha"):
        impl.DynamicTaskPriority(3, 0.2, gamma=[0.0, 1.0, 3.0]).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="kpis must lie in"):
        a.update([0.5, np.nan, 0.5])
    with pytest.raises(ValueError, match="alpha must lie"):
        impl.DynamicTaskPriority(3, 0.0)


def test_torch_dtp_module_keeps_float64_state_and_gives_constant_weights():
    dtp = torch_impl.DynamicTaskPriority(2, 0.5, initial=0.25).half()
    assert dtp.kpi_ema.dtype == torch.float64 and dtp.gamma.dtype == torch.float64
    losses = torch.tensor([1.0, 2.0], dtype=torch.float16, requires_grad=True)
    out = dtp(losses)
    assert out.dtype == torch.float16
    (g,) = torch.autograd.grad(out, [losses])
    assert torch.equal(g, dtp.weights().to(torch.float16))
    kpis = torch.tensor([0.25, 0.5], requires_grad=True)
    out = torch_impl.dynamic_task_priority(losses, kpis)
    assert torch.autograd.grad(out, [kpis], allow_unused=True)[0] is None  # no gradient through κ̄


# ----------------------------------------------------------------------------------------------
# The nn.Module holding the log-variances


def test_uncertainty_module_initialisation_and_training_reaches_the_optimum():
    """Documented init: s = 0 (σ² = 1, weights c_i). Gradient descent on fixed losses drives s to
    each form's optimum (s* = log L, regression; log 2L, classification)."""
    m = torch_impl.UncertaintyWeighting(2, task_types=("regression", "classification"), dtype=torch.float64)
    assert torch.equal(m.log_vars.detach(), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(m.weights(), torch.tensor([0.5, 1.0], dtype=torch.float64))
    L = torch.tensor([0.25, 4.0], dtype=torch.float64)
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    for _ in range(300):
        opt.zero_grad()
        m(L).backward()
        opt.step()
    assert torch.allclose(m.log_vars.detach(), torch.log(torch.tensor([0.25, 8.0], dtype=torch.float64)),
                          rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# Told which form it matches


def _textbook(form):
    def f(L, s, task_types=None, form_=None, reduction="sum", **_):
        if form == "kendall":
            t = 0.5 * torch.exp(-s) * L + 0.5 * s
        elif form == "kendall_classification":
            t = torch.exp(-s) * L + 0.5 * s
        elif form == "simplified":
            t = torch.exp(-s) * L + s
        else:
            t = 0.5 * torch.exp(-s) * L + torch.log1p(torch.exp(s))
        return t.sum() if reduction == "sum" else t

    f.__name__ = f"textbook_{form}"
    return f


@pytest.mark.parametrize("form", list(CANDIDATE_FORMS))
def test_a_textbook_implementation_is_told_which_form_it_matches(form):
    """Each textbook form, claiming the paper's regression form, is judged against every form and
    matches exactly its own (values and both gradients, float64)."""
    match = identify_form(_textbook(form), "torch", claimed="kendall")
    assert match.matches == (form,), match.verdicts
    assert ("computes the form it claims" in str(match)) == (form == "kendall")
    assert all(v == "deviates" for n, v in match.verdicts.items() if n != form)


def test_numpy_textbook_with_explicit_vjp_is_identified():
    def simplified(L, s, task_types=None, form="kendall", reduction="sum"):
        t = np.exp(-s) * L + s
        return t.sum() if reduction == "sum" else t

    def simplified_grad(g, L, s, task_types=None, form="kendall", reduction="sum"):
        return {"losses": g * np.exp(-s), "log_vars": g * (1 - np.exp(-s) * L)}

    match = identify_form(simplified, "numpy", claimed="kendall", grad=simplified_grad)
    assert match.matches == ("simplified",) and "matches simplified" in str(match)


@pytest.mark.parametrize("claimed", list(CANDIDATE_FORMS))
def test_ours_compute_the_form_they_are_asked_for(claimed):
    for fn, fw, grad in ((torch_impl.uncertainty_weighted_loss, "torch", None),
                         (numpy_impl.uncertainty_weighted_loss, "numpy", numpy_impl.uncertainty_weighted_loss_grad)):
        assert identify_form(fn, fw, claimed=claimed, grad=grad).matches == (claimed,)


# ----------------------------------------------------------------------------------------------
# Ours: accuracy spot checks, bad input, dtypes


@pytest.mark.parametrize("impl", [numpy_impl, torch_impl], ids=["numpy", "torch"])
def test_exp_overflow_is_avoided(impl):
    """e^{−s}·L = e^{log L − s}: finite where e^{−s} overflows; L = 0 at s = −1000 is no NaN."""
    L, s = _a(2.0**-1000, 0.0, 1e-300), _a(-750.0, -1000.0, -700.0)
    if impl is torch_impl:
        Lt, st = torch.tensor(L, requires_grad=True), torch.tensor(s, requires_grad=True)
        out = impl.uncertainty_weighted_loss(Lt, st, reduction="none")
        gL, gs = torch.autograd.grad(out, [Lt, st], torch.ones(3, dtype=torch.float64))
        v, gL, gs = out.detach().numpy(), gL.numpy(), gs.numpy()
    else:
        v = impl.uncertainty_weighted_loss(L, s, reduction="none")
        g = impl.uncertainty_weighted_loss_grad(np.ones(3), L, s, reduction="none")
        gL, gs = g["losses"], g["log_vars"]
    exact = ref.uncertainty_weighted_loss(L, s, reduction="none")
    assert max(ulp_error(float(a), e, FORMATS["float64"]) for a, e in zip(v, exact)) <= 1
    assert v[1] == -500.0 and gs[1] == 0.5 and gL[1] == math.inf  # ∂/∂L = ½e^{1000} overflows, honestly


def _call(impl, loss, **args):
    if impl is torch_impl:
        args = {k: (torch.as_tensor(v) if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    return getattr(impl, loss)(**args)


BAD = [
    (UW, dict(losses=_a(-0.5, 1.0)), ValueError, "losses must be ≥ 0"),
    (UW, dict(losses=_a(np.inf, 1.0)), ValueError, "losses must be finite"),
    (UW, dict(log_vars=_a(0.0, -np.inf)), ValueError, "log_vars must be finite"),
    (UW, dict(log_vars=_a(0.0, 1.0, 2.0)), ValueError, "log_vars shape"),
    (UW, dict(losses=np.ones((1, 2)), log_vars=np.zeros((1, 2))), ValueError, "losses must be 1-D"),
    (UW, dict(form="kendal"), ValueError, "form must be one of"),
    (UW, dict(task_types=("regression", "segmentation")), ValueError, "task_types must list 2"),
    (UW, dict(form="liebel", task_types=("regression", "regression")), ValueError, "form='kendall' only"),
    (UW, dict(reduction="avg"), ValueError, "reduction must be one of"),
    (UW, dict(losses=np.array([1, 2])), TypeError, "losses must be a floating"),
    (DTP, dict(kpis=_a(0.0, 0.5)), ValueError, "kpis must be > 0"),
    (DTP, dict(kpis=_a(1.5, 0.5)), ValueError, r"kpis must lie in \[0, 1\]"),
    (DTP, dict(kpis=_a(0.5)), ValueError, "kpis has 1 entries"),
    (DTP, dict(gamma=-1.0), ValueError, "gamma must be finite and ≥ 0"),
    (DTP, dict(gamma=_a(1.0, 2.0, 3.0)), ValueError, "gamma must be a scalar or have shape"),
    (DTP, dict(losses=_a(-1.0, 1.0)), ValueError, "losses must be ≥ 0"),
    (DTP, dict(kpi_floor=0.0), ValueError, "kpi_floor must lie in"),
]


@pytest.mark.parametrize(("loss", "override", "exc", "match"), BAD, ids=[f"{b[0]}-{b[3][:24]}" for b in BAD])
@pytest.mark.parametrize("impl", [numpy_impl, torch_impl], ids=["numpy", "torch"])
def test_bad_input_names_the_argument(impl, loss, override, exc, match):
    args = dict(losses=_a(0.5, 2.0), log_vars=_a(0.0, 1.0)) if loss == UW else dict(losses=_a(0.5, 2.0),
                                                                                    kpis=_a(0.25, 0.75))
    args.update(override)
    with pytest.raises(exc, match=match):
        _call(impl, loss, **args)


LEAN_BAD = [  # (index, loss, KPI, error): the float32 DTP path folds its checks into its own reductions
    (3, -1.0, None, "losses must be ≥ 0"),
    (3, -1.0, 1.0, "losses must be ≥ 0"),  # weight 0: the term is −0, the minimum of the losses still sees it
    (5, math.inf, None, "losses must be finite"),
    (5, math.inf, 1.0, "losses must be finite"),  # inf·0 = NaN
    (2, None, 0.0, "kpis must be > 0"),
    (2, None, -0.0, "kpis must be > 0"),
    (2, None, -0.5, r"kpis must lie in \[0, 1\]"),
    (2, None, 1.5, r"kpis must lie in \[0, 1\]"),
    (2, 0.0, 1.5, r"kpis must lie in \[0, 1\]"),  # no term sees it
    (2, None, -math.inf, r"kpis must lie in \[0, 1\]"),
]


@pytest.mark.parametrize(("i", "loss", "kpi", "match"), LEAN_BAD, ids=[f"{b[1]}-{b[2]}" for b in LEAN_BAD])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("native", [True, False], ids=["native", "eager"])
def test_torch_float32_dtp_lean_path_rejects_bad_input(monkeypatch, native, i, loss, kpi, match, reduction):
    """Many float32 tasks, γ = 1, no floor (the lean path, native or eager): every bad loss or KPI is
    still a clear error, NaN still propagates, and the valid inputs around them take the lean path."""
    from lossoracle.implementations import multitask_torch as mt

    _native_on(monkeypatch, native)

    rng = np.random.default_rng(9)
    L = torch.tensor(rng.uniform(0, 3, 64), dtype=torch.float32)
    kap = torch.tensor(rng.uniform(0.05, 1, 64), dtype=torch.float32)
    assert mt._lean_dtp(L, kap, 1.0, reduction, None) is not None
    if loss is not None:
        L[i] = loss
    if kpi is not None:
        kap[i] = kpi
    with pytest.raises(ValueError, match=match):
        torch_impl.dynamic_task_priority(L.requires_grad_(), kap, 1.0, reduction)
    for nan_L, nan_k in ((True, False), (False, True)):
        Ln, kn = L.detach().abs().nan_to_num(1.0), kap.clamp(0.5, 1.0)
        (Ln if nan_L else kn)[i] = math.nan
        assert math.isnan(float(torch_impl.dynamic_task_priority(Ln, kn, 1.0, reduction)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_torch_keeps_the_input_dtype(dtype):
    L = torch.tensor([0.5, 2.0], dtype=dtype, requires_grad=True)
    s = torch.tensor([0.0, -1.0], dtype=dtype, requires_grad=True)
    out = torch_impl.uncertainty_weighted_loss(L, s, form="liebel", reduction="mean")
    gL, gs = torch.autograd.grad(out, [L, s])
    assert out.dtype == gL.dtype == gs.dtype == dtype
    out = torch_impl.dynamic_task_priority(L, torch.tensor([0.25, 0.5]), gamma=2)
    assert out.dtype == dtype


def test_torch_backward_matches_finite_differences():
    gen = torch.Generator().manual_seed(0)
    L = (torch.rand(5, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    s = (torch.randn(5, generator=gen, dtype=torch.float64)).requires_grad_()
    for form in ("kendall", "simplified", "liebel"):
        assert torch.autograd.gradcheck(lambda a, b, f=form: torch_impl.uncertainty_weighted_loss(
            a, b, form=f, reduction="none"), (L, s))
    kpis = torch.rand(5, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    assert torch.autograd.gradcheck(lambda a: torch_impl.dynamic_task_priority(a, kpis, gamma=2.0, reduction="mean"),
                                    (L,))


@pytest.mark.parametrize("impl", ["numpy", "torch"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_dtp_float64_plain_path_stays_within_budget(impl, reduction):
    """Many tasks: the plain float64 path (bounded a priori) is taken, and value and gradient stay
    within the faithful budget plus log2(K) against the oracle (small K keeps the double-double)."""
    from lossoracle.implementations import multitask_core as core

    rng = np.random.default_rng(7)
    k = 2048
    L = rng.uniform(0, 3, k)
    kap = np.concatenate([rng.uniform(1e-3, 1, k - 4), [1.0, 1 - 2.0**-53, 2.0**-1070, 0.5]])
    one = np.array(1.0)
    assert core.dtp_plain_value(L, core.bounded_dtp(kap, one, k, reduction), reduction) is not None
    small = core.bounded_dtp(kap[:3], one, 3, reduction)
    assert core.dtp_plain_value(L[:3], small, reduction) is None  # 2 + log2 3 ULP: too tight
    exact = ref.dynamic_task_priority(L, kap, 1.0, reduction)
    exact_g = ref.dynamic_task_priority_grad(np.array(1.0), L, kap, 1.0, reduction)["losses"]
    if impl == "numpy":
        v = numpy_impl.dynamic_task_priority(L, kap, 1.0, reduction)
        g = numpy_impl.dynamic_task_priority_grad(np.array(1.0), L, kap, 1.0, reduction)["losses"]
    else:
        Lt = torch.tensor(L, requires_grad=True)
        vt = torch_impl.dynamic_task_priority(Lt, torch.tensor(kap), 1.0, reduction)
        vt.backward()
        v, g = vt.detach().numpy(), Lt.grad.numpy()
    f64 = FORMATS["float64"]
    assert ulp_error(float(v), exact, f64) <= _faithful("dynamic_task_priority", "value", "float64", k)
    assert max(ulp_error(float(a), b, f64) for a, b in zip(np.ravel(g), exact_g)) <= _faithful(
        "dynamic_task_priority", "grad", "float64", k)


@pytest.mark.parametrize("impl", ["numpy", "torch"])
@pytest.mark.parametrize(("form", "reduction"), [("kendall", "sum"), ("simplified", "mean"), ("liebel", "sum")])
def test_uw_float64_plain_path_stays_within_budget(impl, form, reduction):
    """Many tasks: bounded plain float64 with double-double only for the tasks near the optimum
    (``c·e^{−s}·L ≈ r'``, some placed there on purpose): value and gradients within the faithful
    budget plus log2(K) against the oracle."""
    from lossoracle.implementations import multitask_core as core

    rng = np.random.default_rng(11)
    k = 1024
    s = rng.standard_normal(k) * 3
    L = np.exp(rng.random(k) * 8 - 4)
    slope = 1 / (1 + np.exp(-s[:8])) if form == "liebel" else 1.0
    L[:8] = np.exp(s[:8]) * slope * (1 + rng.standard_normal(8) * 1e-9)  # c·e^{−s}·L ≈ r'(s): ∂/∂s cancels
    c = np.asarray(core.coefficient(None, form, k))
    q = core.BoundedUW.make(L, s, c, form, reduction)
    assert q is not None and q.value(reduction) is not None
    assert q.grads(np.array(1.0), reduction)[2][:8].all()  # the cancelling tasks take the double-double
    exact = ref.uncertainty_weighted_loss(L, s, None, form, reduction)
    exact_g = ref.uncertainty_weighted_loss_grad(np.array(1.0), L, s, None, form, reduction)
    if impl == "numpy":
        v = numpy_impl.uncertainty_weighted_loss(L, s, None, form, reduction)
        g = numpy_impl.uncertainty_weighted_loss_grad(np.array(1.0), L, s, None, form, reduction)
    else:
        Lt, st = torch.tensor(L, requires_grad=True), torch.tensor(s, requires_grad=True)
        vt = torch_impl.uncertainty_weighted_loss(Lt, st, None, form, reduction)
        vt.backward()
        v, g = vt.detach().numpy(), {"losses": Lt.grad.numpy(), "log_vars": st.grad.numpy()}
    f64 = FORMATS["float64"]
    assert ulp_error(float(v), exact, f64) <= _faithful("uncertainty_weighted_loss", "value", "float64", k)
    for name in ("losses", "log_vars"):  # the planted tasks are ill-conditioned: judged below
        got = np.ravel(g[name])[8:] if name == "log_vars" else np.ravel(g[name])
        want = exact_g[name][8:] if name == "log_vars" else exact_g[name]
        assert max(ulp_error(float(a), b, f64) for a, b in zip(got, want)) <= _faithful(
            "uncertainty_weighted_loss", "grad", "float64", k)
    dd_gs = core._uw_grads_dd(np.array(1.0), L[:8], s[:8], c, form, reduction, core.FLOAT64, k)[1]
    assert np.array_equal(np.ravel(g["log_vars"])[:8], dd_gs)  # exactly the double-double's


def _native_on(monkeypatch, on: bool) -> None:
    """Native kernels on (they must build here) or off (the eager fallbacks)."""
    from lossoracle.implementations import compiled, native

    monkeypatch.setitem(compiled.ENABLED, "on", on)
    if on:
        assert native.module("multitask") is not None, "the native multitask kernels failed to build"


def _lean_f32_errors(L: np.ndarray, s: np.ndarray, kap: np.ndarray, reduction: str,
                     dtype: str = "float32") -> dict[str, float]:
    """Worst ULP errors against the oracle of our uncertainty weighting (``kendall``) and DTP (γ = 1)
    on the inputs rounded to ``dtype``: value, and the worst gradient entry of each input (of its dtype)."""
    fmt, tdtype = FORMATS[dtype], getattr(torch, dtype)
    Lt, sv, kt = (torch.tensor(x).to(tdtype) for x in (L, s, kap))
    L64, s64, kap64 = (t.double().numpy() for t in (Lt, sv, kt))
    Lt, sv = Lt.requires_grad_(), sv.requires_grad_()
    v = torch_impl.uncertainty_weighted_loss(Lt, sv, None, "kendall", reduction)
    v.backward()
    assert v.dtype == Lt.grad.dtype == sv.grad.dtype == tdtype
    exact_g = ref.uncertainty_weighted_loss_grad(np.array(1.0), L64, s64, None, "kendall", reduction)
    out = {"uw": ulp_error(float(v.detach()), ref.uncertainty_weighted_loss(L64, s64, None, "kendall", reduction),
                           fmt)}
    for name, t in (("losses", Lt), ("log_vars", sv)):
        out[f"uw_{name}"] = max(ulp_error(float(a), b, fmt) for a, b in zip(t.grad.double().numpy(), exact_g[name]))
    Lt = Lt.detach().requires_grad_()
    v = torch_impl.dynamic_task_priority(Lt, kt, 1.0, reduction)
    v.backward()
    assert v.dtype == Lt.grad.dtype == tdtype
    exact_g = ref.dynamic_task_priority_grad(np.array(1.0), L64, kap64, 1.0, reduction)["losses"]
    out["dtp"] = ulp_error(float(v.detach()), ref.dynamic_task_priority(L64, kap64, 1.0, reduction), fmt)
    out["dtp_losses"] = max(ulp_error(float(a), b, fmt) for a, b in zip(Lt.grad.double().numpy(), exact_g))
    return out


def _lean_f32_inputs(k: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Losses in [0, 3), log-variances N(0, 9) (tasks near the optimum of ∂/∂s among them), KPIs with
    1, 1 − 2^-24, 2^-149 and ½ included."""
    rng = np.random.default_rng(seed)
    L = rng.uniform(0, 3, k).astype(np.float32)
    s = (rng.standard_normal(k) * 3).astype(np.float32)
    kap = np.concatenate([rng.uniform(1e-3, 1, k - 4), [1.0, 1 - 2.0**-24, 2.0**-149, 0.5]]).astype(np.float32)
    return L, s, kap


def _within_budget(err: dict[str, float], k: int, dtype: str = "float32") -> bool:
    """Values within the faithful budget of a sum of ``k`` terms, every gradient entry within its own."""
    return (err["uw"] <= _faithful(UW, "value", dtype, k) and err["dtp"] <= _faithful(DTP, "value", dtype, k)
            and max(err["uw_losses"], err["uw_log_vars"]) <= _faithful(UW, "grad", dtype, 1)
            and err["dtp_losses"] <= _faithful(DTP, "grad", dtype, 1))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_torch_half_native_paths_stay_within_budget(monkeypatch, dtype):
    """float16/bfloat16 tasks take the native float32 kernels (converted exactly; results rounded to
    their dtype) — value and gradients within the faithful budget against the oracle, the gradients
    in the inputs' dtypes."""
    from lossoracle.implementations import multitask_torch as mt

    _native_on(monkeypatch, True)
    L, s, kap = _lean_f32_inputs(512, seed=8)
    s = s / 3  # N(0, 1): the float16 terms stay in range
    kap = np.maximum(kap, np.float32(2.0**-14))  # 2^-149 would round to a KPI of 0 (an error without a floor)
    tdtype = getattr(torch, dtype)
    Lt, sv, kt = (torch.tensor(x).to(tdtype) for x in (L, s, kap))
    assert mt._NativeUW.make(Lt, sv, None, "kendall", "mean") is not None
    assert mt._lean_dtp(Lt, kt, 1.0, "mean", None) is not None
    for reduction in ("mean", "sum"):
        err = _lean_f32_errors(L, s, kap, reduction, dtype)
        assert _within_budget(err, 512, dtype), (reduction, err)


@pytest.mark.parametrize("native", [True, False], ids=["native", "eager"])
@pytest.mark.parametrize(("reduction", "k"), [("sum", 512), ("mean", 512), ("sum", 3003)])
def test_torch_float32_lean_paths_stay_within_budget(monkeypatch, native, reduction, k):
    """Many float32 tasks: the lean paths — natively (uncertainty weighting and DTP each one pass per
    direction), or eagerly (uncertainty weighting from float64 copies, DTP with float32 weights; from
    2^10 tasks its float32 sums of 8 terms, 3003 leaving a tail of 3) — are taken, and value and
    gradients stay within the float32 faithful budget against the oracle."""
    from lossoracle.implementations import multitask_torch as mt

    _native_on(monkeypatch, native)
    taken = []
    uw_name = "_NativeUW" if native else "_LeanUW"
    make, lean_dtp = getattr(mt, uw_name).make, mt._lean_dtp
    monkeypatch.setattr(getattr(mt, uw_name), "make", lambda *a: taken.append(make(*a)) or taken[-1])
    monkeypatch.setattr(mt, "_lean_dtp", lambda *a: taken.append(lean_dtp(*a)) or taken[-1])
    err = _lean_f32_errors(*_lean_f32_inputs(k), reduction)
    assert _within_budget(err, k), err
    assert len(taken) == 2 and all(t is not None for t in taken)


@settings(max_examples=25, deadline=None)
@given(k=st.integers(4, 4000), seed=st.integers(0, 2**32 - 1), reduction=st.sampled_from(["sum", "mean"]))
def test_torch_float32_native_paths_within_budget_on_random_draws(k, seed, reduction):
    """Hypothesis draws of task counts and inputs through the native kernels (the default path here):
    within the faithful budget against the oracle, the native value is the eager fallback's to within
    the two paths' bounds (within 4.14 and 5.03 ULP of the exact, DTP; far below one, UW), and the
    DTP weights are the eager ones bit for bit."""
    from lossoracle.implementations import compiled, native
    from lossoracle.implementations import multitask_torch as mt

    assert native.module("multitask") is not None
    L, s, kap = _lean_f32_inputs(k, seed)
    err = _lean_f32_errors(L, s, kap, reduction)
    assert _within_budget(err, k), err
    Lt, st_, kt = torch.tensor(L), torch.tensor(s), torch.tensor(kap)
    got = {}
    for on in (True, False):
        compiled.ENABLED["on"] = on
        try:
            got[on] = (float(torch_impl.uncertainty_weighted_loss(Lt, st_, None, "kendall", reduction)),
                       float(torch_impl.dynamic_task_priority(Lt, kt, 1.0, reduction)))
        finally:
            compiled.ENABLED["on"] = True
    f32 = FORMATS["float32"]
    assert ulp_error(got[True][0], mpf(got[False][0]), f32) <= 1
    assert ulp_error(got[True][1], mpf(got[False][1]), f32) <= 11
    w = {}
    for on in (True, False):
        compiled.ENABLED["on"] = on
        try:
            w[on] = mt._lean_dtp(Lt, kt, 1.0, reduction, None)[0]
        finally:
            compiled.ENABLED["on"] = True
    assert torch.equal(w[True], w[False])  # the DTP weights (hence the gradient) bit for bit


def test_the_lean_budget_test_catches_a_float32_backward(monkeypatch):
    """Mutant: ∂/∂s of uncertainty weighting formed in float32 (``e^{−s}`` rounded to float32, no fused
    multiply-add) loses the tasks near the optimum, where ``½ − ½·L·e^{−s}`` cancels: the budget test
    above fails on it (while the honest native kernels pass it, there)."""
    from lossoracle.implementations import multitask_torch as mt

    _native_on(monkeypatch, True)

    def float32_grads(self, g, need):
        g = float(g) / self.k if self.mean else float(g)
        e = self.e.float()
        return (e * (g * self.c), (g * self.slope - (g * self.c) * self.L * e))

    L, s, kap = _lean_f32_inputs(512)
    assert _within_budget(_lean_f32_errors(L, s, kap, "sum"), 512)
    monkeypatch.setattr(mt._NativeUW, "grads", float32_grads)
    err = _lean_f32_errors(L, s, kap, "sum")
    assert err["uw_log_vars"] > 8, err


UW_LEAN_BAD = [  # (index, loss, log-variance, error): the native float32 path folds its checks into its pass
    (3, -1.0, None, "losses must be ≥ 0"),
    (3, -0.0, None, None),  # −0 is ≥ 0: valid
    (5, math.inf, None, "losses must be finite"),
    (63, None, math.inf, "log_vars must be finite"),
    (0, None, -math.inf, "log_vars must be finite"),
    (7, 2.0**-149, 103.0, None),  # valid extremes: a subnormal loss, e^{−s} far below float32
    (7, 3e38, -80.0, None),  # e^{−s}·L beyond float32 but finite in float64: the result is +inf
]


@pytest.mark.parametrize(("i", "loss", "s", "match"), UW_LEAN_BAD, ids=[f"{b[1]}-{b[2]}" for b in UW_LEAN_BAD])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_torch_float32_uw_native_path_rejects_bad_input(i, loss, s, match, reduction):
    """Many float32 tasks on the native path: every bad loss or log-variance is still a clear error,
    NaN still propagates, −0 and the valid extremes give the checked path's result."""
    from lossoracle.implementations import compiled
    from lossoracle.implementations import multitask_torch as mt

    rng = np.random.default_rng(9)
    L = torch.tensor(rng.uniform(0, 3, 64), dtype=torch.float32)
    lv = torch.tensor(rng.standard_normal(64), dtype=torch.float32)
    assert mt._NativeUW.make(L, lv, None, "kendall", reduction) is not None
    if loss is not None:
        L[i] = loss
    if s is not None:
        lv[i] = s
    if match is not None:
        with pytest.raises(ValueError, match=match):
            torch_impl.uncertainty_weighted_loss(L.requires_grad_(), lv, None, "kendall", reduction)
        for nan_L in (True, False):
            Ln, sn = L.detach().abs().nan_to_num(1.0, 1.0), lv.nan_to_num(0.0, 1.0, -1.0)
            (Ln if nan_L else sn)[i] = math.nan
            assert math.isnan(float(torch_impl.uncertainty_weighted_loss(Ln, sn, None, "kendall", reduction)))
        return
    got = torch_impl.uncertainty_weighted_loss(L, lv, None, "kendall", reduction)
    compiled.ENABLED["on"] = False
    try:
        want = torch_impl.uncertainty_weighted_loss(L, lv, None, "kendall", reduction)
    finally:
        compiled.ENABLED["on"] = True
    assert ulp_error(float(got), mpf(float(want)), FORMATS["float32"]) <= 1 or float(got) == float(want)


@pytest.mark.slow
@pytest.mark.parametrize(("form", "task_types", "reduction"), [("kendall", None, "sum"), ("kendall", "mixed", "mean")])
def test_torch_float64_compiled_near_optimum_grads_are_the_eager_ones_bit_for_bit(monkeypatch, form, task_types,
                                                                                  reduction):
    """The double-double ∂/∂s of the tasks near the optimum, traced by torch.compile (many CPU float64
    tasks), gives the eager double-double's bits (L = m·2^e from the bits instead of frexp; log 2 split by
    its bits, since a traced float constant's Dekker split is simplified away)."""
    from lossoracle.implementations import compiled
    from lossoracle.implementations import multitask_torch as mt

    monkeypatch.setattr(mt, "_COMPILE_MIN_TASKS", 1 << 8)
    rng = np.random.default_rng(11)
    k = 2000
    s = rng.uniform(-300, 300, k)
    types = None if task_types is None else [("regression", "classification")[i % 2] for i in range(k)]
    c = np.array(core_coefficients(types, form, k))
    slope = 0.5 if form == "kendall" else 1.0
    L = np.exp(s) * slope / c * rng.uniform(0.7, 1.3, k)  # c·e^{−s}·L within 30 % of r': most tasks near it
    L[::7] = rng.uniform(0, 3, len(L[::7]))
    ok = (L > 2.0**-1022) & np.isfinite(L)
    L, s = L[ok], s[ok]
    types = None if types is None else [t for t, o in zip(types, ok) if o]
    out = {}
    for on in (False, True):
        monkeypatch.setitem(compiled.ENABLED, "on", on)
        Lt, st = torch.tensor(L, requires_grad=True), torch.tensor(s, requires_grad=True)
        torch_impl.uncertainty_weighted_loss(Lt, st, types, form, reduction).backward(torch.tensor(0.75,
                                                                                                   dtype=torch.float64))
        out[on] = (Lt.grad, st.grad)
    assert compiled.ENABLED["on"], "torch.compile failed"
    assert mt._DS.variants
    assert torch.equal(out[False][0], out[True][0]) and torch.equal(out[False][1], out[True][1])


def core_coefficients(types, form, k):
    from lossoracle.implementations import multitask_core

    return multitask_core.coefficients(types, form, k)


def _faithful(loss: str, quantity: str, dtype: str, n: int) -> float:
    """The spec's faithful bound in ULP for a reduction over ``n`` terms (what the grades use)."""
    return specs.get(loss).budget.faithful(quantity, dtype, n)
