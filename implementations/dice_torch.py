"""PyTorch soft Dice, Jaccard, Tversky and generalized Dice losses (autograd; CPU and CUDA).

One ``torch.autograd.Function`` per call whose backward is the analytic VJP of
:mod:`.dice_core` (autograd through ``1 − ratio`` would differentiate the cancelling form).
float16, bfloat16 and float32 are computed in float64 and rounded once to the input's dtype;
float64 on the CPU in NumPy's long double (64-bit significand, via zero-copy views), float64
on CUDA in float64. The forward keeps only the inputs; the backward recomputes the activation
(one more pass over the input instead of two saved full-size float64 maps). Definitions and
parameters: ``lossoracle.reference.dice``.
"""

from __future__ import annotations

import numpy as np
import torch

from . import dice_core as core


def _long_double(x: torch.Tensor) -> bool:
    return x.dtype == torch.float64 and x.device.type == "cpu" and core.LONG_DOUBLE is not None


_BLOCK = 1 << 16  # CPU elements per block: each float64 temporary (512 KiB) stays in the L2 cache


def _blocks(x: torch.Tensor, N: int, C: int, S: int) -> list[slice]:
    if x.device.type != "cpu" or S == 0 or N * C == 0:
        return [slice(0, S)]
    step = max(1, _BLOCK // (N * C))
    return [slice(i, min(i + step, S)) for i in range(0, S, step)]


class _Operands:
    """The inputs of one call, flattened to (N, C, S), handed out block by block in the compute arithmetic:
    float64 tensors, or NumPy long double arrays for float64 on the CPU."""

    def __init__(self, x: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None, soft: bool) -> None:
        self.shape, self.soft = x.shape, soft
        N, C = x.shape[:2]
        self.N, self.C = N, C
        self.ld = _long_double(x)
        self.x = x.detach().reshape(N, C, -1)
        self.t = t.detach().reshape(N, C, -1) if soft else t.detach().reshape(N, -1)
        self.S = self.x.shape[-1]
        if self.ld:
            ld = core.LONG_DOUBLE
            self.x = self.x.numpy().astype(ld)
            self.t = self.t.numpy().astype(ld) if soft else self.t.numpy()
            self.w = None if w is None else w.detach().numpy().astype(ld)
            self.slices = [slice(0, self.S)]
        else:
            self.w = None if w is None else w.detach().to(torch.float64)
            self.slices = _blocks(x, N, C, self.S)

    def block(self, sl: slice):
        if self.ld:
            return self.x[:, :, sl], (self.t[:, :, sl] if self.soft else self.t[:, sl])
        xs = self.x[:, :, sl].to(torch.float64)
        ts = self.t[:, :, sl].to(torch.float64) if self.soft else self.t[:, sl]
        return xs, ts

    def scalar(self, g: torch.Tensor):
        return g.detach().numpy().astype(core.LONG_DOUBLE) if self.ld else g.to(torch.float64)

    def tensor(self, a) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.float64)) if self.ld else a


def _stats(op: _Operands, prm: core.Params) -> dict:
    total = None
    with np.errstate(all="ignore"):
        for sl in op.slices:
            total = core.add_stats(total, core.stats(core.prepare(*op.block(sl), op.soft, prm), prm))
    return total


def _value(op: _Operands, stats: dict, prm: core.Params) -> torch.Tensor:
    C1 = op.C - (0 if prm.include_background else 1)
    with np.errstate(all="ignore"):
        r = core.ratios(stats, prm)
        v = core.reduce(core.elementwise(r, op.w, prm), prm, core.output_shape(prm, op.N, C1))
    return op.tensor(v)


def _grads(op: _Operands, stats: dict, prm: core.Params, grad: torch.Tensor, want_target: bool, dtype):
    """``(∂/∂x, ∂/∂y)`` block by block, each block rounded once into ``dtype``."""
    with np.errstate(all="ignore"):
        r = core.ratios(stats, prm)
        a = core.cotangent(op.scalar(grad), r, op.w, prm)
        gx = torch.empty((op.N, op.C, op.S), dtype=dtype, device=grad.device)
        gy = torch.empty_like(gx) if want_target else None
        for sl in op.slices:
            pr = core.prepare(*op.block(sl), op.soft, prm)
            bx, by = core.backward(pr, stats, r, a, prm, want_target)
            gx[:, :, sl] = op.tensor(bx)
            if gy is not None:
                gy[:, :, sl] = op.tensor(by)
    return gx.reshape(op.shape), (None if gy is None else gy.reshape(op.shape))


class _DiceFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, t, w, prm, soft):
        op = _Operands(x, t, w, soft)
        stats = _stats(op, prm)
        ctx.save_for_backward(x, t, w)
        ctx.prm, ctx.soft, ctx.stats = prm, soft, stats  # (G, C) sums: small
        return _value(op, stats, prm).to(x.device)

    @staticmethod
    def backward(ctx, grad):
        x, t, w = ctx.saved_tensors
        need = ctx.needs_input_grad
        want_target = bool(need[1]) and ctx.soft and ctx.prm.kind != "generalized_dice"
        op = _Operands(x, t, w, ctx.soft)
        gx, gy = _grads(op, ctx.stats, ctx.prm, grad, want_target, x.dtype)
        return (gx if need[0] else None, gy.to(t.dtype) if gy is not None else None, None, None, None)


def _call(kind, input, target, weight, **params) -> torch.Tensor:
    prm = core.Params(kind, **params)
    soft = core.check(input.detach(), target.detach(), None if weight is None else weight.detach(), prm)
    out = _DiceFn.apply(input, target, weight, prm, soft)
    return out.to(input.dtype)


def dice_loss(input, target, weight=None, *, activation="none", include_background=True, squared=False, batch=False,
              smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean") -> torch.Tensor:
    """Soft Dice loss ``1 − (2Σp·y + s_nr)/(Σp^k + Σy^k + s_dr)`` per (sample, class), reduced."""
    return _call("dice", input, target, weight, activation=activation, include_background=include_background,
                 squared=squared, batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr, ignore_index=ignore_index,
                 reduction=reduction)


def jaccard_loss(input, target, weight=None, *, activation="none", include_background=True, squared=False,
                 batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean") -> torch.Tensor:
    """Soft Jaccard loss ``1 − (Σp·y + s_nr)/(Σp^k + Σy^k − Σp·y + s_dr)``, reduced."""
    return _call("jaccard", input, target, weight, activation=activation, include_background=include_background,
                 squared=squared, batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr, ignore_index=ignore_index,
                 reduction=reduction)


def tversky_loss(input, target, weight=None, *, alpha=0.5, beta=0.5, activation="none", include_background=True,
                 batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean") -> torch.Tensor:
    """Tversky loss ``1 − (I + s_nr)/(I + α·FP + β·FN + s_dr)``, reduced."""
    return _call("tversky", input, target, weight, alpha=alpha, beta=beta, activation=activation,
                 include_background=include_background, batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
                 ignore_index=ignore_index, reduction=reduction)


def generalized_dice_loss(input, target, *, w_type="square", activation="none", include_background=True,
                          batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100,
                          reduction="mean") -> torch.Tensor:
    """Generalized Dice loss (Sudre) per sample, reduced."""
    return _call("generalized_dice", input, target, None, w_type=w_type, activation=activation,
                 include_background=include_background, batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
                 ignore_index=ignore_index, reduction=reduction)
