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

import math

import torch

from . import information_core as core
from .information_numpy import KL_REDUCTIONS, require_dim
from .validation import require_floating, require_range, require_reduction, require_same_shape


def _probabilities(name: str, a: torch.Tensor) -> None:
    require_floating(name, a)
    require_range(name, a.detach(), 0.0, float("inf"))


_F64 = torch.float64
_BLOCK = 1 << 15  # elements per block on the CPU (a few float64 temporaries stay in the L2 cache)


def _rows(a: torch.Tensor, dim: int) -> torch.Tensor:
    """``a`` with ``dim`` moved last, as a matrix of rows (in ``a``'s dtype)."""
    a = a.movedim(dim, -1)
    return a.reshape(math.prod(a.shape[:-1]), a.shape[-1])


def _blocks(n: int, per: int, device: torch.device):
    """Slices of ``range(n)``: blocks of about ``_BLOCK`` elements when each index holds ``per``."""
    step = max(1, _BLOCK // max(per, 1)) if device.type == "cpu" else max(n, 1)
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def _row_map(fn, out_dtypes: tuple[torch.dtype, ...], *rows: torch.Tensor, reduce: bool = False):
    """``fn`` (float64 rows in, a float64 result — or a tuple of them — out: one value per row when
    ``reduce``, else per element) over blocks of rows, each result rounded once into its dtype in
    ``out_dtypes``; a tuple of results."""
    n, m = rows[0].shape
    outs = tuple(torch.empty((n,) if reduce else (n, m), dtype=d, device=rows[0].device) for d in out_dtypes)
    for sl in _blocks(n, m, rows[0].device):
        got = fn(*(r[sl].to(_F64) for r in rows))
        for o, v in zip(outs, got if isinstance(got, tuple) else (got,)):
            o[sl] = v
    return outs


def _unrows(v: torch.Tensor, like: torch.Tensor, dim: int, reduce: bool) -> torch.Tensor:
    """Undo :func:`_rows` for a per-row (``reduce``) or per-element result of ``like``."""
    moved = like.movedim(dim, -1)
    if reduce:
        return v.reshape(moved.shape[:-1])
    return v.reshape(moved.shape).movedim(-1, dim)


def _precise(*tensors: torch.Tensor) -> bool:
    """Double-double transcendentals for float64 results; float64 hardware ones suffice below."""
    return any(t.dtype == torch.float64 for t in tensors)


class _EntropyFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p: torch.Tensor, dim: int) -> torch.Tensor:
        ctx.save_for_backward(p)
        ctx.dim = dim
        precise = _precise(p)
        # narrow dtypes: entr is core.entropy's plain formula (0 at p = 0) in one pass
        row_entropy = (lambda r: core.entropy(r, True)) if precise else (lambda r: torch.special.entr(r).sum(-1))
        (h,) = _row_map(row_entropy, (p.dtype,), _rows(p, dim), reduce=True)
        return _unrows(h, p, dim, True)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (p,) = ctx.saved_tensors
        precise = _precise(p)
        gr = g.reshape(-1, 1) if g.dim() else g.reshape(1, 1)
        (grad,) = _row_map(lambda r, gb: core.entropy_grad(r, gb, precise), (p.dtype,), _rows(p, ctx.dim), gr)
        return _unrows(grad, p, ctx.dim, False), None


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


def _kl_div_sum(x: torch.Tensor, t: torch.Tensor, log_target: bool) -> torch.Tensor:
    """The float64 sum of the plain terms (narrow dtypes): ``xlogy(t, t) − t·x`` where that is
    finite, else (an edge: ``t = 0`` against ``x = −∞``, infinities, NaN) :func:`information_core.kl_div`."""
    if not log_target:
        total = (torch.xlogy(t, t) - t * x).sum()
        if torch.isfinite(total):
            return total
    return core.kl_div(x, t, log_target, None, True, False)


class _KLDivFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, t: torch.Tensor, reduction: str, log_target: bool) -> torch.Tensor:
        ctx.save_for_backward(x, t)
        ctx.args = (reduction, log_target)
        dtype = torch.promote_types(x.dtype, t.dtype)
        precise = _precise(x, t)
        xf, tf = x.reshape(-1), t.reshape(-1)
        divisor = _divisor(reduction, tuple(x.shape))
        if reduction == "none":
            out = torch.empty(xf.shape, dtype=dtype, device=x.device)
            for sl in _blocks(xf.numel(), 1, x.device):
                out[sl] = core.kl_div(xf[sl].to(_F64), tf[sl].to(_F64), log_target, None, False, precise)
            return out.reshape(x.shape)
        if precise:  # double-double terms, summed (and divided) as one array
            return core.kl_div(xf.to(_F64), tf.to(_F64), log_target, divisor, True, True).to(dtype)
        total = torch.zeros((), dtype=_F64, device=x.device)
        for sl in _blocks(xf.numel(), 1, x.device):
            total += _kl_div_sum(xf[sl].to(_F64), tf[sl].to(_F64), log_target)
        if divisor is not None:
            total = total / divisor if divisor else total * float("nan")  # an empty mean: 0/0
        return total.to(dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, t = ctx.saved_tensors
        reduction, log_target = ctx.args
        want = ctx.needs_input_grad[:2]
        precise, divisor = _precise(x, t), _divisor(reduction, tuple(x.shape))
        xf, tf = x.reshape(-1), t.reshape(-1)
        a = g.to(_F64).reshape(-1) if reduction == "none" else g.to(_F64)
        gi = torch.empty_like(xf) if want[0] else None
        gt = torch.empty_like(tf) if want[1] else None
        for sl in _blocks(xf.numel(), 1, x.device):
            bi, bt = core.kl_div_grad(xf[sl].to(_F64), tf[sl].to(_F64), log_target, a[sl] if a.dim() else a,
                                      divisor, precise, want)
            if gi is not None:
                gi[sl] = bi
            if gt is not None:
                gt[sl] = bt
        return (gi.reshape(x.shape) if want[0] else None, gt.reshape(t.shape) if want[1] else None, None, None)


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
        precise = _precise(p, q)
        (d,) = _row_map(lambda a, b: core.kl_divergence(a, b, precise), (torch.promote_types(p.dtype, q.dtype),),
                        _rows(p, dim), _rows(q, dim), reduce=True)
        return _unrows(d, p, dim, True)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        p, q = ctx.saved_tensors
        precise, dim = _precise(p, q), ctx.dim
        gr = g.reshape(-1, 1) if g.dim() else g.reshape(1, 1)
        gp, gq = _row_map(lambda a, b, c: core.kl_divergence_grad(a, b, c, precise), (p.dtype, q.dtype),
                          _rows(p, dim), _rows(q, dim), gr)
        return _unrows(gp, p, dim, False), _unrows(gq, q, dim, False), None


def kl_divergence(p: torch.Tensor, q: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``D(p‖q) = Σ p log(p/q)`` along ``dim`` (``0·log(0/q) = 0``; ``p > 0 = q`` gives +inf)."""
    _probabilities("p", p)
    _probabilities("q", q)
    require_same_shape("q", q, "p", p)
    require_dim(dim, p.dim())
    return _KLDivergenceFn.apply(p, q, dim)
