"""PyTorch soft Dice, Jaccard, Tversky and generalized Dice losses (autograd; CPU and CUDA).

One ``torch.autograd.Function`` per call whose backward is the analytic VJP of
:mod:`.dice_core` (autograd through ``1 − ratio`` would differentiate the cancelling form).
float16, bfloat16 and float32 are computed in float64 and rounded once to the input's dtype;
float64 on the CPU in NumPy's long double (64-bit significand, via zero-copy views), float64
on CUDA in float64. The forward keeps the inputs and the (N, C) sums; the backward recomputes
the activation (one more pass over the input instead of saved full-size maps) — except on the
compiled softmax path below. Definitions and parameters: ``lossoracle.reference.dice``.

Speed (CPU): the eager kernels run in L2-sized blocks; the softmax with class-index targets (nothing ignored,
not ``squared``) by the few whole-block operations of :func:`_indices_stats` / :func:`_indices_grads`
(values bit-identical; gradients the same formula with another pivot and summation order). Large
float16/bfloat16/float32 inputs (at least ``_COMPILE_MIN_NUMEL`` elements, at most ``_COMPILE_MAX_CLASSES`` classes, not
``squared``) run the same arithmetic — float64 per element, the classes unrolled, the sums
accumulated in float64 — through ``torch.compile`` as one fused loop for the forward sums and
one for the gradient, falling back to the eager blocks if compilation fails;
``LOSSORACLE_COMPILE=0`` never compiles. With the softmax, when only the input's gradient can
be asked for, the forward loop also stores the probabilities (N, C, S) in float64 — the very values
the sums used, twice the float32 input's bytes — and the backward loop reads them instead of
recomputing the activation (on (8, 4, 256, 256): ~2.8 ms against ~7.9 ms CPU for the recomputing
loop, for ~1 ms more in the forward).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from . import dice_core as core
from .compiled import Kernel

_F64 = torch.float64
_COMPILE_MIN_NUMEL = 1 << 20
_COMPILE_MAX_CLASSES = 16  # the classes are unrolled in the fused loop
_COMPILE_MAX_VARIANTS = 8  # (classes, activation, labels, gradients wanted, dtypes): each a recompile; beyond, eager
# Inductor otherwise stores the per-class exponentials of a position as full-size float64 buffers (they have
# many readers); recomputing them inside the one loop is far cheaper than the memory traffic.
_INDUCTOR = {"realize_reads_threshold": 1000, "realize_opcount_threshold": 10000,
             "realize_cpu_opcount_threshold": 10000, "realize_acc_reads_threshold": 1000,
             "realize_cpu_acc_reads_threshold": 1000, "realize_opusers_threshold": 1000, "aggressive_fusion": True}


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
    return core.finish(total, prm)


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
            bx, by = core.backward(pr, r, a, prm, want_target)
            gx[:, :, sl] = op.tensor(bx)
            if gy is not None:
                gy[:, :, sl] = op.tensor(by)
    return gx.reshape(op.shape), (None if gy is None else gy.reshape(op.shape))


# ----------------------------------------------------------------------------------------------
# Fused kernels (torch.compile): the arithmetic of :mod:`.dice_core` with the classes unrolled, so that
# every per-position quantity is a (N, S) expression of the inputs and the sums over S are reductions of
# one loop. Masks are products with exact 0/1 values, as in :func:`.dice_core.prepare`, or ``torch.where``
# on a comparison of float64 values (a blend in the generated code; combining boolean masks is not: Inductor
# converts them lane by lane).


def _activation(xs: list[torch.Tensor], activation: str):
    """``p`` and ``q = 1 − p`` per class (float64)."""
    if activation == "none":
        return xs, [1 - v for v in xs]
    if activation == "sigmoid":
        ps, qs = [], []
        for v in xs:
            e = torch.exp(-v.abs())
            big = 1 / (1 + e)
            small = e * big
            pos = v >= 0
            ps.append(torch.where(pos, big, small))
            qs.append(torch.where(pos, small, big))
        return ps, qs
    m = functools.reduce(torch.maximum, xs)
    es = [torch.exp(v - m) for v in xs]  # 1 exactly at the class(es) of the maximum, and where x is within 2^-53
    tops = [(e == 1).to(_F64) for e in es]  # of it: those count as tied (their p is the same)
    k = sum(tops)
    rest = sum(e - e * top for e, top in zip(es, tops))  # Σ of the other classes: ≥ 0, no cancellation
    inv = 1 / (rest + k)  # one division per position; e·(1/s) is within 2^-52 of e/s, far below the output's ULP
    ps = [e * inv for e in es]
    q_top = (rest + (k - 1)) * inv
    return ps, [torch.where(e == 1, q_top, 1 - p) for e, p in zip(es, ps)]  # elsewhere p ≤ ½: 1 − p is accurate


def _labels(t: torch.Tensor, C: int, soft: bool, ignore_index: int):
    """``y`` and ``1 − y`` per class (float64; 0 in both at ignored class-index positions)."""
    if soft:
        ys = [t[:, c].to(_F64) for c in range(C)]
        return ys, [1 - y for y in ys]
    live = (t != ignore_index).to(_F64)
    ys = [(t == c).to(_F64) * live for c in range(C)]
    return ys, [live - y for y in ys]


def _split(x: torch.Tensor, t: torch.Tensor, soft: bool):
    N, C = x.shape[:2]
    x = x.reshape(N, C, -1)
    return [x[:, c].to(_F64) for c in range(C)], (t.reshape(N, C, -1) if soft else t.reshape(N, -1))


def _sums(ps, qs, ys, nys, pooled: bool) -> dict:
    out = {"I": torch.stack([(p * y).sum(-1) for p, y in zip(ps, ys)], 1),
           "FP": torch.stack([(p * ny).sum(-1) for p, ny in zip(ps, nys)], 1),
           "FN": torch.stack([(q * y).sum(-1) for q, y in zip(qs, ys)], 1)}
    if pooled:
        out["G"] = torch.stack([y.sum(-1) for y in ys], 1)
    return out


def _sums_kernel(x, t, activation: str, soft: bool, ignore_index: int, pooled: bool) -> dict:
    """The (N, C) sums of :func:`.dice_core.stats` (not squared)."""
    xs, t = _split(x, t, soft)
    ps, qs = _activation(xs, activation)
    return _sums(ps, qs, *_labels(t, len(xs), soft, ignore_index), pooled)


def _sums_p_kernel(x, t, soft: bool, ignore_index: int, pooled: bool):
    """:func:`_sums_kernel` for the softmax, and the float64 probabilities ``P`` (N, C, S) it summed, for
    :func:`_grads_p_kernel`."""
    xs, t = _split(x, t, soft)
    ps, qs = _activation(xs, "softmax")
    return _sums(ps, qs, *_labels(t, len(xs), soft, ignore_index), pooled), torch.stack(ps, 1)


def _softmax_vjp(ps: list[torch.Tensor], gp: list[torch.Tensor]) -> list[torch.Tensor]:
    """``p_c·(h_c − Σ_j p_j h_j)`` with ``h = g − g_pivot``, the pivot the first class of the largest ``p`` (the
    arg-max of the logits, or a class whose ``p`` rounds to the same value — any pivot gives the same exact
    value): its term is the large one, and it never cancels."""
    pm = functools.reduce(torch.maximum, ps)
    pivot = gp[-1]
    for p, g in zip(ps[-2::-1], gp[-2::-1]):
        pivot = torch.where(p == pm, g, pivot)
    h = [g - pivot for g in gp]
    s = sum(p * hj for p, hj in zip(ps, h))
    return [p * (hj - s) for p, hj in zip(ps, h)]


def _grads_kernel(x, t, coef, activation: str, soft: bool, ignore_index: int, want_target: bool):
    """:func:`.dice_core.backward` (not squared) for ``coef`` = (∂I − ∂FN, ∂FP, ∂I − ∂FP, ∂FN), each (N, C),
    rounded to the dtypes of ``x`` and ``t``."""
    xs, t3 = _split(x, t, soft)
    ps, qs = _activation(xs, activation)
    C = len(ps)
    ys, nys = _labels(t3, C, soft, ignore_index)
    col = [[c[:, j, None] for j in range(C)] for c in coef]
    gp = [y * a + ny * b for y, ny, a, b in zip(ys, nys, col[0], col[1])]
    if activation == "sigmoid":
        gp = [g * p * q for g, p, q in zip(gp, ps, qs)]
    elif activation == "softmax":
        gp = _softmax_vjp(ps, gp)
    gx = torch.stack([g.to(x.dtype) for g in gp], 1).reshape(x.shape)  # rounded before the stack: no float64 copy
    if not want_target:
        return gx, None
    gy = [p * a + q * b for p, q, a, b in zip(ps, qs, col[2], col[3])]
    return gx, torch.stack([g.to(t.dtype) for g in gy], 1).reshape(t.shape)


def _grads_p_kernel(P, t, coef, soft: bool, ignore_index: int, dtype: torch.dtype):
    """The softmax gradient of :func:`_grads_kernel` from the forward's float64 probabilities ``P`` (N, C, S): no
    exponential."""
    C = P.shape[1]
    ys, nys = _labels(t, C, soft, ignore_index)
    col = [[c[:, j, None] for j in range(C)] for c in coef]
    gp = [y * a + ny * b for y, ny, a, b in zip(ys, nys, col[0], col[1])]
    return torch.stack([g.to(dtype) for g in _softmax_vjp([P[:, c] for c in range(C)], gp)], 1)


_SUMS = Kernel(_sums_kernel, "dice losses", _COMPILE_MAX_VARIANTS, _INDUCTOR)
_GRADS = Kernel(_grads_kernel, "dice losses", _COMPILE_MAX_VARIANTS, _INDUCTOR)
_SUMS_P = Kernel(_sums_p_kernel, "dice losses", _COMPILE_MAX_VARIANTS, _INDUCTOR)
_GRADS_P = Kernel(_grads_p_kernel, "dice losses", _COMPILE_MAX_VARIANTS, _INDUCTOR)


def _fusable(x: torch.Tensor, prm: core.Params) -> bool:
    return (x.device.type == "cpu" and x.dtype != _F64 and x.numel() >= _COMPILE_MIN_NUMEL
            and x.shape[1] <= _COMPILE_MAX_CLASSES and not prm.squared)


def _fused_stats(x: torch.Tensor, t: torch.Tensor, prm: core.Params, soft: bool, keep: bool):
    """``(stats, P)``: the finished sums (None: not fused) and, for the softmax with ``keep``, its float64
    probabilities for :func:`_fused_grads` (else None)."""
    if not _fusable(x, prm):
        return None, None
    if keep and prm.activation == "softmax":
        out = _SUMS_P((x.shape[1], soft, prm.pooled, x.dtype, t.dtype), x, t, soft, prm.ignore_index, prm.pooled)
        if out is not None:
            return core.finish(out[0], prm), out[1]
    out = _SUMS((x.shape[1], prm.activation, soft, prm.pooled, x.dtype, t.dtype),
                x, t, prm.activation, soft, prm.ignore_index, prm.pooled)
    return (None if out is None else core.finish(out, prm)), None


def _fused_grads(x, t, w, stats: dict, prm: core.Params, grad: torch.Tensor, soft: bool, want_target: bool,
                 P: torch.Tensor | None):
    if not _fusable(x, prm):
        return None
    r = core.ratios(stats, prm)
    a = core.cotangent(grad.to(_F64), r, None if w is None else w.to(_F64), prm)
    cI, cFP, cFN, _ = core.coefficients(r, a, prm)
    N, C = x.shape[:2]
    x3, t3 = x.reshape(N, C, -1), (t.reshape(N, C, -1) if soft else t.reshape(N, -1))  # one rank: one kernel
    if P is not None and not want_target:
        coef = torch.stack([cI - cFN, cFP]).expand(2, N, C)
        gx = _GRADS_P((C, soft, x.dtype, t.dtype), P, t3, coef, soft, prm.ignore_index, x.dtype)
        if gx is not None:
            return gx.reshape(x.shape), None
    coef = torch.stack([cI - cFN, cFP, cI - cFP, cFN]).expand(4, N, C)
    out = _GRADS((C, prm.activation, soft, want_target, x.dtype, t.dtype),
                 x3, t3, coef, prm.activation, soft, prm.ignore_index, want_target)
    return None if out is None else (out[0].reshape(x.shape), None if out[1] is None else out[1].reshape(t.shape))


# ----------------------------------------------------------------------------------------------
# Eager softmax with class-index targets (CPU, narrow dtypes, not squared, no ignored position): the
# float64 arithmetic of :mod:`.dice_core` in a few whole-block operations. The sums come from the
# (N, C, C) confusion matrix K[n, j, c] = Σ_{s: t_s = c} p_j(s) (``scatter_add_``, no one-hot):
# I = diag K, FP = Σ_{c ≠ j} K[j, c], FN[c] = Σ_{j ≠ c} K[j, c] — every one a sum of non-negative
# terms (FN through the other classes' probabilities: no 1 − p, which cancels at the arg-max), p = e·(1/Σe)
# with e = exp(x − max) as in :func:`.dice_core.prepare`. The probabilities and 1/Σe (float64) are kept for the
# backward, which spreads the coefficients by the targets (``scatter_``) and applies the softmax VJP pivoted on
# the target class, or on the arg-max class(es) as :func:`.dice_core.backward` (see :func:`_indices_grads`).


def _indices_softmax(x: torch.Tensor, t: torch.Tensor, prm: core.Params, soft: bool) -> bool:
    """The conditions of the eager class-index softmax kernels above."""
    if soft or prm.activation != "softmax" or prm.squared or x.device.type != "cpu" or x.dtype == _F64:
        return False
    C = x.shape[1]
    if 0 <= prm.ignore_index < C or t.numel() == 0:
        return False
    lo, hi = torch.aminmax(t)
    return 0 <= int(lo) and int(hi) < C  # nothing ignored


def _indices_stats(x: torch.Tensor, t: torch.Tensor, prm: core.Params, keep: bool):
    """``(stats, kept)``: the finished sums and, with ``keep``, per block the float64 probabilities ``p = e·r``,
    ``r = 1/Σe`` (N, 1, s) and whether every probability of the block is at least ``_TARGET_PIVOT_MIN`` (then
    every target's is: no gather needed to choose the pivot) for :func:`_indices_grads` (else None)."""
    N, C = x.shape[:2]
    x3, t3 = x.reshape(N, C, -1), t.reshape(N, 1, -1)
    S = x3.shape[-1]
    K = torch.zeros(N, C, C, dtype=_F64)
    kept = [] if keep else None
    for sl in _blocks(x, N, C, S):
        e = x3[:, :, sl].to(_F64)
        e = e.sub_(e.amax(1, keepdim=True)).exp_()  # 1 exactly at the arg-max class(es)
        r = e.sum(1, keepdim=True).reciprocal_()
        p = e.mul_(r)
        K.scatter_add_(2, t3[:, :, sl].expand(N, C, -1), p)
        if keep:
            kept.append((sl, p, r, bool(p.amin() >= _TARGET_PIVOT_MIN)))  # a NaN: False
    off = K.masked_fill(torch.eye(C, dtype=torch.bool), 0)
    out = {"I": K.diagonal(0, 1, 2).clone(), "FP": off.sum(2), "FN": off.sum(1)}
    if prm.pooled:
        out["G"] = _counts(K, t3, S)
    return core.finish(out, prm), kept


def _counts(K: torch.Tensor, t3: torch.Tensor, S: int) -> torch.Tensor:
    """``G[n, c]``, the positions of sample n whose target is c (float64), from the confusion matrix: ``Σ_j K[n, j, c]``
    sums ``Σ_j p_j(s) = 1 + δ_s`` over those positions, |δ_s| ≤ (C + 5)·u (exp 2u, the C-term sum (C − 1)u, the
    reciprocal and the product u each; u = 2^-53), accumulated with ≤ (S + C)·u relative error: within
    G·(S + 2C + 5)·u ≤ S·(S + 2C + 5)·u of the integer G, which rounds back to it while that is below ¼.
    Otherwise (or non-finite probabilities) one ``scatter_add_`` of ones."""
    N, C = K.shape[:2]
    if S * (S + 2 * C + 5) * 2.0**-53 < 0.25:
        G = K.sum(1)
        if bool(torch.isfinite(G).all()):
            return G.round_()
    return torch.zeros(N, C, dtype=_F64).scatter_add_(1, t3[:, 0], torch.ones(1, dtype=_F64).expand(N, S))


# The backward pivots on the target class L (h_L = 0, no arg-max mask needed) unless some position's target
# probability is below _TARGET_PIVOT_MIN; then the block pivots on the arg-max class(es) as
# :func:`.dice_core.backward` does. Why that suffices: for any pivot, ``p_c·(h_c − Σ_j p_j h_j)`` is the same exact
# value (Σ p_j = 1); in float64, ``t = Σ_j p_j h_j`` is within ~(C + 4)·2^-53·Σ_j p_j|h_j| and ``h_c − t`` cancels
# beyond the conditioning only where one class carries almost all the probability and its own h is not 0: then
# ``h_a − t = h_a(1 − p_a) − Σ_{j≠a} p_j h_j``, whose size is ~(1 − p_a)·|h|, is computed from terms of size |h|.
# The arg-max pivot (h_a = 0) avoids that for every p_a; the target pivot avoids it where a = L, and where a ≠ L
# we have 1 − p_a ≥ p_L ≥ 2^-10: at most 2^10 of float64's 2^29 bits of headroom over a float32 gradient are lost
# (the arg-max pivot's own classes c ≠ a, with p_c ≤ ½, are in the same situation).
_TARGET_PIVOT_MIN = 2.0**-10


def _argmax_pivot(p, rs, ts, gL, miss, mk):
    """``g`` of the arg-max class(es) per position (N, 1, s): the mean over tied classes — with w = top/k,
    ``Σ_c w_c·∂FP_c + w_L·(g_L − ∂FP_L)`` (one batched product over the classes), exactly ``g_L`` where L is the
    only arg-max (w_L = 1), exactly ``∂FP`` of the arg-max where L is not one of them."""
    # the arg-max mask, 1 exactly where e = 1: there p = r; elsewhere e ≤ 1 − 2^-53, so p = fl(e·r) ≤ pred(r)
    # and p/r ≤ 1 − 2^-53 (correctly rounded: < 1)
    top = torch.div(p, rs).floor_()
    piv, k = torch.bmm(mk, top).split(1, 1)  # exact while k = 1: one non-zero term
    if not bool(k.amax() > 1):  # lerp is exact at weights 0 and 1 (start + 0·d; end − d·0)
        return torch.lerp(piv, gL, top.gather(1, ts))
    top = top.div_(k)  # weights 1/k
    wL = top.gather(1, ts)
    piv = torch.bmm(miss[:, None], top).addcmul_(wL, gL - miss.gather(1, ts[:, 0])[:, None])
    only = (wL == 1).to(_F64)  # exact selections: products with 0/1, one of two terms 0
    return piv.mul_(1 - only).addcmul_(gL, only)


def _indices_grads(t: torch.Tensor, w, stats: dict, prm: core.Params, grad: torch.Tensor, kept: list,
                   shape, dtype) -> torch.Tensor:
    """``∂/∂x`` from the kept blocks, as :func:`.dice_core.backward`: ``g_c = ∂I − ∂FN`` at the target class L,
    ``∂FP`` elsewhere; ``p·(h − Σ_j p_j h_j)`` (``torch._softmax_backward_data``: one fused pass whose sum order is
    its own, within the same bound) with ``h = g − g_pivot``, the pivot L or the arg-max (see above)."""
    N, C = shape[:2]
    r = core.ratios(stats, prm)
    a = core.cotangent(grad.to(_F64), r, None if w is None else w.to(_F64), prm)
    cI, cFP, cFN, _ = core.coefficients(r, a, prm)
    hit, miss = (cI - cFN).expand(N, C), cFP.expand(N, C).contiguous()  # (G, C) → (N, C): batch pools G = 1
    t2 = t.reshape(N, 1, -1)
    gx = torch.empty(N, C, t2.shape[2], dtype=dtype)
    mk = torch.stack([miss, torch.ones_like(miss)], 1)  # (N, 2, C): one product gives Σ_top ∂FP and k
    for sl, p, rs, every in kept:
        ts = t2[:, :, sl]
        gL = hit.gather(1, ts[:, 0])[:, None]
        if not every and bool((p.gather(1, ts) < _TARGET_PIVOT_MIN).any()):
            piv = _argmax_pivot(p, rs, ts, gL, miss, mk)
            h = torch.sub(miss[:, :, None], piv).scatter_(1, ts, gL - piv)
        else:
            h = torch.sub(miss[:, :, None], gL).scatter_(1, ts, 0.0)  # g_L − g_L = 0
        gx[:, :, sl] = torch._softmax_backward_data(h, p, 1, _F64)  # p·(h − Σ_j p_j h_j), fused
    return gx.reshape(shape)


class _DiceFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, t, w, prm, soft):
        op = _Operands(x, t, w, soft)
        # the softmax's probabilities (float64, N·C·S) are kept when only the input's gradient can be asked for
        keep = x.requires_grad and not (t.requires_grad and soft and prm.kind != "generalized_dice")
        stats, P = (None, None) if op.ld else _fused_stats(op.x, op.t, prm, soft, keep)
        top = None
        if stats is None and not op.ld and _indices_softmax(op.x, op.t, prm, soft):
            stats, top = _indices_stats(op.x, op.t, prm, x.requires_grad)
        if stats is None:
            stats = _stats(op, prm)
        ctx.save_for_backward(x, t, w)
        ctx.prm, ctx.soft, ctx.stats, ctx.P, ctx.top = prm, soft, stats, P, top  # (G, C) sums: small
        return _value(op, stats, prm).to(x.device)

    @staticmethod
    def backward(ctx, grad):
        x, t, w = ctx.saved_tensors
        need = ctx.needs_input_grad
        want_target = bool(need[1]) and ctx.soft and ctx.prm.kind != "generalized_dice"
        if ctx.top is not None:
            out = (_indices_grads(t.detach(), None if w is None else w.detach(), ctx.stats, ctx.prm, grad, ctx.top,
                                  x.shape, x.dtype), None)
        else:
            out = _fused_grads(x.detach(), t.detach(), None if w is None else w.detach(), ctx.stats, ctx.prm, grad,
                               ctx.soft, want_target, ctx.P)
        ctx.P = ctx.top = None
        if out is None:
            out = _grads(_Operands(x, t, w, ctx.soft), ctx.stats, ctx.prm, grad, want_target, x.dtype)
        gx, gy = out
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

