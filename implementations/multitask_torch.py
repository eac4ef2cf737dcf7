"""PyTorch multi-task weighting: uncertainty weighting (function and ``nn.Module`` holding the learned
log-variances) and Dynamic Task Prioritization (function and ``nn.Module`` holding the KPI moving
averages), with analytic backward.

Each loss is a ``torch.autograd.Function`` over the kernels of :mod:`.multitask_core`, computed in
float64 (plain with an error bound, or double-double where the bound does not fit the budget) on the
inputs' device (CPU or CUDA alike) and rounded once to the result
dtype (``torch.promote_types`` of the losses and the log-variances; the losses' dtype for DTP).
Autograd through ``0.5·exp(−s)·L + 0.5·s`` would overflow ``exp(−s)`` and give ``inf·0 = NaN`` at
``L = 0``; here ``e^{−s}·L = e^{log L − s}`` (``lossoracle.reference.multitask``).

Float32 ``sum``/``mean`` on CPU of the common cases (:class:`_NativeUW`, :func:`_lean_dtp`) run as one
native pass each way (``native/multitask.cpp``) with the value checks folded in, before any other
check; without the native kernels, their eager lean paths.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from . import dd_branchfree as bf
from . import doubledouble as dd
from . import multitask_core as core
from . import native
from .compiled import Kernel

__all__ = ["uncertainty_weighted_loss", "dynamic_task_priority", "UncertaintyWeighting", "DynamicTaskPriority"]

_F64 = torch.float64


class _UWFn(torch.autograd.Function):
    """Losses and log-variances in their own dtypes; the result in the promoted ``dtype``: plain float64
    (:class:`multitask_core.PlainUW`, its ``e^{−s}`` and ``c·e^{−s}·L`` kept for the backward) for a
    narrow result; for a float64 one bounded plain float64 (:class:`multitask_core.BoundedUW`, kept for
    the backward) where its bound fits, double-double elsewhere."""

    @staticmethod
    def forward(ctx, L: torch.Tensor, s: torch.Tensor, c, form: str, reduction: str,
                dtype: torch.dtype) -> torch.Tensor:
        ctx.form, ctx.reduction, ctx.c, ctx.dtypes = form, reduction, c, (L.dtype, s.dtype)
        ctx.lean = None
        if dtype != _F64:
            v = _LeanUW.make(ctx, L, s, c, form, reduction, dtype)
            if v is not None:
                return v
            ctx.plain = core.PlainUW(L.to(_F64), s.to(_F64), c, form)
            return ctx.plain.value(reduction).to(dtype)
        ctx.plain = None
        L64, s64 = L.to(_F64), s.to(_F64)
        ctx.save_for_backward(L64, s64)
        ctx.bounded = core.BoundedUW.make(L64, s64, c, form, reduction)  # its e^{−s} and a serve the backward
        v = ctx.bounded.value(reduction) if ctx.bounded is not None else None
        if v is None:
            v = core.uw_value(L64, s64, _coeffs(c, L64), form, reduction, core.FLOAT64)
        return v.to(dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        if ctx.lean is not None:
            gL, gs = ctx.lean.grads(g)
            need = ctx.needs_input_grad
            return (gL if need[0] else None, gs if need[1] else None, None, None, None, None)
        g = g.to(_F64)
        if ctx.plain is not None:
            gL, gs = ctx.plain.grads(g, ctx.reduction)
            gL, gs = gL.to(ctx.dtypes[0]), gs.to(ctx.dtypes[1])
        else:
            L, s = ctx.saved_tensors
            gL, gs = core.uw_grads(g, L, s, _coeffs(ctx.c, L), ctx.form, ctx.reduction, core.FLOAT64, ctx.bounded,
                                   _ds_subset)
        need = ctx.needs_input_grad
        return (gL if need[0] else None, gs if need[1] else None, None, None, None, None)


class _LeanUW:
    """Narrow ``sum``/``mean`` of the ``kendall``/``simplified`` forms with one coefficient ``c``, in
    the fewest full-size passes: ``e = e^{−s}`` in place on a float64 copy of ``s``; the value
    ``c·(L·e) + ρ·Σs`` (``ρ = ½`` or 1; ``L·e`` one dot product); the backward ``g'·c·e`` and
    ``g'·r' − (g'·c·L)·e`` (one ``addcmul``), each rounded once to its input's dtype. The formulas
    of :class:`core.PlainUW` without its clamp: a finite ``L·e`` (checked, else ``make`` gives None
    and PlainUW runs) means every ``e`` is finite (``L ≥ 0`` is finite: an infinite ``e`` gives
    ``inf`` or ``0·inf = NaN``). Errors (``u = 2^-53``): ``e`` 2u (libm ``exp``, 1 ULP), the dot
    product and ``Σs`` ``K·u`` of ``Σ L·e`` and ``Σ|s|``, the combination two roundings more;
    ``g'·c·L`` is exact for ``g' = g`` (two float32 significands, ``c = ½`` or 1) and one rounding
    for ``g/K``, the product with ``e`` and the sum one each: every partial within ``5u`` of
    ``|g'|·(r' + c·L·e)`` before its rounding to the narrow dtype — as for PlainUW, far below a
    narrow half-ULP."""

    def __init__(self, e: torch.Tensor, L: torch.Tensor, c: float, slope: float, k: int, mean: bool,
                 dtypes: tuple[torch.dtype, torch.dtype]) -> None:
        self.e, self.L, self.c, self.slope, self.k, self.mean, self.dtypes = e, L, c, slope, k, mean, dtypes

    @classmethod
    def make(cls, ctx, L: torch.Tensor, s: torch.Tensor, c, form: str, reduction: str,
             dtype: torch.dtype) -> torch.Tensor | None:
        """The value (and ``ctx.lean`` for the backward), or None where this path does not apply."""
        k, dtype_L = int(L.shape[0]), L.dtype
        if not (isinstance(c, float) and form != "liebel" and reduction != "none" and k):
            return None
        e = s.to(_F64, copy=True)  # same-dtype operations only: mixed ones take torch's slow casting loops
        total_s = float(e.sum())
        e.neg_().exp_()
        L = L.to(_F64)
        total_a = float(torch.dot(L, e))
        if not (math.isfinite(total_a) and math.isfinite(total_s)):
            return None  # NaN, or an overflow: PlainUW (its clamp and its inf)
        rho = 0.5 if form == "kendall" else 1.0
        v = c * total_a + rho * total_s
        ctx.lean = cls(e, L, c, rho, k, reduction == "mean", (dtype_L, s.dtype))
        return torch.tensor(v / k if reduction == "mean" else v, dtype=dtype, device=L.device)

    def grads(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = float(g) / self.k if self.mean else float(g)
        gL = (self.e * (g * self.c)).to(self.dtypes[0])  # c = ½ or 1: exact
        gs = torch.addcmul(g * self.slope + self.e.new_zeros(()), self.L, self.e, value=-g * self.c)
        return gL, gs.to(self.dtypes[1])


_NATIVE_MAX_TASKS = 1 << 26  # float64 sums of K terms within K·2^-53 ≤ 2^-27 relative: an eighth of a float32 ULP
_NARROW = (torch.float32, torch.float16, torch.bfloat16)  # the native kernels' inputs: float32, or exactly converted


class _NativeUW:
    """Narrow ``sum``/``mean`` of the ``kendall``/``simplified`` forms without ``task_types`` on CPU:
    two native passes around ``torch.exp`` forward, one backward (``native/multitask.cpp``), with the
    input checks of :func:`multitask_core.check_uw` folded in: ``uw_prepare`` gives NaN unless every
    loss is finite and ≥ 0 and every log-variance finite (NaN fails too), and an infinite ``Σ L·e``
    (an ``e^{−s}`` that overflows float64) is sent back too: :func:`uncertainty_weighted_loss` then
    runs the checked path (its named error, NaN propagated, :class:`multitask_core.PlainUW`'s clamp).
    The rest holds by the types (float32, float16 or bfloat16 1-D of one shape, a known form and
    reduction; half inputs are converted to float32 exactly).

    The formulas and bounds of :class:`_LeanUW`, in float64 throughout (``u = 2^-53``): ``e = e^{−s}``
    (``torch.exp``: MKL's VML or SLEEF u10, 1 ULP ≤ 2u), ``Σ L·e`` by fused multiply-adds and ``Σ s``
    each within ``K·u`` of ``Σ L·e``, ``Σ|s|`` (any order; ``K ≤ 2^26``); the backward ``∂/∂L =
    fl(g'c·e)`` within 4u (``e`` 2u, ``g' = g/K`` one rounding, ``c = ½`` or 1 exact, the product) and
    ``∂/∂s = fl(fma(−g'c·L, e, g'·r'))`` within ``5u·|g'|·(r' + c·L·e)`` (``e`` 2u, ``g/K`` u, ``g'c·L``
    exact for ``g' = g`` and one rounding for ``g/K``, the fused multiply-add one), each rounded once
    to float32 (then to a half dtype, as ATen casts float64 to it): far below its half-ULP, as for
    :class:`_LeanUW`; the value is rounded from float64 to the result dtype (through float32 for a
    half one, as ATen casts). Where ``e`` underflows float64 (``s > 708``) the exact partials are below
    ``2^128·e^-708``, zero in float32 as computed."""

    def __init__(self, mod, e: torch.Tensor, L: torch.Tensor, c: float, slope: float, k: int, mean: bool,
                 dtypes: tuple[torch.dtype, torch.dtype]) -> None:
        self.mod, self.e, self.L, self.c, self.slope, self.k, self.mean = mod, e, L, c, slope, k, mean
        self.dtypes, self.dtype = dtypes, torch.promote_types(*dtypes)

    @classmethod
    def make(cls, L: Any, s: Any, task_types, form: str, reduction: str) -> tuple[_NativeUW, float] | None:
        """``(the state for the backward, the value)``, or None where this path does not apply."""
        if not (task_types is None and form in ("kendall", "simplified") and reduction in ("sum", "mean")
                and isinstance(L, torch.Tensor) and isinstance(s, torch.Tensor)
                and L.dtype in _NARROW and s.dtype in _NARROW and L.dim() == 1 and s.shape == L.shape
                and 1 <= L.shape[0] <= _NATIVE_MAX_TASKS and L.device.type == "cpu" and s.device.type == "cpu"
                and L.is_contiguous() and s.is_contiguous()):
            return None
        mod = native.module("multitask")
        if mod is None:
            return None
        dtypes = (L.dtype, s.dtype)
        L, s = L.detach().float(), s.detach().float()
        k = int(L.shape[0])
        e = torch.empty(k, dtype=_F64)
        total_s = mod.uw_prepare(L, s, e)  # e = −s, the checks
        if total_s != total_s:
            return None  # a bad input (NaN included): the checked path
        torch.exp(e, out=e)  # PyTorch's (MKL's) float64 exp is twice as fast as SLEEF's in the kernel
        total_a = mod.uw_dot(L, e)
        if not math.isfinite(total_a):  # an e^{−s} beyond float64: the checked path (PlainUW's clamp)
            return None
        rho = c = 0.5 if form == "kendall" else 1.0
        v = c * total_a + rho * total_s
        return cls(mod, e, L, c, rho, k, reduction == "mean", dtypes), (v / k if reduction == "mean" else v)

    def grads(self, g: torch.Tensor, need: tuple[bool, ...]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        g = float(g) / self.k if self.mean else float(g)
        gL = torch.empty_like(self.L) if need[0] else None
        gs = torch.empty_like(self.L) if need[1] else None
        self.mod.uw_backward(self.e, self.L, g * self.c, g * self.slope, gL, gs)
        return (None if gL is None else gL.to(self.dtypes[0]), None if gs is None else gs.to(self.dtypes[1]))


class _NativeUWFn(torch.autograd.Function):
    """The value of :meth:`_NativeUW.make` (computed before, a float) and its native backward."""

    @staticmethod
    def forward(ctx, L: torch.Tensor, s: torch.Tensor, state: _NativeUW, value: float) -> torch.Tensor:
        ctx.state = state
        return torch.tensor(value, dtype=state.dtype)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return (*ctx.state.grads(g, ctx.needs_input_grad), None, None)


_COMPILE_MIN_TASKS = 1 << 14  # tasks from which the double-double ∂/∂s of the tasks near the optimum is compiled
_COMPILE_MAX_VARIANTS = 4  # (form, one coefficient or one per task): each a recompile; beyond, eager


# log 2 as tensors: traced, the float constant would be a symbol, and Dekker's split of it ``c − (c − a)``
# simplified to ``a``; split by its bits instead, ``two_prod`` with an integer ``e`` is exact either way
_LN2 = tuple(torch.tensor(v, dtype=_F64) for v in dd.LN2)


def _ds_kernel(L: torch.Tensor, s: torch.Tensor, c: Any, slope: float, gh: torch.Tensor,
               gl: torch.Tensor) -> torch.Tensor:
    """:func:`multitask_core._uw_grads_dd`'s ``∂/∂s = g'·(r' − c·e^{−s}·L)`` of ``kendall``/``simplified``
    (``r' = slope``) without ``frexp`` or branches, for :class:`.compiled.Kernel`: the same operations
    on the same values (``L = m·2^e`` from the bits, :mod:`.dd_branchfree`'s ``exp``/``ldexp``, whose
    bits are :data:`.doubledouble.SHORT`'s), so the same result, for tasks with a positive normal
    ``L`` and ``|s| ≤ 700`` (:meth:`multitask_core.BoundedUW.grads` marks no other: ``c·e^{−s}·L`` near
    ``r'`` there) and a finite nonzero cotangent ``g' = gh + gl``."""
    bits = L.view(torch.int64)
    e = ((bits >> 52) & 0x7FF) - 1022
    m = ((bits & ~(0x7FF << 52)) | (1022 << 52)).view(_F64)  # L = m·2^e, m ∈ [½, 1)
    u = dd.add_d(dd.mul_d(_LN2, e.to(_F64)), -s)  # log L − s, up to the mantissa's log
    big = u[0] > core._T_MAX
    E, k = bf.exp((torch.where(big, core._T_MAX, u[0]), torch.where(big, 0.0, u[1])))
    a = bf.ldexp(dd.mul_d(E, m * c), k)
    diff = dd.sub(dd.lift(torch.full_like(s, slope)), a)
    return dd.collapse(dd.mul((gh + torch.zeros_like(s), gl + torch.zeros_like(s)), diff))


_DS = Kernel(_ds_kernel, "uncertainty weighting", _COMPILE_MAX_VARIANTS)


def _ds_subset(g: torch.Tensor, L: torch.Tensor, s: torch.Tensor, c: Any, form: str, reduction: str,
               k: int) -> torch.Tensor:
    """``∂/∂s`` of the tasks ``L``, ``s`` (a subset of ``k``) that :meth:`multitask_core.BoundedUW.grads`
    sends to double-double: :func:`_ds_kernel` compiled for CPU calls of at least
    :data:`_COMPILE_MIN_TASKS` tasks (one cold compilation, then one fused pass instead of ~150 small
    ones), else :func:`multitask_core._uw_grads_dd`. Same bits either way."""
    if form != "liebel" and L.device.type == "cpu" and k >= _COMPILE_MIN_TASKS and L.numel():
        gh, gl = core._cotangent(g, reduction, k, g)
        out = _DS((form, c if isinstance(c, float) else None), L, s, c, 0.5 if form == "kendall" else 1.0, gh, gl)
        if out is not None:
            return out
    return core._uw_grads_dd(g, L, s, c, form, reduction, core.FLOAT64, k, need_L=False)[1]


def _coeffs(c, like: torch.Tensor) -> torch.Tensor:
    """The coefficients as a float64 tensor (one number, or one per task)."""
    return torch.as_tensor(c, dtype=_F64, device=like.device)


def _detached(*xs):
    return tuple(x.detach() if isinstance(x, torch.Tensor) else x for x in xs)


def uncertainty_weighted_loss(losses: torch.Tensor, log_vars: torch.Tensor, task_types=None, form: str = "kendall",
                              reduction: str = "sum") -> torch.Tensor:
    """``Σ_i c_i·e^{−s_i}·L_i + r(s_i)`` over the tasks (``form``: ``kendall``, ``simplified``,
    ``liebel``; ``task_types`` for ``kendall`` only; ``reduction``: ``sum``, ``mean`` or ``none``)."""
    lean = _NativeUW.make(losses, log_vars, task_types, form, reduction)
    if lean is not None:
        return _NativeUWFn.apply(losses, log_vars, *lean)
    coeffs = core.check_uw(*_detached(losses, log_vars), task_types, form, reduction)
    dtype = torch.promote_types(losses.dtype, log_vars.dtype)
    c = coeffs if isinstance(coeffs, float) else _coeffs(coeffs, losses)
    return _UWFn.apply(losses, log_vars, c, form, reduction, dtype)


class UncertaintyWeighting(nn.Module):
    """Learned homoscedastic-uncertainty weights (Kendall, Gal & Cipolla 2018) for ``num_tasks``
    task losses: ``forward(losses)`` is :func:`uncertainty_weighted_loss` with the module's
    ``log_vars`` (an ``nn.Parameter`` of shape ``(num_tasks,)``, ``s = log σ²``).

    Initialisation: ``init = 0.0`` (default) — ``σ² = 1``, so every task starts with its form's
    coefficient ``c_i`` (½ or 1) as its weight; the paper reports the result robust to it.
    LibMTL starts at −0.5, torchjd at 0. Pass ``dtype``/``device`` as for any parameter.
    """

    def __init__(self, num_tasks: int, task_types=None, form: str = "kendall", reduction: str = "sum",
                 init: float = 0.0, dtype: torch.dtype | None = None, device: Any = None) -> None:
        super().__init__()
        core.coefficients(task_types, form, int(num_tasks))  # fail early on a bad form or task_types
        self.task_types, self.form, self.reduction = task_types, form, reduction
        self.log_vars = nn.Parameter(torch.full((int(num_tasks),), float(init), dtype=dtype, device=device))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return uncertainty_weighted_loss(losses, self.log_vars, self.task_types, self.form, self.reduction)

    def weights(self) -> torch.Tensor:
        """The current task weights ``c_i·e^{−s_i}`` (detached)."""
        c = torch.tensor(core.coefficients(self.task_types, self.form, self.log_vars.numel()),
                         dtype=self.log_vars.dtype, device=self.log_vars.device)
        return (c * torch.exp(-self.log_vars)).detach()

    def extra_repr(self) -> str:
        return f"num_tasks={self.log_vars.numel()}, form={self.form!r}, reduction={self.reduction!r}"


# ----------------------------------------------------------------------------------------------
# Dynamic Task Prioritization


class _DTPFn(torch.autograd.Function):
    """Losses in their dtype, the KPIs as given (converted to float64 here, clamped by the floor) and γ
    in float64; a narrow result from the plain float64 weights (:func:`multitask_core.plain_weights`,
    kept for the backward), a float64 one in double-double."""

    @staticmethod
    def forward(ctx, L: torch.Tensor, kap: torch.Tensor, gam: torch.Tensor, reduction: str, kpi_floor) -> torch.Tensor:
        ctx.reduction, ctx.dtype = reduction, L.dtype
        kap = kap.to(device=L.device, dtype=_F64, copy=True)  # our own: the weights may reuse its memory
        if kpi_floor is not None:
            kap.clamp_(min=float(kpi_floor))  # NaN stays
        if L.dtype != _F64:
            ctx.w = core.plain_weights(kap, float(gam) if gam.dim() == 0 else gam, scratch=True)
            del kap
            terms = L.to(_F64)
            terms *= ctx.w
            if reduction != "none":
                terms = terms.sum() / terms.shape[0] if reduction == "mean" else terms.sum()
            return terms.to(L.dtype)
        L64 = L.to(_F64)
        ctx.save_for_backward(L64, kap, gam)
        ctx.wb = core.bounded_dtp(kap, gam, int(L.shape[0]), reduction)  # its weights serve the backward
        v = core.dtp_plain_value(L64, ctx.wb, reduction) if ctx.wb is not None else None
        return core.dtp_value(L64, kap, gam, reduction, core.FLOAT64) if v is None else v

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        g = g.to(_F64)
        if ctx.dtype != _F64:
            gL = (ctx.w * (g / ctx.w.shape[0] if ctx.reduction == "mean" else g)).to(ctx.dtype)
        else:
            gL = core.dtp_plain_grad(g, ctx.wb, ctx.reduction) if ctx.wb is not None else None
            if gL is None:
                L, kap, gam = ctx.saved_tensors
                gL = core.dtp_grad(g, L, kap, gam, ctx.reduction, core.FLOAT64)
        return gL, None, None, None, None


_LEAN_MIN_TASKS = 4  # the float32 weights' 5.02 ULP (value) fit 4 + log2 K − ½ from K = 3
_LEAN_BLOCK, _LEAN_BLOCK_MIN_TASKS = 8, 1 << 10  # float32 sums of 8 terms first: 13.04 ULP, in budget from K = 2^10


class _LeanDTPFn(torch.autograd.Function):
    """The value of :func:`_lean_dtp` (computed before, a float) in the losses' dtype, and its backward
    ``w·g'`` in float32: 4.01u of ``w``, one rounding of ``g/K`` (mean) and one of the product: within
    6.02 ULP (a half dtype: rounded once more, within ½ + 2^-10 of its ULP)."""

    @staticmethod
    def forward(ctx, L: torch.Tensor, w: torch.Tensor, value: float, mean: bool) -> torch.Tensor:
        ctx.w, ctx.mean, ctx.dtype = w, mean, L.dtype
        return torch.tensor(value, dtype=L.dtype, device=w.device)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        gp = (g.to(_F64) / ctx.w.shape[0]).to(ctx.w.dtype) if ctx.mean else g.to(ctx.w.dtype)
        return (ctx.w * gp).to(ctx.dtype), None, None, None


def _lean_dtp(L: torch.Tensor, kap: Any, gamma: Any, reduction: str, kpi_floor) -> tuple[torch.Tensor, float] | None:
    """DTP ``sum``/``mean`` of float32 losses and KPIs with γ = 1 (a number) and no floor, in float32
    with the input checks folded in; None where it does not apply or an input is not in range (NaN
    included): the checked path then raises, or propagates the NaN.

    ``w = fl(fl(κ̄ − 1)·fl(log κ̄))``: ``κ̄ − 1`` exact for κ̄ ≥ ½ (Sterbenz), within ``u = 2^-24``
    relative below; ``log`` within 1 ULP ≤ 2u; the product u: ``|ŵ − w| ≤ 4.01u·w``. A nonzero
    ``w`` of a float32 κ̄ is at least ``(1 − κ̄)·|log κ̄| ≈ 2^-48`` (κ̄ = 1 − 2^-24): normal, and 0
    exactly at κ̄ = 1. Each term ``fl(ŵ·L) ≥ 0`` is then within 5.02u (no cancellation: the sum of
    positive terms keeps the relative bound), the float64 sum ``K·2^-53`` more, a product that
    underflows at most ``2^-150`` (covered where the result ≥ 2^-100, checked), ``/K`` one float64
    rounding: within 5.03u·|f| ≤ 5.03 ULP of the float32 result, inside ``4 + log2 K − ½`` for
    ``K ≥ 4``. A term that overflows float32 means the result does too (every term ≤ the sum).
    From :data:`_LEAN_BLOCK_MIN_TASKS` tasks the terms are first summed in float32 in groups of
    ``b = 8`` (non-negative terms, any order: ``(b − 1)·u`` of their sum), the float64 sum of the
    groups after: within ``(5.03 + 7.01 + 1)u`` (the 1 for underflowing products, ``K·2^-150 ≤
    u·2^-100``) ≤ 13.04 ULP, inside ``4 + log2 K − ½`` from ``K ≥ 2^10``; a group sum that overflows
    float32 makes the total infinite (the checked path then). ``K ≤ 2^26`` (``K·2^-150 ≤ u·2^-100``).

    On CPU with the native kernels (``native/multitask.cpp``, :func:`.native.module`) one pass after
    ``torch.log`` computes the same ``ŵ`` (bit for bit), each ``ŵ·L`` exactly in float64 (two
    float32 significands: no rounding, no underflow) and their float64 sum (``(K − 1)·2^-53 ≤ u/8``
    relative for ``K ≤ 2^26``), ``/K`` one float64 rounding: within 4.14u·|f| ≤ 4.14 ULP, inside
    ``4 + log2 K − ½`` for ``K ≥ 4``; it returns NaN unless every ``0 ≤ L < ∞`` and ``0 < κ̄ ≤ 1``
    (the checked path then). Natively, float16/bfloat16 losses or KPIs are converted to float32
    (exactly) and the value rounded to the losses' dtype (through float32, as ATen casts): within
    ½ + 2^-10 of its ULP.

    The checks (:func:`multitask_core.check_dtp`) from two one-sided reductions and the sum: ``min L
    ≥ 0`` and ``max κ̄ ≤ 1`` (``amin``/``amax``: NaN fails them); an infinite loss, a KPI ≤ 0 or a
    NaN KPI makes a term ``ŵ·L`` infinite or NaN (``κ̄ = 0``: ``ŵ = +inf``; ``κ̄ < 0``: ``log`` NaN;
    ``L = inf``: ``inf`` or ``inf·0``), and so the float64 sum, which finite float32 terms cannot
    make infinite (``K·2^128·104 < 2^1024``)."""
    if not (type(gamma) in (float, int) and gamma == 1 and kpi_floor is None and isinstance(kap, torch.Tensor)
            and L.dtype in _NARROW and kap.dtype in _NARROW and reduction in ("sum", "mean")
            and L.dim() == 1 and kap.shape == L.shape and _LEAN_MIN_TASKS <= L.shape[0] <= 1 << 26
            and kap.device == L.device):
        return None
    L, kap = L.detach(), kap.detach()
    k = int(L.shape[0])
    mod = native.module("multitask") if L.device.type == "cpu" and L.is_contiguous() and kap.is_contiguous() else None
    if mod is not None:  # the same ŵ, each ŵ·L exact in float64, one float64 sum, the checks in the same pass
        L, kap = L.float(), kap.float()  # half inputs: exactly
        w = torch.log(kap)  # PyTorch's (MKL's) float32 log is twice as fast as SLEEF's in the kernel
        total = mod.dtp_forward(L, kap, w)
        return None if total != total else (w, total / k if reduction == "mean" else total)
    if L.dtype != torch.float32 or kap.dtype != torch.float32:
        return None  # half dtypes take the lean path natively only
    w = kap - 1
    w *= torch.log(kap)  # ≤ 0 ... times ≤ 0: w ≥ 0 (+0 at κ̄ = 1)
    t = w * L
    if k >= _LEAN_BLOCK_MIN_TASKS:  # float32 sums of _LEAN_BLOCK terms first (a float64 sum of them all is slower)
        m = k - k % _LEAN_BLOCK
        total = float(t[:m].view(_LEAN_BLOCK, -1).sum(0).sum(dtype=_F64)) + float(t[m:].sum(dtype=_F64))
    else:
        total = float(t.sum(dtype=_F64))
    if not (2.0 ** -100 <= total < float("inf") and float(torch.amin(L)) >= 0 and float(torch.amax(kap)) <= 1):
        return None  # a bad input, NaN, a tiny or zero sum: the checked path
    return (w, total / L.shape[0] if reduction == "mean" else total)


def _as_tensor(x: Any, like: torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach()
        return t.to(_F64) if not t.is_floating_point() and name == "gamma" else t
    t = torch.as_tensor(x, device=like.device)
    return t.to(_F64) if not t.is_floating_point() and name == "gamma" else t


def dynamic_task_priority(losses: torch.Tensor, kpis: Any, gamma: Any = 1.0, reduction: str = "sum",
                          kpi_floor: float | None = None) -> torch.Tensor:
    """``Σ_t FL(κ̄_t; γ_t)·L_t`` with ``FL(κ̄; γ) = −(1 − κ̄)^γ·log κ̄``; the weights are constants (no
    gradient through ``kpis`` or ``gamma``)."""
    lean = _lean_dtp(losses, kpis, gamma, reduction, kpi_floor)
    if lean is not None:
        return _LeanDTPFn.apply(losses, lean[0], lean[1], reduction == "mean")
    kap, gam = _as_tensor(kpis, losses, "kpis"), _as_tensor(1.0 if gamma is None else gamma, losses, "gamma")
    core.check_dtp(losses.detach(), kap, gam, reduction, kpi_floor)
    gam = gam.to(device=losses.device, dtype=_F64)
    return _DTPFn.apply(losses, kap, gam, reduction, kpi_floor)


class DynamicTaskPriority(nn.Module):
    """Dynamic Task Prioritization (Guo et al., ECCV 2018) with the KPI moving averages as buffers.

    ``update(kpis)`` folds one KPI per task (each in [0, 1]) into the averages,
    ``κ̄ ← κ̄ + α·(κ − κ̄)`` (= ``α·κ + (1 − α)·κ̄``; three roundings, no rounded ``1 − α``), always in
    float64 (``module.half()`` or ``.to(dtype)`` moves the buffers but keeps them float64);
    ``forward(losses, reduction="sum")`` is :func:`dynamic_task_priority` with the current averages;
    ``weights()`` gives ``FL(κ̄_t; γ_t)``.

    Initial averages: ``initial=None`` (default) takes the first observed KPIs as they are
    (``κ̄_1 = κ^{(1)}``) and the weights are unavailable (RuntimeError) before the first update; a
    number in (0, 1] (or one per task) starts the averages there — never an uninitialised 0, whose
    weight is ``−log 0``. ``kpi_floor`` ∈ (0, 1] clamps the averages below for the weights (None:
    a zero average is an error). The averages, the step count and γ are buffers (``state_dict``),
    α, the initial value and the floor are extra state, checked on ``load_state_dict``. The float64
    averages stay within ``3·2^-53/α`` of the exact closed form for any number of updates.
    """

    def __init__(self, num_tasks: int, alpha: float, gamma: Any = 1.0, initial: Any = None,
                 kpi_floor: float | None = None, device: Any = None) -> None:
        super().__init__()
        k = int(num_tasks)
        if k < 1:
            raise ValueError(f"num_tasks must be ≥ 1, got {num_tasks!r}")
        self.alpha = float(alpha)
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in (0, 1], got {alpha!r}")
        gam = torch.as_tensor(gamma, dtype=_F64, device=device)
        core.check_kpis(torch.full((k,), 0.5, dtype=_F64), gam.cpu(), k, kpi_floor)
        self.initial, self.kpi_floor = initial, kpi_floor
        ema = torch.full((k,), float("nan"), dtype=_F64, device=device)
        if initial is not None:
            ema = torch.as_tensor(initial, dtype=_F64, device=device).expand(k).clone()
            if not bool(((ema > 0) & (ema <= 1)).all()):
                raise ValueError(f"initial must lie in (0, 1], got {initial!r}")
        self.register_buffer("kpi_ema", ema)
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64, device=device))
        self.register_buffer("gamma", gam)

    def _apply(self, fn, recurse: bool = True):  # device moves apply to the state, dtype casts do not
        keep = {"kpi_ema": self.kpi_ema, "gamma": self.gamma}
        super()._apply(fn, recurse)
        for name, t in keep.items():
            setattr(self, name, t.to(device=getattr(self, name).device, dtype=_F64))
        return self

    @torch.no_grad()
    def update(self, kpis: Any) -> torch.Tensor:
        """Fold one KPI per task into the averages; returns a copy of the new averages."""
        k = torch.as_tensor(kpis, device=self.kpi_ema.device)
        if k.is_complex():
            raise TypeError(f"kpis must be real numbers, got dtype {k.dtype}")
        k = k.to(_F64)
        if tuple(k.shape) != tuple(self.kpi_ema.shape):
            raise ValueError(f"kpis must have shape {tuple(self.kpi_ema.shape)} (one per task), got {tuple(k.shape)}")
        if not bool(((k >= 0) & (k <= 1)).all()):  # NaN fails too: it would poison the average for good
            raise ValueError(f"kpis must lie in [0, 1] (no NaN), got {k.tolist()!r}")
        if int(self.steps) == 0 and self.initial is None:
            self.kpi_ema.copy_(k)
        else:
            d = k - self.kpi_ema
            self.kpi_ema.add_(self.alpha * d)
        self.steps += 1
        return self.kpi_ema.clone()

    def _averages(self) -> torch.Tensor:
        if int(self.steps) == 0 and self.initial is None:
            raise RuntimeError("no KPI observed yet: call update() first, or construct with initial=")
        return self.kpi_ema

    def weights(self) -> torch.Tensor:
        """``FL(κ̄_t; γ_t)`` per task (float64, detached)."""
        kap = self._averages()
        core.check_kpis(kap, self.gamma, kap.numel(), self.kpi_floor)
        if self.kpi_floor is not None:
            kap = kap.clamp(min=float(self.kpi_floor))
        return core.dtp_weights(kap, self.gamma, core.transcendentals(True))

    def forward(self, losses: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        return dynamic_task_priority(losses, self._averages(), self.gamma, reduction, self.kpi_floor)

    def get_extra_state(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "initial": self.initial, "kpi_floor": self.kpi_floor}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if float(state["alpha"]) != self.alpha:
            raise ValueError(f"the state was saved with alpha={state['alpha']!r}, this module has {self.alpha!r}")
        self.initial, self.kpi_floor = state["initial"], state["kpi_floor"]

    def extra_repr(self) -> str:
        return f"num_tasks={self.kpi_ema.numel()}, alpha={self.alpha}, kpi_floor={self.kpi_floor}"
