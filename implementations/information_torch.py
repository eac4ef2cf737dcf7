"""PyTorch entropy, ``kl_div`` and KL divergence with analytic backward (CPU and CUDA).

Each loss is a ``torch.autograd.Function`` over the kernels of :mod:`.information_core`: every
dtype is computed in float64 and rounded once to the input dtype, and the backward evaluates the
closed-form gradients of ``lossoracle.reference.information`` — ``+∞`` for the entropy at
``p = 0``, ``−∞`` for the ``kl_div`` target gradient at ``p = 0`` — instead of differentiating
``xlogy``. Narrow results take the plain float64 formulas. Float64 results of the entropy (value
and gradient) and of the reduced ``kl_div`` (value, input gradient) take them too wherever an
a-priori bound, computed alongside from the values at hand, proves them within the faithful budget
(section "float64 in plain hardware arithmetic" below); the rest, and every other float64 result,
the double-double kernels. Validation as the NumPy version; negative probabilities are checked
with one device sync.
"""

from __future__ import annotations

import math

import torch

from . import doubledouble as dd
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


def _row_map(fn, out_dtypes: tuple[torch.dtype, ...], *rows: torch.Tensor, reduce: bool = False,
             writes: bool = False):
    """``fn`` (float64 rows in, a float64 result — or a tuple of them — out: one value per row when
    ``reduce``, else per element) over blocks of rows, each result rounded once into its dtype in
    ``out_dtypes``; a tuple of results. ``writes``: ``fn`` takes the one output's block last and
    writes its result there (rounded once) itself."""
    n, m = rows[0].shape
    outs = tuple(torch.empty((n,) if reduce else (n, m), dtype=d, device=rows[0].device) for d in out_dtypes)
    for sl in _blocks(n, m, rows[0].device):
        if writes:
            fn(*(r[sl].to(_F64) for r in rows), outs[0][sl])
            continue
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


# ----------------------------------------------------------------------------------------------
# float64 in plain hardware arithmetic where an a-priori bound proves it within budget
#
# torch's float64 ``log`` is SLEEF's ``Sleef_logd{2,4,8}_u10`` in the vectorised CPU loops and
# glibc's ``log`` in scalar ones (both documented ≤ 1 ULP), CUDA's ``log`` (≤ 1 ULP, CUDA C
# Programming Guide, table of double-precision functions). With ``u = 2^-53`` and ``η = 2^-1074``:
# ``ulp(x) ≤ 2u·|x|`` for normal ``x``, each ``+ − ×`` rounds with an error ``≤ ulp/2 ≤ u·|result|``
# (``≤ η/2`` in the subnormal range). Each fast kernel below computes the plain float64 formula and,
# from the computed values, an upper bound of its error; an element (gradient) or a row (value)
# whose bound could exceed its budget — faithful: 2 ULP for a value plus ``log2 n`` for a sum of
# ``n`` terms, 4 ULP for a gradient element — is recomputed by the double-double kernels of
# :mod:`.information_core` (as are non-finite inputs and results). On random inputs that is none.

_EXP_MASK = 0x7FF0000000000000  # the exponent field of a float64


def _pow2(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``2^⌊log2 |x|⌋`` for normal ``x`` (0 for 0 and subnormals; inf for inf and NaN): the
    exponent bits alone, so that ``ulp(x) = 2^-52·_pow2(x)``; into ``out`` (may be ``x``)."""
    bits = x.view(torch.int64)
    if out is None:
        return (bits & _EXP_MASK).view(torch.float64)
    return torch.bitwise_and(bits, _EXP_MASK, out=out.view(torch.int64)).view(torch.float64)


def _rump_sum(t: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``Σ t`` over the last axis by :func:`.doubledouble.extraction_sum`: ``(hi, lo, bound)``, ``hi + lo``
    within ``bound`` of the exact sum (before rounding); ``a = |t|`` (overwritten). The grid is
    ``σ = 2^(M + 1)·2^⌊log2 max|t|⌋`` (at least 2^-1022 times that, so that nothing underflows); a NaN
    or infinite term gives a non-finite ``hi``."""
    m = dd.extraction_exponent(t.shape[-1])
    sigma = _pow2(a.amax(-1, keepdim=True)).clamp_min_(2.0**-1022).mul_(2.0 ** (m + 1))
    hi, lo, bound = dd.extraction_sum(t, sigma, out=a)
    return hi, lo, bound[..., 0]


def _faithful_sum(t: torch.Tensor, a: torch.Tensor, term_err: torch.Tensor,
                  budget: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``fl(Σ t)`` over the last axis and where it is provably within ``budget`` ULP of the exact
    sum of the terms that ``t`` approximates, ``term_err`` bounding the terms' errors summed (per
    row); ``a = |t|`` (overwritten). The rounding of ``hi + lo`` adds ``ulp/2``, which the check
    counts as one ULP of ``fl(Σ t)·(1 − 2^-40)`` (no larger than the exact result's ULP when the
    check passes)."""
    hi, lo, err = _rump_sum(t, a)
    s = hi + lo
    bound = term_err + err
    ok = (bound <= (budget - 1.0) * 2.0**-52 * _pow2(s * (1.0 - 2.0**-40))) & (s.abs() < math.inf)
    return s, ok


def _entropy_block(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row entropies ``−Σ p log p`` of a block in plain float64, and where they are provably faithful.

    Term ``t = fl(p·fl(log p))``: the libm's ``|δ log p| ≤ ulp(log p) ≤ 2u·|log p|`` and the
    product's ``u·|t|`` (or ``η/2``) give ``|t − p·log p| ≤ 3u·(1 + 2^-48)·|t| + η``. The row bound
    is ``3u·Σ|t|`` (norm computed with ``n·u`` relative error: inflated by ``1 + n·2^-52``) plus
    ``n·η`` and :func:`_rump_sum`'s; budget ``2 + log2 n``."""
    n = p.shape[-1]
    t = torch.log(p)
    t *= p
    a = t.abs()
    err = a.sum(-1).mul_(3.0 * 2.0**-53 * (1.0 + 2.0**-40 + n * 2.0**-52)).add_(n * 2.0**-1074)
    s, ok = _faithful_sum(t, a, err, 2.0 + math.log2(n))
    return s.neg_(), ok


def _entropy_rows_fast(p: torch.Tensor) -> torch.Tensor:
    """Row entropies of float64 rows: :func:`_entropy_block` by blocks, the rows it cannot prove
    faithful by :func:`information_core.entropy` (double-double) in one call."""
    R, n = p.shape
    if n == 0 or R == 0:
        return core.entropy(p, True)
    out = torch.empty(R, dtype=_F64, device=p.device)
    bad = []
    for sl in _blocks(R, n, p.device):
        out[sl], ok = _entropy_block(p[sl])
        if not bool(ok.all()):
            bad.append((~ok).nonzero()[:, 0] + sl.start)
    if bad:
        idx = torch.cat(bad)
        out[idx] = core.entropy(p[idx], True)
    return out

def _entropy_rows_plain(p: torch.Tensor) -> torch.Tensor:
    """Row entropies for narrow results: the float64 terms ``p·log p`` summed (see
    :mod:`.information_core` for why float64 suffices); the caller recomputes rows with a
    non-finite result (``p = 0``, inf, NaN) by :func:`information_core.entropy`'s plain formula."""
    t = torch.log(p)
    t *= p
    return t.sum(-1).neg_()


def _entropy_grad_plain(p: torch.Tensor, ng: torch.Tensor, out: torch.Tensor) -> None:
    """The plain gradient ``ng·log p + ng`` (``ng = −g``: :func:`information_core.entropy_grad`'s
    ``−g·(log p + 1)`` to a float64 rounding, for narrow results), in ``p``'s place (a float64 copy
    of a narrow input) and rounded once into ``out``."""
    torch.addcmul(ng, torch.log(p, out=p), ng, out=out)


def _entropy_grad_block(p: torch.Tensor, g: torch.Tensor, out: torch.Tensor) -> torch.Tensor | None:
    """``−g·(log p + 1)`` of a block in plain float64, into ``out``; the flat indices of the
    elements not provably within 4 ULP (None when there are none).

    ``L = fl(log p)``, ``s = fl(L + 1)``, ``f = fl(−g·s)``: error ``≤ |g|·(ulp(log p) + ulp(s)/2) +
    ulp(f)/2`` (a rounding errs by at most half the ULP of its result). ``ulp(log p) ≤
    2^-52·_pow2(L·(1 + 2^-50))`` (the exact log may lie in the next binade of ``L``; at ``p = 1`` a
    1-ULP ``log`` returns 0 or ±2^-1074, and ``s = 1`` exactly either way); the exact ``f`` is within
    8u of ``f̂`` where the check passes, so ``ulp(f) ≥ 2^-52·_pow2(f̂·(1 − 2^-40))``: the check is
    ``|g|·(_pow2(L…) + _pow2(s)/2) + _pow2(f̂)/2 ≤ 4·_pow2(f̂·(1 − 2^-40))``.
    With a cotangent of mantissa 1, as in training, it passes wherever ``|log p + 1| ≥ 1/2``
    (there ``ulp(log p) ≤ 2·ulp(s)``: the error is ``≤ 3·ulp(f)``). Faithful is required only there
    (``c = |g|·(1 + 2|log p + 1|) ≤ 4|f|``), but the elements near ``p = 1/e`` where ``log p + 1``
    cancels are recomputed too, so that the gradient stays faithful everywhere as the
    double-double kernel's is."""
    e = torch.log(p)
    s = e + 1.0
    f = torch.mul(s, -g, out=out)
    _pow2(e.mul_(1.0 + 2.0**-50), e).add_(_pow2(s, s), alpha=0.5).mul_(g.abs())  # |g|·(ulp(log p) + ulp(s)/2)·2^52
    e.sub_(_pow2(torch.mul(f, 1.0 - 2.0**-40, out=s), s), alpha=4.0)
    e.add_(_pow2(f, s), alpha=0.5)  # > 0: beyond the budget; NaN where f̂ is not finite (_pow2 is inf)
    if bool(e.amax() <= 0):
        return None
    return (~(e <= 0)).reshape(-1).nonzero()[:, 0]  # row-major, as out


def _entropy_grad_fast(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The entropy gradient of float64 rows (``g`` the rows' cotangents, ``(R, 1)``):
    :func:`_entropy_grad_block` by blocks, the elements it cannot prove within 4 ULP by
    :func:`information_core.entropy_grad` (double-double) in one call."""
    R, n = p.shape
    if p.numel() == 0:
        return core.entropy_grad(p, g, True)
    out = torch.empty((R, n), dtype=_F64, device=p.device)
    bad = []
    for sl in _blocks(R, n, p.device):
        b = _entropy_grad_block(p[sl], g[sl], out[sl])
        if b is not None:
            bad.append(b + sl.start * n)
    if bad:
        idx = torch.cat(bad)
        out.view(-1)[idx] = core.entropy_grad(p.reshape(-1)[idx], g[idx // n, 0], True)
    return out

class _EntropyFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p: torch.Tensor, dim: int) -> torch.Tensor:
        ctx.save_for_backward(p)
        ctx.dim = dim
        if _precise(p):
            h = _entropy_rows_fast(_rows(p, dim))
        else:
            rows = _rows(p, dim)
            (h,) = _row_map(_entropy_rows_plain, (p.dtype,), rows, reduce=True)
            bad = ~(h.abs() < math.inf)  # p = 0, inf, NaN (or an overflow): the plain formula's boundary values
            if bool(bad.any()):
                h[bad] = core.entropy(rows[bad].to(_F64), False).to(p.dtype)
        return _unrows(h, p, dim, True)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (p,) = ctx.saved_tensors
        precise = _precise(p)
        gr = g.reshape(-1, 1) if g.dim() else g.reshape(1, 1)
        if precise:
            grad = _entropy_grad_fast(_rows(p, ctx.dim), gr.to(_F64))
        else:
            (grad,) = _row_map(_entropy_grad_plain, (p.dtype,), _rows(p, ctx.dim), -gr.to(_F64), writes=True)
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
    """The float64 sum of the plain terms (narrow dtypes): ``t·(log t − x)`` where that is finite,
    else (an edge: ``t = 0``, infinities, NaN) :func:`information_core.kl_div`."""
    if not log_target:
        term = torch.log(t).sub_(x).mul_(t)
        total = term.sum()
        if bool(total.abs() < math.inf):
            return total
    return core.kl_div(x, t, log_target, None, True, False)


def _kl_div_total_fast(x: torch.Tensor, t: torch.Tensor, divisor: float | None) -> torch.Tensor | None:
    """``Σ t·(log t − x)`` (divided by ``divisor``) over flat float64 inputs in plain float64 terms,
    or None where the bound below does not prove the result faithful (budget ``2 + log2 n``).

    Term ``fl(t·fl(L − x))``, ``L = fl(log t)``: error ``≤ t·ulp(log t) + t·ulp(d)/2 + ulp/2 ≤
    2u·(1 + 2^-48)·(|fl(t·L)| + |term|) + 3η``. Each block's terms are summed by :func:`_rump_sum`
    (its bound added); the blocks' ``hi`` and ``lo`` in double-double (:func:`doubledouble.sum_last`,
    relative error below ``2^-100`` per level of its pairwise tree), divided by ``divisor`` in
    double-double (``≤ 2^-100``) and rounded once (``ulp/2``, counted as in :func:`_faithful_sum`)."""
    n = x.numel()
    if n == 0:
        return None
    parts, bound = [], 0.0
    for sl in _blocks(n, 1, x.device):
        xb, tb = x[sl].to(_F64), t[sl].to(_F64)
        L = torch.log(tb)
        term = torch.sub(L, xb).mul_(tb)
        a = term.abs()
        m = a.numel()
        err = L.mul_(tb).abs_().sum().add_(a.sum()).mul_(2.0**-52 * (1.0 + 2.0**-40 + m * 2.0**-52))
        hi, lo, se = _rump_sum(term, a)
        parts += [hi, lo]
        bound = err.add_(se).add_(3.0 * m * 2.0**-1074).add_(bound)
    v = torch.stack(parts)[None]
    total = dd.sum_last((v, torch.zeros_like(v)))
    bound = bound + v.abs().sum() * ((math.ceil(math.log2(v.shape[-1])) + 2) * 2.0**-100)
    if divisor is not None:
        total, bound = dd.div_d(total, divisor), bound / divisor
    r = dd.collapse(total)[0]
    bound = bound + r.abs() * 2.0**-98
    ok = (bound <= (1.0 + math.log2(n)) * 2.0**-52 * _pow2(r * (1.0 - 2.0**-40))) & (r.abs() < math.inf)
    return r if bool(ok) else None


def _kl_div_input_grad(t: torch.Tensor, c: torch.Tensor, out: torch.Tensor) -> bool:
    """``t·c`` (float64) rounded once into ``out``, with ``c = −a`` (one rounding: correctly rounded)
    or ``c = fl(−a/divisor)`` a normal number or 0 (two roundings: ``≤ 2u·|f| + η/2``, within 2 ULP
    of ``−a·t/divisor`` also in the subnormal range, where ``2u·|f| < η``); False where a product of
    finite factors overflows (the double-double kernel decides there)."""
    v = torch.mul(t, c, out=out)
    return bool(v.sum().abs() < math.inf) or not bool(t.sum().abs() < math.inf)


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
        if precise:  # plain terms where provably faithful, else double-double terms summed as one array
            fast = None if log_target else _kl_div_total_fast(xf, tf, divisor)
            if fast is not None:
                return fast.to(dtype)
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
        c = None  # the input gradient's factor −a/divisor, where t·c is the plain formula's (see above)
        if want[0] and not log_target:
            c = -a if divisor is None else -a / divisor
            if precise and divisor is not None and not (bool(c == 0) or bool(c.abs() >= 2.0**-1022)):
                c = None  # a subnormal (or NaN) factor: the double-double kernel
        for sl in _blocks(xf.numel(), 1, x.device):
            tb = tf[sl].to(_F64)
            done = c is not None and _kl_div_input_grad(tb, c[sl] if c.dim() else c, gi[sl])
            rest = (want[0] and not done, want[1])
            if any(rest):
                bi, bt = core.kl_div_grad(xf[sl].to(_F64), tb, log_target, a[sl] if a.dim() else a, divisor,
                                          precise, rest)
                if rest[0]:
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


def _kl_divergence_rows_plain(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Row sums of ``p·(log p − log q)`` in float64 for narrow results; rows with a non-finite sum
    (``p = 0``, ``q = 0``, inf, NaN) by :func:`information_core.kl_divergence`'s plain formula."""
    t = torch.log(p).sub_(torch.log(q)).mul_(p)
    s = t.sum(-1)
    bad = ~(s.abs() < math.inf)
    if bool(bad.any()):
        s[bad] = core.kl_divergence(p[bad], q[bad], False)
    return s


def _kl_divergence_grad_plain(p: torch.Tensor, q: torch.Tensor, g: torch.Tensor, out: torch.Tensor) -> None:
    """:func:`information_core.kl_divergence_grad`'s plain p-gradient ``g·(log p − log q + 1)``
    (narrow results) in the place of ``p`` and ``q`` (float64 copies), rounded once into ``out``."""
    torch.mul(torch.log(p, out=p).sub_(torch.log(q, out=q)).add_(1.0), g, out=out)


class _KLDivergenceFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p: torch.Tensor, q: torch.Tensor, dim: int) -> torch.Tensor:
        ctx.save_for_backward(p, q)
        ctx.dim = dim
        row_kl = (lambda a, b: core.kl_divergence(a, b, True)) if _precise(p, q) else _kl_divergence_rows_plain
        (d,) = _row_map(row_kl, (torch.promote_types(p.dtype, q.dtype),), _rows(p, dim), _rows(q, dim), reduce=True)
        return _unrows(d, p, dim, True)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        p, q = ctx.saved_tensors
        precise, dim = _precise(p, q), ctx.dim
        gr = g.reshape(-1, 1) if g.dim() else g.reshape(1, 1)
        if not precise and not ctx.needs_input_grad[1]:  # core.kl_divergence_grad's plain p-gradient alone
            (gp,) = _row_map(_kl_divergence_grad_plain, (p.dtype,), _rows(p, dim), _rows(q, dim), gr.to(_F64),
                             writes=True)
            return _unrows(gp, p, dim, False), None, None
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
