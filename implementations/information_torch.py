"""PyTorch entropy, ``kl_div`` and KL divergence with analytic backward (CPU and CUDA).

Each loss is a ``torch.autograd.Function`` over the double-double kernels of
:mod:`.information_core`: every dtype is computed in float64 (double-double logarithms and
exponentials for float64 results) and rounded once to the input dtype, and the backward
evaluates the closed-form gradients of ``lossoracle.reference.information`` — ``+∞`` for the
entropy at ``p = 0``, ``−∞`` for the ``kl_div`` target gradient at ``p = 0`` — instead of
differentiating ``xlogy``.
Validation as the NumPy version; negative probabilities are checked with one device sync.
"""

from __future__ import annotations

import torch

from . import information_core as core
from .information_numpy import KL_REDUCTIONS, require_dim
from .validation import require_floating, require_range, require_reduction, require_same_shape


def _probabilities(name: str, a: torch.Tensor) -> None:
    require_floating(name, a)
    require_range(name, a.detach(), 0.0, float("inf"))


def _rows(a: torch.Tensor, dim: int) -> torch.Tensor:
    return a.to(torch.float64).movedim(dim, -1)


def _precise(*tensors: torch.Tensor) -> bool:
    """Double-double transcendentals for float64 results; float64 hardware ones suffice below."""
    return any(t.dtype == torch.float64 for t in tensors)


class _EntropyFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p: torch.Tensor, dim: int) -> torch.Tensor:
        ctx.save_for_backward(p)
        ctx.dim = dim
        return core.entropy(_rows(p, dim), _precise(p)).to(p.dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (p,) = ctx.saved_tensors
        grad = core.entropy_grad(_rows(p, ctx.dim), g.to(torch.float64).unsqueeze(-1), _precise(p))
        return grad.movedim(-1, ctx.dim).to(p.dtype), None


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``H(p) = −Σ p log p`` along ``dim`` (``0·log 0 = 0``; rows are not normalised)."""
    _probabilities("p", p)
    require_dim(dim, p.dim())
    return _EntropyFn.apply(p, dim)


def _divisor(reduction: str, shape: tuple[int, ...]) -> float | None:
    if reduction == "mean":
        return float(torch.Size(shape).numel())
    if reduction == "batchmean" and shape:
        return float(shape[0])
    return None


class _KLDivFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, t: torch.Tensor, reduction: str, log_target: bool) -> torch.Tensor:
        ctx.save_for_backward(x, t)
        ctx.args = (reduction, log_target)
        dtype = torch.promote_types(x.dtype, t.dtype)
        xf, tf = x.to(torch.float64).reshape(-1), t.to(torch.float64).reshape(-1)
        if reduction == "none":
            return core.kl_div(xf, tf, log_target, None, False, _precise(x, t)).reshape(x.shape).to(dtype)
        return core.kl_div(xf, tf, log_target, _divisor(reduction, tuple(x.shape)), True, _precise(x, t)).to(dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, t = ctx.saved_tensors
        reduction, log_target = ctx.args
        a = g.to(torch.float64).expand(x.shape).reshape(-1)
        gi, gt = core.kl_div_grad(x.to(torch.float64).reshape(-1), t.to(torch.float64).reshape(-1), log_target, a,
                                  _divisor(reduction, tuple(x.shape)), _precise(x, t))
        return gi.reshape(x.shape).to(x.dtype), gt.reshape(t.shape).to(t.dtype), None, None


def kl_div(input: torch.Tensor, target: torch.Tensor, reduction: str = "mean",
           log_target: bool = False) -> torch.Tensor:
    """PyTorch's ``kl_div``: pointwise ``p(log p − input)`` (``e^t(t − input)``), reduced."""
    require_reduction(reduction, KL_REDUCTIONS)
    require_floating("input", input)
    require_floating("target", target)
    require_same_shape("target", target, "input", input)
    if not log_target:
        require_range("target", target.detach(), 0.0, float("inf"))
    return _KLDivFn.apply(input, target, reduction, bool(log_target))


class _KLDivergenceFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p: torch.Tensor, q: torch.Tensor, dim: int) -> torch.Tensor:
        ctx.save_for_backward(p, q)
        ctx.dim = dim
        return core.kl_divergence(_rows(p, dim), _rows(q, dim), _precise(p, q)).to(
            torch.promote_types(p.dtype, q.dtype))

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        p, q = ctx.saved_tensors
        gp, gq = core.kl_divergence_grad(_rows(p, ctx.dim), _rows(q, ctx.dim), g.to(torch.float64).unsqueeze(-1),
                                         _precise(p, q))
        return gp.movedim(-1, ctx.dim).to(p.dtype), gq.movedim(-1, ctx.dim).to(q.dtype), None


def kl_divergence(p: torch.Tensor, q: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``D(p‖q) = Σ p log(p/q)`` along ``dim`` (``0·log(0/q) = 0``; ``p > 0 = q`` gives +inf)."""
    _probabilities("p", p)
    _probabilities("q", q)
    require_same_shape("q", q, "p", p)
    require_dim(dim, p.dim())
    return _KLDivergenceFn.apply(p, q, dim)
