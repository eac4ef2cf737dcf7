"""PyTorch binary cross-entropy on probabilities and on logits, with analytic backward.

Each loss is a ``torch.autograd.Function`` over elements (weights included) whose backward is
the cancellation-free VJP of :mod:`.binary_core` — autograd through ``log(σ(x))`` or
``σ(x) − y`` would lose the tails — and computes only the gradients autograd asks for.
float16, bfloat16 and float32 are computed in float64 by the lean kernels below and rounded once
to the input dtype: on CPU inputs of at least :data:`_COMPILE_MIN_NUMEL` elements in one fused
``torch.compile`` kernel per pass (:class:`.compiled.Kernel`; ``LOSSORACLE_COMPILE=0`` disables
it), otherwise in blocks of about 2^15 elements (small temporaries; the reduced loss summed block
by block); a call or block whose result is not finite (an edge: infinite or NaN operands,
p ∈ {0, 1}) is recomputed by the guarded kernels of :mod:`.binary_core`. Large float32 sums and
means of the logits loss without ``pos_weight`` go further: the value in float32 arithmetic where an
a-priori bound, checked per call, places it within budget (:func:`_fused_value32`), the input
gradient from the float32 exponential (:func:`_fused_grads32`, within budget or ill-conditioned
element by element); without compilation, by the eager float32 kernels :func:`_eager_value32` and
:func:`_eager_grads32` (2^17 terms or more, no weight). float64 sums and means
(and their input gradients) run the plain float64 kernels of :mod:`.binary_bounds`, which bound
their own error: the guarded kernels (guard bits, see :func:`_kernel`) recompute only what a
bound cannot place within budget, and serve ``reduction='none'``, other devices and the other
gradients. Semantics are PyTorch's (``lossoracle.reference.binary``), with exact logarithms — no
−100 clamp.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from . import binary_bounds as bounds
from . import binary_core as core
from .compiled import Kernel

Tensor = torch.Tensor
_F64 = torch.float64
_BLOCK = 1 << 15  # CPU elements per block
_COMPILE_MIN_NUMEL = 1 << 16  # CPU elements from which the fused kernels are compiled
_COMPILE_MAX_VARIANTS = 16  # per kernel (loss, reduction, gradients wanted, dtypes, weights); beyond, eager
# float64 sums and means of fewer elements go straight to the guarded kernels: the plain kernels'
# bounds (5–9 ULP, :mod:`.binary_bounds`) fit the budget of 2 or 4 ULP plus log2(n) from n = 16 on
_PLAIN_MIN_TERMS = 16
_PLAIN_MAX_BUDGET = 8.0


# ----------------------------------------------------------------------------------------------
# Lean float64 kernels for float32 and narrower results, on finite operands with 0 < p < 1: the
# formulas of :mod:`.binary_core` without their guards (``0·∞``, the one-sided limits, the cancellation-free
# branches near x = 0 and p = 1/2, which only float64 results need). Operands of a narrower
# format neither overflow nor underflow in float64 where the result's format would not, every
# intermediate is within a few 2^-53 relative, and the terms a cancellation leaves are bounded by
# the componentwise condition number: 2^29 of headroom against the float32 budgets. A non-finite
# result flags an edge (an infinite or NaN operand, p ∈ {0, 1}): callers then take the guarded
# kernels.


def _lean_bce(p: Tensor, y: Tensor, w: Tensor | None, _pw: None = None) -> Tensor:
    """``−w·[y log p + (1 − y) log1p(−p)]``."""
    v = -(y * torch.log(p) + (1 - y) * torch.log1p(-p))
    return v if w is None else w * v


def _lean_bce_grads(a: Tensor, p: Tensor, y: Tensor, _pw: None, want_y: bool,
                    fused: bool = False) -> tuple[Tensor, Tensor | None]:
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


# tanh z = z·Σ c_k z^(2k) (Taylor, highest first)
_TANH = (-929569 / 638512875, 21844 / 6081075, -1382 / 155925, 62 / 2835, -17 / 315, 2 / 15, -1 / 3, 1.0)


def _tanh_small(z: Tensor) -> Tensor:
    """``tanh z`` for ``|z| ≤ 1/8`` by its Taylor series to ``z¹⁵``: the first omitted term is below
    ``0.0006·z¹⁶ ≤ 2^-58`` relative (float64 arithmetic adds a few 2^-53)."""
    s = z * z
    p = torch.full_like(z, _TANH[0])
    for coef in _TANH[1:]:
        p = p.mul_(s).add_(coef)
    return p.mul_(z)


def _logits_ratio(x: Tensor, y: Tensor, pw: Tensor | None, e: Tensor | None = None) -> Tensor:
    """``(1 − y)σ(x) − pw·y·σ(−x)`` from one exponential: ``(c − d·e)/(1 + e)`` (x ≥ 0) or
    ``(c·e − d)/(1 + e)``, ``e = e^{−|x|}``, ``c = 1 − y``, ``d = pw·y`` — in a fused kernel; eagerly
    (:func:`_lean_bce_logits_grads`) two ``torch.sigmoid`` calls take fewer passes than the branches."""
    e = x.abs().neg_().exp_() if e is None else e
    c, d = 1 - y, (y if pw is None else pw * y)
    num = torch.where(x >= 0, c - d * e, c * e - d)
    return num.div_(e.add_(1))


def _lean_bce_logits_grads(a: Tensor, x: Tensor, y: Tensor, pw: Tensor | None, want_y: bool,
                           fused: bool = False) -> tuple[Tensor, Tensor | None]:
    """``a·[(1 − y)σ(x) − pw·y·σ(−x)]`` (not ``σ(x) − y``, which cancels for hard targets; ``torch.sigmoid``
    is accurate relative to ``σ`` on both sides: ``1/(1 + e^{−x})``; ``fused``: :func:`_logits_ratio`);
    the two products cancel only where the target's (or pw's) term of the condition number is as
    large as they are. And ``−a·x`` (``a·[pw·softplus(−x) − softplus(x)]``); ``a`` the cotangent times
    the weight."""
    c, d = 1 - y, (y if pw is None else pw * y)
    # |x| < 1/4: σ(±x) = (1 ± tanh(x/2))/2, ((c − d) + (c + d)·tanh(x/2))/2 — the sigmoids no longer
    # cancel against each other near x = 0 (y = 1/2: tanh(x/2)/2, to full relative accuracy);
    # fused: both branches, tanh by its series; eagerly: only the elements near 0
    if fused:
        near = (c - d).addcmul_(c + d, _tanh_small(x * 0.5)).mul_(0.5)
        gx = torch.where(x.abs() < 0.25, near, _logits_ratio(x, y, pw)).mul_(a)
    else:
        gx = torch.sigmoid(x).mul_(c).addcmul_(d, torch.sigmoid(x.neg()), value=-1)
        i = (x.abs() < 0.25).nonzero().squeeze(1)
        if i.numel():
            ci, di = c[i], d[i]
            gx[i] = (ci - di).addcmul_(ci + di, torch.tanh(x[i] * 0.5)).mul_(0.5)
        gx.mul_(a)
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


def _f64(a: Tensor | None) -> Tensor | None:
    return None if a is None else a.to(_F64)


def _finite(v: Tensor) -> bool:
    return bool(torch.isfinite(v.sum()))  # any inf or NaN element makes the sum non-finite


class _Loss(NamedTuple):
    """One loss's kernels: ``lean`` (narrow dtypes, float64 arithmetic), ``guarded``
    (:mod:`.binary_core`, every edge, guard bits for float64), ``plain`` (float64 with error bounds,
    :mod:`.binary_bounds`); values, and gradients ``*_grads``."""

    lean: Callable
    lean_grads: Callable
    guarded: Callable
    guarded_grads: Callable
    plain: Callable
    plain_k: Callable
    plain_grad: Callable


def _bce_grads(g: Tensor, w: Tensor | None, p: Tensor, y: Tensor, _pw: None, *, want_y: bool, dd: bool = False):
    """:func:`binary_core.bce_grads` in the signature of :func:`binary_core.bce_logits_grads`."""
    return core.bce_grads(g, w, p, y, dd=dd, want_y=want_y)


_LOSSES = {
    "bce": _Loss(_lean_bce, _lean_bce_grads, core.bce, _bce_grads, bounds.bce, bounds.prob_k, bounds.bce_grad),
    "logits": _Loss(_lean_bce_logits, _lean_bce_logits_grads, core.bce_logits, core.bce_logits_grads,
                    bounds.bce_logits, bounds.logits_k, bounds.bce_logits_grad),
}


# ----------------------------------------------------------------------------------------------
# Whole-tensor kernels, compiled (torch.compile through :class:`.compiled.Kernel`) for large CPU
# inputs: one fused pass, every intermediate in registers. None when not compiled: the callers
# then run the same formulas eagerly, block by block.


def _fused_value(kind: str, none: bool, x: Tensor, y: Tensor, w: Tensor | None, pw: Tensor | None):
    """Narrow dtypes: the loss in float64, rounded to ``x.dtype`` (``none``), its float64 sum, and
    the extrema of ``y`` and ``x`` (for :func:`binary_core.require_ranges`)."""
    v = _LOSSES[kind].lean(x.to(_F64), y.to(_F64), _f64(w), _f64(pw))
    extrema = [y.amin(), y.amax()] + ([x.amin(), x.amax()] if kind == "bce" else [])
    return (v.to(x.dtype) if none else None), v.sum(), torch.stack(extrema)


# float32 sums and means of the logits loss without pos_weight, in float32 arithmetic (16 lanes,
# the float32 exp and log1p) when an a-priori bound places the result within the value budget
# 4 + log2(n) ULP; the float64 kernel above otherwise. The bound, per element with u = 2^-24 (the
# vectorised float32 exp and log1p are Sleef's u10 kernels, the scalar tail's glibc's: ≤ 1 ULP,
# i.e. ≤ 2u relative, each), first order (the factor 1.01 of _F32_SLACK covers the higher ones):
#   p = fl(y·x)                      |Δp| ≤ u|yx|
#   t = fl(relu(x) − p)              |Δt| ≤ u|yx| + u|t|
#   e = fl(exp(−|x|)), l = fl(log1p(e))   |Δl| ≤ 2u·l (log1p's own) + 2u·e/(1 + e) ≤ 4u·l
#                                    (e/(1 + e) ≤ log1p(e) for e ≥ 0)
#   v = fl(t + l) [·w]               |Δv| ≤ |Δt| + |Δl| + u|v| [then |w|·|Δv| + u|w·v|]
# so |Δv| ≤ u·b with b = 2|p| + |t| + 4l + |v| [b_w = |w|·b + |w·v|], the absolute floor of an
# underflowing product or exponential (≤ 2^-150 each, four of them) added per element as 2^-146
# to b. The float64 sum of the v adds ≤ (n − 1)·2^-53·Σ|v| ≤ n·2^-53·Σb; the mean's division
# 2^-53 relative; the final rounding to float32 ≤ 1 ULP of the exact result (0.5 ULP of the
# rounded one, which may sit in the binade above). So the error of the float64 total ``r`` is at
# most ``err = (1.01·u + n·2^-53)·Σb``, and the result is within budget when
# ``err ≤ (budget − 1)·u·(|r| − err)`` (ULP(f) ≥ u·|f| for a normal float32 f, |f| ≥ |r| − err):
# checked on the host, once per call.
_F32_U = 2.0 ** -24
_F32_SLACK = 1.01
_F32_FLOOR = 2.0 ** -146
_F32_TINY = 2.0 ** -126  # the smallest normal float32


def _fused_value32(x: Tensor, y: Tensor, w: Tensor | None):
    """float32 ``x``, ``y`` (and ``w``): the float64 sums of the loss ``(relu(x) − y·x) +
    log1p(e^{−|x|})`` [·w] computed in float32 and of its error terms ``b`` (see above), and the
    extrema of ``y``."""
    p = y * x
    t = torch.relu(x) - p
    lg = torch.log1p(torch.exp(-x.abs()))
    v = t + lg
    b = 2 * p.abs() + t.abs() + 4 * lg + v.abs() + _F32_FLOOR
    if w is not None:
        v = v * w
        b = w.abs() * b + v.abs()
    return v.to(_F64).sum(), b.to(_F64).sum(), torch.stack([y.amin(), y.amax()])


def _value32_passes(total: float, bound_sum: float, n: int) -> bool:
    """The check of the bound above for the float64 total ``total`` of ``n`` terms."""
    err = (_F32_SLACK * _F32_U + n * 2.0 ** -53) * bound_sum
    budget = 4.0 + math.log2(n)
    return math.isfinite(err) and abs(total) - err >= _F32_TINY and err <= (budget - 1) * _F32_U * (abs(total) - err)


def _fused_grads(kind: str, want_y: bool, a: Tensor, x: Tensor, y: Tensor, w: Tensor | None, pw: Tensor | None):
    """Narrow dtypes: the gradients in float64, rounded to the inputs' dtypes, and a float64 sum
    that is finite exactly when they all are."""
    a = a.to(_F64) if w is None else a.to(_F64) * w.to(_F64)
    gx, gy = _LOSSES[kind].lean_grads(a, x.to(_F64), y.to(_F64), _f64(pw), want_y, fused=True)
    check = gx.sum() if gy is None else gx.sum() + gy.sum()
    return gx.to(x.dtype), (None if gy is None else gy.to(y.dtype)), check


# The input gradient of a float32 sum or mean of n ≥ 2^16 logits terms without pos_weight:
# :func:`_logits_ratio` with e = e^{−|x|} from the float32 exp (≤ 1 ULP = 2u relative, u = 2^-24,
# while e ≥ 2^-126: |x| ≤ _EXP32_MAX_X, checked on the host; beyond, _fused_grads), the rest in
# float64, and no tanh series near x = 0 (the bound below covers it). Per element, with
# T = y·e/|num| (x ≥ 0, num = (1 − y) − y·e) or (1 − y)·e/|num| (x < 0, num = (1 − y)·e − y), the
# exact quantities: e's error moves num by ≤ 2u·T·|num| and 1 + e by ≤ u relative; the float64
# operations (1 − y, the product, the difference, the division, the cotangent) add ≤ 2^-53·(T + 7)
# relative; the rounding to float32 ≤ 1 ULP. So the error is ≤ (2.01·T + 1.01)·u·|f| + 1 ULP
# ≤ (2.01·T + 2.01) ULP (ULP(f) ≥ u·|f|; a subnormal result comes from the last rounding only).
# The budget of a reduced loss's gradient is 8 + log2(n) ≥ 24 ULP (engine._budget): every element
# with T ≤ 10.9 is faithful (hard targets: T ≤ 1). An element with T > 10.9 is ill-conditioned:
# its condition number includes y·|∂g/∂y| = |a|·y (a: cotangent times weight) and y ≥ (T − 1)·|num|
# ((1 − y)·e = y + num for x < 0; y ≥ T·|num| for x ≥ 0), so c ≥ (T − 1)·|f|·(1 + e) > 4·|f|;
# there only *stable* is required, |err| ≤ k·u·(c + |f|) with k ≥ 8, and the error is at most
# 2.01u·|a|·y·e/(1 + e) + 2.01u·|f| ≤ 2.01u·(c + |f|) (x < 0: 2.01u·|a|(y + |num|)/(1 + e), the
# same) plus the final rounding; no relative error above 0.5 where |f| exceeds the tail bound
# k·u·S (S ≥ |a|·y). No element needs a second pass.
_EXP32_MAX_X = 86.0  # e^{-86} > 2^-126: the float32 exponential stays normal


def _fused_grads32(want_y: bool, a: Tensor, x: Tensor, y: Tensor, w: Tensor | None):
    """float32 ``x``, ``y``: :func:`_fused_grads` of the logits loss without pos_weight, from the
    float32 exponential (see above), and ``max |x|``."""
    a = a.to(_F64) if w is None else a.to(_F64) * w.to(_F64)
    x64 = x.to(_F64)
    gx = _logits_ratio(x64, y.to(_F64), None, x.abs().neg().exp().to(_F64)) * a
    gy = -a * x64 if want_y else None
    check = gx.sum() if gy is None else gx.sum() + gy.sum()
    return gx.to(x.dtype), (None if gy is None else gy.to(y.dtype)), check, x.abs().amax()


# Without compilation (``LOSSORACLE_COMPILE=0``, or a compilation that failed), float32 sums and
# means of n ≥ _EAGER32_MIN_NUMEL logits terms without weight or pos_weight on the CPU run eagerly in
# float32 arithmetic, a few whole-tensor passes (same-dtype operations only):
# - the value (:func:`_eager_value32`): v = (relu(x) − y·x) + log1p(e^{−|x|}) as above, checked by
#   the bound of :func:`_value32_passes` with Σb bounded by sums the call already has: t and
#   l = fl(log1p(e)) are ≥ 0 (y ∈ [0, 1]: fl(y·x) ≤ x for x ≥ 0, rounding being monotone), so
#   t + 4l ≤ 4(t + l) ≤ 4v/(1 − u) and |v| = v; |p| ≤ (1 + u)·y·|x|. Hence
#   Σb ≤ 2(1 + u)·Σy|x| + 5.01·Σv + n·2^-146, with Σv from float32 sums of _ROWS = 4 terms (the
#   elements i, i + m, i + 2m, i + 3m: one vectorised pass; four non-negative terms in any order are
#   within 3u·(1 + 3u) relative, so Σb takes 3.01·Σv more — err's 1.01u covers the rest), those sums
#   summed in float64 (within n·2^-53 relative, in any order: chunks of 2^18 summed in Python; the
#   last n mod 4 terms directly in float64), and Σy|x| from float32 dot products
#   of chunks of C = 2^20 terms — non-negative products, so any order of evaluation is within
#   γ_C = Cu/(1 − Cu) = 1/15 relative, and
#   Σy|x| ≤ (15/14)·Σ dot (the Python sum of the chunks adds ≤ 2^-53 per chunk; _F32_SLACK covers it).
# - the input gradient (:func:`_eager_grads32`): a·(σ(x) − y) as (1 − y) − s (x > 0), s − y
#   (x < 0) or ½ − y (x = 0), all three as (k − y) − sign(x)·s with k = (sign(x) + 1)/2 exact
#   (no ``torch.where``: unvectorised, ~25 passes' time); s = σ(−|x|) = 1/(1 + e^{|x|}) from
#   torch.sigmoid (float32 exp ≤ 2u, 1 + E ≤ 2u, division u: s within 4u while every computed
#   s ≥ _SIGMOID32_MIN — then e^{|x|} is finite and s normal —, checked on the host; else the
#   kernels above), â = fl32(a) (u, normal or zero, checked), then d̂·â (u). With T = s/|d|
#   (d = σ(x) − y):
#   x ≥ 0: fl(1 − y) (u·(1 − y) ≤ u(|d| + s)), s (4u·s), the difference (u|d|): u(2 + 5T)|d|;
#   x < 0: u(1 + 4T)|d|; so |f̂ − f| ≤ (4 + 5T)·u·|f| (first order; the second is below 2^-40 of it).
#   Hard targets: T ≤ 1 (y = 1, x ≥ 0: 1 − y = 0 exactly, d = −s; otherwise |d| ≥ ½ ≥ s), ≤ 9 ULP.
#   Soft targets where c ≤ 4|f| (faithful required): c ≥ |f| + |a|·y (the target's term); x < 0:
#   y = s − d ≥ (T − 1)|d| so c ≥ T·|f|, T ≤ 4; x ≥ 0: y = 1 − s − d ≥ ½ − |d| so c ≥ |a|/2 and
#   |d| ≥ 1/8 ≥ s/4, T ≤ 4: at most 24 ULP, within the budget 8 + log2(n) ≥ 25 (n ≥ 2^17).
#   Everywhere the error is ≤ u(5|a|s + 4|f|) ≤ 5u(c + |f|) (|a|s ≤ c: x < 0, s = y + d; x ≥ 0,
#   s ≤ ½ and c ≥ |a|/2), within the stable bound k·u·(c + |f|), k = 8 + log2(n); a relative error
#   above ½ needs |f| < 10.1u·|a|s ≤ k·u·S (the tail bound; S ≥ |cotangent| ≥ |a|); a wrong sign
#   needs |f| ≤ |f̂ − f|, i.e. |f| ≤ 5.01u·c < k·u·c. ∂/∂y = −â·x: 2u, ≤ 2 ULP.
_EAGER32_MIN_NUMEL = 1 << 17
_SIGMOID32_MIN = 2.0 ** -124
_DOT_CHUNK = 1 << 20
_DOT_SLACK = 15 / 14  # 1/(1 − γ_C), γ_C = C·u/(1 − C·u) = 1/15 for C = 2^20, u = 2^-24
_ROWS = 4  # float32 terms per partial sum of the value (see above)
_F32_MAX = float(np.finfo(np.float32).max)


def _eager32(x: Tensor, *others: Tensor | None) -> bool:
    """The conditions of the eager float32 logits kernels (see above): CPU float32, enough terms,
    neither weight nor pos_weight."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.numel() >= _EAGER32_MIN_NUMEL
            and all(a is None or a.dtype == torch.float32 for a in others))


def _eager_value32(x: Tensor, y: Tensor) -> tuple[float, float]:
    """float32 ``x``, ``y`` (flat, y ∈ [0, 1] checked): the float64 sum of the loss computed in float32
    and an upper bound of the sum of its error terms Σb (see above)."""
    a = x.abs()
    chunks = range(0, x.numel(), _DOT_CHUNK)
    dot = sum(float(torch.dot(y[i:i + _DOT_CHUNK], a[i:i + _DOT_CHUNK])) for i in chunks)
    v = torch.relu(x).addcmul_(y, x, value=-1).add_(a.neg_().exp_().log1p_())
    del a
    m = x.numel() // _ROWS
    part = v[:m * _ROWS].view(_ROWS, m).sum(0)  # float32: _ROWS non-negative terms each
    total = sum(float(part[i:i + _DOT_CHUNK // 4].sum(dtype=_F64)) for i in range(0, m, _DOT_CHUNK // 4))
    total += float(v[m * _ROWS:].sum(dtype=_F64))
    bound = 2 * (1 + _F32_U) * _DOT_SLACK * dot + (5.01 + 3.01) * total + x.numel() * _F32_FLOOR
    return total, bound


def _eager_grads32(want_y: bool, a: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None] | None:
    """float32 ``x``, ``y`` (flat), ``a`` the float64 cotangent of every element (0-dim): ``a·(σ(x) − y)``
    and ``−a·x`` in float32 arithmetic (see above); None where the bound's premises fail (σ(−|x|)
    below _SIGMOID32_MIN, a NaN, fl32(a) neither normal nor zero)."""
    a32 = float(a.to(torch.float32))
    if not (a32 == 0 or _F32_TINY <= abs(a32) <= _F32_MAX):
        return None
    s = x.abs().neg_().sigmoid_()
    if not bool(s.amin() >= _SIGMOID32_MIN):  # also NaN
        return None
    sg = torch.sign(x)  # −1, 0, 1: σ(x) = k − sg·s with k = (sg + 1)/2 (σ(0) = ½)
    s = s.mul_(sg)  # exact
    # y − k rounded once (−k exact), + sg·s rounded once: −d (a NaN target gives NaN); two buffers in all
    gx = torch.sub(y, sg.add_(1), alpha=0.5, out=sg).add_(s).mul_(-a32)
    return gx, (x * -a32 if want_y else None)


def _plain_value(kind: str, x: Tensor, y: Tensor, w: Tensor | None, pw: Tensor | None) -> Tensor:
    return _LOSSES[kind].plain(x, y, w, pw)


def _plain_grad(kind: str, budget: Tensor, a: Tensor, x: Tensor, y: Tensor, w: Tensor | None, pw: Tensor | None):
    return _LOSSES[kind].plain_grad(a if w is None else a * w, x, y, pw, budget)


# the gradient kernels of narrow dtypes in 256-bit vectors: their float32 ↔ float64 conversions are
# several times faster there (the value kernel, exp and log1p bound, is faster in 512-bit ones)
_KERNELS = {fn: Kernel(fn, "binary cross-entropy", _COMPILE_MAX_VARIANTS, options)
            for fn, options in ((_fused_value, None), (_fused_value32, None), (_fused_grads, {"cpp.simdlen": 256}),
                                (_fused_grads32, {"cpp.simdlen": 256}), (_plain_value, None),
                                (_plain_grad, None))}


def _compiled(fn: Callable, variant: tuple, *args: Any):
    """``fn(*args)`` compiled, for CPU inputs of at least :data:`_COMPILE_MIN_NUMEL` elements; else None.
    ``variant``: the arguments that recompile (the operands' dtypes and presence are added here)."""
    ts = [a for a in args if isinstance(a, Tensor)]
    if ts[-1].device.type != "cpu" or ts[-1].numel() < _COMPILE_MIN_NUMEL:
        return None
    return _KERNELS[fn]((fn.__name__, *variant, *(None if a is None else a.dtype for a in args
                                                  if a is None or isinstance(a, Tensor))), *args)


# ----------------------------------------------------------------------------------------------
# float64 through the plain kernels (CPU with long double: the guarded kernels' fast arithmetic)


def _plain_allowed(x: Tensor, pw: Tensor | None) -> bool:
    """The plain kernels' bounds need ``pw ≥ 0`` (no cancellation between the two terms)."""
    return (x.device.type == "cpu" and core.LONG_DOUBLE is not None
            and (pw is None or pw.numel() == 0 or bool(pw.min() >= 0)))


def _plain_reduced(kind: str, reduction: str, flat: list[Tensor | None]) -> Tensor | None:
    """The float64 sum or mean from the plain kernel and a long-double sum, when its bound
    passes (:func:`binary_bounds.reduced_passes`); None otherwise."""
    L = _LOSSES[kind]
    x, y, w, pw = flat
    n = x.numel()
    ld = core.LONG_DOUBLE
    v = _compiled(_plain_value, (kind,), kind, x, y, w, pw)
    parts = [v] if v is not None else (L.plain(*[_part(a, sl) for a in flat]) for sl in _blocks(n, x.device))
    total, abs_total, blocks, coef = ld(0), ld(0), 0, 0.0
    for vb in parts:
        s, coef = bounds.long_double_sum(vb, ld)
        total += s
        abs_total += s if w is None else bounds.long_double_sum(vb.abs(), ld)[0]
        blocks += 1
    u_ld = float(np.finfo(ld).eps) / 2
    sum_err = (coef + (n // 1024 + blocks + 2) * u_ld) * float(abs_total)
    if not bounds.reduced_passes(float(total), float(abs_total), n, L.plain_k(w, pw), sum_err):
        return None
    return torch.tensor(float(total if reduction == "sum" else total / ld(n)), dtype=_F64)


def _plain_grads(kind: str, a: Tensor, w: Tensor | None, x: Tensor, y: Tensor, pw: Tensor | None,
                 want_y: bool, terms: int) -> tuple[Tensor, Tensor | None]:
    """float64 gradients (flat) from the plain kernel; the elements whose bound does not pass
    (and, for ``∂/∂y = −a·w·x``, the non-finite ones) from the guarded kernel. ``a``: the
    cotangent, per element or 0-dim; ``terms``: the elements the reduction sums, whose ``log2`` the
    grades add to the gradient's budget of 4 ULP (``engine._budget``) — used up to
    :data:`_PLAIN_MAX_BUDGET`: a plain result is never accepted beyond 8 ULP."""
    L = _LOSSES[kind]
    n = x.numel()
    budget = torch.tensor(min(4.0 + math.log2(terms), _PLAIN_MAX_BUDGET), dtype=_F64)
    gx = torch.empty(n, dtype=_F64)
    gy = torch.empty(n, dtype=_F64) if want_y else None
    whole = _compiled(_plain_grad, (kind,), kind, budget, a, x, y, w, pw)
    for sl in [slice(0, n)] if whole is not None else _blocks(n, x.device):
        ab = a if a.dim() == 0 else a[sl]
        wb, xb, yb, pwb = (None if t is None else t[sl] for t in (w, x, y, pw))
        f, ok = whole if whole is not None else L.plain_grad(ab if wb is None else ab * wb, xb, yb, pwb, budget)
        if want_y:  # logits without pw: −a·w·x, one rounding after a·w
            gyb = -(ab if wb is None else ab * wb) * xb
            ok = ok & torch.isfinite(gyb) & (yb == yb)
            gy[sl] = gyb
        gx[sl] = f
        bad = (~ok).nonzero().squeeze(1)
        if bad.numel():
            at = lambda t: None if t is None else t[bad]  # noqa: E731
            ga = ab.expand(xb.shape)[bad] if ab.dim() == 0 else ab[bad]
            bx, by = _kernel(L.guarded_grads, True, ga, at(wb), at(xb), at(yb), at(pwb), want_y=want_y)
            gx[sl][bad] = bx
            if want_y:
                gy[sl][bad] = by
    return gx, gy


# ----------------------------------------------------------------------------------------------
# drivers


def _forward(kind: str, reduction: str, dtype: torch.dtype, *operands: Tensor | None) -> Tensor:
    """The elementwise loss (``none``) or its float64 sum: narrow dtypes by the lean kernel (fused,
    else block by block), float64 sums by the plain kernel when their bound passes; the guarded
    kernel for float64 otherwise and for every block or call that is not finite (an edge). Checks
    the ranges of the operands first (:func:`binary_core.require_ranges`; the fused kernel
    returns their extrema)."""
    L = _LOSSES[kind]
    shape = operands[0].shape
    flat = [_flat(a, shape) for a in operands]
    flat += [None] * (4 - len(flat))
    x = flat[0]
    n = x.numel()
    guard = dtype == _F64
    checked = False
    if (dtype == torch.float32 and kind == "logits" and reduction != "none" and flat[3] is None
            and all(a is None or a.dtype == dtype for a in flat[:3])):
        out = _compiled(_fused_value32, (), *flat[:3])
        if out is not None:
            core.require_ranges(operands[0], operands[1], False, tuple(out[2].tolist()))
            checked = True
            total, bound = float(out[0]), float(out[1])
        elif flat[2] is None and _eager32(x, flat[1]):
            core.require_ranges(operands[0], operands[1], False)
            checked = True
            total, bound = _eager_value32(x, flat[1])
        if checked and _value32_passes(total, bound, n):
            return torch.tensor(total if reduction == "sum" else total / n, dtype=_F64).to(dtype)
    if not guard:
        out = _compiled(_fused_value, (kind, reduction == "none"), kind, reduction == "none", *flat)
        if out is not None:
            core.require_ranges(operands[0], operands[1], kind == "bce", tuple(out[2].tolist()))
            checked = True
        if out is not None and bool(torch.isfinite(out[1])):
            if reduction == "none":
                return out[0].view(shape)
            return (out[1] if reduction == "sum" else out[1] / n).to(dtype)
    if not checked:
        core.require_ranges(operands[0], operands[1], kind == "bce")
    if guard and reduction != "none" and n >= _PLAIN_MIN_TERMS and _plain_allowed(x, flat[3]):
        total = _plain_reduced(kind, reduction, flat)
        if total is not None:
            return total
    out = torch.empty(n, dtype=dtype, device=x.device) if reduction == "none" else None
    total = torch.zeros((), dtype=_F64, device=x.device)
    for sl in _blocks(n, x.device):
        args = [_part(a, sl) for a in flat[:len(operands)]]
        v = None if guard else L.lean(*args)
        s = None if v is None else v.sum()  # any inf or NaN element makes the sum non-finite
        if s is None or not bool(torch.isfinite(s)):
            v = _kernel(L.guarded, guard, *args)
            s = v.sum()
        if out is None:
            total += s
        else:
            out[sl] = v
    if out is not None:
        return out.view(shape)
    return (total if reduction == "sum" else total / n).to(dtype)


def _backward(kind: str, reduction: str, g: Tensor, w: Tensor | None, x: Tensor, y: Tensor,
              pw: Tensor | None, want: tuple[bool, bool]) -> tuple[Tensor | None, Tensor | None]:
    """``∂/∂x`` and ``∂/∂y`` (those in ``want``) for the cotangent ``g`` of the reduced loss."""
    L = _LOSSES[kind]
    shape, n = x.shape, x.numel()
    guard = x.dtype == _F64
    g = g.to(_F64)
    if reduction == "mean":
        g = g / n
    gf = g.reshape(-1) if reduction == "none" else g
    wf, pwf, xf, yf = _flat(w, shape), _flat(pw, shape), x.reshape(-1), y.reshape(-1)
    if (x.dtype == torch.float32 and kind == "logits" and reduction != "none" and pw is None
            and n >= _COMPILE_MIN_NUMEL and all(a is None or a.dtype == x.dtype for a in (y, w))):
        out = _compiled(_fused_grads32, (want[1],), want[1], gf, xf, yf, wf)
        if out is not None and bool(torch.isfinite(out[2])) and float(out[3]) <= _EXP32_MAX_X:
            return (out[0].view(shape) if want[0] else None), (out[1].view(y.shape) if want[1] else None)
        if out is None and w is None and _eager32(x, y):
            out = _eager_grads32(want[1], gf, xf, yf)
            if out is not None:
                return (out[0].view(shape) if want[0] else None), (out[1].view(y.shape) if want[1] else None)
    if not guard:
        out = _compiled(_fused_grads, (kind, want[1]), kind, want[1], gf, xf, yf, wf, pwf)
        if out is not None and bool(torch.isfinite(out[2])):
            return (out[0].view(shape) if want[0] else None), (out[1].view(y.shape) if want[1] else None)
    elif (reduction != "none" and n >= _PLAIN_MIN_TERMS and (not want[1] or (kind == "logits" and pw is None))
          and _plain_allowed(x, pw)):
        bx, by = _plain_grads(kind, gf, _f64(wf), xf, yf.to(_F64), _f64(pwf), want[1], n)
        return (bx.view(shape) if want[0] else None), (by.view(y.shape).to(y.dtype) if want[1] else None)
    gx = torch.empty_like(xf) if want[0] else None
    gy = torch.empty_like(yf) if want[1] else None
    for sl in _blocks(n, x.device):
        gb = gf[sl] if gf.dim() else gf.expand(sl.stop - sl.start)
        wb, xb, yb, pwb = _part(wf, sl), xf[sl].to(_F64), yf[sl].to(_F64), _part(pwf, sl)
        bx = by = None
        if not guard:
            bx, by = L.lean_grads(gb if wb is None else gb * wb, xb, yb, pwb, want[1])
            if not (_finite(bx) and (by is None or _finite(by))):
                bx = None
        if bx is None:
            bx, by = _kernel(L.guarded_grads, guard, gb, wb, xb, yb, pwb, want_y=want[1])
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


class _BCEFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p: Tensor, y: Tensor, w: Tensor | None, reduction: str) -> Tensor:
        ctx.save_for_backward(p, y, w)
        ctx.reduction = reduction
        return _forward("bce", reduction, p.dtype, p, y, w)

    @staticmethod
    def backward(ctx, g: Tensor):
        p, y, w = ctx.saved_tensors
        reduction, guard = ctx.reduction, p.dtype == _F64
        need = ctx.needs_input_grad
        gp, gy = _backward("bce", reduction, g, w, p, y, None, need[:2])
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
        return _forward("logits", reduction, x.dtype, x, y, w, pw)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, y, w, pw = ctx.saved_tensors
        reduction, guard = ctx.reduction, x.dtype == _F64
        need = ctx.needs_input_grad
        gx, gy = _backward("logits", reduction, g, w, x, y, pw, need[:2])
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
    _check(input, target, weight, reduction, probabilities=True, ranges=False)  # ranges: in _forward
    return _BCEFn.apply(input, target, weight, reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Tensor | None = None,
                                     reduction: str = "mean", pos_weight: Tensor | None = None) -> Tensor:
    """``w·[pw·y·softplus(−x) + (1 − y)·softplus(x)]``, reduced (mean = Σ / numel)."""
    _check(input, target, weight, reduction, pos_weight, ranges=False)  # ranges: in _forward
    return _BCELogitsFn.apply(input, target, weight, pos_weight, reduction)
