"""NumPy multi-task weighting: uncertainty weighting and Dynamic Task Prioritization, values and
explicit VJPs, and the stateful DTP moving average.

Kernels in :mod:`.multitask_core` (double-double, rounded once to the result dtype — NumPy's
result type of the floating arguments that carry the loss). Semantics:
``lossoracle.reference.multitask``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import multitask_core as core

__all__ = ["uncertainty_weighted_loss", "uncertainty_weighted_loss_grad", "dynamic_task_priority",
           "dynamic_task_priority_grad", "DynamicTaskPriority"]


def _uw_call(losses, log_vars, task_types, form, reduction):
    L, s = np.asarray(losses), np.asarray(log_vars)
    c = core.check_uw(L, s, task_types, form, reduction)
    return L, s, np.asarray(c, dtype=np.float64)


@np.errstate(all="ignore")  # overflow to ±inf is a result here, handled on purpose
def uncertainty_weighted_loss(losses: np.ndarray, log_vars: np.ndarray, task_types=None, form: str = "kendall",
                              reduction: str = "sum") -> np.ndarray:
    """``Σ_i c_i·e^{−s_i}·L_i + r(s_i)`` over the tasks (``form``: ``kendall``, ``simplified``,
    ``liebel``; ``task_types`` for ``kendall`` only; ``reduction``: ``sum``, ``mean`` or ``none``)."""
    L, s, c = _uw_call(losses, log_vars, task_types, form, reduction)
    dtype = np.result_type(L, s)
    v = core.uw_value(L.astype(np.float64), s.astype(np.float64), c, form, reduction,
                      core.transcendentals(dtype == np.float64))
    return np.asarray(v).astype(dtype)


@np.errstate(all="ignore")
def uncertainty_weighted_loss_grad(grad_output: np.ndarray, losses: np.ndarray, log_vars: np.ndarray,
                                   task_types=None, form: str = "kendall",
                                   reduction: str = "sum") -> dict[str, np.ndarray]:
    """VJP: ``a·c·e^{−s}`` for ``losses``, ``a·(r'(s) − c·e^{−s}·L)`` for ``log_vars``."""
    L, s, c = _uw_call(losses, log_vars, task_types, form, reduction)
    T = core.transcendentals(np.float64 in (L.dtype, s.dtype))
    g = np.asarray(grad_output).astype(np.float64)
    gL, gs = core.uw_grads(g, L.astype(np.float64), s.astype(np.float64), c, form, reduction, T)
    return {"losses": gL.astype(L.dtype), "log_vars": gs.astype(s.dtype)}


def _gamma(gamma) -> np.ndarray:
    g = np.asarray(1.0 if gamma is None else gamma)
    return g.astype(np.float64) if g.dtype.kind in "iub" else g


def _dtp_call(losses, kpis, gamma, reduction, kpi_floor):
    L, kap, gam = np.asarray(losses), np.asarray(kpis), _gamma(gamma)
    core.check_dtp(L, kap, gam, reduction, kpi_floor)
    kap = kap.astype(np.float64)
    if kpi_floor is not None:
        kap = np.maximum(kap, float(kpi_floor))  # NaN stays NaN
    return L, kap, gam.astype(np.float64)


@np.errstate(all="ignore")
def dynamic_task_priority(losses: np.ndarray, kpis: np.ndarray, gamma: Any = 1.0, reduction: str = "sum",
                          kpi_floor: float | None = None) -> np.ndarray:
    """``Σ_t FL(κ̄_t; γ_t)·L_t`` with ``FL(κ̄; γ) = −(1 − κ̄)^γ·log κ̄`` (the weights are constants)."""
    L, kap, gam = _dtp_call(losses, kpis, gamma, reduction, kpi_floor)
    v = core.dtp_value(L.astype(np.float64), kap, gam, reduction, core.transcendentals(L.dtype == np.float64))
    return np.asarray(v).astype(L.dtype)


@np.errstate(all="ignore")
def dynamic_task_priority_grad(grad_output: np.ndarray, losses: np.ndarray, kpis: np.ndarray, gamma: Any = 1.0,
                               reduction: str = "sum", kpi_floor: float | None = None) -> dict[str, np.ndarray]:
    """VJP w.r.t. ``losses``: ``a_t·FL(κ̄_t; γ_t)`` (no gradient through the KPIs or γ)."""
    L, kap, gam = _dtp_call(losses, kpis, gamma, reduction, kpi_floor)
    g = np.asarray(grad_output).astype(np.float64)
    gL = core.dtp_grad(g, L.astype(np.float64), kap, gam, reduction, core.transcendentals(L.dtype == np.float64))
    return {"losses": gL.astype(L.dtype)}


class DynamicTaskPriority:
    """Dynamic Task Prioritization with the KPI moving averages as state.

    ``update(kpis)`` folds one KPI per task (each in [0, 1]) into the averages,
    ``κ̄ ← κ̄ + α·(κ − κ̄)`` (= ``α·κ + (1 − α)·κ̄``; three roundings, no rounded ``1 − α``) in float64
    whatever the KPIs' dtype; ``weights()`` gives ``FL(κ̄_t; γ_t)``; calling the object on the task
    losses gives :func:`dynamic_task_priority` of them with the current averages.

    Initial averages (documented, because an uninitialised 0 gives ``−log 0``): ``initial=None``
    (default) takes the first observed KPIs as they are (``κ̄_1 = κ^{(1)}``: no bias toward a
    prior) and the weights are unavailable (RuntimeError) before the first update; a number in
    (0, 1] (or one per task) starts the averages there. The drift of the float64 averages from
    the exact closed form is at most ``3·2^-53/α`` for any number of updates
    (``lossoracle.reference.multitask.ema_drift_bound``).

    Parameters: ``num_tasks``; ``alpha`` ∈ (0, 1], the weight of the newest KPI; ``gamma`` ≥ 0,
    scalar or one per task; ``initial``; ``kpi_floor`` ∈ (0, 1] clamps the averages below for the
    weights (None: a zero average is an error). ``state_dict()`` / ``load_state_dict()`` save and
    restore the averages and the step count (and check the configuration they were made with).
    """

    def __init__(self, num_tasks: int, alpha: float, gamma: Any = 1.0, initial: Any = None,
                 kpi_floor: float | None = None) -> None:
        self.num_tasks = int(num_tasks)
        if self.num_tasks < 1:
            raise ValueError(f"num_tasks must be ≥ 1, got {num_tasks!r}")
        self.alpha = float(alpha)
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in (0, 1], got {alpha!r}")
        self.gamma = _gamma(gamma).astype(np.float64)
        self.kpi_floor = kpi_floor
        core.check_kpis(np.full(self.num_tasks, 0.5), self.gamma, self.num_tasks, kpi_floor)
        self.initial = initial
        self.kpi_ema = np.full(self.num_tasks, np.nan)
        self.steps = 0
        if initial is not None:
            init = np.broadcast_to(np.asarray(initial, dtype=np.float64), (self.num_tasks,)).copy()
            if not bool(((init > 0) & (init <= 1)).all()):
                raise ValueError(f"initial must lie in (0, 1], got {initial!r}")
            self.kpi_ema = init

    def update(self, kpis: Any) -> np.ndarray:
        """Fold one KPI per task into the averages; returns a copy of the new averages."""
        k = np.asarray(kpis)
        if k.dtype.kind not in "fiub":
            raise TypeError(f"kpis must be real numbers, got dtype {k.dtype}")
        k = k.astype(np.float64)
        if k.shape != (self.num_tasks,):
            raise ValueError(f"kpis must have shape ({self.num_tasks},) (one per task), got {k.shape}")
        if not bool(((k >= 0) & (k <= 1)).all()):  # NaN fails too: it would poison the average for good
            raise ValueError(f"kpis must lie in [0, 1] (no NaN), got {k.tolist()!r}")
        if self.steps == 0 and self.initial is None:
            self.kpi_ema = k.copy()
        else:
            self.kpi_ema = self.kpi_ema + self.alpha * (k - self.kpi_ema)
        self.steps += 1
        return self.kpi_ema.copy()

    def _averages(self) -> np.ndarray:
        if self.steps == 0 and self.initial is None:
            raise RuntimeError("no KPI observed yet: call update() first, or construct with initial=")
        return self.kpi_ema

    def weights(self) -> np.ndarray:
        """``FL(κ̄_t; γ_t)`` per task (float64)."""
        kap = self._averages()
        core.check_kpis(kap, self.gamma, self.num_tasks, self.kpi_floor)
        if self.kpi_floor is not None:
            kap = np.maximum(kap, float(self.kpi_floor))
        with np.errstate(all="ignore"):
            return core.dtp_weights(kap, self.gamma, core.transcendentals(True))

    def __call__(self, losses: np.ndarray, reduction: str = "sum") -> np.ndarray:
        return dynamic_task_priority(losses, self._averages(), self.gamma, reduction, self.kpi_floor)

    def grad(self, grad_output: np.ndarray, losses: np.ndarray, reduction: str = "sum") -> dict[str, np.ndarray]:
        return dynamic_task_priority_grad(grad_output, losses, self._averages(), self.gamma, reduction,
                                          self.kpi_floor)

    def state_dict(self) -> dict[str, Any]:
        return {"kpi_ema": self.kpi_ema.copy(), "steps": self.steps, "alpha": self.alpha,
                "gamma": self.gamma.copy(), "kpi_floor": self.kpi_floor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ema = np.asarray(state["kpi_ema"], dtype=np.float64)
        if ema.shape != (self.num_tasks,):
            raise ValueError(f"kpi_ema must have shape ({self.num_tasks},), got {ema.shape}")
        if float(state["alpha"]) != self.alpha or not np.array_equal(np.asarray(state["gamma"]), self.gamma):
            raise ValueError("the state was saved with another alpha or gamma")
        self.kpi_ema, self.steps = ema.copy(), int(state["steps"])
        self.kpi_floor = state.get("kpi_floor", self.kpi_floor)
