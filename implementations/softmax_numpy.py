"""NumPy softmax, log-softmax, NLL and cross-entropy: values and explicit VJPs.

Every row in a few passes (the bulk tier of :mod:`.softmax_core`: ``d = x − m``, ``e = e^d``,
``s = Σ e``, ``log p = d − log s``, ``p = e/s``), the rows where a probability above 1/2 would
cancel (or a value is not finite) recomputed by the cancellation-free kernels. float16 is computed
in float32 and the result rounded once to float16. Semantics are PyTorch's (see
``lossoracle.reference.cross_entropy``).
"""

from __future__ import annotations

import numpy as np

from . import softmax_core as core
from .validation import check_class_targets, require_floating, require_reduction


def _compute(x: np.ndarray) -> np.ndarray:
    require_floating("input", x)
    return x.astype(np.float32) if x.dtype == np.float16 else x


def _rows(x: np.ndarray, dim: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """``x`` in the compute dtype as class-last rows ``(R, C)``, and the class-last shape."""
    xl = np.moveaxis(_compute(np.asarray(x)), dim, -1)
    return xl.reshape(-1, xl.shape[-1]) if xl.shape[-1] else xl.reshape(xl.size, 0), xl.shape


def _unrows(a: np.ndarray, shape, dim: int, dtype) -> np.ndarray:
    return np.moveaxis(a.reshape(shape), -1, dim).astype(dtype, copy=False)


def _stats(x2: np.ndarray) -> tuple[core.Bulk, np.ndarray, core.TopTail | None]:
    """The bulk and its tail rows (the largest ``p = 1/s`` above 1/2; a NaN row stays NaN) with their
    arg-max column's exact values."""
    b = core.Bulk(x2)
    idx = core.tail_rows((b.s[:, 0] >= 2) | np.isnan(b.s[:, 0]))
    if not idx.size:
        return b, idx, None
    rows = b.lsm[idx]
    return b, idx, core.TopTail(rows, rows.argmax(-1)[:, None], b.e[idx])  # e[idx]: a copy


@np.errstate(all="ignore")  # inf/NaN edge values are handled on purpose
def log_softmax(input: np.ndarray, dim: int = -1) -> np.ndarray:
    """``x_c − log Σ_j e^{x_j}`` along ``dim``."""
    x2, shape = _rows(input, dim)
    b, idx, top = _stats(x2)
    if top is not None:
        b.lsm[idx, top.k[:, 0]] = top.lsm_k()[:, 0]
    return _unrows(b.lsm, shape, dim, input.dtype)


@np.errstate(all="ignore")  # inf/NaN edge values are handled on purpose
def softmax(input: np.ndarray, dim: int = -1) -> np.ndarray:
    """``e^{x_c} / Σ_j e^{x_j}`` along ``dim``."""
    x2, shape = _rows(input, dim)
    return _unrows(core.Bulk(x2, log=False).p(), shape, dim, input.dtype)


def _grad_rows(grad_output, x2: np.ndarray, dim: int) -> np.ndarray:
    return np.moveaxis(np.asarray(grad_output, dtype=x2.dtype), dim, -1).reshape(x2.shape)


@np.errstate(all="ignore")  # inf/NaN edge values are handled on purpose
def log_softmax_grad(grad_output: np.ndarray, input: np.ndarray, dim: int = -1) -> dict[str, np.ndarray]:
    """VJP ``g_j − p_j Σ_k g_k`` (at a tail row's arg-max ``g_k (1 − p_k) − p_k Σ_{i≠k} g_i``)."""
    x2, shape = _rows(input, dim)
    g = _grad_rows(grad_output, x2, dim)
    b, idx, top = _stats(x2)
    gx = g - b.p() * g.sum(-1, keepdims=True)
    if top is not None:
        gx[idx, top.k[:, 0]] = top.log_softmax_vjp_k(g[idx])[:, 0]
    return {"input": _unrows(gx, shape, dim, input.dtype)}


@np.errstate(all="ignore")  # inf/NaN edge values are handled on purpose
def softmax_grad(grad_output: np.ndarray, input: np.ndarray, dim: int = -1) -> dict[str, np.ndarray]:
    """VJP ``p_j (g_j − Σ_k g_k p_k)`` (at a tail row's arg-max ``p_k Σ_{i≠k} p_i (g_k − g_i)``)."""
    x2, shape = _rows(input, dim)
    g = _grad_rows(grad_output, x2, dim)
    b, idx, top = _stats(x2)
    p = b.p()
    gx = g - (g * p).sum(-1, keepdims=True)
    gx *= p
    if top is not None:
        gx[idx, top.k[:, 0]] = core.softmax_vjp_k(g[idx], p[idx], top.k)[:, 0]
    return {"input": _unrows(gx, shape, dim, input.dtype)}


class _Plan:
    """Validated, class-last view of a cross-entropy / NLL call."""

    def __init__(self, input, target, weight, ignore_index, reduction, label_smoothing, nll=False):
        input, target = np.asarray(input), np.asarray(target)
        require_reduction(reduction)
        self.prob = check_class_targets(input, target, weight, ignore_index, label_smoothing)
        if nll and self.prob:
            raise ValueError("nll_loss takes class-index targets (an integer array), not probabilities")
        self.dtype, self.target_shape = input.dtype, target.shape
        self.dim = 1 if input.ndim > 1 else 0
        self.x, self.shape = _rows(input, self.dim)
        ct = self.x.dtype
        self.t = np.moveaxis(target.astype(ct), self.dim, -1).reshape(self.x.shape) if self.prob else target.reshape(-1)
        self.w = None if weight is None else np.asarray(weight, dtype=ct)
        self.ignore_index, self.eps, self.reduction = ignore_index, label_smoothing, reduction

    def coefficients(self, x2: np.ndarray, t: np.ndarray) -> core.Coefficients:
        return core.Coefficients(x2, t, self.w, self.ignore_index, self.eps, self.prob)

    def reduce(self, rows: np.ndarray, den):
        if self.reduction == "none":
            return rows.reshape(self.target_shape if not self.prob else self.shape[:-1]).astype(self.dtype)
        total = rows.sum()
        if self.reduction == "mean":
            total = total / den
        return np.asarray(total, dtype=self.dtype)

    def cotangent(self, grad_output, den) -> np.ndarray:
        """What each row's loss receives from the reduction: ``(R, 1)``."""
        g = np.asarray(grad_output, dtype=self.x.dtype)
        if self.reduction == "mean":
            g = g / den
        return np.broadcast_to(g.reshape(-1) if g.ndim else g, self.x.shape[:-1])[:, None]

    def unrows(self, a: np.ndarray) -> np.ndarray:
        return _unrows(a, self.shape, self.dim, self.dtype)


def _index_rows(plan: _Plan):
    """Bulk rows of a class-index call, and the tail rows' exact kernels."""
    b = core.Bulk(plan.x)
    ir = core.IndexRows(b.lsm, plan.t, plan.w, plan.ignore_index, plan.eps)
    idx = ir.tail
    xs = plan.x[idx]
    return b, ir, core.Shifted(xs), plan.coefficients(xs, plan.t[idx])


@np.errstate(all="ignore")  # inf/NaN edge values are handled on purpose
def cross_entropy(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> np.ndarray:
    """Cross-entropy of logits against class indices or probabilities (PyTorch semantics)."""
    plan = _Plan(input, target, weight, ignore_index, reduction, label_smoothing)
    if plan.prob:
        co = plan.coefficients(plan.x, plan.t)
        return plan.reduce(core.ce_rows(core.Shifted(plan.x), co), co.den)
    _, ir, sh, co = _index_rows(plan)
    rows = ir.rows
    rows[ir.tail] = core.ce_rows(sh, co)
    return plan.reduce(rows, ir.den)


@np.errstate(all="ignore")  # inf/NaN edge values are handled on purpose
def cross_entropy_grad(grad_output, input, target, weight=None, ignore_index: int = -100,
                       reduction: str = "mean", label_smoothing: float = 0.0) -> dict[str, np.ndarray]:
    """VJP: ``a_i (rest_ij p_ij − β_ij (1 − p_ij))`` for the logits; ``a_i (1−ε) w_c (−log p_ic)``
    for probability targets (``a_i`` the cotangent the row receives)."""
    plan = _Plan(input, target, weight, ignore_index, reduction, label_smoothing)
    if plan.prob:
        co = plan.coefficients(plan.x, plan.t)
        sh = core.Shifted(plan.x)
        a = plan.cotangent(grad_output, co.den)
        w = np.ones(plan.x.shape[-1], plan.x.dtype) if plan.w is None else plan.w
        gt = a * (1 - plan.eps) * core.times(w, sh.nlp())
        return {"input": plan.unrows(core.ce_rows_grad(sh, co, a)), "target": plan.unrows(gt)}
    b, ir, sh, co = _index_rows(plan)
    a = plan.cotangent(grad_output, ir.den)
    gx = ir.grad(b.p(), a)
    gx[ir.tail] = core.ce_rows_grad(sh, co, a[ir.tail])
    return {"input": plan.unrows(gx)}


def _nll_rows(plan: _Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    valid = (plan.t != plan.ignore_index)[:, None]
    y = np.where(valid, plan.t[:, None], 0)
    w_y = valid.astype(plan.x.dtype) if plan.w is None else plan.w[y] * valid
    return y, w_y, valid


@np.errstate(all="ignore")  # inf/NaN edge values are handled on purpose
def nll_loss(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean") -> np.ndarray:
    """``−w_y·input_y`` (input taken as log-probabilities), PyTorch reductions."""
    plan = _Plan(input, target, weight, ignore_index, reduction, 0.0, nll=True)
    y, w_y, _ = _nll_rows(plan)
    return plan.reduce(core.times(w_y, -np.take_along_axis(plan.x, y, -1))[:, 0], w_y.sum())


@np.errstate(all="ignore")  # inf/NaN edge values are handled on purpose
def nll_loss_grad(grad_output, input, target, weight=None, ignore_index: int = -100,
                  reduction: str = "mean") -> dict[str, np.ndarray]:
    """VJP: ``−a_i·w_{y_i}`` at the target entry, 0 elsewhere."""
    plan = _Plan(input, target, weight, ignore_index, reduction, 0.0, nll=True)
    y, w_y, valid = _nll_rows(plan)
    a = plan.cotangent(grad_output, w_y.sum())
    gx = np.zeros_like(plan.x)
    np.put_along_axis(gx, y, np.where(valid, -a * w_y, 0), -1)
    return {"input": plan.unrows(gx)}
