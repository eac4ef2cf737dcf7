"""PyTorch multi-class focal loss: a custom autograd Function with an analytic backward.

``softmax_focal_loss(input, target, alpha=None, gamma=2.0, ignore_index=-100, reduction="mean")``:
``ℓ_i = −α_{y_i} (1 − p_{i,y_i})^γ log p_{i,y_i}``, ``p = softmax(input, dim=1)``, 0 where
``target == ignore_index``; ``mean`` divides by the number of counted targets (NaN when none).

Plain autograd of ``(1 − exp(log_softmax))^γ`` loses everything when ``p_y → 1`` (``1 − p``
cancels) and returns NaN for γ < 1 (``0^{γ−1}·0``). Here the forward computes ``1 − p_y`` as a sum
without the target term and the backward uses ``∂ℓ/∂x_j = α_y u^γ W·e_j/S`` (``j ≠ y``),
``−α_y u^γ W`` (``j = y``), ``W = γ p_y (−log p_y) + u`` — see :mod:`focal_core`. Both run in a
wider arithmetic (float32 → float64, float16/bfloat16 → float32, float64 → double-double) and are
rounded once to the input dtype; the per-logit derivative is computed in the forward (when the
input requires grad) and scaled by the incoming gradient in the backward. CPU and CUDA alike.
The backward is not itself differentiable (``once_differentiable``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .focal_core import arithmetic, softmax_focal_terms
from .np_focal import check_alpha, check_gamma
from .validation import class_target_shape, require_floating, require_reduction

__all__ = ["softmax_focal_loss"]


def _flat(v):
    return (v[0].reshape(-1), v[1].reshape(-1)) if isinstance(v, tuple) else v.reshape(-1)


class _SoftmaxFocal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, target, alpha, gamma, ignore_index, reduction):
        C = input.shape[1]
        dtype = input.dtype
        A, cname = arithmetic(str(dtype).replace("torch.", ""), input)
        cdt = getattr(torch, cname)
        lead = (input.shape[0], *input.shape[2:])
        x = input.detach().movedim(1, -1).reshape(-1, C).to(cdt)
        t = target.reshape(-1)
        valid = t != ignore_index
        tt = torch.where(valid, t, torch.zeros_like(t))
        alpha_y = None if alpha is None else (alpha.to(cdt)[tt] if alpha.ndim else alpha.to(cdt).expand(tt.shape))
        grads = ctx.needs_input_grad[0]
        value, g = softmax_focal_terms(A, x, tt, alpha_y, gamma, grads=grads)
        zero = torch.zeros_like(x[:, 0])
        value = A.where(valid, value, A.const(0.0, zero))
        if reduction == "none":
            out = A.round(value).reshape(lead)
        else:
            total = A.sum_last(_flat(value))
            if reduction == "mean":
                total = A.div(total, A.const(float(valid.sum()), torch.zeros((), dtype=cdt, device=x.device)))
            out = A.round(total)
        if grads:
            parts = g if isinstance(g, tuple) else (g,)
            ctx.save_for_backward(valid, *parts)
            ctx.A, ctx.reduction, ctx.lead, ctx.dtype, ctx.C = A, reduction, lead, dtype, C
        return out.to(dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        valid, *parts = ctx.saved_tensors
        A = ctx.A
        g = tuple(parts) if len(parts) == 2 else parts[0]
        cdt = parts[0].dtype
        go = grad_output.to(cdt)
        rows = valid.shape[0]
        cot = go.reshape(-1) if ctx.reduction == "none" else go.reshape(-1).expand(rows)
        cot = torch.where(valid, cot, torch.zeros_like(cot))
        cot = A.lift(cot)
        if ctx.reduction == "mean":
            cot = A.div(cot, A.const(float(max(int(valid.sum()), 1)), cot[0] if isinstance(cot, tuple) else cot))
        col = (cot[0][:, None], cot[1][:, None]) if isinstance(cot, tuple) else cot[:, None]
        grad = A.round(A.mul(g, col))
        grad = torch.where(valid[:, None], grad, torch.zeros_like(grad))
        grad = grad.reshape(*ctx.lead, ctx.C).movedim(-1, 1).to(ctx.dtype)
        return grad, None, None, None, None, None


def _alpha_tensor(alpha, C: int, device) -> torch.Tensor | None:
    if isinstance(alpha, torch.Tensor):
        alpha = alpha.detach().cpu().numpy()
    a = check_alpha(alpha, C)
    return None if a is None else torch.as_tensor(np.asarray(a, dtype=np.float64), device=device)


def softmax_focal_loss(input: torch.Tensor, target: torch.Tensor, alpha=None, gamma: float = 2.0,
                       ignore_index: int = -100, reduction: str = "mean") -> torch.Tensor:
    """Multi-class focal loss ``−α_y (1 − p_y)^γ log p_y`` of logits ``input`` (class axis 1).

    ``alpha``: None, a scalar for every class, or one value per class (a sequence or tensor), all
    in [0, 1]; ``gamma ≥ 0``. ``reduction``: ``none`` (per position), ``mean`` (over the counted
    targets; NaN when every target is ignored) or ``sum``. Bad input raises ValueError/TypeError
    naming the argument.
    """
    require_floating("input", input)
    if input.ndim < 2:
        raise ValueError(f"input must have shape (N, C) or (N, C, d1, ...), got {tuple(input.shape)}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must hold class indices (an integer tensor), got dtype {target.dtype}")
    want = class_target_shape(tuple(input.shape))
    if tuple(target.shape) != want:
        raise ValueError(f"target shape {tuple(target.shape)} does not match the expected {want} for input "
                         f"{tuple(input.shape)}")
    C = input.shape[1]
    valid = target != ignore_index
    if bool((valid & ((target < 0) | (target >= C))).any()):
        raise ValueError(f"target class indices must lie in [0, {C - 1}] (or equal ignore_index={ignore_index})")
    require_reduction(reduction)
    g = check_gamma(gamma)
    a = _alpha_tensor(alpha, C, input.device)
    return _SoftmaxFocal.apply(input, target.to(device=input.device, dtype=torch.int64), a, g, ignore_index,
                               reduction)
