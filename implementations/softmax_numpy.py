"""NumPy softmax, log-softmax, NLL and cross-entropy: values and explicit VJPs.

Kernels in :mod:`.softmax_core` (cancellation-free); float16 is computed in float32 and the
result rounded once to float16. Semantics are PyTorch's (see ``lossoracle.reference.cross_entropy``).
"""

from __future__ import annotations

import numpy as np

from . import softmax_core as core
from .validation import check_class_targets, require_floating, require_reduction


def _compute(x: np.ndarray) -> np.ndarray:
    require_floating("input", x)
    return x.astype(np.float32) if x.dtype == np.float16 else x


def _rows(x: np.ndarray, dim: int) -> np.ndarray:
    return core.class_last(_compute(np.asarray(x)), dim)


@np.errstate(all="ignore")  # inf/NaN edge values are handled on purpose
def log_softmax(input: np.ndarray, dim: int = -1) -> np.ndarray:
    """``x_c − log Σ_j e^{x_j}`` along ``dim``."""
    return core.class_back(-core.row_stats(_rows(input, dim)).nlp, dim).astype(input.dtype)


@np.errstate(all="ignore")  # inf/NaN edge values are handled on purpose
def softmax(input: np.ndarray, dim: int = -1) -> np.ndarray:
    """``e^{x_c} / Σ_j e^{x_j}`` along ``dim``."""
    return core.class_back(core.row_stats(_rows(input, dim)).p, dim).astype(input.dtype)


@np.errstate(all="ignore")  # inf/NaN edge values are handled on purpose
def log_softmax_grad(grad_output: np.ndarray, input: np.ndarray, dim: int = -1) -> dict[str, np.ndarray]:
    """VJP ``g_j − p_j Σ_k g_k``."""
    st = core.row_stats(_rows(input, dim))
    g = core.class_last(np.asarray(grad_output, dtype=st.p.dtype), dim)
    return {"input": core.class_back(core.log_softmax_vjp(g, st), dim).astype(input.dtype)}


@np.errstate(all="ignore")  # inf/NaN edge values are handled on purpose
def softmax_grad(grad_output: np.ndarray, input: np.ndarray, dim: int = -1) -> dict[str, np.ndarray]:
    """VJP ``p_j (g_j − Σ_k g_k p_k)``."""
    st = core.row_stats(_rows(input, dim))
    g = core.class_last(np.asarray(grad_output, dtype=st.p.dtype), dim)
    return {"input": core.class_back(core.softmax_vjp(g, st), dim).astype(input.dtype)}


class _Plan:
    """Validated, class-last view of a cross-entropy / NLL call."""

    def __init__(self, input, target, weight, ignore_index, reduction, label_smoothing, nll=False):
        input, target = np.asarray(input), np.asarray(target)
        require_reduction(reduction)
        self.prob = check_class_targets(input, target, weight, ignore_index, label_smoothing)
        if nll and self.prob:
            raise ValueError("nll_loss takes class-index targets (an integer array), not probabilities")
        self.dtype = input.dtype
        self.dim = 1 if input.ndim > 1 else 0
        self.x = _rows(input, self.dim)
        ct = self.x.dtype
        t = core.class_last(target.astype(ct), self.dim) if self.prob else target
        self.w = None if weight is None else np.asarray(weight, dtype=ct)
        self.eps, self.reduction = label_smoothing, reduction
        self.co = core.Coefficients(self.x, t, self.w, ignore_index, label_smoothing, self.prob)

    def reduce(self, rows: np.ndarray):
        if self.reduction == "none":
            return rows.astype(self.dtype)
        total = rows.sum()
        if self.reduction == "mean":
            total = total / self.co.den
        return np.asarray(total, dtype=self.dtype)

    def cotangent(self, grad_output) -> np.ndarray:
        """What each row's loss receives from the reduction, shaped ``(..., 1)``."""
        g = np.asarray(grad_output, dtype=self.x.dtype)
        if self.reduction == "mean":
            g = g / self.co.den
        return np.broadcast_to(g, self.x.shape[:-1])[..., None]


@np.errstate(all="ignore")  # inf/NaN edge values are handled on purpose
def cross_entropy(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> np.ndarray:
    """Cross-entropy of logits against class indices or probabilities (PyTorch semantics)."""
    plan = _Plan(input, target, weight, ignore_index, reduction, label_smoothing)
    return plan.reduce(core.ce_rows(core.Shifted(plan.x), plan.co))


@np.errstate(all="ignore")  # inf/NaN edge values are handled on purpose
def cross_entropy_grad(grad_output, input, target, weight=None, ignore_index: int = -100,
                       reduction: str = "mean", label_smoothing: float = 0.0) -> dict[str, np.ndarray]:
    """VJP: ``a_i (rest_ij p_ij − β_ij (1 − p_ij))`` for the logits; ``a_i (1−ε) w_c (−log p_ic)``
    for probability targets (``a_i`` the cotangent the row receives)."""
    plan = _Plan(input, target, weight, ignore_index, reduction, label_smoothing)
    sh = core.Shifted(plan.x)
    a = plan.cotangent(grad_output)
    out = {"input": core.class_back(core.ce_rows_grad(sh, plan.co, a), plan.dim).astype(plan.dtype)}
    if plan.prob:
        w = np.ones(plan.x.shape[-1], plan.x.dtype) if plan.w is None else plan.w
        gt = a * (1 - plan.eps) * np.where(w != 0, w * sh.nlp(), 0.0)
        out["target"] = core.class_back(gt, plan.dim).astype(plan.dtype)
    return out


@np.errstate(all="ignore")  # inf/NaN edge values are handled on purpose
def nll_loss(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean") -> np.ndarray:
    """``−w_y·input_y`` (input taken as log-probabilities), PyTorch reductions."""
    plan = _Plan(input, target, weight, ignore_index, reduction, 0.0, nll=True)
    co = plan.co
    rows = np.where(co.wy != 0, -co.wy * np.take_along_axis(plan.x, co.y, -1), 0.0)[..., 0]
    return plan.reduce(rows)


@np.errstate(all="ignore")  # inf/NaN edge values are handled on purpose
def nll_loss_grad(grad_output, input, target, weight=None, ignore_index: int = -100,
                  reduction: str = "mean") -> dict[str, np.ndarray]:
    """VJP: ``−a_i·w_{y_i}`` at the target entry, 0 elsewhere."""
    plan = _Plan(input, target, weight, ignore_index, reduction, 0.0, nll=True)
    gx = core.target_nll_grad(plan.co, plan.cotangent(grad_output), plan.x)
    return {"input": core.class_back(gx, plan.dim).astype(plan.dtype)}
