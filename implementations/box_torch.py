"""PyTorch IoU, GIoU (pairwise) and the GIoU/DIoU/CIoU losses (paired), with analytic backward.

Each function is a ``torch.autograd.Function`` over the kernels of :mod:`.box_core` (autograd
through ``1 − I/U`` would cancel for identical boxes, and ``torch.minimum`` at a tie would not give
the spec's mean of one-sided derivatives where a zero width meets a touching edge). float16,
bfloat16 and float32 boxes are computed in float64 on their device and rounded once; float64 boxes
on the CPU in NumPy's long double (no overflow of products of coordinates, 11 guard bits), on
other devices (CUDA) in float64 — there products of four coordinates overflow beyond |x| ≈ 1e77 and
the guard bits are missing. Reductions run in the compute dtype; the result has the input's
dtype and device. Paired losses of at least ``_COMPILE_MIN_PAIRS`` pairs computed on the CPU in
float64 run the same kernel through ``torch.compile`` (one fused loop: ~10× the eager speed),
falling back to eager if compilation fails; ``LOSSORACLE_COMPILE=0`` never compiles.
"""

from __future__ import annotations


import numpy as np
import torch

from . import box_core as core
from .compiled import Kernel

_WIDE = np.longdouble if np.finfo(np.longdouble).nmant >= 63 else None
_COMPILE_MIN_PAIRS = 1 << 16
_COMPILE_MAX_VARIANTS = 8  # per kernel (kind, α, iou_eps, ε, dtype): each a recompile; beyond, eager


def _value_kernel(p, q, kind, eps, alpha, iou_eps):
    """float64 values of boxes in any dtype (converted inside: no float64 copies of the inputs)."""
    return core.pair_kernel(torch, p.to(torch.float64), q.to(torch.float64), kind, eps, alpha, iou_eps)[0]


def _grad_kernel(p, q, kind, eps, alpha, iou_eps, cot):
    """VJPs computed in float64, rounded once to the boxes' dtype inside the fused loop."""
    g1, g2 = core.pair_kernel(torch, p.to(torch.float64), q.to(torch.float64), kind, eps, alpha, iou_eps,
                              cot.to(torch.float64))[1]
    return g1.to(p.dtype), g2.to(q.dtype)


_VALUE = Kernel(_value_kernel, "box losses", _COMPILE_MAX_VARIANTS)
_GRAD = Kernel(_grad_kernel, "box losses", _COMPILE_MAX_VARIANTS)


def _compiled(p, q, kind, eps, alpha, iou_eps, cot):
    """The kernel through ``torch.compile`` for large CPU batches of narrow boxes (computed in float64 inside);
    None when not used or on failure."""
    if not (p.device.type == "cpu" and p.dtype != torch.float64 and p.dim() == 2 and p.shape[0] >= _COMPILE_MIN_PAIRS):
        return None
    variant = (kind, alpha, iou_eps, float(eps), p.dtype)
    if cot is None:
        return _VALUE(variant, p, q, kind, eps, alpha, iou_eps)
    g = _GRAD(variant, p, q, kind, eps, alpha, iou_eps, cot)
    return None if g is None else (None, g)


def _run(b1: torch.Tensor, b2: torch.Tensor, kind: str, eps: float, alpha: str, iou_eps, cot, pairwise: bool):
    """The kernel on ``b1``/``b2`` (pairwise: broadcast (N, 1, 4) × (1, M, 4)); returns tensors."""
    wide = b1.dtype == torch.float64 and b1.device.type == "cpu" and _WIDE is not None
    if not (wide or pairwise):
        out = _compiled(b1.detach(), b2.detach(), kind, eps, alpha, iou_eps, cot)
        if out is not None:
            return (out, None) if cot is None else out
    if wide:
        p, q = b1.detach().numpy().astype(_WIDE), b2.detach().numpy().astype(_WIDE)
        c = None if cot is None else cot.detach().cpu().numpy().astype(_WIDE)
        xp = np
    else:
        p, q = b1.detach().to(torch.float64), b2.detach().to(torch.float64)
        c = None if cot is None else cot.detach().to(torch.float64)
        xp = torch
    if pairwise:
        p, q = p[:, None, :], q[None, :, :]
    with np.errstate(all="ignore"):  # 0/0 is the documented NaN at eps = 0 and zero-area boxes
        value, grads = core.pair_kernel(xp, p, q, kind, eps, alpha, iou_eps, c)
    if pairwise and grads is not None:
        grads = (grads[0].sum(axis=1) if wide else grads[0].sum(dim=1),
                 grads[1].sum(axis=0) if wide else grads[1].sum(dim=0))

    def back(a):
        return torch.from_numpy(np.asarray(a, dtype=np.float64)).to(b1.device) if wide else a

    return back(value), None if grads is None else tuple(back(g) for g in grads)


class _BoxFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, b1, b2, kind, eps, alpha, iou_eps, pairwise):
        ctx.save_for_backward(b1, b2)
        ctx.args = (kind, eps, alpha, iou_eps, pairwise)
        value, _ = _run(b1, b2, kind, eps, alpha, iou_eps, None, pairwise)
        return value  # float64 (the compute dtype); the caller reduces and rounds

    @staticmethod
    def backward(ctx, g):
        b1, b2 = ctx.saved_tensors
        kind, eps, alpha, iou_eps, pairwise = ctx.args
        _, (g1, g2) = _run(b1, b2, kind, eps, alpha, iou_eps, g, pairwise)
        need = ctx.needs_input_grad
        return (g1.to(b1.dtype) if need[0] else None, g2.to(b2.dtype) if need[1] else None,
                None, None, None, None, None)


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean() if loss.numel() else loss.sum() * 0.0


def _paired(kind, boxes1, boxes2, reduction, eps, alpha="exact", iou_eps=None):
    core.check_paired(boxes1.detach(), boxes2.detach(), reduction, eps)
    loss = _BoxFn.apply(boxes1, boxes2, kind, float(eps), alpha, iou_eps, False)
    return _reduce(loss, reduction).to(boxes1.dtype)


def _pairwise(kind, boxes1, boxes2):
    core.check_pairwise(boxes1.detach(), boxes2.detach())
    return _BoxFn.apply(boxes1, boxes2, kind, 0.0, "exact", None, True).to(boxes1.dtype)


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``I/U`` of (N, 4) and (M, 4) boxes: (N, M)."""
    return _pairwise("iou", boxes1, boxes2)


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise GIoU ``I/U − (C − U)/C``: (N, M)."""
    return _pairwise("giou", boxes1, boxes2)


def generalized_box_iou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none",
                             eps: float = 1e-7) -> torch.Tensor:
    """``1 − IoU_ε + (C − U)/(C + ε)`` per pair of boxes, reduced (empty mean: 0)."""
    return _paired("giou_loss", boxes1, boxes2, reduction, eps)


def distance_box_iou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none",
                          eps: float = 1e-7) -> torch.Tensor:
    """``1 − IoU_ε + ρ²/(c² + ε)`` per pair of boxes, reduced."""
    return _paired("diou_loss", boxes1, boxes2, reduction, eps)


def complete_box_iou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none",
                          eps: float = 1e-7) -> torch.Tensor:
    """``distance_box_iou_loss + α·v`` per pair of boxes, reduced; α is differentiated."""
    return _paired("ciou_loss", boxes1, boxes2, reduction, eps)
