"""Multi-task loss weighting oracles: uncertainty weighting and Dynamic Task Prioritization.

**uncertainty_weighted_loss(losses, log_vars, task_types=None, form="kendall", reduction="sum")**
— task losses ``L_i ≥ 0`` (shape ``(K,)``) and learned log-variances ``s_i = log σ_i²`` (same
shape); per task ``ℓ_i = c_i·e^{−s_i}·L_i + r(s_i)``, reduced over the tasks (``sum``, default;
``mean`` = ``Σ ℓ_i / K``; ``none`` = the ``K`` terms). The named forms (CONVENTIONS.md §9):

==============  =====================================  ===================================================
form            per-task term                          source
==============  =====================================  ===================================================
``kendall``     regression ``½e^{−s}L + ½s``,           Kendall, Gal, Cipolla, CVPR 2018, eqs. (5)–(10)
                classification ``e^{−s}L + ½s``        (Gaussian likelihood; softmax scaled by ``1/σ²``)
``simplified``  ``e^{−s}L + s`` (every task)            the common re-implementation (no ½)
``liebel``      ``½e^{−s}L + log(1 + e^{s})``           Liebel & Körner 2018, "Auxiliary tasks in multi-
                                                       task learning" (regulariser ``log(1 + σ²) > 0``)
==============  =====================================  ===================================================

``task_types`` (a sequence of ``"regression"`` / ``"classification"``, one per task) applies to
``kendall`` only; ``None`` means every task is a regression task (LibMTL's and torchjd's choice).
Another form with ``task_types`` is an error.

Gradients (VJP with cotangent ``a_i``; ``a/K`` under ``mean``): ``∂ℓ_i/∂L_i = c_i·e^{−s_i}``,
``∂ℓ_i/∂s_i = r'(s_i) − c_i·e^{−s_i}·L_i`` with ``r' = ½``, ``1`` or ``σ(s)``. A partial derivative is
NaN where an argument it involves is NaN (``∂ℓ_i/∂L_i`` only where ``s_i`` is), as autograd gives.

Optima (``L > 0`` fixed; :func:`uncertainty_optimum`, tested): the gradient in ``s`` vanishes at
``kendall`` regression ``s* = log L``, value ``½ + ½log L``; classification ``s* = log 2L``, value
``½ + ½log 2L``; ``simplified`` ``s* = log L``, value ``1 + log L``; ``liebel`` ``e^{s*} = x =
(L + √(L² + 8L))/4`` (root of ``2x² = L(1 + x)``), value ``x/(1 + x) + log(1 + x)``. The total can
be negative (``log σ < 0``): not a bug.

Conventions and domain: ``losses`` finite and ``≥ 0`` (the forms come from negative
log-likelihoods ``≥ 0``; a negative loss makes the objective unbounded below in ``s``), NaN
propagates; ``log_vars`` finite, NaN propagates; ``K = 0`` gives ``sum`` 0 and ``mean`` NaN.

Hazards and remedies: ``e^{−s}`` overflows (``s = −50`` in float16, ``−100`` in float32, ``−710``
in float64) while ``e^{−s}·L`` is finite for a small ``L``, and ``L = 0`` with an overflowed
``e^{−s}`` gives ``inf·0 = NaN``: the product is ``e^{log L − s}`` — computed by ours as
``m·e^{−s + e·log 2}`` with ``L = m·2^e`` (exact), scaled by a power of two once at the end; an
``L = 0`` never multiplies an infinity. The gradient in ``s`` cancels genuinely near the optimum
(``r' ≈ c·e^{−s}L``): the grading's condition numbers decide how much of that is the problem's.

**dynamic_task_priority(losses, kpis, gamma=1.0, reduction="sum", kpi_floor=None)** — Guo,
Haque, Huang, Yeung, Fei-Fei, "Dynamic Task Prioritization for Multitask Learning", ECCV 2018,
§3.2: task weights from smoothed key performance indicators ``κ̄_t ∈ (0, 1]`` (``kpis``, shape
``(K,)``), ``FL(κ̄; γ) = −(1 − κ̄)^γ·log κ̄``, total ``Σ_t FL(κ̄_t; γ_t)·L_t`` (``mean``: ``/K``;
``none``: the terms). ``gamma`` is a scalar or one ``γ_t ≥ 0`` per task (default 1: the paper
leaves γ_t to the user). The weights are constants: the only gradient is ``∂/∂L_t = FL(κ̄_t; γ_t)``
— no gradient flows through the KPIs (a KPI is a non-differentiable metric); it is NaN where the
task's KPI or γ is, whatever its loss.

Edges: ``κ̄ = 1`` gives weight 0 for every γ (``log 1 = 0``; ``0^0 = 1`` at γ = 0 — never
``0·∞``); ``κ̄ → 0`` gives ``+∞``: ``κ̄ = 0`` is an error unless ``kpi_floor ∈ (0, 1]`` is given,
which clamps ``κ̄ ← max(κ̄, kpi_floor)`` first (a convention some code uses; documented, not the
default); ``κ̄`` outside ``[0, 1]`` and ``γ < 0`` are errors; NaN propagates.

The moving average (the stateful object's oracle, :func:`dtp_moving_average`): with
``κ̄ ← α·κ + (1 − α)·κ̄`` per step, after ``T`` steps of KPIs ``κ^{(1)}…κ^{(T)}``
``κ̄_T = (1 − α)^T·κ̄_0 + α·Σ_τ (1 − α)^{T−τ}·κ^{(τ)}`` from a documented initial ``κ̄_0``, or, without
one, from the first observation (``κ̄_1 = κ^{(1)}``, the sum from ``τ = 2``). A float recurrence
``κ̄ + α·(κ − κ̄)`` commits at most ``(1 + 2α)·u`` per step (three roundings of values in
``[0, 1]``) and damps old errors by ``1 − α``, so it stays within :func:`ema_drift_bound`
``= 3u/α`` of the exact closed form for every ``T`` (tested to ``T = 10⁴``).
"""

from __future__ import annotations

import mpmath
import numpy as np
from mpmath import mpf

from lossoracle.mpfuncs import exact_sub, log1pexp, mp_array, mp_sum, sigmoid, to_mp, workprec
from lossoracle.spec import Arg, Case, Spec
from lossoracle.strategies import GRIDS, logits, rng_for, to_grid

REDUCTIONS = ("none", "mean", "sum")
FORMS = ("kendall", "simplified", "liebel")
TASK_TYPES = ("regression", "classification")

__all__ = [
    "FORMS", "TASK_TYPES", "uncertainty_weighted_loss", "uncertainty_weighted_loss_grad", "uncertainty_optimum",
    "dynamic_task_priority", "dynamic_task_priority_grad", "dtp_weights", "dtp_moving_average",
    "ema_drift_bound", "SPECS",
]


# ----------------------------------------------------------------------------------------------
# Shared: task vectors, cotangents, reductions


def _vector(name: str, a) -> list:
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one entry per task), got shape {arr.shape}")
    return to_mp(arr).tolist() if arr.dtype != object else list(arr)


def _cotangents(grad_output, reduction: str, k: int) -> list:
    """What each task's term receives: ``a_i`` (none), ``a`` (sum), ``a/K`` (mean)."""
    if reduction == "none":
        return _vector("grad_output", grad_output)
    if k == 0:
        return []
    a = mpf(np.asarray(grad_output, dtype=object).reshape(-1)[0]) if np.asarray(grad_output).dtype == object \
        else mpf(float(np.asarray(grad_output, dtype=np.float64).reshape(-1)[0]))
    return [a / k if reduction == "mean" else a] * k


def _reduce(terms: list, reduction: str):
    if reduction == "none":
        return mp_array(terms, (len(terms),))
    total = mp_sum(terms)
    if reduction == "sum":
        return total
    if reduction != "mean":
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return total / len(terms) if terms else mpmath.nan


def _nan(*vs) -> bool:
    return any(mpmath.isnan(v) for v in vs)


# ----------------------------------------------------------------------------------------------
# Uncertainty weighting


def _types(task_types, form: str, k: int) -> list[str]:
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if task_types is None:
        return ["regression"] * k
    if form != "kendall":
        raise ValueError(f"task_types applies to form='kendall' only (form {form!r} has one term for every task)")
    types = list(task_types)
    if len(types) != k or any(t not in TASK_TYPES for t in types):
        raise ValueError(f"task_types must list {k} of {TASK_TYPES}, got {task_types!r}")
    return types


def _coefficient(form: str, task_type: str) -> mpf:
    """``c``: ½ for a regression task (kendall) and for liebel, 1 for classification and simplified."""
    if form == "simplified" or (form == "kendall" and task_type == "classification"):
        return mpf(1)
    return mpf(1) / 2


def _regulariser(form: str, s: mpf) -> mpf:
    if form == "kendall":
        return s / 2
    if form == "simplified":
        return s
    return log1pexp(s)


def _regulariser_slope(form: str, s: mpf) -> mpf:
    if form == "kendall":
        return mpf(1) / 2
    if form == "simplified":
        return mpf(1)
    return sigmoid(s)


def _uw_setup(losses, log_vars, task_types, form):
    L, s = _vector("losses", losses), _vector("log_vars", log_vars)
    if len(L) != len(s):
        raise ValueError(f"log_vars has {len(s)} entries, losses {len(L)}")
    return L, s, [_coefficient(form, t) for t in _types(task_types, form, len(L))]


def uncertainty_weighted_loss(losses, log_vars, task_types=None, form: str = "kendall", reduction: str = "sum"):
    """Exact ``Σ_i c_i·e^{−s_i}·L_i + r(s_i)`` (reduced; see the module docstring for the forms)."""
    with workprec():
        L, s, c = _uw_setup(losses, log_vars, task_types, form)
        terms = [mpmath.nan if _nan(l, v) else ci * l * mpmath.exp(-v) + _regulariser(form, v)
                 for l, v, ci in zip(L, s, c)]
        return _reduce(terms, reduction)


def uncertainty_weighted_loss_grad(grad_output, losses, log_vars, task_types=None, form: str = "kendall",
                                   reduction: str = "sum") -> dict[str, np.ndarray]:
    """VJP w.r.t. ``losses`` (``a·c·e^{−s}``) and ``log_vars`` (``a·(r'(s) − c·e^{−s}·L)``)."""
    with workprec():
        L, s, c = _uw_setup(losses, log_vars, task_types, form)
        gl, gs = [], []
        for l, v, ci, a in zip(L, s, c, _cotangents(grad_output, reduction, len(L))):
            w = ci * mpmath.exp(-v)  # NaN where s is: each partial is NaN where an argument it involves is
            gl.append(a * w)
            gs.append(a * (_regulariser_slope(form, v) - w * l))
        return {"losses": mp_array(gl, (len(L),)), "log_vars": mp_array(gs, (len(L),))}


def uncertainty_optimum(loss, form: str = "kendall", task_type: str = "regression") -> tuple[mpf, mpf]:
    """``(s*, ℓ(s*))``: the minimiser in ``s`` of one task's term for a fixed ``L > 0``, and the value
    there, from the closed forms (not by minimising)."""
    with workprec():
        L = mpf(loss)
        if not L > 0:
            raise ValueError("the optimum exists for L > 0 only")
        _types(None if task_type == "regression" else [task_type], form, 1)
        if form == "liebel":
            x = (L + mpmath.sqrt(L * L + 8 * L)) / 4
            return mpmath.log(x), x / (1 + x) + mpmath.log1p(x)
        if form == "simplified":
            return mpmath.log(L), 1 + mpmath.log(L)
        if task_type == "classification":
            return mpmath.log(2 * L), (1 + mpmath.log(2 * L)) / 2
        return mpmath.log(L), (1 + mpmath.log(L)) / 2


# ----------------------------------------------------------------------------------------------
# Dynamic Task Prioritization


def _gammas(gamma, k: int) -> list:
    g = np.asarray(1.0 if gamma is None else gamma)
    if g.ndim == 0:
        return [mpf(g.item()) if g.dtype != object else g.item()] * k
    return _vector("gamma", g)


def _focal_weight(kappa: mpf, gamma: mpf, floor) -> mpf:
    """``FL(κ̄; γ) = −(1 − κ̄)^γ log κ̄`` with ``κ̄ ← max(κ̄, floor)``; ``1 − κ̄`` exact; 0 at κ̄ = 1."""
    if _nan(kappa, gamma):
        return mpmath.nan
    if floor is not None:
        kappa = max(kappa, mpf(floor))
    if kappa == 1:
        return mpf(0)
    if kappa == 0:
        return mpmath.inf
    q = exact_sub(mpf(1), kappa)
    return -(q**gamma if gamma != 0 else mpf(1)) * mpmath.log(kappa)


def dtp_weights(kpis, gamma=1.0, kpi_floor=None) -> np.ndarray:
    """Exact task weights ``FL(κ̄_t; γ_t)`` (object array)."""
    with workprec():
        kap = _vector("kpis", kpis)
        return mp_array([_focal_weight(k, g, kpi_floor) for k, g in zip(kap, _gammas(gamma, len(kap)))],
                        (len(kap),))


def _dtp_setup(losses, kpis, gamma, kpi_floor):
    L = _vector("losses", losses)
    w = dtp_weights(kpis, gamma, kpi_floor).tolist()
    if len(w) != len(L):
        raise ValueError(f"kpis has {len(w)} entries, losses {len(L)}")
    return L, w


def dynamic_task_priority(losses, kpis, gamma=1.0, reduction: str = "sum", kpi_floor=None):
    """Exact ``Σ_t FL(κ̄_t; γ_t)·L_t`` (reduced)."""
    with workprec():
        L, w = _dtp_setup(losses, kpis, gamma, kpi_floor)
        return _reduce([mpmath.nan if _nan(l) else wt * l for l, wt in zip(L, w)], reduction)


def dynamic_task_priority_grad(grad_output, losses, kpis, gamma=1.0, reduction: str = "sum",
                               kpi_floor=None) -> dict[str, np.ndarray]:
    """VJP w.r.t. ``losses``: ``a_t·FL(κ̄_t; γ_t)`` (the weights are constants)."""
    with workprec():
        L, w = _dtp_setup(losses, kpis, gamma, kpi_floor)
        cot = _cotangents(grad_output, reduction, len(L))
        return {"losses": mp_array([a * wt for wt, a in zip(w, cot)], (len(L),))}


def dtp_moving_average(kpi_history, alpha, initial=None) -> np.ndarray:
    """Exact ``κ̄_T`` after the updates ``κ̄ ← α·κ + (1 − α)·κ̄`` with the rows of ``kpi_history``
    (shape ``(T, K)``), by the closed form ``(1 − α)^T·κ̄_0 + α·Σ_τ (1 − α)^{T−τ}·κ^{(τ)}``
    (``initial = None``: ``κ̄_1 = κ^{(1)}``). Every power is evaluated on its own, so this is not
    the recurrence run at high precision."""
    h = np.asarray(kpi_history, dtype=np.float64)
    if h.ndim != 2 or h.shape[0] == 0:
        raise ValueError(f"kpi_history must have shape (T, K) with T ≥ 1, got {h.shape}")
    with workprec():
        a = mpf(float(alpha))
        q = exact_sub(mpf(1), a)
        T, K = h.shape
        out = []
        for t in range(K):
            col = [mpf(v) for v in h[:, t].tolist()]
            if initial is None:
                terms = [q ** (T - 1) * col[0]] + [a * q ** (T - 1 - i) * col[i] for i in range(1, T)]
            else:
                k0 = mpf(float(np.broadcast_to(np.asarray(initial, dtype=np.float64), (K,))[t]))
                terms = [q**T * k0] + [a * q ** (T - 1 - i) * col[i] for i in range(T)]
            out.append(mpmath.fsum(terms))
        return mp_array(out, (K,))


def ema_drift_bound(alpha: float, unit_roundoff: float = 2.0**-53) -> float:
    """The spec's bound on ``|κ̄_float − κ̄_exact|`` for the recurrence ``κ̄ + α·(κ − κ̄)`` in a format
    with unit roundoff ``u``: at most ``(1 + 2α)·u`` per step, damped by ``1 − α``: ``≤ 3u/α``."""
    return 3.0 * unit_roundoff / float(alpha)


# ----------------------------------------------------------------------------------------------
# Reduction sizes


def _reduced_terms(inputs, params) -> int:
    return max(1, int(np.size(inputs["losses"]))) if params.get("reduction", "sum") != "none" else 1


# ----------------------------------------------------------------------------------------------
# Edge catalogue and generated cases

_F = np.float64
_NAN = float("nan")


def _a(v) -> np.ndarray:
    return np.asarray(v, dtype=_F)


def _bf(x) -> np.ndarray:
    """Round to 8 significant bits without clipping (exact in bfloat16, float32 and float64; also in
    float16 when inside its range — ``Case.dtypes()`` decides)."""
    m, e = np.frexp(np.asarray(x, dtype=_F))
    return np.ldexp(np.round(m * 256.0) / 256.0, e)


def _uw(id_, L, s, note="", raises=None, **params) -> Case:
    return Case(id_, {"losses": _a(L) if raises is not TypeError else np.asarray(L), "log_vars": _a(s)}, params,
                raises=raises, note=note)


# the ladders: L from 1e-30 to 1e30 and 0; s = ±50 and ±1000
_L_LADDER = (0.0, 1e-30, 1e-10, 1.0, 1e10, 1e30)
_S_LADDER = (-1000.0, -50.0, 0.0, 50.0, 1000.0)


def _uw_cases() -> list[Case]:
    cases = []
    grid_L, grid_s = np.meshgrid(_L_LADDER, _S_LADDER, indexing="ij")
    for form in FORMS:
        for red in REDUCTIONS:
            r = rng_for("uncertainty_weighted_loss", form, red)
            L = _bf(np.exp(r.uniform(-4, 4, 5)))
            cases.append(_uw(f"{form}_basic_{red}", L, to_grid(r.uniform(-3, 3, 5), "half"), form=form,
                             reduction=red))
        # the ladder: every L against every s, in float64 (exact values) and on the 8-bit grid
        cases.append(_uw(f"{form}_ladder_float64", grid_L.ravel(), grid_s.ravel(), form=form, reduction="none",
                         note="L from 0 to 1e30 against s = ±50, ±1000: e^{−s} over- and underflows"))
        cases.append(_uw(f"{form}_ladder_8bit", _bf(grid_L.ravel()), grid_s.ravel(), form=form, reduction="none",
                         note="the ladder rounded to 8 bits: valid in bfloat16 and float32"))
        cases.append(_uw(f"{form}_ladder_sum", grid_L.ravel(), grid_s.ravel(), form=form, reduction="sum"))
        cases += [
            _uw(f"{form}_half_range", [0.0, 2.0**-24, 2.0**-14, 1.0, 65504.0, 0.0, 2.0**-20, 3.0],
                [-50.0, -12.0, -20.0, 0.0, 11.0, 50.0, -15.0, 11.5], form=form, reduction="none",
                note="float16: e^{−s} overflows at s < −11.1 while e^{−s}·L is finite"),
            _uw(f"{form}_product_finite_float32", [2.0**-100, 2.0**-120, 0.0, 2.0**-149], [-100.0, -90.0, -100.0,
                                                                                          -103.0],
                form=form, reduction="none", note="float32: e^{100} overflows, e^{100}·2^-100 = 2.1e13 does not"),
            _uw(f"{form}_product_finite_float64", [2.0**-1000, 5e-324, 0.0, 1e-300], [-750.0, -745.0, -1000.0, -700.0],
                form=form, reduction="none", note="float64: e^{750} overflows, e^{750}·2^-1000 = 2^82 does not"),
            _uw(f"{form}_half_range_sum", [0.0, 2.0**-24, 2.0**-14, 1.0, 2.0**-20, 3.0], [-50.0, -12.0, -20.0, 0.0,
                                                                                        -15.0, 11.5],
                form=form, reduction="sum", note="float16: e^{−s}·L finite where e^{−s} overflows"),
            _uw(f"{form}_product_finite_float32_sum", [2.0**-100, 2.0**-120, 2.0**-149], [-100.0, -90.0, -103.0],
                form=form, reduction="sum"),
            _uw(f"{form}_zero_loss_overflow_sum", [0.0, 0.5], [-1000.0, 1.0], form=form, reduction="sum",
                note="L = 0 at s = −1000: 0, never inf·0 = NaN"),
            _uw(f"{form}_product_finite_float64_sum", [2.0**-1000, 5e-324, 1e-300], [-750.0, -745.0, -700.0],
                form=form, reduction="sum"),
            _uw(f"{form}_single_task", [0.75], [-0.5], form=form, reduction="sum", note="K = 1"),
            _uw(f"{form}_single_task_mean", [1e30], [50.0], form=form, reduction="mean", note="K = 1"),
            _uw(f"{form}_zero_loss", [0.0, 0.0, 0.0], [-3.0, 0.0, 2.5], form=form, reduction="none",
                note="L = 0: the value is the regulariser alone, ∂/∂s = r'(s)"),
        ]
        # at the analytic optimum the gradient in s is 0 (it cancels genuinely in a float evaluation)
        opt_L = np.array([0.25, 1.0, 3.0, 1e-6, 1e6])
        opt_s = np.array([float(uncertainty_optimum(v, form)[0]) for v in opt_L])
        cases.append(_uw(f"{form}_near_optimum_float64", opt_L, opt_s, form=form, reduction="none",
                         note="s = float64(s*): ∂ℓ/∂s ≈ 0, ill-conditioned (genuine cancellation)"))
        cases.append(_uw(f"{form}_near_optimum_float32", opt_L.astype(np.float32).astype(_F),
                         opt_s.astype(np.float32).astype(_F), form=form, reduction="none"))
        if form in ("kendall", "simplified"):  # s* = log L exact at L = 1
            cases.append(_uw(f"{form}_exact_optimum", [1.0, 1.0], [0.0, 0.0], form=form, reduction="none",
                             note="s* = log 1 = 0: ∂ℓ/∂s = 0 exactly"))
    cases += [
        _uw("kendall_mixed_task_types", [0.5, 2.0, 0.125, 7.0], [0.25, -1.5, 3.0, 0.0], form="kendall",
            task_types=("regression", "classification", "classification", "regression"), reduction="sum"),
        _uw("kendall_mixed_task_types_none", [0.5, 2.0, 0.0, 1e4], [0.25, -50.0, -1000.0, 1000.0], form="kendall",
            task_types=("classification", "classification", "regression", "classification"), reduction="none"),
        _uw("kendall_classification_optimum", [1.0, 0.5], [float(np.log(2.0)), 0.0], form="kendall",
            task_types=("classification", "classification"), reduction="none",
            note="s* = log 2L: 0 exactly at L = ½"),
        _uw("nan_propagates", [_NAN, 1.0, 0.5], [0.0, _NAN, 1.0], reduction="none", note="NaN in, NaN out"),
        _uw("nan_sum", [_NAN, 1.0], [0.0, 0.5], reduction="sum", note="NaN in, NaN out"),
        _uw("empty_sum", np.zeros(0), np.zeros(0), reduction="sum", note="K = 0: 0"),
        _uw("empty_mean", np.zeros(0), np.zeros(0), reduction="mean", note="K = 0: 0/0 = NaN"),
    ]
    for form in FORMS:
        for red in ("sum", "none"):
            r = rng_for("uncertainty_weighted_loss", "k100", form, red)
            L = _bf(np.exp(r.uniform(-20, 20, 100)))
            L[::17] = 0.0
            cases.append(_uw(f"{form}_k100_{red}", L, to_grid(r.uniform(-60, 60, 100), "half"), form=form,
                             reduction=red, note="K = 100 tasks"))
    for grid in GRIDS:
        for i, (form, red) in enumerate([("kendall", "sum"), ("simplified", "none"), ("liebel", "mean"),
                                         ("kendall", "none")]):
            r = rng_for("uncertainty_weighted_loss", grid, i)
            L = to_grid(np.exp(r.uniform(-9, 9, 6)), grid)
            s = logits(r, (6,), grid, 3.0)
            cases.append(_uw(f"random_{grid}_{i}", L, s, form=form, reduction=red))
    ok_L, ok_s = _a([0.5, 2.0]), _a([0.0, 1.0])
    cases += [
        _uw("bad_negative_loss", [-0.5, 2.0], ok_s, raises=ValueError, note="losses < 0"),
        _uw("bad_infinite_loss", [float("inf"), 2.0], ok_s, raises=ValueError, note="losses must be finite"),
        _uw("bad_infinite_log_var", ok_L, [float("-inf"), 1.0], raises=ValueError, note="log_vars must be finite"),
        _uw("bad_shape_mismatch", ok_L, _a([0.0, 1.0, 2.0]), raises=ValueError, note="log_vars shape differs"),
        _uw("bad_2d_losses", _a([[0.5, 2.0]]), _a([[0.0, 1.0]]), raises=ValueError, note="losses must be 1-D"),
        _uw("bad_form", ok_L, ok_s, form="kendal", raises=ValueError, note="unknown form"),
        _uw("bad_task_type", ok_L, ok_s, task_types=("regression", "segmentation"), raises=ValueError,
            note="unknown task type"),
        _uw("bad_task_types_length", ok_L, ok_s, task_types=("regression",), raises=ValueError,
            note="one task type per task"),
        _uw("bad_task_types_form", ok_L, ok_s, form="simplified", task_types=("regression", "classification"),
            raises=ValueError, note="task_types with a form that has one term for every task"),
        _uw("bad_reduction", ok_L, ok_s, reduction="avg", raises=ValueError, note="unknown reduction"),
        _uw("bad_integer_losses", np.array([1, 2]), ok_s, raises=TypeError, note="non-floating losses"),
    ]
    return cases


def _dtp(id_, L, kpis, gamma=None, note="", raises=None, **params) -> Case:
    inputs = {"losses": _a(L), "kpis": _a(kpis), "gamma": None if gamma is None else _a(gamma)}
    return Case(id_, inputs, params, raises=raises, note=note)


def _dtp_cases() -> list[Case]:
    cases = []
    r = rng_for("dynamic_task_priority", "edge")
    L5 = _bf(np.exp(r.uniform(-3, 3, 5)))
    k5 = to_grid(r.uniform(0.05, 0.95, 5), "half")
    for red in REDUCTIONS:
        cases += [
            _dtp(f"basic_{red}", L5, k5, reduction=red),
            _dtp(f"per_task_gamma_{red}", L5, k5, gamma=[0.0, 0.5, 1.0, 2.0, 4.0], reduction=red),
        ]
    cases += [
        _dtp("kpi_one_mutes_task", [1.0, 2.0, 3.0, 1e4], [1.0, 1.0, 0.5, 1.0], gamma=[0.0, 0.5, 2.0, 1.0],
             reduction="none", note="κ̄ = 1: weight 0 for every γ (0^0·log 1 = 0, never 0·∞)"),
        _dtp("gamma_zero", [1.0, 2.0, 0.5], [0.25, 0.5, 1.0], gamma=0.0, reduction="none",
             note="γ = 0: FL = −log κ̄"),
        _dtp("gamma_below_one", [1.0, 2.0, 0.5, 4.0], [0.25, 0.5, 0.875, 1.0 - 2.0**-11], gamma=0.25,
             reduction="none", note="γ < 1: (1 − κ̄)^γ has an infinite slope at κ̄ → 1"),
        _dtp("tiny_kpi_float64", [1.0, 1.0, 1.0, 1e-300], [5e-324, 1e-300, 2.0**-1022, 0.5], gamma=2.0,
             reduction="none", note="κ̄ → 0: the weight grows like −log κ̄ (744 at the smallest subnormal)"),
        _dtp("tiny_kpi_float32", [1.0, 1.0, 1.0], [2.0**-149, 2.0**-126, 2.0**-100], reduction="none"),
        _dtp("tiny_kpi_half", [1.0, 2.0, 1.0], [2.0**-24, 2.0**-14, 2.0**-10], reduction="none"),
        _dtp("kpi_near_one_float64", [1.0, 1.0, 1.0], [1.0 - 2.0**-53, 1.0 - 2.0**-40, 0.5], gamma=[0.5, 2.0, 1.0],
             reduction="none", note="1 − κ̄ exact: FL ≈ (2^-53)^γ·2^-53"),
        _dtp("kpi_near_one_float32", [1.0, 1.0, 1.0], [1.0 - 2.0**-24, 1.0 - 2.0**-20, 0.75], gamma=[0.5, 3.0, 1.0],
             reduction="none"),
        _dtp("large_gamma", [1.0, 2.0, 3.0], [0.5, 0.125, 0.875], gamma=[64.0, 512.0, 8.0], reduction="none",
             note="(1 − κ̄)^γ far below 1"),
        _dtp("huge_losses", [1e30, 0.0, 1e-30], [0.25, 0.5, 0.75], reduction="sum"),
        _dtp("kpi_floor_clamps_zero", [1.0, 2.0, 3.0], [0.0, 1e-9, 0.5], reduction="none", kpi_floor=1e-6,
             note="kpi_floor clamps κ̄ = 0 (and 1e-9) to 1e-6: weight −(1 − 1e-6)·log 1e-6"),
        _dtp("single_task", [2.5], [0.625], gamma=2.0, reduction="sum", note="K = 1"),
        _dtp("empty_sum", np.zeros(0), np.zeros(0), reduction="sum"),
        _dtp("empty_mean", np.zeros(0), np.zeros(0), reduction="mean", note="K = 0: 0/0 = NaN"),
        _dtp("nan_propagates", [_NAN, 1.0, 2.0], [0.5, _NAN, 0.25], reduction="none", note="NaN in, NaN out"),
    ]
    rk = rng_for("dynamic_task_priority", "k100")
    cases.append(_dtp("k100_sum", _bf(np.exp(rk.uniform(-20, 20, 100))), to_grid(rk.uniform(0.001, 1, 100), "half"),
                      gamma=2.0, reduction="sum", note="K = 100 tasks"))
    for grid in GRIDS:
        for i, red in enumerate(("sum", "none", "mean")):
            rg = rng_for("dynamic_task_priority", grid, i)
            L = to_grid(np.exp(rg.uniform(-9, 9, 6)), grid)
            k = np.clip(to_grid(rg.uniform(0, 1, 6), grid), 2.0**-14, 1.0)
            gamma = None if i == 0 else to_grid(rg.uniform(0, 4, 6 if i == 1 else 1)[0 if i == 2 else slice(None)],
                                                grid)
            cases.append(_dtp(f"random_{grid}_{i}", L, k, gamma=gamma, reduction=red))
    L3, k3 = _a([1.0, 2.0, 0.5]), _a([0.25, 0.5, 0.75])
    cases += [
        _dtp("bad_kpi_zero", L3, [0.0, 0.5, 0.75], raises=ValueError,
             note="κ̄ = 0: FL = −log 0 = +inf (no kpi_floor)"),
        _dtp("bad_kpi_above_one", L3, [0.25, 1.5, 0.75], raises=ValueError, note="κ̄ > 1"),
        _dtp("bad_kpi_negative", L3, [0.25, -0.25, 0.75], raises=ValueError, note="κ̄ < 0"),
        _dtp("bad_gamma_negative", L3, k3, gamma=-1.0, raises=ValueError, note="γ < 0"),
        _dtp("bad_gamma_shape", L3, k3, gamma=[1.0, 2.0], raises=ValueError, note="one γ per task"),
        _dtp("bad_kpis_shape", L3, [0.25, 0.5], raises=ValueError, note="one KPI per task"),
        _dtp("bad_negative_loss", [-1.0, 2.0, 0.5], k3, raises=ValueError, note="losses < 0"),
        _dtp("bad_reduction", L3, k3, reduction="avg", raises=ValueError, note="unknown reduction"),
        _dtp("bad_kpi_floor", L3, k3, kpi_floor=0.0, raises=ValueError, note="kpi_floor must lie in (0, 1]"),
    ]
    return cases


_TASK_LOSS = (0.0, 1e30)  # one task's loss in a multi-task objective: finite, ≥ 0

SPECS = (
    Spec(
        name="uncertainty_weighted_loss",
        signature='uncertainty_weighted_loss(losses, log_vars, task_types=None, form="kendall", reduction="sum")',
        definition="Σ_i c_i·e^{−s_i}·L_i + r(s_i); kendall: c = ½ (regression) or 1 (classification), r = s/2; "
                   "simplified: c = 1, r = s; liebel: c = ½, r = log(1 + e^s); mean = Σ / K",
        source="Kendall, Gal & Cipolla, CVPR 2018, eqs. (5)–(10); Liebel & Körner 2018 (arXiv:1805.06334)",
        args=(Arg("losses", "task_loss", differentiable=True, domain=_TASK_LOSS),
              Arg("log_vars", "logits", differentiable=True)),
        params={"task_types": None, "form": "kendall", "reduction": "sum"},
        oracle=uncertainty_weighted_loss,
        gradient=uncertainty_weighted_loss_grad,
        cases=_uw_cases,
        reduced_terms=_reduced_terms,
        edge_notes=("e^{−s}·L as e^{log L − s}: finite where e^{−s} alone overflows; L = 0 never meets inf (no NaN)",
                    "losses must be finite and ≥ 0, log_vars finite; NaN propagates; K = 0: sum 0, mean NaN",
                    "task_types applies to form='kendall' only (None: every task a regression task)"),
    ),
    Spec(
        name="dynamic_task_priority",
        signature='dynamic_task_priority(losses, kpis, gamma=1.0, reduction="sum", kpi_floor=None)',
        definition="Σ_t FL(κ̄_t; γ_t)·L_t, FL(κ̄; γ) = −(1 − κ̄)^γ·log κ̄, the weights constant (no gradient "
                   "through κ̄); mean = Σ / K",
        source="Guo, Haque, Huang, Yeung & Fei-Fei, Dynamic Task Prioritization for Multitask Learning, ECCV 2018, "
               "§3.2",
        args=(Arg("losses", "task_loss", differentiable=True, domain=_TASK_LOSS),
              Arg("kpis", "kpi", domain=(5e-324, 1.0)),  # κ̄ ∈ (0, 1]; κ̄ = 0 is an error of its own
              Arg("gamma", "weight", positional=False)),
        params={"reduction": "sum", "kpi_floor": None},
        oracle=dynamic_task_priority,
        gradient=dynamic_task_priority_grad,
        cases=_dtp_cases,
        reduced_terms=_reduced_terms,
        edge_notes=("κ̄ = 1: weight 0 for every γ (never 0·∞); κ̄ = 0: error unless kpi_floor clamps it",
                    "κ̄ outside [0, 1] and γ < 0 are errors; NaN propagates",
                    "stateful EMA κ̄ ← κ̄ + α(κ − κ̄) in float64: within 3u/α of the exact closed form for every T"),
    ),
)
