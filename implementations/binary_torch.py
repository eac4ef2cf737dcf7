"""PyTorch binary cross-entropy on probabilities and on logits, with analytic backward.

Each loss is a ``torch.autograd.Function`` over elements (weights included) whose backward is
the cancellation-free VJP of :mod:`.binary_core` — autograd through ``log(σ(x))`` or
``σ(x) − y`` would lose the tails. Reductions are plain torch ops around it. float16, bfloat16
and float32 are computed in float64 and rounded once to the input dtype (a float32 evaluation
loses several ULP where an intermediate such as ``softplus(−88.8)`` or ``pw·y`` is subnormal);
float64 carries guard bits (see :func:`_kernel`); CPU and CUDA alike. Semantics are
PyTorch's (``lossoracle.reference.binary``), with exact logarithms — no −100 clamp.
"""

from __future__ import annotations

import numpy as np
import torch

from . import binary_core as core

def _guarded(x: torch.Tensor) -> bool:
    """float64 input: the kernels need guard bits beyond float64 (narrower inputs get float64)."""
    return x.dtype == torch.float64


def _to(a: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if a is None else a.to(dtype)


def _check(*args, **kwargs) -> None:
    """:func:`binary_core.check` on detached tensors (reading a bad value must not touch autograd)."""
    core.check(*(a.detach() if isinstance(a, torch.Tensor) else a for a in args), **kwargs)


def _kernel(fn, guard: bool, *args: torch.Tensor | None):
    """Evaluate a :mod:`.binary_core` kernel on float64 operands: plainly for narrower inputs;
    with guard bits for float64 inputs — on the CPU in NumPy's long double (64-bit mantissa,
    zero-copy in and out), elsewhere (CUDA, or no long double) in double-double."""
    ref = args[0]
    if not guard:
        return fn(*args)
    if ref.device.type != "cpu" or core.LONG_DOUBLE is None:
        return fn(*args, dd=True)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # inf/NaN edges are intended
        out = fn(*(None if a is None else a.detach().numpy().astype(core.LONG_DOUBLE) for a in args))
        if isinstance(out, tuple):
            return tuple(torch.from_numpy(np.asarray(o, dtype=np.float64)) for o in out)
        return torch.from_numpy(np.asarray(out, dtype=np.float64))


def _weight_grad(w: torch.Tensor, g: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    """``Σ g·ℓ`` over the dimensions ``w`` was broadcast along."""
    return core.mul0(g, loss).sum_to_size(w.shape)


class _BCEFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, guard: bool) -> torch.Tensor:
        ctx.save_for_backward(p, y, w)
        ctx.guard = guard
        return _kernel(core.bce, guard, p, y, w)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        p, y, w = ctx.saved_tensors
        gp, gy = _kernel(core.bce_grads, ctx.guard, g, w, p, y)
        need = ctx.needs_input_grad
        gw = _weight_grad(w, g, _kernel(core.bce, ctx.guard, p, y)) if need[2] else None
        return (gp if need[0] else None, gy if need[1] else None, gw, None)


class _BCELogitsFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None,
                pw: torch.Tensor | None, guard: bool) -> torch.Tensor:
        ctx.save_for_backward(x, y, w, pw)
        ctx.guard = guard
        return _kernel(core.bce_logits, guard, x, y, w, pw)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, y, w, pw = ctx.saved_tensors
        gx, gy = _kernel(core.bce_logits_grads, ctx.guard, g, w, x, y, pw)
        need = ctx.needs_input_grad
        gw = _weight_grad(w, g, _kernel(core.bce_logits, ctx.guard, x, y, None, pw)) if need[2] else None
        gpw = None
        if need[3] and pw is not None:  # ∂ℓ/∂pw = w·y·softplus(−x)
            a = g if w is None else g * w
            gpw = core.mul0(a * y, core.softplus_pair(x)[1]).sum_to_size(pw.shape)
        return (gx if need[0] else None, gy if need[1] else None, gw, gpw, None)


def binary_cross_entropy(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                         reduction: str = "mean") -> torch.Tensor:
    """``−w·[y log p + (1 − y) log(1 − p)]``, reduced (mean = Σ / numel); exact logs, no clamp."""
    _check(input, target, weight, reduction, probabilities=True)
    ct = torch.float64
    loss = _BCEFn.apply(input.to(ct), target.to(ct), _to(weight, ct), _guarded(input))
    return core.reduce(loss, reduction).to(input.dtype)


def binary_cross_entropy_with_logits(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                                     reduction: str = "mean", pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """``w·[pw·y·softplus(−x) + (1 − y)·softplus(x)]``, reduced (mean = Σ / numel)."""
    _check(input, target, weight, reduction, pos_weight)
    ct = torch.float64
    loss = _BCELogitsFn.apply(input.to(ct), target.to(ct), _to(weight, ct), _to(pos_weight, ct), _guarded(input))
    return core.reduce(loss, reduction).to(input.dtype)
