"""PyTorch softmax, log-softmax, NLL and cross-entropy with analytic, cancellation-free backward.

Every row goes through PyTorch's fused ``log_softmax`` / ``softmax`` kernels and their backward
kernels (the bulk tier of :mod:`.softmax_core`; below ``_FUSED_MIN_C`` classes, where those kernels
are slow, the same passes as array operations; float64 softmax with the TwoSum residual of
``x − m``). Where a probability above 1/2 would cancel, log-softmax and softmax correct only the
arg-max column of those rows (:class:`.softmax_core.TopTail`); cross-entropy recomputes those rows
(and non-finite ones) by the cancellation-free kernels, in forward, keeping their gradient for
backward. Forward saves what backward reads (``log p`` or ``p``): nothing is recomputed over the
whole input. float16/bfloat16 are computed in float32 and rounded once to the input dtype; CPU
and CUDA alike. Semantics are PyTorch's.
"""

from __future__ import annotations

import math

import torch

from . import softmax_core as core
from .validation import check_class_targets, require_floating, require_reduction

_HALF = (torch.float16, torch.bfloat16)
_LSM_GRAD = torch.ops.aten._log_softmax_backward_data
_SM_GRAD = torch.ops.aten._softmax_backward_data


def _ct(x: torch.Tensor) -> torch.dtype:
    """The compute dtype: float32 for half inputs."""
    return torch.float32 if x.dtype in _HALF else x.dtype


def _rows(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Size]:
    """``x`` as class-last rows ``(R, C)`` (a view where the layout allows) and the class-last shape."""
    xl = x.movedim(dim, -1)
    return xl.reshape(math.prod(xl.shape[:-1]), xl.shape[-1]), xl.shape


def _unrows(a: torch.Tensor, shape: torch.Size, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """Rows back to the caller's layout; ``a`` itself where nothing moves (autograd then keeps it as
    the gradient instead of copying a view)."""
    if a.shape != shape:
        a = a.reshape(shape)
    if dim % a.dim() != a.dim() - 1:
        a = a.movedim(-1, dim)
    return a.to(dtype)


_FUSED_MIN_C = {torch.float32: 32, torch.float64: 128}  # fewer classes: array passes beat the fused kernels


def _fused(x2: torch.Tensor, ct: torch.dtype) -> bool:
    return x2.shape[-1] >= _FUSED_MIN_C[ct] or x2.device.type != "cpu"


def _log_softmax(x2: torch.Tensor, ct: torch.dtype) -> torch.Tensor:
    return torch.log_softmax(x2, -1, dtype=ct) if _fused(x2, ct) else core.Bulk(x2.to(ct)).lsm


def _log_softmax_grad(g: torch.Tensor, lsm: torch.Tensor) -> torch.Tensor:
    """``g − e^ℓ Σ g``."""
    if _fused(lsm, lsm.dtype):
        return _LSM_GRAD(g, lsm, -1, lsm.dtype)
    return g - torch.exp(lsm) * g.sum(-1, keepdim=True)


def _softmax_grad(g: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``p (g − Σ g p)``."""
    if _fused(p, p.dtype):
        return _SM_GRAD(g, p, -1, p.dtype)
    return p * (g - (g * p).sum(-1, keepdim=True))


class _SoftmaxFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, log: bool) -> torch.Tensor:
        ct = _ct(x)
        x2, shape = _rows(x, dim)
        if log:
            out = _log_softmax(x2, ct)
        elif ct == torch.float64 or not _fused(x2, ct):  # float64: the TwoSum residual (:class:`core.Bulk`)
            out = core.Bulk(x2.to(ct), log=False).p()
        else:
            out = torch.softmax(x2, -1, dtype=ct)
        tail = None
        if out.numel():
            top = out.amax(-1)  # the row's largest log p (or p): the tail rows have one above 1/2
            idx = core.tail_rows(top <= -core.LN2 if log else top <= 0.5)
            if idx.numel():
                rows = out[idx]
                k = rows.max(-1, keepdim=True).indices  # (torch's argmax is three times slower)
                tail = (idx, core.TopTail(rows, k) if log else k)
                if log:
                    out[idx, tail[1].k[:, 0]] = tail[1].lsm_k()[:, 0]
        ctx.save_for_backward(out)
        ctx.dim, ctx.log, ctx.shape, ctx.dtype, ctx.tail = dim, log, shape, x.dtype, tail
        return _unrows(out, shape, dim, x.dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (out,) = ctx.saved_tensors
        g2 = g.movedim(ctx.dim, -1).reshape(out.shape).to(out.dtype)
        gx = _log_softmax_grad(g2, out) if ctx.log else _softmax_grad(g2, out)
        if ctx.tail is not None:
            idx, top = ctx.tail
            gs = g2[idx]
            if ctx.log:
                gx[idx, top.k[:, 0]] = top.log_softmax_vjp_k(gs)[:, 0]
            else:
                gx[idx, top[:, 0]] = core.softmax_vjp_k(gs, out[idx], top)[:, 0]
        return _unrows(gx, ctx.shape, ctx.dim, ctx.dtype), None, None


def log_softmax(input: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``x_c − log Σ_j e^{x_j}`` along ``dim``."""
    require_floating("input", input)
    return _SoftmaxFn.apply(input, dim, True)


def softmax(input: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``e^{x_c} / Σ_j e^{x_j}`` along ``dim``."""
    require_floating("input", input)
    return _SoftmaxFn.apply(input, dim, False)


def _class_dim(input: torch.Tensor) -> int:
    return 1 if input.dim() > 1 else 0


def _reduce(rows: torch.Tensor, reduction: str, den: torch.Tensor, target_shape, dtype) -> torch.Tensor:
    if reduction == "none":
        return rows.reshape(target_shape).to(dtype)
    total = rows.sum()
    return (total / den if reduction == "mean" else total).to(dtype)


def _row_cotangent(g: torch.Tensor, reduction: str, den: torch.Tensor, ct: torch.dtype) -> torch.Tensor:
    """What each row's loss receives: ``(R, 1)`` for ``none``, a scalar otherwise."""
    g = g.to(ct)
    if reduction == "none":
        return g.reshape(-1, 1)
    return g / den if reduction == "mean" else g


class _IndexCrossEntropyFn(torch.autograd.Function):
    """Class-index targets: bulk rows from ``log_softmax``, tail rows by the cancellation-free kernels."""

    @staticmethod
    def forward(ctx, input, target, weight, ignore_index, reduction, eps):
        ct, dim = _ct(input), _class_dim(input)
        x2, shape = _rows(input, dim)
        t = target.reshape(-1)
        w = None if weight is None else weight.to(ct)
        lsm = _log_softmax(x2, ct)
        ir = core.IndexRows(lsm, t, w, ignore_index, eps)
        rows, idx, gsub = ir.rows, ir.tail, None
        if idx.numel():
            xs = x2[idx].to(ct)
            co = core.Coefficients(xs, t[idx], w, ignore_index, eps, False)
            sh = core.Shifted(xs)
            rows = rows.index_copy(0, idx, core.ce_rows(sh, co))
            gsub = core.ce_rows_grad(sh, co, core.like(1.0, xs))  # unit cotangent: scaled in backward
        ctx.save_for_backward(lsm)
        ctx.state = (ir, gsub, dim, shape, reduction, input.dtype)
        return _reduce(rows, reduction, ir.den, target.shape, input.dtype)

    @staticmethod
    def backward(ctx, g):
        (lsm,) = ctx.saved_tensors
        ir, gsub, dim, shape, reduction, dtype = ctx.state
        a = _row_cotangent(g, reduction, ir.den, lsm.dtype)
        gx = ir.grad(torch.exp(lsm), a)
        if gsub is not None:
            gx.index_copy_(0, ir.tail, gsub * (a[ir.tail] if a.dim() else a))
        return _unrows(gx, shape, dim, dtype), None, None, None, None, None


class _ProbCrossEntropyFn(torch.autograd.Function):
    """Probability targets: every row by the cancellation-free kernels."""

    @staticmethod
    def forward(ctx, input, target, weight, reduction, eps):
        ct, dim = _ct(input), _class_dim(input)
        x = input.to(ct).movedim(dim, -1)
        w = None if weight is None else weight.to(ct)
        co = core.Coefficients(x, target.to(ct).movedim(dim, -1), w, -100, eps, True)
        sh = core.Shifted(x)
        ctx.save_for_backward(target)
        ctx.state = (sh, co, w, dim, reduction, eps, input.dtype)
        return _reduce(core.ce_rows(sh, co), reduction, co.den, x.shape[:-1], input.dtype)

    @staticmethod
    def backward(ctx, g):
        (target,) = ctx.saved_tensors
        sh, co, w, dim, reduction, eps, dtype = ctx.state
        a = _row_cotangent(g, reduction, co.den, sh.d.dtype)
        a = a.reshape(*sh.d.shape[:-1], 1) if reduction == "none" else a
        gx = core.ce_rows_grad(sh, co, a).movedim(-1, dim).to(dtype)
        gt = None
        if ctx.needs_input_grad[1]:
            w = torch.ones_like(sh.d[..., :1]) if w is None else w
            gt = (a * (1 - eps) * core.times(w, sh.nlp())).movedim(-1, dim).to(target.dtype)
        return gx, gt, None, None, None


class _NllFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, target, weight, ignore_index, reduction):
        ct, dim = _ct(input), _class_dim(input)
        x2, shape = _rows(input, dim)
        t = target.reshape(-1)
        valid = (t != ignore_index)[:, None]
        y = torch.where(valid, t[:, None], 0)
        w_y = valid.to(ct) if weight is None else weight.to(ct)[y] * valid
        rows = core.times(w_y, -x2.gather(-1, y).to(ct))[:, 0]
        ctx.state = (y, w_y, valid, dim, shape, reduction, input.dtype)
        return _reduce(rows, reduction, w_y.sum(), target.shape, input.dtype)

    @staticmethod
    def backward(ctx, g):
        y, w_y, valid, dim, shape, reduction, dtype = ctx.state
        a = _row_cotangent(g, reduction, w_y.sum(), w_y.dtype)
        gx = torch.zeros(y.shape[0], shape[-1], dtype=dtype, device=y.device)
        gx.scatter_(-1, y, torch.where(valid, -a * w_y, 0).to(dtype))
        return _unrows(gx, shape, dim, dtype), None, None, None, None


def cross_entropy(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of logits against class indices or probabilities (PyTorch semantics)."""
    require_reduction(reduction)
    if check_class_targets(input, target, weight, ignore_index, label_smoothing):
        return _ProbCrossEntropyFn.apply(input, target, weight, reduction, float(label_smoothing))
    return _IndexCrossEntropyFn.apply(input, target, weight, ignore_index, reduction, float(label_smoothing))


def nll_loss(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
             ignore_index: int = -100, reduction: str = "mean") -> torch.Tensor:
    """``−w_y·input_y`` (input taken as log-probabilities), PyTorch reductions."""
    require_reduction(reduction)
    if check_class_targets(input, target, weight, ignore_index):
        raise ValueError("nll_loss takes class-index targets (an integer tensor), not probabilities")
    return _NllFn.apply(input, target, weight, ignore_index, reduction)
