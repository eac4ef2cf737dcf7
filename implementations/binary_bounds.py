"""float64 binary cross-entropy in plain float64, with an a-priori error bound per element.

The guarded kernels of :mod:`.binary_core` carry guard bits everywhere (long double, or
double-double); these plain kernels are several times faster and, element by element, prove
whether their result is within budget — callers recompute only the elements (or sums) whose
bound could exceed it with the guarded kernels. torch tensors only (float64, any device).

**Error model.** ``u = 2^-53``. ``+ − × ÷`` round once: relative error ≤ u (for normal results; a
subnormal one adds at most ``2^-1075`` absolute, :data:`ETA` per element covers it). ``exp``,
``log``, ``log1p`` are within 1 ULP of the exact value (the documented bound of SLEEF's ``_u10``
functions that ATen and Inductor vectorize with, of glibc's scalar ones used for loop tails, and of
CUDA's), and ``1 ULP ≤ 2u`` relative for normal results; operands are kept where every
intermediate is normal (``|x| ≤ 700``: ``e^{−|x|} ≥ 2^-1010``; ``p ≥ 2^-1000``). First-order terms
are kept and the sum is scaled by ``1 + 2^-20`` (the second-order terms are below ``2^-100``).

**Budget.** An element passes when its bound ``E`` is within its budget in ULPs of the *exact*
result: ``E ≤ budget·u·(|f̂| − E)`` (``ulp(f) ≥ u·|f|``). The budget is the grades' faithful one
(README, "Verdicts and grades"; ``engine._budget``): 4 ULP for a gradient, plus ``log2 n`` when a
``sum``/``mean`` over ``n`` elements is differentiated — the grades grant that allowance to every
quantity of a reduced loss; the callers use at most 8 ULP for a gradient element. No element is
accepted as merely *stable*: a cell's grade never drops below faithful through these kernels. A
reduced value (sum or mean of ``n`` elements of relative bound ``K·u``) passes as a whole when
``K·u·Σ|v| + (summation) ≤ (1.5 + log2 n)·u·(|F| − bound)`` (budget 2 + log2 n ULP, 0.5 of it for
the final rounding): its elements are then never recomputed.
Soft targets near ``σ(x) = y`` (a cancellation the bound cannot cover) and ``reduction='none'``
(4 ULP: below what the bound proves for hard targets) go to the guarded kernels.

Per element (``e = e^{−|x|}``, ``s = 1 + e``; ``σ(|x|) = 1/s`` within 3u, ``σ(−|x|) = e/s`` within 4u):

- ``softplus`` loss ``L + b``, ``L = log1p(e)`` (within 4u: ``e`` 2u with condition ≤ 1, log1p 2u),
  ``b = (1 − y)·x⁺ + y·x⁻`` (2u): two non-negative terms, ``K = 5.1``; with ``pw ≥ 0``:
  ``pw·y·(L + x⁻) + (1 − y)(L + x⁺)``, ``K = 8.1``; a weight adds 1;
- probabilities: ``−[y log p + (1 − y) log(1 − p)]`` (``log1p(−p)`` below 1/2, ``1 − p`` exact
  above), ``K = 5.1`` (+1 with a weight);
- ``∂/∂x`` without ``pw``: ``(1 − y) − σ(−x)`` (x ≥ 0; ``1 − y = c₁ + t`` exactly) or
  ``σ(x) − y``, as ``r = h + corr``: ``h + e = d₁ − d₂`` exactly (two-sum), ``corr = e (+ t)``:
  ``E_r ≤ u|r|·[corr ≠ 0] + u|corr| + 4u·σ(−|x|)`` — exact differences for hard targets, where
  only ``σ``'s error remains;
- ``∂/∂x`` with ``pw ≥ 0``: ``T₁ − T₂``, ``T₁ = (1 − y)σ(x)``, ``T₂ = pw·y·σ(−x)``, each within 6u:
  ``E_r ≤ 6u(T₁ + T₂) + u|r|``;
- ``∂/∂p = (p − y)/(p(1 − p))``: four roundings, ``E_r ≤ 4u|r|``;
- the cotangent ``a`` (``g·w`` or ``g/n``, rounded once) adds ``u|a·r|``, the last product ``u|f̂|``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

Tensor = torch.Tensor
U = 2.0**-53
ETA = 2.0**-1022  # absolute slack per element for subnormal roundings (a normal number: subnormal operands are slow)
SLACK = 1 + 2.0**-20  # second-order terms
X_MAX = 700.0  # |x| beyond: e^{−|x|} might be subnormal — the guarded kernels
P_MIN = 2.0**-1000  # p below: p·(1 − p) might be subnormal
_MAX = 1.7976931348623157e308
K_LOGITS, K_LOGITS_PW, K_PROB, K_WEIGHT = 5.1, 8.1, 5.1, 1.0


def passes(f: Tensor, err: Tensor, budget: Tensor | float) -> Tensor:
    """Elements whose finite result ``f`` (error at most ``err``) is within ``budget`` ULPs of the
    exact one (``ulp(f) ≥ u·|f|``)."""
    af = f.abs()
    return (err <= (budget * U) * (af - err)) & (af <= _MAX)


def bce_logits(x: Tensor, y: Tensor, w: Tensor | None, pw: Tensor | None) -> Tensor:
    """``w·[pw·y·softplus(−x) + (1 − y)·softplus(x)]`` in plain float64 (relative bound
    :func:`logits_k`); NaN where ``|x| > X_MAX`` (so that a reduced sum falls back)."""
    lam = x.abs().neg_().exp_().log1p_()
    if pw is None:
        v = lam.add_(torch.where(x >= 0, (1 - y) * x, y * -x))
    else:
        v = (pw * y).mul_(torch.relu(-x).add_(lam)).add_(torch.relu(x).add_(lam).mul_(1 - y))
    if w is not None:
        v = v.mul_(w)
    return v.masked_fill_(x.abs() > X_MAX, math.nan)


def logits_k(w: Tensor | None, pw: Tensor | None) -> float:
    return (K_LOGITS if pw is None else K_LOGITS_PW) + (0.0 if w is None else K_WEIGHT)


def bce(p: Tensor, y: Tensor, w: Tensor | None, _pw: None = None) -> Tensor:
    """``−w·[y log p + (1 − y) log(1 − p)]`` in plain float64 (relative bound :func:`prob_k`);
    NaN where ``p < P_MIN``."""
    l1 = torch.where(p < 0.5, torch.log1p(-p), torch.log(1 - p))
    v = (y * torch.log(p)).add_(l1.mul_(1 - y)).neg_()
    if w is not None:
        v = v.mul_(w)
    return v.masked_fill_(p < P_MIN, math.nan)


def prob_k(w: Tensor | None, _pw: None = None) -> float:
    return K_PROB + (0.0 if w is None else K_WEIGHT)


def reduced_passes(total: float, abs_total: float, n: int, k: float, sum_err: float) -> bool:
    """A sum (or mean) of ``n`` elements, each within ``k·u`` of its exact value, summed with error
    at most ``sum_err``, is within its budget of ``2 + log2 n`` ULP (0.5 of it for the final rounding)."""
    if not (math.isfinite(total) and math.isfinite(abs_total)) or n == 0:
        return False
    bound = (k * U * abs_total + sum_err + n * ETA) * SLACK
    return bound <= (1.5 + math.log2(max(n, 1))) * U * (abs(total) - bound) * (1 - 2.0**-20)


def long_double_sum(v: Tensor, long_double) -> tuple[float, float]:
    """``(Σ v, bound)``: the sum in long double (rows of 1024, then the row sums), rounded once
    to float64 by the caller; ``bound`` covers any summation order (``(1023 + rows)·u_ld·Σ|v|``)."""
    a = v.numpy()
    n = a.size
    m = n - n % 1024
    rows = np.sum(a[:m].reshape(-1, 1024), axis=1, dtype=long_double)
    total = rows.sum() + np.sum(a[m:], dtype=long_double)
    u_ld = float(np.finfo(long_double).eps) / 2
    return total, (1024 + rows.size + 1) * u_ld


def bce_logits_grad(a: Tensor, x: Tensor, y: Tensor, pw: Tensor | None, budget: float) -> tuple[Tensor, Tensor]:
    """``a·[(1 − y)σ(x) − pw·y·σ(−x)]`` in plain float64 and where it is within ``budget`` ULPs
    (:func:`passes`); ``a`` the cotangent times the weight, rounded once."""
    e = x.abs().neg_().exp_()
    s = e + 1
    big, small = s.reciprocal(), e.div_(s)  # σ(|x|), σ(−|x|)
    pos = x >= 0
    if pw is None:  # r = d1 − d2 (+ t), h + e = d1 − d2 exactly (two-sum), the corrections added last
        c1 = 1 - y
        t = (1 - c1).sub_(y)  # 1 − y = c1 + t exactly (|1| ≥ |y|)
        d1, d2 = torch.where(pos, c1, small), torch.where(pos, small, y)
        h = d1 - d2
        bb = h - d1
        corr = (d1 - (h - bb)).sub_(d2 + bb).add_(torch.where(pos, t, 0.0))
        r = h + corr
        err_r = torch.where(corr == 0, 0.0, r.abs()).add_(corr.abs()).mul_(U).add_(small, alpha=4.01 * U)
    else:
        t1 = torch.where(pos, big, small).mul_(1 - y)
        t2 = torch.where(pos, small, big).mul_(pw * y)
        r = t1 - t2
        err_r = (t1 + t2.abs()).mul_(6.02 * U).add_(r.abs(), alpha=U)
    f = a * r
    aa = a.abs()
    err = (err_r.add_(r.abs(), alpha=U)).mul_(aa).add_(f.abs(), alpha=U).mul_(SLACK).add_(ETA)
    ok = passes(f, err, budget) & (x.abs() <= X_MAX)
    return f, ok


def bce_grad(a: Tensor, p: Tensor, y: Tensor, _pw: None, budget: float) -> tuple[Tensor, Tensor]:
    """``a·(p − y)/(p(1 − p))`` in plain float64 and where it is within ``budget`` ULPs (:func:`passes`)."""
    om = 1 - p
    den = p * om
    r = (p - y).div_(den)
    f = a * r
    aa = a.abs()
    err = (r.abs() * aa).mul_(5.02 * U).add_(f.abs(), alpha=U).mul_(SLACK).add_(ETA)
    ok = passes(f, err, budget) & (p >= P_MIN) & (om > 0)
    return f, ok
