"""PyTorch binary cross-entropy on probabilities and on logits, with analytic backward.

Each loss is a ``torch.autograd.Function`` over elements (weights included) whose backward is
the cancellation-free VJP of :mod:`.binary_core` — autograd through ``log(σ(x))`` or
``σ(x) − y`` would lose the tails — and computes only the gradients autograd asks for. Work runs
in blocks of about 2^15 elements on the CPU (small temporaries that stay in the cache; the
reduced loss is summed block by block). float16, bfloat16 and float32 are computed in float64
by the lean kernels below and rounded once to the input dtype; a block whose result is not
finite (an edge: infinite or NaN operands, p ∈ {0, 1}) is recomputed by the guarded kernels of
:mod:`.binary_core`. float64 carries guard bits (see :func:`_kernel`); CPU and CUDA alike.
Semantics are PyTorch's (``lossoracle.reference.binary``), with exact logarithms — no −100
clamp.
"""

from __future__ import annotations

import numpy as np
import torch

from . import binary_core as core

Tensor = torch.Tensor
_F64 = torch.float64
_BLOCK = 1 << 15  # CPU elements per block


# ----------------------------------------------------------------------------------------------
# Lean float64 kernels for float32 and narrower results, on finite operands with 0 < p < 1: the
# formulas of :mod:`.binary_core` without their guards (``0·∞``, the one-sided limits, the cancellation-free
# branches near x = 0 and p = 1/2, which only float64 results need). Operands of a narrower
# format neither overflow nor underflow in float64 where the result's format would not, every
# intermediate is within a few 2^-53 relative, and the terms a cancellation leaves are bounded by
# the componentwise condition number: 2^29 of headroom against the float32 budgets. A non-finite
# result flags an edge (an infinite or NaN operand, p ∈ {0, 1}): callers then take the guarded
# kernels.


def _lean_bce(p: Tensor, y: Tensor, w: Tensor | None) -> Tensor:
    """``−w·[y log p + (1 − y) log1p(−p)]``."""
    v = -(y * torch.log(p) + (1 - y) * torch.log1p(-p))
    return v if w is None else w * v


def _lean_bce_grads(a: Tensor, p: Tensor, y: Tensor, _pw: None, want_y: bool) -> tuple[Tensor, Tensor | None]:
    """``a·(p − y)/(p(1 − p))`` and ``a·(log1p(−p) − log p)`` (``a``: cotangent times weight)."""
    return a * ((p - y) / (p * (1 - p))), (a * (torch.log1p(-p) - torch.log(p)) if want_y else None)


def _log1p_exp_neg_abs(x: Tensor) -> Tensor:
    return x.abs().neg_().exp_().log1p_()


def _softplus_pair(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(softplus(x), softplus(−x))`` as :func:`binary_core.softplus_pair` (``relu``: no ``where``)."""
    lg = _log1p_exp_neg_abs(x)
    return lg + torch.relu(x), lg.add_(torch.relu(-x))


def _lean_bce_logits(x: Tensor, y: Tensor, w: Tensor | None, pw: Tensor | None) -> Tensor:
    """``w·[pw·y·softplus(−x) + (1 − y)·softplus(x)]``; without ``pw``, ``(max(x, 0) − y·x) +
    log1p(e^{−|x|})``, two non-negative terms (the first exact where y ∈ {0, 1}; where it cancels,
    ``|y·x|`` is bounded by the condition number)."""
    if pw is None:
        v = torch.relu(x).sub_(y * x).add_(_log1p_exp_neg_abs(x))
    else:
        sp, sn = _softplus_pair(x)
        v = (pw * (y * sn)).add_((1 - y) * sp)
    return v if w is None else v.mul_(w)


def _lean_bce_logits_grads(a: Tensor, x: Tensor, y: Tensor, pw: Tensor | None,
                          want_y: bool) -> tuple[Tensor, Tensor | None]:
    """``a·[(1 − y)σ(x) − pw·y·σ(−x)]`` (not ``σ(x) − y``, which cancels for hard targets) and
    ``−a·x`` (``a·[pw·softplus(−x) − softplus(x)]``), ``a`` the cotangent times the weight.
    For ``|x| < 1/4`` the sigmoids cancel against each other (soft targets): there, as in
    :func:`binary_core.bce_logits_grads`, ``((c − d) + m·s)/(2 + m)`` with ``m = expm1(−|x|)``,
    ``s = −d`` (x ≥ 0) or ``c`` (x < 0), selected arithmetically (both forms are finite; cheaper
    than ``where``)."""
    c, d = 1 - y, (y if pw is None else pw * y)
    far = (c * torch.sigmoid(x)).sub_(d * torch.sigmoid(-x))
    m = torch.expm1(-x.abs())
    s = (x < 0).to(x.dtype).mul_(c + d).sub_(d)
    near = (c - d).addcmul_(m, s).div_(m.add_(2))
    k = (x.abs() < 0.25).to(x.dtype)
    gx = far.mul_(1 - k).addcmul_(near, k).mul_(a)  # exactly near or far: a product with 0 or 1, a sum with 0
    if pw is None or not want_y:
        return gx, (-a * x if want_y else None)
    # as binary_core: (pw − 1)·softplus(−x) − x (x ≥ 0) or (pw − 1)·softplus(x) − pw·x, |x| never
    # cancelling against itself (exactly −x at pw = 1); the branches selected arithmetically
    sp, sn = _softplus_pair(x)
    pos = (x >= 0).to(x.dtype)
    q = sn.mul_(pos).addcmul_(sp, 1 - pos)
    r = (1 - pos).mul_(pw).add_(pos).mul_(-x)
    return gx, q.mul_(pw - 1).add_(r).mul_(a)


def _kernel(fn, guard: bool, *args: Tensor | None, **kw):
    """Evaluate a :mod:`.binary_core` kernel on float64 operands: plainly for narrower inputs;
    with guard bits for float64 inputs — on the CPU in NumPy's long double (64-bit mantissa,
    zero-copy in and out), elsewhere (CUDA, or no long double) in double-double."""
    ref = next(a for a in args if isinstance(a, Tensor))
    if not guard:
        return fn(*args, **kw)
    if ref.device.type != "cpu" or core.LONG_DOUBLE is None:
        return fn(*args, dd=True, **kw)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # inf/NaN edges are intended
        out = fn(*(a.detach().numpy().astype(core.LONG_DOUBLE) if isinstance(a, Tensor) else a for a in args), **kw)
        if isinstance(out, tuple):
            return tuple(None if o is None else torch.from_numpy(np.asarray(o, dtype=np.float64)) for o in out)
        return torch.from_numpy(np.asarray(out, dtype=np.float64))


def _blocks(n: int, device: torch.device) -> list[slice]:
    step = _BLOCK if device.type == "cpu" else max(n, 1)
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def _flat(a: Tensor | None, shape: torch.Size) -> Tensor | None:
    """``a`` broadcast to ``shape``, flattened (a copy only where it is broadcast)."""
    return None if a is None else a.broadcast_to(shape).reshape(-1)


def _part(a: Tensor | None, sl: slice) -> Tensor | None:
    return None if a is None else a[sl].to(_F64)


def _finite(v: Tensor) -> bool:
    return bool(torch.isfinite(v.sum()))  # any inf or NaN element makes the sum non-finite


def _forward(lean, guarded, guard: bool, reduction: str, dtype: torch.dtype, *operands: Tensor | None) -> Tensor:
    """The elementwise loss (``none``) or its float64 sum, block by block; ``lean`` for narrow
    dtypes, ``guarded`` (the :mod:`.binary_core` kernel) for float64 and for edge blocks."""
    shape = operands[0].shape
    flat = [_flat(a, shape) for a in operands]
    n = flat[0].numel()
    out = torch.empty(n, dtype=dtype, device=flat[0].device) if reduction == "none" else None
    total = torch.zeros((), dtype=_F64, device=flat[0].device)
    for sl in _blocks(n, flat[0].device):
        args = [_part(a, sl) for a in flat]
        v = None if guard else lean(*args)
        if v is None or not _finite(v):
            v = _kernel(guarded, guard, *args)
        if out is None:
            total += v.sum()
        else:
            out[sl] = v
    if out is not None:
        return out.view(shape)
    return (total if reduction == "sum" else total / n).to(dtype)


def _backward(lean, guarded, guard: bool, reduction: str, g: Tensor, w: Tensor | None, x: Tensor, y: Tensor,
              pw: Tensor | None, want: tuple[bool, bool]) -> tuple[Tensor | None, Tensor | None]:
    """``∂/∂x`` and ``∂/∂y`` (those in ``want``) for the cotangent ``g`` of the reduced loss."""
    shape, n = x.shape, x.numel()
    g = g.to(_F64)
    if reduction == "mean":
        g = g / n
    gf = g.reshape(-1) if reduction == "none" else g
    wf, pwf, xf, yf = _flat(w, shape), _flat(pw, shape), x.reshape(-1), y.reshape(-1)
    gx = torch.empty_like(xf) if want[0] else None
    gy = torch.empty_like(yf) if want[1] else None
    for sl in _blocks(n, x.device):
        gb = gf[sl] if gf.dim() else gf.expand(sl.stop - sl.start)
        wb, xb, yb, pwb = _part(wf, sl), xf[sl].to(_F64), yf[sl].to(_F64), _part(pwf, sl)
        bx = by = None
        if not guard:
            bx, by = lean(gb if wb is None else gb * wb, xb, yb, pwb, want[1])
            if not (_finite(bx) and (by is None or _finite(by))):
                bx = None
        if bx is None:
            bx, by = _kernel(guarded, guard, gb, wb, xb, yb, pwb, want_y=want[1])
        if gx is not None:
            gx[sl] = bx
        if gy is not None:
            gy[sl] = by
    return (None if gx is None else gx.view(shape)), (None if gy is None else gy.view(y.shape))


def _weight_grad(w: Tensor, g: Tensor, loss: Tensor) -> Tensor:
    """``Σ g·ℓ`` over the dimensions ``w`` was broadcast along."""
    return core.mul0(g, loss).sum_to_size(w.shape)


def _cotangent(g: Tensor, reduction: str, shape: torch.Size) -> Tensor:
    """Each element's cotangent in float64 (``g/numel`` under mean)."""
    g = g.to(_F64)
    n = shape.numel()
    return (g if reduction == "none" else (g / n if reduction == "mean" else g)).expand(shape)


def _bce_grads(g: Tensor, w: Tensor | None, p: Tensor, y: Tensor, _pw: None, *, want_y: bool, dd: bool = False):
    """:func:`binary_core.bce_grads` in the signature of :func:`binary_core.bce_logits_grads`."""
    return core.bce_grads(g, w, p, y, dd=dd, want_y=want_y)


class _BCEFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p: Tensor, y: Tensor, w: Tensor | None, reduction: str) -> Tensor:
        ctx.save_for_backward(p, y, w)
        ctx.reduction = reduction
        guard = p.dtype == _F64
        return _forward(_lean_bce, core.bce, guard, reduction, p.dtype, p, y, w)

    @staticmethod
    def backward(ctx, g: Tensor):
        p, y, w = ctx.saved_tensors
        reduction, guard = ctx.reduction, p.dtype == _F64
        need = ctx.needs_input_grad
        gp, gy = _backward(_lean_bce_grads, _bce_grads, guard, reduction, g, w, p, y, None, need[:2])
        gw = None
        if need[2]:
            p64, y64 = p.to(_F64), y.to(_F64)
            gw = _weight_grad(w, _cotangent(g, reduction, p.shape), _kernel(core.bce, guard, p64, y64)).to(w.dtype)
        return gp, gy, gw, None


class _BCELogitsFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, w: Tensor | None, pw: Tensor | None, reduction: str) -> Tensor:
        ctx.save_for_backward(x, y, w, pw)
        ctx.reduction = reduction
        return _forward(_lean_bce_logits, core.bce_logits, x.dtype == _F64, reduction, x.dtype, x, y, w, pw)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, y, w, pw = ctx.saved_tensors
        reduction, guard = ctx.reduction, x.dtype == _F64
        need = ctx.needs_input_grad
        gx, gy = _backward(_lean_bce_logits_grads, core.bce_logits_grads, guard, reduction, g, w, x, y, pw, need[:2])
        gw = gpw = None
        if need[2] or (need[3] and pw is not None):
            x64, y64, pw64 = x.to(_F64), y.to(_F64), None if pw is None else pw.to(_F64)
            a = _cotangent(g, reduction, x.shape)
            if need[2]:
                gw = _weight_grad(w, a, _kernel(core.bce_logits, guard, x64, y64, None, pw64)).to(w.dtype)
            if need[3] and pw is not None:  # ∂ℓ/∂pw = w·y·softplus(−x)
                aw = a if w is None else a * w.to(_F64)
                gpw = core.mul0(aw * y64, core.softplus_pair(x64)[1]).sum_to_size(pw.shape).to(pw.dtype)
        return gx, gy, gw, gpw, None


def _check(*args, **kwargs) -> None:
    """:func:`binary_core.check` on detached tensors (reading a bad value must not touch autograd)."""
    core.check(*(a.detach() if isinstance(a, Tensor) else a for a in args), **kwargs)


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                         reduction: str = "mean") -> Tensor:
    """``−w·[y log p + (1 − y) log(1 − p)]``, reduced (mean = Σ / numel); exact logs, no clamp."""
    _check(input, target, weight, reduction, probabilities=True)
    return _BCEFn.apply(input, target, weight, reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Tensor | None = None,
                                     reduction: str = "mean", pos_weight: Tensor | None = None) -> Tensor:
    """``w·[pw·y·softplus(−x) + (1 − y)·softplus(x)]``, reduced (mean = Σ / numel)."""
    _check(input, target, weight, reduction, pos_weight)
    return _BCELogitsFn.apply(input, target, weight, pos_weight, reduction)
