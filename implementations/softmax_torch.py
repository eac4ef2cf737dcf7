"""PyTorch softmax, log-softmax, NLL and cross-entropy with analytic, cancellation-free backward.

Every row goes through PyTorch's fused ``log_softmax`` / ``softmax`` kernels and their backward
kernels (the bulk tier of :mod:`.softmax_core`; below ``_FUSED_MIN_C`` classes, where those kernels
are slow, the same passes as array operations). float64 softmax is unshifted where every row
maximum lies in [0, 600] (``e^x`` of the exact input), else shifted with the TwoSum residual of
``x − m``. Where a probability above 1/2 would cancel, log-softmax and softmax correct only the
arg-max column of those rows; cross-entropy recomputes those rows (and non-finite ones) by the
cancellation-free kernels, in forward, keeping their gradient for backward — except with few
classes and no label smoothing, where every row takes the cancellation-free form in a few passes
one format wider (:class:`_TargetRows`). Forward saves what backward reads (``log p`` or ``p``;
the compiled log-softmax rows below: the logits and two numbers per row). float16/bfloat16 are
computed in float32 and rounded once to the input dtype; CPU and CUDA alike. Semantics are PyTorch's.

Speed (``python benchmarks/softmax_ratio.py``): on the CPU, from 2^16 elements, log-softmax and softmax of
float32/float16/bfloat16 run the native row kernels of ``native/softmax.cpp`` (:mod:`.native`): one C++ loop
per row held in L1 — its maximum, ``r`` summed in float64 from SLEEF's float32 ``exp``, the output — and a
backward from the logits and ``m``, ``r`` (from the output ``p`` for float32 softmax), the same mathematics
as the compiled row kernels below, with the error bound written in the source. Where no extension can be
built, ``torch.compile`` kernels (eager fallback: the paths above, ``LOSSORACLE_COMPILE=0``, which also
turns the native kernels off). float32/float16/bfloat16 log-softmax (and
float16/bfloat16 softmax) computes each row in float32 cancellation-free in one kernel, keeping only the
row maximum and ``r`` for a backward that recomputes from the logits (no tail rows, no float32 copy of a
half input); the float32/float64 softmax backward finds and corrects its tail rows in the same fused row
loop as the VJP (the forward is PyTorch's kernel alone). Elsewhere the checks that find the tail rows cost
one read pass of the output (its row maxima) and the work on those rows; the rest is PyTorch's kernels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import native
from . import softmax_core as core
from .compiled import Kernel
from .validation import class_target_kind, require_floating, require_reduction

_HALF = (torch.float16, torch.bfloat16)
_LSM_GRAD = torch.ops.aten._log_softmax_backward_data
_SM_GRAD = torch.ops.aten._softmax_backward_data


def _ct(x: torch.Tensor) -> torch.dtype:
    """The compute dtype: float32 for half inputs."""
    return torch.float32 if x.dtype in _HALF else x.dtype


def _rows(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Size]:
    """``x`` as class-last rows ``(R, C)`` (a view where the layout allows) and the class-last shape."""
    if x.dim() == 2 and dim % 2 == 1:
        return x, x.shape
    xl = x.movedim(dim, -1)
    return xl.reshape(math.prod(xl.shape[:-1]), xl.shape[-1]), xl.shape


def _unrows(a: torch.Tensor, shape: torch.Size, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """Rows back to the caller's layout; ``a`` itself where nothing moves (autograd then keeps it as
    the gradient instead of copying a view)."""
    if a.shape != shape:
        a = a.reshape(shape)
    if dim % a.dim() != a.dim() - 1:
        a = a.movedim(-1, dim)
    return a if a.dtype == dtype else a.to(dtype)


def _put(a: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """In place: ``a[i, y_i] = v_i`` for rows ``a`` ``(R, C)``, ``y`` and ``v`` ``(R, 1)`` (``scatter_`` for
    float16/bfloat16 is slow on the CPU: hundreds of µs at a million entries)."""
    if a.dtype in _HALF:
        return a.index_put_((torch.arange(a.shape[0], device=a.device), y[:, 0]), v[:, 0])
    return a.scatter_(-1, y, v)


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


_UNSHIFTED_MAX = 600.0  # float64 rows with max in [0, 600]: Σ e^x ≤ C·e^600 cannot overflow (C < e^109)


def _softmax(x2: torch.Tensor, ct: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``p`` of rows ``x2``, and each row's largest ``p`` ``(R, 1)`` where it comes without a pass.

    float64 (shifting would round ``x − m`` by up to ``|x − m|·u``, a few ULP at moderate logits):
    where every row's maximum ``m`` lies in ``[0, 600]``, ``p = e^x / Σ e^x`` unshifted — ``e^x`` of the
    exact input, no overflow, and ``s ≥ 1`` so ``e^x`` underflows only where ``p`` itself is
    subnormal — and the largest ``p`` is ``e^m/s``; otherwise :class:`core.Bulk` (the TwoSum residual of
    ``x − m``). float32 (and half inputs): PyTorch's fused ``softmax`` (the array passes for few classes)."""
    if ct == torch.float64 and x2.shape[-1]:
        m = x2.amax(-1, keepdim=True)
        if bool(((m >= 0) & (m <= _UNSHIFTED_MAX)).all()):
            p = torch.exp(x2)
            s = p.sum(-1, keepdim=True)
            return p.div_(s), torch.exp(m).div_(s)[:, 0]
        return core.Bulk(x2, log=False).p(), None
    if _fused(x2, ct):
        return torch.softmax(x2, -1, dtype=ct), None
    return core.Bulk(x2.to(ct), log=False).p(), None


def _sm_grad_rows(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The softmax VJP of rows ``p`` ``(R, C)``, cotangents ``g``: ``p_j (g_j − Σ_i g_i p_i)``, and at the
    arg-max ``k`` of a row where ``p_k > 1/2`` (``1 − p_k`` would cancel) ``p_k Σ_{i≠k} p_i (g_k − g_i)``
    (the same, by ``Σ p = 1``) — one fused loop per row: its maximum, three sums, the output (in ``g``'s
    dtype: half cotangents are read as they are, computed in ``p``'s)."""
    dtype, g = g.dtype, g.to(p.dtype)
    pm = p.amax(-1, keepdim=True)
    at = (p == pm) & (pm > 0.5)  # at most one column per row: every other p is below 1/2
    gk = torch.where(at, g, 0.0).sum(-1, keepdim=True)
    rest = (p * (gk - g)).sum(-1, keepdim=True)
    return torch.where(at, p * rest, p * (g - (g * p).sum(-1, keepdim=True))).to(dtype)


_COMPILE_MIN_NUMEL = 1 << 16  # CPU elements from which the softmax kernels are compiled
_SM_GRAD_ROWS = Kernel(_sm_grad_rows, "softmax backward", 6)  # variants: dtypes


# Log-softmax of float32/float16/bfloat16 (softmax of float16/bfloat16) on the CPU (large inputs, compiled):
# each row in float32, nothing the
# size of the input kept. The forward writes ``log p = d − log1p(r)`` in the input's dtype (``d = x − m``, ``m``
# the row maximum, ``r = Σ_{j: x_j<m} e^{d_j} + (#{x_j = m} − 1)``: every term but one maximum's, the other
# maxima added as exact ones, so a tiny ``r`` keeps its relative accuracy) and keeps ``m`` and ``r`` per row;
# the backward recomputes ``d`` and ``log p`` bit for bit from the logits. ``log p_k = −log1p(r)`` is
# cancellation-free in every row — no pass for the row maxima of the output, no tail rows — and the VJP at
# the arg-max of a row with ``r < 1`` (``p_k > 1/2``) is ``(g_k r − Σ_{i≠k} g_i)/(1 + r)``, as in
# :class:`_SoftmaxFn`. A NaN, a +inf or a row of −inf makes ``r`` NaN and the row NaN, as PyTorch's kernel.
# Error (float32, ``u = 2^-24``): ``d`` rounds once (``u|d|``, within the conditioning, as PyTorch's own
# ``x − m``), each ``e^d`` within 1 ULP (Sleef), ``r`` a sum of non-negative terms (relative error at most the
# summation's ``γ_{C−1}``, as PyTorch's row sum, no cancellation); ``log1p`` has relative condition
# ``r/((1 + r) log1p r) ≤ 1``, so ``log p_k = −log1p(r)`` carries ``r``'s relative error plus one rounding —
# where PyTorch's ``−log(fl(1 + r))`` has an absolute error ``u``, unbounded relative to ``r`` for small ``r``.
# Every other ``log p_j = d_j − log1p r`` is PyTorch's formula with a sum at least as accurate. The VJP:
# ``g − e^{log p} Σ g`` is PyTorch's; at ``k``, ``(g_k r − Σ_{i≠k} g_i)/(1 + r)`` has no ``1 − p_k`` in it.
def _shifted_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``d = x − m`` in float32 (exact), the row maximum ``m`` and ``r = Σ_{j≠k} e^{d_j}`` with one
    maximum ``k`` left out (other equal maxima counted as exact ones), ``(R, 1)``."""
    xc = x.float()
    m = xc.amax(-1, keepdim=True)
    d = xc - m
    top = d == 0
    ties = torch.where(top, 1.0, 0.0).sum(-1, keepdim=True) - 1.0  # exact
    r = torch.where(top, 0.0, torch.exp(d)).sum(-1, keepdim=True) + ties
    return d, m, r


def _lsm_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``log p`` of rows ``x`` in their dtype, and ``m``, ``r`` ``(R, 1)`` in float32."""
    d, m, r = _shifted_rows(x)
    return (d - torch.log1p(r)).to(x.dtype), m, r


def _lsm_rows_grad(x: torch.Tensor, g: torch.Tensor, m: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The VJP of :func:`_lsm_rows`, ``g − p Σ g``, for cotangents ``g``, in ``g``'s dtype."""
    gc = g.float()
    d = x.float() - m
    at = (d == 0) & (r < 1.0)  # the arg-max of a row with p_k > 1/2 (a unique maximum there)
    nk = torch.where(at, 0.0, gc).sum(-1, keepdim=True)  # Σ_{i≠k} g_i
    bulk = gc - torch.exp(d - torch.log1p(r)) * gc.sum(-1, keepdim=True)
    return torch.where(at, (gc * r - nk) / (1.0 + r), bulk).to(g.dtype)


def _sm_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax of half rows ``x`` as :func:`_lsm_rows`: ``p = e^d/(1 + r)`` in their dtype, ``m``, ``r``."""
    d, m, r = _shifted_rows(x)
    return (torch.exp(d) / (1.0 + r)).to(x.dtype), m, r


def _sm_rows_grad(x: torch.Tensor, g: torch.Tensor, m: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The VJP of :func:`_sm_rows` (``p`` recomputed in float32): :func:`_sm_grad_rows` with the arg-max of
    a row with ``r < 1`` known from ``d = 0``."""
    gc = g.float()
    d = x.float() - m
    p = torch.exp(d) / (1.0 + r)
    at = (d == 0) & (r < 1.0)
    gk = torch.where(at, gc, 0.0).sum(-1, keepdim=True)
    rest = (p * (gk - gc)).sum(-1, keepdim=True)
    return torch.where(at, p * rest, p * (gc - (gc * p).sum(-1, keepdim=True))).to(g.dtype)


_NATIVE_DTYPES = (torch.float32, *_HALF)  # native/softmax.cpp: the rows below in one C++ row loop
_ROWS_DTYPES = {True: (torch.float32, *_HALF), False: _HALF}  # log-softmax; softmax (float32: PyTorch's forward)
_ROWS = {True: (Kernel(_lsm_rows, "log-softmax rows", 3), _lsm_rows_grad),  # variants: dtypes
         False: (Kernel(_sm_rows, "softmax rows", 2), _sm_rows_grad)}
_ROWS_GRAD = {True: Kernel(_lsm_rows_grad, "log-softmax rows backward", 3),
              False: Kernel(_sm_rows_grad, "softmax rows backward", 2)}


class _SoftmaxFn(torch.autograd.Function):
    """Log-softmax or softmax. Large CPU float32/float16/bfloat16 inputs: the native row kernels; without
    them, log-softmax of those dtypes and float16/bfloat16 softmax: :func:`_lsm_rows`, :func:`_sm_rows` and
    their VJPs compiled.
    Otherwise the bulk (:func:`_log_softmax`, :func:`_softmax`) and, in the tail rows
    (a probability above 1/2), the arg-max column ``k`` cancellation-free: ``log p_k = −log1p(r)`` in
    forward (``r = Σ_{j≠k} e^{ℓ_j − ℓ_k}``), and the VJP at ``k`` in backward. Softmax values need no
    correction, so its tail rows are found in backward (from the saved ``p``: in the compiled row loop
    :func:`_sm_grad_rows` for large CPU inputs, else by a pass for the row maxima), unless the forward
    had each row's largest ``p`` at hand."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, log: bool) -> torch.Tensor:
        ct = _ct(x)
        x2, shape = _rows(x, dim)
        ctx.dim, ctx.log, ctx.shape, ctx.dtype, ctx.tail, ctx.rows = dim, log, shape, x.dtype, None, False
        ctx.native = None
        if x2.dtype in _NATIVE_DTYPES and x2.device.type == "cpu" and x2.numel() >= _COMPILE_MIN_NUMEL \
                and (nat := native.module("softmax")) is not None:
            x2 = x2.contiguous()
            out, m, r = nat.forward(x2, log)
            # the backward reads the logits, or (float32 softmax) the output p: no exponential redone
            ctx.save_for_backward(out if not log and x2.dtype == torch.float32 else x2, m, r)
            ctx.native = nat
            return _unrows(out, shape, dim, x.dtype)
        if x2.dtype in _ROWS_DTYPES[log] and x2.device.type == "cpu" and x2.numel() >= _COMPILE_MIN_NUMEL \
                and (res := _ROWS[log][0](x.dtype, x2)) is not None:
            out, m, r = res
            ctx.save_for_backward(x2, m, r)
            ctx.rows = True
            return _unrows(out, shape, dim, x.dtype)
        out, top = (_log_softmax(x2, ct), None) if log else _softmax(x2, ct)
        tail = None
        if out.numel() and (log or top is not None):
            if top is None:
                top = out.amax(-1)  # the row's largest log p
            tail = _find_tail(out, top, log)
        ctx.save_for_backward(out)
        ctx.tail = tail
        return _unrows(out, shape, dim, x.dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        g2, _ = _rows(g, ctx.dim)
        if ctx.native is not None:
            a, m, r = ctx.saved_tensors
            g2 = g2.to(ctx.dtype).contiguous()
            if ctx.log:
                gx = ctx.native.log_softmax_backward(a, g2, m, r)
            else:
                gx = ctx.native.softmax_backward(a, g2, m, r)
            return _unrows(gx, ctx.shape, ctx.dim, ctx.dtype), None, None
        if ctx.rows:
            x2, m, r = ctx.saved_tensors
            g2 = g2.to(x2.dtype)
            gx = _ROWS_GRAD[ctx.log](x2.dtype, x2, g2, m, r)
            gx = _ROWS[ctx.log][1](x2, g2, m, r) if gx is None else gx
            return _unrows(gx, ctx.shape, ctx.dim, ctx.dtype), None, None
        (out,) = ctx.saved_tensors
        tail = ctx.tail
        if not ctx.log and tail is None and out.device.type == "cpu" and out.numel() >= _COMPILE_MIN_NUMEL:
            gx = _SM_GRAD_ROWS((out.dtype, g2.dtype), out, g2)  # half cotangents read as they are
            if gx is not None:  # the tail rows corrected in the same loop
                return _unrows(gx, ctx.shape, ctx.dim, ctx.dtype), None, None
        g2 = g2 if g2.dtype == out.dtype else g2.to(out.dtype)
        if ctx.log:
            gx = _log_softmax_grad(g2, out)
        else:
            gx = _softmax_grad(g2, out)
            if tail is None and out.numel():
                tail = _find_tail(out, out.amax(-1), False)
        if tail is not None:
            idx, k, q = tail  # q: r (log-softmax) or the rows' p (softmax)
            gs = g2.index_select(0, idx)
            gk = gs.gather(-1, k)
            if ctx.log:  # g_k (1 − p_k) − p_k Σ_{i≠k} g_i = (g_k r − Σ_{i≠k} g_i) / (1 + r)
                v = (gk * q - gs.scatter_(-1, k, 0.0).sum(-1, keepdim=True)) / (1 + q)
            else:  # p_k Σ_{i≠k} p_i (g_k − g_i)
                v = -q.gather(-1, k) * torch.linalg.vecdot(gs.sub_(gk), q)[:, None]
            gx.index_put_((idx, k[:, 0]), v[:, 0])
        return _unrows(gx, ctx.shape, ctx.dim, ctx.dtype), None, None


def _find_tail(out: torch.Tensor, top: torch.Tensor, log: bool):
    """The rows whose largest probability exceeds 1/2 (``top``: each row's largest ``log p`` or ``p``), their
    arg-max ``k`` and ``r`` (log-softmax: ``log p_k = −log1p(r)`` written into ``out``) or their ``p``;
    None if there are none."""
    idx = (top > -core.LN2 if log else top > 0.5).nonzero()[:, 0]
    if not idx.numel():
        return None
    rows = out.index_select(0, idx)
    v, k = rows.max(-1, keepdim=True)  # (torch's argmax is three times slower)
    if not log:
        return idx, k, rows
    # r = Σ_{j≠k} e^{ℓ_j − ℓ_k} in place of the rows (the bulk's error in log Σ cancels)
    r = rows.sub_(v).exp_().scatter_(-1, k, 0.0).sum(-1, keepdim=True)
    out.index_put_((idx, k[:, 0]), -torch.log1p(r[:, 0]))
    return idx, k, r


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
    total = total / den if reduction == "mean" else total
    return total if total.dtype == dtype else total.to(dtype)


def _row_cotangent(g: torch.Tensor, reduction: str, den: torch.Tensor, ct: torch.dtype) -> torch.Tensor:
    """What each row's loss receives: ``(R, 1)`` for ``none``, a scalar otherwise."""
    g = g if g.dtype == ct else g.to(ct)
    if reduction == "none":
        return g.reshape(-1, 1)
    return g / den if reduction == "mean" else g


class _IndexCrossEntropyFn(torch.autograd.Function):
    """Class-index targets. Few classes without label smoothing (on the CPU): every row by
    :class:`_TargetRows`. Otherwise bulk rows from ``log_softmax``, tail rows by the cancellation-free
    kernels."""

    @staticmethod
    def forward(ctx, input, target, weight, ignore_index, reduction, eps, all_valid):
        ct, dim = _ct(input), _class_dim(input)
        x2, shape = _rows(input, dim)
        t = target.reshape(-1)
        ctx.state = (dim, shape, reduction, input.dtype)
        if not eps and not _fused(x2, ct) and x2.numel():
            tr = _TargetRows.of(x2, t, weight, None if all_valid else ignore_index)
            if tr is not None:
                ctx.rows = tr
                return _reduce(tr.loss(), reduction, tr.den, target.shape, input.dtype)
        ctx.rows = None
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
        ctx.tail = (ir, gsub)
        return _reduce(rows, reduction, ir.den, target.shape, input.dtype)

    @staticmethod
    def backward(ctx, g):
        dim, shape, reduction, dtype = ctx.state
        if ctx.rows is not None:
            tr = ctx.rows
            return _unrows(tr.grad(_row_cotangent(g, reduction, tr.den, tr.s.dtype), dtype), shape, dim,
                           dtype), None, None, None, None, None, None
        (lsm,) = ctx.saved_tensors
        ir, gsub = ctx.tail
        a = _row_cotangent(g, reduction, ir.den, lsm.dtype)
        gx = ir.grad(torch.exp(lsm), a)
        if gsub is not None:
            gx.index_copy_(0, ir.tail, gsub * (a[ir.tail] if a.dim() else a))
        return _unrows(gx, shape, dim, dtype), None, None, None, None, None, None


_WIDER = {torch.float16: torch.float32, torch.bfloat16: torch.float32, torch.float32: torch.float64,
          torch.float64: torch.float64}


class _TargetRows:
    """Class-index cross-entropy without label smoothing, every row free of cancellation in a few
    passes (no tail rows: where the classes are few, each pass costs little and each extra call much).

    Computed one format wider (float64 for float32: the rounding of ``x − m`` is then far below
    float32's unit; float64 itself adds the TwoSum residual ``δ = (x − m) − d``, as :class:`core.Bulk`).
    With ``m`` the row maximum, ``d = fl(x − m)``, ``e_j = e^{d_j}(1 + δ_j)``, the target's ``e_y`` and
    ``r = Σ_{j≠y} e_j`` (the target's term left out: no ``1 + r`` is ever rounded), ``s = e_y + r``:

    - ``−log p_y = log1p(r)`` where ``d_y = 0`` (the target is a row maximum, ``e_y = 1``), otherwise
      ``log s − (d_y + δ_y)``, two non-negative terms (``d_y < 0`` means ``p_y < p_max``, so ``p_y < 1/2``);
    - ``∂(−log p_y)/∂x_j = e_j/s`` for ``j ≠ y`` and ``−(1 − p_y) = −r/s`` at ``y``.

    Rows with no finite maximum (a NaN, a +inf, all −inf) are left to the general path (:meth:`of`
    returns None)."""

    def __init__(self, x: torch.Tensor, m: torch.Tensor, y: torch.Tensor, coef: torch.Tensor | None,
                 valid: torch.Tensor | None, den, two_sum: bool) -> None:
        d = x - m if two_sum else x.sub_(m)  # x: the float64 input itself, or a wider copy
        dy = d.gather(-1, y)
        nlp = None
        if two_sum:  # in place: δ = (x − (d − bp)) − (m + bp), bp = d − x
            bp = d - x
            res = d - bp
            torch.sub(x, res, out=res)
            bp += m
            res -= bp
            del bp
            res.nan_to_num_(0.0, 0.0, 0.0)  # a −inf logit: e = 0 whatever δ
            nlp = -res.gather(-1, y)  # − δ_y, added last: (log s − d_y) − δ_y
            res += 1
        e = d.exp_()
        if two_sum:
            e *= res
        ey = e.gather(-1, y)
        e.scatter_(-1, y, 0.0)
        self.r = e.sum(-1, keepdim=True)
        self.s = self.r + ey
        self.e, self.y, self.coef, self.valid, self.den = e, y, coef, valid, den
        ls = torch.log(self.s) - dy
        nlp = ls if nlp is None else nlp.add_(ls)
        self.nlp = torch.where(dy == 0, torch.log1p(self.r), nlp)

    @classmethod
    def of(cls, x2: torch.Tensor, t: torch.Tensor, weight: torch.Tensor | None,
           ignore_index: int | None) -> _TargetRows | None:
        """The rows of logits ``x2`` ``(R, C)`` and targets ``t`` ``(R,)`` (``ignore_index`` None: no target
        is ignored), or None if some row has no finite maximum."""
        x = x2.to(_WIDER[x2.dtype])
        m = x.amax(-1, keepdim=True)
        if not bool((m.abs() < math.inf).all()):
            return None
        valid = y = None
        if ignore_index is None:
            y = t[:, None]
        else:
            valid = (t != ignore_index)[:, None]
            y = torch.where(valid, t[:, None], 0)
        coef = None if weight is None else weight.to(x.dtype)[y]
        if valid is not None:
            coef = valid.to(x.dtype) if coef is None else coef * valid
        den = float(t.shape[0]) if coef is None else coef.sum()
        return cls(x, m, y, coef, valid, den, x2.dtype == torch.float64)

    def loss(self) -> torch.Tensor:
        """Each row's ``w_y·(−log p_y)`` ``(R,)`` (0 on ignored rows)."""
        return (self.nlp if self.coef is None else core.times(self.coef, self.nlp))[:, 0]

    def grad(self, a: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``a_i w_y (p_j − [j = y])`` in ``dtype`` (``a`` the rows' cotangents, ``(R, 1)`` or a scalar);
        ignored rows receive no cotangent."""
        c = a / self.s
        if self.coef is not None:
            c = (c if self.valid is None else torch.where(self.valid, c, 0)) * self.coef
        gx = torch.mul(self.e, c, out=torch.empty(self.e.shape, dtype=dtype, device=self.e.device))
        return _put(gx, self.y, (-c * self.r).to(dtype))


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
    def forward(ctx, input, target, weight, ignore_index, reduction, all_valid):
        ct, dim = _ct(input), _class_dim(input)
        x2, shape = _rows(input, dim)
        t = target.reshape(-1, 1)
        if weight is None and all_valid:  # every coefficient is 1: no 0·inf to guard
            ctx.state = (t, None, None, float(t.shape[0]), dim, shape, reduction, input.dtype, ct)
            rows = x2.gather(-1, t)
            if reduction == "none":
                return rows.reshape(target.shape).neg_()  # exact
            total = rows.sum(dtype=ct)
            return (total.div_(-t.shape[0]) if reduction == "mean" else total.neg_()).to(input.dtype)
        valid = t != ignore_index
        y = torch.where(valid, t, 0)
        w_y = valid.to(ct) if weight is None else weight.to(ct)[y] * valid
        den = w_y.sum()
        rows = core.times(w_y, -x2.gather(-1, y).to(ct))[:, 0]
        ctx.state = (y, w_y, valid, den, dim, shape, reduction, input.dtype, ct)
        return _reduce(rows, reduction, den, target.shape, input.dtype)

    @staticmethod
    def backward(ctx, g):
        y, w_y, valid, den, dim, shape, reduction, dtype, ct = ctx.state
        a = -_row_cotangent(g, reduction, den, ct)
        if w_y is not None:
            a = torch.where(valid, a * w_y, 0)
        gx = torch.zeros(y.shape[0], shape[-1], dtype=dtype, device=y.device)
        _put(gx, y, a.to(dtype).expand(y.shape))
        return _unrows(gx, shape, dim, dtype), None, None, None, None, None


def cross_entropy(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of logits against class indices or probabilities (PyTorch semantics)."""
    require_reduction(reduction)
    kind = class_target_kind(input, target, weight, ignore_index, label_smoothing)
    if kind == "probabilities":
        return _ProbCrossEntropyFn.apply(input, target, weight, reduction, float(label_smoothing))
    return _IndexCrossEntropyFn.apply(input, target, weight, ignore_index, reduction, float(label_smoothing),
                                      kind == "classes")


# Every coefficient 1 (no weight, no ignored target): ``−Σ x_y`` over N rows, over N for ``mean`` —
# no 0·w to guard, and PyTorch's CPU kernel sums float32 in float64 and divides once (its float16
# kernel keeps N in float16: wrong beyond 2048 rows, so ours).
_EXACT_NLL = (torch.float32, torch.float64)


def nll_loss(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
             ignore_index: int = -100, reduction: str = "mean") -> torch.Tensor:
    """``−w_y·input_y`` (input taken as log-probabilities), PyTorch reductions."""
    require_reduction(reduction)
    kind = class_target_kind(input, target, weight, ignore_index)
    if kind == "probabilities":
        raise ValueError("nll_loss takes class-index targets (an integer tensor), not probabilities")
    if kind == "classes" and weight is None and input.dtype in _EXACT_NLL and input.device.type == "cpu":
        return F.nll_loss(input, target, reduction=reduction)
    return _NllFn.apply(input, target, weight, ignore_index, reduction, kind == "classes")

