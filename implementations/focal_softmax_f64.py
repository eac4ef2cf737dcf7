"""float64 softmax focal loss in plain float64 with an a-priori error bound per row; double-double
(:func:`.focal_core.softmax_focal_terms`) only for the rows whose bound could exceed the budget.

Full-size work is one exponential per logit: with the row maximum ``m``, ``x_j − m = h_j + l_j``
exactly (2Sum), ``e_j = exp(h_j)·(1 + l_j)`` (the correction rounded twice), and the row total
``T = Σ_j e_j`` (every class, the maximum's ``e = 1`` included) by Rump–Ogita–Oishi extraction
(:func:`.doubledouble.extraction_sum`), so that ``r = T − 1 = Σ_{j≠k} e_j`` is a double-double
within ``Δ`` of the exact one. Everything per row (``d_y = x_y − m`` exact, ``e^{d_y}``, ``log1p r``,
``u^γ``, ``W``, ``F``) is :func:`.focal_core.softmax_focal_rows` in double-double at that ``r``; the
gradient is ``∂ℓ/∂x_j = ĉ·e_j`` with the per-row ``c = cot·F/S`` rounded once (``−cot·F`` at the
target). The forward keeps the ``e_j`` (one float64 array the size of the logits) for the backward.

**Error model** (as :mod:`.binary_bounds`): ``u = 2^-53``; ``+ − × ÷`` round once (relative ≤ u for
normal results); libm ``exp`` within 1 ULP (≤ 2u relative for a normal result; SLEEF ``_u10`` in
ATen and Inductor, glibc, CUDA). Rows qualify only where every ``h_j ≥ −700`` (every ``e_j`` normal).
``l_j`` is exact and ``|l_j| ≤ 700u``, so ``exp(h_j)(1 + l_j)`` is ``e^{x_j − m}`` to ``l_j²`` (2^-87);
with exp's 2u and the correction's two roundings (u·|l_j| and u): ``e_j = e^{x_j−m}(1 + θ_j)``,
``|θ_j| ≤ ε = 3u`` (second order in the slack ``1 + 2^-20``); at a maximum ``h_j = l_j = 0`` and
``e_j = exp(0) = 1`` exactly (glibc, SLEEF and CUDA return it; ``tests/test_focal_softmax_f64.py``
checks it eager and compiled). Extraction: ``Σq`` exact, the rest within ``b = 1.01·C²·2^-106·σ``;
``Q − 1`` is exact (a multiple of ``ulp(σ)`` below ``2^M``). So ``|r̂ − r| ≤ Δ = ε·r̂·(1 + 2^-20) + b``
(``r ≤ r̂/(1 − ε)``).

**Propagation** (first order; rows qualify only where ``(1 + γ)·Δ/S, (1 + γ)·Δ/(1+r) ≤ 2^-30``). ``S = 1 + r − e_y``
(``y ≠ k``) or ``r`` (``y = k``) and ``1 + r`` move by the same ``δ``: with ``e'_y = 1 + r − S``
(``e^{d_y}``, or 1), ``p_y = e'_y/(1+r)``, ``L = −log p_y`` and ``u = S/(1+r)``:
``δ log u = δ·e'_y/(S(1+r))``, ``δL = δ/(1+r)``, ``δW = δ/(1+r)·[γ p_y(1 − L) + p_y·e'_y/(1+r)]``
(``W = γ p_y L + u``; ``|·| ≤ p_y(γ(L + 1) + 1)``). Relative bounds, ``a = γ·e'_y/(S(1+r))``:

- value ``α u^γ L``: ``ρ_v = Δ·(a + 1/((1+r)L))``;
- ``F = α u^γ W``: ``ρ_F = Δ·(a + p_y(γ(L+1) + 1)/((1+r)W))``; ``F/S``: ``ρ_F + Δ/S``.

The double-double row arithmetic (:data:`.doubledouble.PRECISE` functions within 2^-98 relative,
``tests/test_focal.py`` shows 2^-100; operations 2^-104) adds ``D = 2^-94 + γ·2^-98·(|log S| + log1p r)``:
``u^γ = exp(γ(log S − log1p r))`` turns the logarithms' relative errors into an absolute error of the
exponent, the rest is about twenty roundings. A gradient element ``fl(fl(c)·e_j)``:
``K_g = ρ_F + Δ/S + D + u + ε`` before its last rounding, the target's ``ρ_F + D``. **Budget** (README
"Verdicts and grades", ``Budget.faithful``): value 2, gradient 4 ULP, each plus ``log2 n`` over the
``n`` positions of a ``sum``/``mean``; with the last rounding (≤ u of the result) a relative bound
``K ≤ (B − 1.5)·u`` gives ``K·|f| + u|f̂| ≤ B·u·(|f̂| − err)`` and ``ulp(f) ≥ u·|f|``: within ``B`` ULP. A
reduced value sums the rows' double-double values (non-negative) and rounds once, so the same per-row
test bounds the total. The backward adds the range checks that need the cotangent:
``|ĉ|·e^{min_j(x_j − m)}`` and ``|ĝ_y|`` normal, ``|ĉ|, |ĝ_y| ≤ 2^1000`` (or an exact 0: a zero
cotangent or ``α_y = 0``); a value below 2^-1000 (it may have lost bits to underflow) is not accepted
unless ``α_y = 0``. Rows that miss a budget first take ``r`` from double-double exponentials
(``Δ = (2^-98 + 2^-104·⌈log2 C⌉)·T``, :func:`_dd_r`) and are tested again; rows that still miss, and
rows with a non-finite logit or a spread beyond 700, run :func:`.focal_core.softmax_focal_terms` in
double-double (correctly rounded up to its 2^-100).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from . import dd_arithmetic as A
from . import doubledouble as dd
from .compiled import Kernel
from .focal_core import softmax_focal_rows, softmax_focal_terms

__all__ = ["SoftmaxFocal64", "applies"]

Tensor = torch.Tensor
DD = tuple[Tensor, Tensor]
Array = Tensor | np.ndarray
_F64 = torch.float64
U = 2.0**-53
EPS_E = 3 * U  # one corrected exponential
SLACK = 1 + 2.0**-20  # second-order terms
LINEAR = 2.0**-30  # (1 + γ)·Δ/S and (1 + γ)·Δ/(1 + r) at most this: first order holds
D_MIN = -700.0  # every x_j − m at least this: every e_j normal
TINY = 2.0**-1022
_BLOCK = 1 << 16  # elements per eager block (512 KiB of float64)
_COMPILE_MIN_NUMEL = 1 << 18
_GRAD_MIN_BUDGET = 7.0  # ULP: below it (reduction 'none', fewer than 8 positions) no row can pass


def _budget(quantity_ulp: float, n: int) -> float:
    """``Budget.faithful``: the budget plus ``log2 n`` for a reduction over ``n`` positions."""
    return quantity_ulp + (math.log2(n) if n > 1 else 0.0)


def applies(input: Tensor, reduction: str, grads: bool) -> bool:
    """Whether :class:`SoftmaxFocal64` can serve the call (else the double-double Function): two
    classes at least, and a gradient budget some row can meet."""
    C = input.shape[1]
    n = input.numel() // C if C else 0
    if C < 2 or n == 0:
        return False
    return not grads or _budget(4.0, 1 if reduction == "none" else n) >= _GRAD_MIN_BUDGET


def _elements(x: Tensor, sigma: Tensor) -> tuple[Tensor, ...]:
    """Per row of ``x`` (rows of C float64 logits): the maximum ``m``, the minimum, ``Q``, ``R``
    (:func:`.doubledouble.extraction_sum` of the corrected exponentials ``e``, grid ``sigma``) and ``e``."""
    mn, m = torch.aminmax(x, dim=-1)
    mc = m[:, None]
    h = x - mc
    a = h + mc
    b = h - a
    lo = (x - a) - (b + mc)  # 2Sum: x − m = h + lo exactly
    e = torch.exp(h)
    e = e + e * lo
    q = (e + sigma) - sigma
    return m, mn, q.sum(-1), (e - q).sum(-1), e


def _elements_eager(x: Tensor, sigma: float, e_out: Tensor) -> tuple[Tensor, ...]:
    """:func:`_elements` on a block with two block-sized temporaries, ``e`` written into ``e_out``."""
    mn, m = torch.aminmax(x, dim=-1)
    mc = m[:, None]
    h = x - mc
    a = h + mc
    lo = torch.sub(x, a)
    torch.sub(h, a, out=a).add_(mc)  # b + m, b = h − a
    lo.sub_(a)
    h.exp_()
    torch.mul(h, lo, out=e_out).add_(h)
    q = torch.add(e_out, sigma, out=a).sub_(sigma)
    Q = q.sum(-1)
    return m, mn, Q, torch.sub(e_out, q, out=q).sum(-1)


_KERNEL = Kernel(_elements, "softmax_focal_loss float64", 2)


def _row_sums(x: Tensor) -> tuple[Tensor, ...]:
    """``(m, min, Q, R, e, b)`` for every row (``b``: the extraction bound)."""
    C = x.shape[-1]
    sigma = 2.0 ** (dd.extraction_exponent(C) + 1)  # e_j ≤ 1 + 3u < 2
    bound = 1.01 * C * C * 2.0**-106 * sigma
    if x.device.type == "cpu" and x.numel() >= _COMPILE_MIN_NUMEL:
        out = _KERNEL((), x, torch.tensor(sigma, dtype=_F64))
        if out is not None:
            return (*out, bound)
    e = torch.empty_like(x)
    step = max(1, _BLOCK // C) if x.device.type == "cpu" else max(1, x.shape[0])
    parts = [_elements_eager(x[i:i + step], sigma, e[i:i + step]) for i in range(0, x.shape[0], step)]
    m, mn, Q, R = (torch.cat(p) if len(parts) > 1 else p[0] for p in zip(*parts))
    return m, mn, Q, R, e, bound


class _Rows(NamedTuple):
    """Per-row results of the forward: the loss, ``F`` and ``F/S`` (double-doubles; None without
    gradients) and where the bounds place the loss and the gradient within budget."""

    value: DD
    F: DD | None
    FS: DD | None
    ok_v: Tensor
    ok_g: Tensor | None


def _bounded(r: DD, delta: Array, d_y: DD, y_is_k: Array, ok: Array, alpha_y: Array | None, gamma: float,
             grads: bool, kv_max: float, kg_max: float) -> _Rows:
    """:func:`.focal_core.softmax_focal_rows` in double-double at ``r`` (within ``delta`` of the exact
    one) and the module docstring's relative bounds tested against ``kv_max``, ``kg_max`` (NumPy arrays
    or tensors: the per-row work is many small operations, several times faster in NumPy on the CPU).
    A result that may have lost bits to underflow (below 2^-1000) is not accepted unless exactly 0
    (``α_y = 0``)."""
    xp = dd.xp(delta)
    r = A.where(ok, r, A.const(1.0, delta))
    d_y = A.where(ok, d_y, A.const(0.0, delta))
    rows = softmax_focal_rows(A, r, d_y, y_is_k, ~ok, alpha_y, gamma, grads)
    s = r[0] + 1.0
    S, L = rows.S[0], rows.nlp[0]
    ey = xp.where(y_is_k, 1.0, rows.e_y[0])
    lin = ok & (delta * (1.0 + gamma) <= LINEAR * S) & (delta * (1.0 + gamma) <= LINEAR * s)
    a = gamma * ey / (S * s)
    dd_rel = 2.0**-94 + gamma * 2.0**-98 * (xp.abs(xp.log(S)) + xp.log1p(r[0]))
    k_v = xp.nan_to_num(xp.where(lin, delta * (a + 1.0 / (s * L)) + dd_rel, math.inf), nan=math.inf)  # 0/0: L = 0
    zero = (alpha_y == 0) if alpha_y is not None else xp.zeros_like(ok)
    ok_v = (k_v * SLACK <= kv_max) & ((xp.abs(rows.value[0]) >= 2.0**-1000) | zero)
    if not grads:
        return _Rows(rows.value, None, None, ok_v, None)
    p = ey / s
    rho_f = delta * (a + p * (gamma * (L + 1.0) + 1.0) / (s * rows.W[0]))
    k_g = xp.nan_to_num(xp.where(lin, rho_f + delta / S + dd_rel + U + EPS_E, math.inf), nan=math.inf)
    return _Rows(rows.value, rows.F, A.div(rows.F, rows.S_safe), ok_v, k_g * SLACK <= kg_max)


def _host(v):
    """Tensors (in tuples) as NumPy arrays where they are on the CPU; None stays None."""
    if isinstance(v, tuple):
        return tuple(_host(w) for w in v)
    return v.numpy() if isinstance(v, Tensor) and v.device.type == "cpu" else v


def _tensor(v):
    """The inverse of :func:`_host`."""
    if isinstance(v, tuple):
        return tuple(_tensor(w) for w in v)
    return torch.from_numpy(v) if isinstance(v, np.ndarray) else v


def _bounded_rows(*args) -> _Rows:
    """:func:`_bounded` on the host's NumPy arrays where the tensors are on the CPU."""
    with np.errstate(all="ignore"):  # rows outside the bounds' domain divide by 0: masked
        return _Rows(*_tensor(tuple(_bounded(*_host(args)))))


def _put(whole, idx: Tensor, part):
    """``whole`` (a tensor, a double-double or None) with the rows ``idx`` replaced by ``part``."""
    if whole is None:
        return None
    if isinstance(whole, tuple):
        return tuple(_put(w, idx, p) for w, p in zip(whole, part))
    return whole.index_put((idx,), part)


def _rows(x: Tensor, t: Tensor, valid: Tensor, alpha_y: Tensor | None, gamma: float, grads: bool,
          kv_max: float, kg_max: float) -> tuple[_Rows, Tensor | None, Tensor]:
    """The forward per row: :class:`_Rows`, the exponentials ``e`` (with ``grads``) and ``e^{min_j(x_j − m)}``.

    ``r`` from the plain exponentials first (``Δ = ε·r̂ + b``); rows that miss a budget then take ``r`` as
    the double-double sum of double-double exponentials (``Δ = (2^-98 + 2^-104·⌈log2 C⌉)·T``: about
    2^-100 per exponential, 2^-104 per pairwise addition), which serves all but the rows whose ``r`` is
    itself below about 2^-60 or whose logits are not finite or spread beyond 700."""
    m, mn, Q, R, e, b = _row_sums(x)
    x_y = x.gather(-1, t[:, None])[:, 0]
    d_y = dd.two_sum(x_y, -m)
    y_is_k = x_y == m
    d_min = mn - m
    ok = torch.isfinite(m) & (d_min >= D_MIN)  # NaN or ±inf anywhere: d_min is NaN or −inf
    r = dd.two_sum(Q - 1.0, R)
    delta = r[0].abs() * (EPS_E * SLACK) + b  # the maxima's e_j = exp(0)·(1 + 0) = 1 carry no error
    out = _bounded_rows(r, delta, d_y, y_is_k, ok, alpha_y, gamma, grads, kv_max, kg_max)
    miss = valid & ok & ~(out.ok_v if out.ok_g is None else out.ok_v & out.ok_g)
    idx = miss.nonzero()[:, 0]
    if idx.numel():
        sub = _bounded_rows(*_dd_r(x[idx], m[idx]), tuple(v[idx] for v in d_y), y_is_k[idx], ok[idx],
                       _pick(alpha_y, idx), gamma, grads, kv_max, kg_max)
        out = _Rows(*(_put(w, idx, p) for w, p in zip(out, sub)))
    return out, (e if grads else None), d_min.exp()


def _dd_r(x: Tensor, m: Tensor) -> tuple[DD, Tensor]:
    """``r = Σ_j e^{x_j − m} − 1`` from double-double exponentials, and its bound ``Δ``."""
    T = A.sum_last(A.exp(dd.two_sum(x, -m[:, None])))
    return dd.add_d(T, -1.0), T[0] * ((2.0**-98 + 2.0**-104 * math.ceil(math.log2(x.shape[-1]))) * SLACK)


def _dd_rows(x: Tensor, t: Tensor, alpha_y: Tensor | None, gamma: float, grads: bool):
    """The double-double kernel on a subset of rows."""
    return softmax_focal_terms(A, x, t, alpha_y, gamma, grads=grads)


def _pick(v: Tensor | None, idx: Tensor) -> Tensor | None:
    return None if v is None else v[idx]


def flat_rows(input: Tensor, target: Tensor, alpha: Tensor | None, ignore_index: int, dtype: torch.dtype):
    """The logits as rows ``(R, C)`` (detached), which targets count, the targets with ignored ones
    set to class 0, and ``α_y`` per row in ``dtype`` (None without ``alpha``)."""
    x = input.detach().movedim(1, -1).reshape(-1, input.shape[1])
    t = target.reshape(-1)
    valid = t != ignore_index
    tt = torch.where(valid, t, 0)
    alpha_y = None if alpha is None else (alpha.to(dtype)[tt] if alpha.ndim else alpha.to(dtype).expand(tt.shape))
    return x, valid, tt, alpha_y


class SoftmaxFocal64(torch.autograd.Function):
    """float64 ``softmax_focal_loss`` (see the module docstring); the arguments as
    ``focal_torch._SoftmaxFocal``'s (``alpha``: a float64 tensor per class, a 0-dim one, or None)."""

    @staticmethod
    def forward(ctx, input, target, alpha, gamma, ignore_index, reduction):
        lead = (input.shape[0], *input.shape[2:])
        x, valid, tt, alpha_y = flat_rows(input, target, alpha, ignore_index, _F64)
        grads = ctx.needs_input_grad[0]
        n = 1 if reduction == "none" else x.shape[0]
        out, e, e_min = _rows(x, tt, valid, alpha_y, gamma, grads, (_budget(2.0, n) - 1.5) * U,
                              (_budget(4.0, n) - 1.5) * U)
        value = out.value
        redo = (valid & ~out.ok_v).nonzero()[:, 0]
        if redo.numel():
            value = _put(value, redo, _dd_rows(x[redo], tt[redo], _pick(alpha_y, redo), gamma, False)[0])
        value = A.where(valid, value, A.const(0.0, value[0]))
        if reduction == "none":
            res = A.round(value).reshape(lead)
        else:
            with np.errstate(all="ignore"):  # a mean over no target: 0/0, NaN
                total = A.sum_last(_host(value))
                if reduction == "mean":
                    total = A.div(total, A.const(float(valid.sum()), total[0]))
                res = torch.as_tensor(A.round(total), device=x.device)
        if grads:
            extra = [] if alpha_y is None else [alpha_y]
            ctx.save_for_backward(input, tt, valid, out.ok_g, e, e_min, *out.FS, *out.F, *extra)
            ctx.reduction, ctx.gamma = reduction, gamma
        return res

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        input, tt, valid, ok, e, e_min, fs_h, fs_l, f_h, f_l, *al = ctx.saved_tensors
        alpha_y = al[0] if al else None
        C = input.shape[1]
        go = grad_output.to(_F64).reshape(-1)
        cot = go if ctx.reduction == "none" else go.expand(valid.shape[0])
        cot = torch.where(valid, cot, 0.0)
        cot = A.lift(cot)
        if ctx.reduction == "mean":
            cot = A.div(cot, A.const(float(max(int(valid.sum()), 1)), cot[0]))
        c = A.round(A.mul((fs_h, fs_l), cot))
        gy = A.round(A.neg(A.mul((f_h, f_l), cot)))
        exact0 = (cot[0] == 0) if alpha_y is None else (cot[0] == 0) | (alpha_y == 0)  # an exact 0 gradient
        ac = c.abs()
        ok = ok & (exact0 | ((ac * e_min * (1 - 2.0**-30) >= TINY * SLACK) & (ac <= 2.0**1000)
                             & (gy.abs() >= TINY) & (gy.abs() <= 2.0**1000)))
        g = torch.mul(e, torch.where(exact0, 0.0, c)[:, None])
        g.scatter_(-1, tt[:, None], torch.where(exact0, 0.0, gy)[:, None])
        redo = (valid & ~ok).nonzero()[:, 0]
        if redo.numel():
            x = input.detach().movedim(1, -1).reshape(-1, C)
            _, gr = _dd_rows(x[redo], tt[redo], _pick(alpha_y, redo), ctx.gamma, True)
            g[redo] = A.round(A.mul(gr, A.col(tuple(v[redo] for v in cot))))
        if not bool(valid.all()):
            g.masked_fill_(~valid[:, None], 0.0)
        lead = (input.shape[0], *input.shape[2:])
        return g.reshape(*lead, C).movedim(-1, 1), None, None, None, None, None
