"""PyTorch softmax, log-softmax, NLL and cross-entropy with analytic, cancellation-free backward.

Each loss is a ``torch.autograd.Function`` that saves only its inputs and recomputes the
row statistics of :mod:`.softmax_core` in backward. float16/bfloat16 are computed in float32
and rounded once to the input dtype; CPU and CUDA alike. Semantics are PyTorch's.
"""

from __future__ import annotations

import torch

from . import softmax_core as core
from .validation import check_class_targets, require_floating, require_reduction

_HALF = (torch.float16, torch.bfloat16)


def _compute(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in _HALF else x


class _SoftmaxFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, log: bool) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.dim, ctx.log = dim, log
        st = core.row_stats(core.class_last(_compute(x), dim))
        return core.class_back(-st.nlp if log else st.p, dim).to(x.dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (x,) = ctx.saved_tensors
        st = core.row_stats(core.class_last(_compute(x), ctx.dim))
        gl = core.class_last(g.to(st.p.dtype), ctx.dim)
        vjp = core.log_softmax_vjp(gl, st) if ctx.log else core.softmax_vjp(gl, st)
        return core.class_back(vjp, ctx.dim).to(x.dtype), None, None


def log_softmax(input: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``x_c − log Σ_j e^{x_j}`` along ``dim``."""
    require_floating("input", input)
    return _SoftmaxFn.apply(input, dim, True)


def softmax(input: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``e^{x_c} / Σ_j e^{x_j}`` along ``dim``."""
    require_floating("input", input)
    return _SoftmaxFn.apply(input, dim, False)


class _Plan:
    """Class-last rows and the loss coefficients of a validated call."""

    def __init__(self, input, target, weight, ignore_index, label_smoothing, prob):
        self.dim = 1 if input.dim() > 1 else 0
        self.x = core.class_last(_compute(input), self.dim)
        ct = self.x.dtype
        t = core.class_last(target.to(ct), self.dim) if prob else target
        self.w = None if weight is None else weight.to(ct)
        self.co = core.Coefficients(self.x, t, self.w, ignore_index, label_smoothing, prob)

    def reduce(self, rows: torch.Tensor, reduction: str) -> torch.Tensor:
        if reduction == "none":
            return rows
        return rows.sum() / self.co.den if reduction == "mean" else rows.sum()

    def cotangent(self, g: torch.Tensor, reduction: str) -> torch.Tensor:
        g = g.to(self.x.dtype)
        if reduction == "mean":
            g = g / self.co.den
        return g.expand(self.x.shape[:-1]).unsqueeze(-1)


class _CrossEntropyFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, target, weight, ignore_index, reduction, label_smoothing, prob, nll):
        ctx.save_for_backward(input, target, weight)
        ctx.args = (ignore_index, reduction, label_smoothing, prob, nll)
        plan = _Plan(input, target, weight, ignore_index, label_smoothing, prob)
        co = plan.co
        if nll:
            rows = torch.where(co.wy != 0, -co.wy * plan.x.gather(-1, co.y), 0)[..., 0]
        else:
            rows = core.ce_rows(core.Shifted(plan.x), co)
        return plan.reduce(rows, reduction).to(input.dtype)

    @staticmethod
    def backward(ctx, g):
        input, target, weight = ctx.saved_tensors
        ignore_index, reduction, eps, prob, nll = ctx.args
        plan = _Plan(input, target, weight, ignore_index, eps, prob)
        a = plan.cotangent(g, reduction)
        none = (None,) * 6
        if nll:
            return core.class_back(core.target_nll_grad(plan.co, a, plan.x), plan.dim).to(input.dtype), *none, None
        sh = core.Shifted(plan.x)
        gx = core.class_back(core.ce_rows_grad(sh, plan.co, a), plan.dim).to(input.dtype)
        gt = None
        if prob and ctx.needs_input_grad[1]:
            w = torch.ones_like(plan.x[..., 0:1]) if plan.w is None else plan.w
            gt = core.class_back(a * (1 - eps) * torch.where(w != 0, w * sh.nlp(), 0), plan.dim).to(target.dtype)
        return gx, gt, *none


def cross_entropy(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of logits against class indices or probabilities (PyTorch semantics)."""
    require_reduction(reduction)
    prob = check_class_targets(input, target, weight, ignore_index, label_smoothing)
    return _CrossEntropyFn.apply(input, target, weight, ignore_index, reduction, float(label_smoothing), prob, False)


def nll_loss(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
             ignore_index: int = -100, reduction: str = "mean") -> torch.Tensor:
    """``−w_y·input_y`` (input taken as log-probabilities), PyTorch reductions."""
    require_reduction(reduction)
    if check_class_targets(input, target, weight, ignore_index):
        raise ValueError("nll_loss takes class-index targets (an integer tensor), not probabilities")
    return _CrossEntropyFn.apply(input, target, weight, ignore_index, reduction, 0.0, False, True)
