"""The softmax family: softmax, log-softmax, cross-entropy and NLL oracles.

Definition: ``softmax(x)_c = e^{x_c} / Σ_j e^{x_j}``, ``log_softmax(x)_c = x_c − log Σ_j e^{x_j}``
along ``dim`` (Bridle 1990; PyTorch ``torch.nn.functional.softmax`` / ``log_softmax``).

Hazards and remedies: ``e^{x}`` overflows for large logits — shift by the row maximum with
exact differences; ``x_c − LSE`` cancels for the dominant class — computed as
``−log1p(Σ_{j≠c} e^{x_j − x_c})`` (:class:`~lossoracle.mpfuncs.SoftmaxRow`).
Gradients (vector-Jacobian products with cotangent ``g``):
``∂⟨g, log_softmax⟩/∂x_j = g_j − p_j Σ_k g_k`` and ``∂⟨g, softmax⟩/∂x_j = p_j (g_j − Σ_k g_k p_k)``.

Cross-entropy and NLL
---------------------

With PyTorch's full semantics.

Definitions (PyTorch ``torch.nn.functional.cross_entropy`` / ``nll_loss`` documentation;
CONVENTIONS.md §4.1). Logits ``x`` of shape (C), (N, C) or (N, C, d1, …, dk), class axis 1
(0 for 1-D input); ``ℓ = log_softmax(x)``; class weights ``w`` (default 1); smoothing ``ε``.

- Index targets: ``l_i = (1−ε)·w_{y_i}·(−ℓ_{i,y_i}) + (ε/C)·Σ_c w_c·(−ℓ_{ic})``; ``l_i = 0`` when
  ``y_i = ignore_index``. ``mean`` = ``Σ_i l_i / Σ_{i∉I} w_{y_i}`` — both terms share the
  *target-class* weight normaliser; all targets ignored (or an empty batch) gives 0/0 = NaN.
- Probability targets (floating, same shape as input): ``q = (1−ε)·t + ε/C``,
  ``l_i = −Σ_c w_c q_ic ℓ_ic``; ``mean`` = ``Σ_i l_i / (N·d1⋯dk)``, no weight normalisation.
- ``nll_loss``: ``l_i = −w_{y_i}·input_{i,y_i}`` (input taken as log-probabilities, unchecked),
  reduced as the index-target case.

Writing ``l_i = Σ_c β_ic (−ℓ_ic)`` (β from the cases above; terms with β = 0 are 0, so a −inf
logit outside the target support contributes nothing), the gradient is
``∂l_i/∂x_ij = B_i p_ij − β_ij = (B_i − β_ij)·p_ij − β_ij·(1 − p_ij)`` with ``B_i = Σ_c β_ic``;
both products are free of cancellation (``1 − p`` from :class:`SoftmaxRow`).
For probability targets ``∂l_i/∂t_ic = −(1−ε)·w_c·ℓ_ic``.

Conventions (keyword-only oracle parameters, for libraries that differ): ``smoothing_form``
``"eps_over_c_minus_1"`` gives the true class ``1 − ε`` and every other class ``ε/(C − 1)``;
``mean_over`` divides a mean by the count of non-ignored targets (``"targets"``), by every row,
ignored ones included (``"rows"``), or by every entry ``N·C·d1⋯`` (``"elements"``) instead of
``Σ w_y``; ``empty_mean="zero"`` makes a mean over nothing 0 (gradient 0) instead of NaN.

Hazard: ``LSE(x) − x_y`` cancels for a confident correct prediction (the loss is ~e^{−margin});
the oracle evaluates ``log1p(Σ_{j≠y} e^{x_j − x_y})`` with exact differences instead.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
from mpmath import mp, mpf
from mpmath.libmp import fzero, mpf_add, mpf_mul, mpf_neg, mpf_pos, mpf_sub

from lossoracle.mpfuncs import (EXACT, cancel_bound, certify, mag, memo, mp_array, mp_sum, softmax_row,
                                softmax_rows_raw, sum_bound, sum_raw, sums_except_raw, to_mp, to_raw, workprec)
from lossoracle.spec import Arg, Case, Convention, Spec
from lossoracle.strategies import GRIDS, class_indices, logits, probabilities, rng_for

from .common import class_last, is_floating, reduce, rows


def _moved(values: list, lead: tuple, C: int, dim: int) -> np.ndarray:
    out = mp_array(values, (*lead, C))
    return out if dim == -1 or dim == len(lead) else np.moveaxis(out, -1, dim)


def _certified_out(out: list, bounds: list, lead: tuple, C: int, dim: int, key: str | None = None):
    """The object array (``{key: array}``) of raw ``out`` in the input's layout, certified with
    ``bounds`` (:func:`~lossoracle.mpfuncs.certify`) in the same layout."""
    arr = _moved([mp.make_mpf(t) for t in out], lead, C, dim)
    result = arr if key is None else {key: arr}
    certify(result, bounds if dim == -1 or dim == len(lead) else _moved(bounds, lead, C, dim).reshape(-1).tolist())
    return result


def _class_last_raw(a, dim: int) -> tuple[list, tuple, int] | None:
    """Flat raw class-last values of a float array, its lead shape and class count (None for other
    input, which takes :func:`~.common.rows`)."""
    a = np.asarray(a)
    nd = a.ndim
    if a.dtype.kind != "f" or not nd or not -nd <= dim < nd:
        return None
    d = dim % nd
    al = a if d == nd - 1 else np.ascontiguousarray(np.moveaxis(a, d, -1))
    return to_raw(al), al.shape[:-1], al.shape[-1]


def _softmax_rows(x, dim) -> tuple[list, tuple, int]:
    """The :class:`SoftmaxRow` of every row along ``dim``, the lead shape and the class count."""
    cl = _class_last_raw(x, dim)
    if cl is not None:
        flat, lead, C = cl
        return softmax_rows_raw(flat, math.prod(lead), C), lead, C
    r, lead = rows(x, dim)
    return [softmax_row(row) for row in r], lead, r.shape[-1]


def _per_row(x, dim, fn):
    """Apply ``fn(SoftmaxRow, C, prec, rnd) -> [raw mpf of each class]`` to every row, keeping the
    layout of ``x``; certified with :meth:`SoftmaxRow.bound` (negation is exact)."""
    srs, lead, C = _softmax_rows(x, dim)
    prec, rnd = mp._prec_rounding
    out, bounds = [], []
    for sr in srs:
        out.extend(fn(sr, C, prec, rnd))
        bounds.extend(sr.bounds())
    return _certified_out(out, bounds, lead, C, dim)


def log_softmax(input, dim: int = -1) -> np.ndarray:
    """Exact ``log_softmax(input)`` along ``dim`` (object array of mpf)."""
    with workprec():
        return _per_row(input, dim, lambda sr, C, prec, rnd: [mpf_neg(sr.neg_log_p_raw(c), prec, rnd)
                                                              for c in range(C)])


def softmax(input, dim: int = -1) -> np.ndarray:
    """Exact ``softmax(input)`` along ``dim``."""
    with workprec():
        return _per_row(input, dim, lambda sr, C, prec, rnd: [sr.p_raw(c) for c in range(C)])


def _mag0(t: tuple) -> int:
    return t[2] + t[3] if t[1] else -(1 << 30)


def _vjp(grad_output, input, dim, kind):
    """Cancellation-free VJPs (``Σ p = 1`` used exactly, ``1 − p`` from :class:`SoftmaxRow`):
    ``g_j − p_j Σ_k g_k = g_j (1 − p_j) − p_j Σ_{k≠j} g_k`` and, with ``m`` the arg-max,
    ``g_j − Σ_k g_k p_k = (g_j − g_m) + Σ_{k≠m} p_k (g_m − g_k)``.

    Certified (u = 2^−P; p within 6.1u, 1 − p within 7.1u, :meth:`SoftmaxRow.bound`; the float
    cotangent exact): ``g_j(1 − p_j)`` within 8.1u and ``p_j·Σ_{k≠j} g_k`` within 8.2u, their
    difference rounded once; ``p_k(g_m − g_k)`` within 8.2u each, their sum rounded once
    (absolute error ≤ 16u·Σ|terms| + u|sum|), added to ``g_j − g_m`` (within u), then ``p_j``'s
    product: three roundings and p's 6.1u (below 16u). A bad row (NaN, +inf) is NaN at every precision."""
    go = np.asarray(grad_output)
    exact_g = go.dtype.kind == "f"
    shape = np.shape(input)
    cl = _class_last_raw(go if go.shape == shape else np.broadcast_to(go, shape), dim) if exact_g else None
    if cl is not None:
        gflat, _, C = cl
        g = [gflat[i * C:(i + 1) * C] for i in range(len(gflat) // C)] if C else []
    else:
        go = go if exact_g else go.astype(object)  # floats convert exactly either way
        g = class_last(to_mp(np.broadcast_to(go, np.shape(input))), dim)
        g = [[v._mpf_ for v in gr] for gr in g.reshape(-1, g.shape[-1])]
    srs, lead, C = _softmax_rows(input, dim)
    if not C:
        g = [[] for _ in srs]
    prec, rnd = mp._prec_rounding
    out, bounds = [], []
    for sr, gr in zip(srs, g):  # the object formulas' libmp steps on raw tuples
        if kind == "log":
            for j, rest in enumerate(sums_except_raw(gr, prec, rnd)):
                a, b = mpf_mul(gr[j], sr.one_minus_p_raw(j), prec, rnd), mpf_mul(sr.p_raw(j), rest, prec, rnd)
                v = mpf_sub(a, b, prec, rnd)
                out.append(v)
                bounds.append(EXACT if sr.bad else cancel_bound(max(_mag0(a), _mag0(b)) + 5, v, 0)
                              if v[1] or a[1] or b[1] else 0)
        else:
            if sr.bad:
                xs = sr.x
                m = max(range(C), key=lambda k: xs[k])
            else:  # the first arg-max, as max() finds it
                m = sr.argmax()
            gm, p = gr[m], [sr.p_raw(k) for k in range(C)]
            terms = [mpf_mul(p[k], mpf_sub(gm, gr[k], prec, rnd), prec, rnd) for k in range(C) if k != m]
            rest = mpf_pos(sum_raw(terms, prec, rnd), prec, rnd)
            k_rest = sum_bound([mag(t) + 4 for t in terms if t[1]], rest)
            if not (sr.bad or k_rest is None or k_rest == EXACT):
                m_rest = _mag0(rest) + k_rest
            for j in range(C):
                d0 = mpf_sub(gr[j], gm, prec, rnd)
                d = mpf_add(d0, rest, prec, rnd)
                out.append(mpf_mul(p[j], d, prec, rnd))
                if sr.bad:
                    bounds.append(EXACT)
                elif k_rest is None or k_rest == EXACT or not (d[1] or d0[1] or rest[1]):
                    bounds.append(None if k_rest is None or d0[1] or rest[1] else 0)
                else:
                    bounds.append(cancel_bound(max(_mag0(d0), m_rest) + 2, d, 4))
    if not exact_g:
        bounds = [None] * len(out)
    return _certified_out(out, bounds, lead, C, dim, "input")


def log_softmax_grad(grad_output, input, dim: int = -1) -> dict[str, np.ndarray]:
    """VJP of :func:`log_softmax`: ``g_j − p_j Σ_k g_k``."""
    with workprec():
        return _vjp(grad_output, input, dim, "log")


def softmax_grad(grad_output, input, dim: int = -1) -> dict[str, np.ndarray]:
    """VJP of :func:`softmax`: ``p_j (g_j − Σ_k g_k p_k)``."""
    with workprec():
        return _vjp(grad_output, input, dim, "plain")


def _cases() -> list[Case]:
    def c(id_, x, dim=-1, **kw):
        return Case(id_, {"input": np.asarray(x, dtype=np.float64)}, {"dim": dim}, **kw)

    cases = [
        c("all_equal", np.zeros((3, 4))),
        c("huge_1e4", [[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]]),
        c("dominant_by_1e3", [[1000.0, 0.0, 0.0, -1.0], [0.0, 0.0, 1000.0, 3.0]]),
        c("single_class", [[3.0], [-1e4]]),
        c("empty_batch", np.zeros((0, 5))),
        c("dim0", [[1.0, 2.0], [3.0, -4.0], [0.5, 0.25]], dim=0),
        c("spatial_dim1", rng_for("softmax", "spatial").standard_normal((2, 3, 2, 2)).round(2), dim=1),
        c("fp16_overflow_11", [[11.125, -11.125, 0.0]]),
        c("fp32_overflow_88", [[88.75, -88.75, 0.0, 89.0]]),
        c("neg_inf_logit", [[-np.inf, 0.0, 1.0]]),
        Case("integer_input", {"input": np.array([[1, 2, 3]], dtype=np.int64)}, {"dim": -1}, raises=TypeError,
             note="non-floating logits"),
    ]
    for grid in GRIDS:
        for i, shape in enumerate([(4, 5), (2, 3, 3), (1, 17)]):
            cases.append(c(f"random_{grid}_{i}", logits(rng_for("softmax", grid, i), shape, grid), dim=1))
    return cases


def _spec(name, oracle, grad, definition) -> Spec:
    return Spec(
        name=name,
        signature=f"{name}(input, dim)",
        definition=definition,
        source="Bridle (1990); torch.nn.functional." + name,
        args=(Arg("input", "logits", differentiable=True),),
        params={"dim": -1},
        oracle=oracle,
        gradient=grad,
        cases=_cases,
    )


_SOFTMAX_SPECS = (
    _spec("log_softmax", log_softmax, log_softmax_grad, "x_c − log Σ_j exp(x_j) along dim"),
    _spec("softmax", softmax, softmax_grad, "exp(x_c) / Σ_j exp(x_j) along dim"),
)


def _class_dim(x) -> int:
    return 1 if np.ndim(x) >= 2 else 0


def _is_probability_target(input, target) -> bool:
    return is_floating(target) and np.shape(target) == np.shape(input)


def _weights(weight, C: int) -> list[mpf]:
    return [mpf(1)] * C if weight is None else to_mp(weight).tolist()


SMOOTHING_FORMS = ("eps_over_c", "eps_over_c_minus_1")
MEAN_OVER = ("weights", "targets", "rows", "elements")
EMPTY_MEANS = ("nan", "zero")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


class _Layout:
    """Rows of logits (M, C), per-row coefficients β (None for ignored rows), normaliser.

    Conventions: ``smoothing_form`` spreads ε as ``ε/C`` over every class (PyTorch) or as
    ``ε/(C − 1)`` over the other classes (the true class keeps ``1 − ε``); ``mean_over`` divides a
    mean by ``Σ w_y`` (PyTorch; ``N·d1⋯`` for probability targets), the count of non-ignored
    targets, every row (ignored ones included) or every entry ``N·C·d1⋯``; ``empty_mean`` makes a
    mean over nothing NaN (0/0) or 0."""

    def __init__(self, input, target, weight, ignore_index, label_smoothing, smoothing_form="eps_over_c",
                 mean_over="weights", empty_mean="nan"):
        self.dim = _class_dim(input)
        self.x, self.lead = rows(input, self.dim)
        C = self.x.shape[-1]
        w = _weights(weight, C)
        eps = mpf(label_smoothing)
        other = _choice("smoothing_form", smoothing_form, SMOOTHING_FORMS) == "eps_over_c_minus_1"
        self.empty_zero = _choice("empty_mean", empty_mean, EMPTY_MEANS) == "zero"
        self.prob = _is_probability_target(input, target)
        self.t = rows(target, self.dim)[0] if self.prob else np.asarray(target).reshape(-1)
        self.betas: list[list[mpf] | None] = []
        den = []
        one_eps = 1 - eps
        if not self.prob and C:  # index targets: class c's coefficient off the target and on it
            if other:
                on = [w[c] * one_eps for c in range(C)]
                off = [w[c] * (eps / (C - 1)) for c in range(C)] if C > 1 else on
            else:  # (once per distinct weight: the same expression gives the same number)
                per = {}
                for c in range(C):
                    if w[c]._mpf_ not in per:
                        per[w[c]._mpf_] = (one_eps * w[c] * True + eps / C * w[c],
                                           one_eps * w[c] * False + eps / C * w[c])
                on = [per[w[c]._mpf_][0] for c in range(C)]
                off = [per[w[c]._mpf_][1] for c in range(C)]
        for t in self.t:
            if self.prob:
                self.betas.append([w[c] * (one_eps * t[c] + eps / C) for c in range(C)])
            elif int(t) == ignore_index:
                self.betas.append(None)
            else:
                y = int(t)
                beta = list(off)
                if 0 <= y < C:
                    beta[y] = on[y]
                self.betas.append(beta)
                den.append(w[y])
        mean_over = _choice("mean_over", mean_over, MEAN_OVER)
        if mean_over == "rows" or (self.prob and mean_over != "elements"):
            self.denominator = mpf(len(self.t))
        elif mean_over == "elements":
            self.denominator = mpf(len(self.t) * C)
        else:
            self.denominator = mp_sum(den) if mean_over == "weights" else mpf(len(den))
        self.w, self.eps = w, eps
        self.certifiable = _certifiable(self)

    def unflatten(self, values: list) -> np.ndarray:
        return mp_array(values, self.lead)

    def reduce(self, losses: np.ndarray, reduction: str):
        if reduction == "mean" and self.denominator == 0 and self.empty_zero:
            return mpf(0)
        return reduce(losses, reduction, self.denominator)

    def cotangent(self, grad_output, reduction: str) -> list:
        """What each row's loss receives: ``g_i`` (none), ``g`` (sum), ``g/den`` (mean)."""
        if reduction == "none":
            return np.broadcast_to(to_mp(grad_output), self.lead).reshape(-1).tolist()
        g = mpf(np.asarray(grad_output, dtype=np.float64).reshape(-1)[0])
        if reduction == "mean":
            g = g / self.denominator if self.denominator != 0 else (mpf(0) if self.empty_zero else mpmath.nan)
        return [g] * len(self.t)


_layout = memo(_Layout)  # the value and the VJP of a case share it


def _row_losses(lay) -> tuple[list, list]:
    """Raw ``Σ_c β_c·(−log p_c)`` of every row over the non-zero β (mp_sum of the products; 0 for
    an ignored row), and their certificates: each β within 5u (u = 2^−P; at most five roundings of
    terms of one sign — see :func:`_certifiable`), ``−log p`` within 8u
    (:meth:`SoftmaxRow.bound`), the product within 14.1u, the sum rounded once."""
    prec, rnd = mp._prec_rounding
    vals, bounds = [], []
    for r, beta in zip(lay.x, lay.betas):
        if beta is None:
            vals.append(fzero)
            bounds.append(0)
            continue
        sr = softmax_row(r)
        terms = [mpf_mul(b._mpf_, sr.neg_log_p_raw(c), prec, rnd) for c, b in enumerate(beta) if b._mpf_ != fzero]
        total = mpf_pos(sum_raw(terms, prec, rnd), prec, rnd)
        vals.append(total)
        bounds.append(sum_bound([mag(t) + 4 for t in terms if t[1]], total))
    return vals, bounds


def _certifiable(lay) -> bool:
    """The coefficients are sums of terms of one sign (0 ≤ ε ≤ 1, weights and probability targets
    ≥ 0): within 5u, and ``Σ w_y`` (a mean's denominator) within u."""
    if not 0 <= lay.eps <= 1 or any(w < 0 for w in lay.w):
        return False
    return not lay.prob or all(v >= 0 for row in lay.t for v in row)


def _reduced(lay, vals: list, bounds: list, reduction: str):
    """:meth:`_Layout.reduce` of the raw row losses, certified: a sum is exact then rounded once
    (:func:`~lossoracle.mpfuncs.sum_bound`); a mean divides once more by a denominator within u
    (2 bits more); a mean over nothing is NaN or 0 at every precision."""
    out = lay.reduce(lay.unflatten([mp.make_mpf(v) for v in vals]), reduction)
    if reduction == "none":
        certify(out, bounds)
    elif reduction in ("sum", "mean"):
        k = None
        if None not in bounds:
            prec, rnd = mp._prec_rounding
            total = mpf_pos(sum_raw(vals, prec, rnd), prec, rnd)
            k = sum_bound([mag(v) + b for v, b in zip(vals, bounds) if v[1] and b != EXACT], total)
        if reduction == "mean":
            k = EXACT if lay.denominator == 0 else k + 2 if k is not None and k != EXACT else k
        certify(out, [k])
    return out


def cross_entropy(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0, *, smoothing_form: str = "eps_over_c", mean_over: str = "weights",
                  empty_mean: str = "nan"):
    """Exact cross-entropy of logits ``input`` against class indices or probabilities ``target``."""
    with workprec():
        lay = _layout(input, target, weight, ignore_index, label_smoothing, smoothing_form, mean_over, empty_mean)
        vals, bounds = _row_losses(lay)
        if not lay.certifiable:
            bounds = [None] * len(vals)
        return _reduced(lay, vals, bounds, reduction)


def cross_entropy_grad(grad_output, input, target, weight=None, ignore_index: int = -100,
                       reduction: str = "mean", label_smoothing: float = 0.0, *, smoothing_form: str = "eps_over_c",
                       mean_over: str = "weights", empty_mean: str = "nan") -> dict[str, np.ndarray]:
    """VJP of :func:`cross_entropy` w.r.t. ``input`` (and ``target`` for probability targets).

    Certified (:func:`_certifiable` coefficients within 5u, their sums-except within 6u; the
    cotangent within 2u under a mean, else exact): ``rest_j·p_j`` and ``β_j·(1 − p_j)`` within
    13.1u each, their difference rounded, then ``a``'s product; ``a·(1 − ε)·w_j·(−log p_j)``
    within 14u."""
    with workprec():
        lay = _layout(input, target, weight, ignore_index, label_smoothing, smoothing_form, mean_over, empty_mean)
        C = lay.x.shape[-1]
        one_eps = 1 - lay.eps
        gx, gt, bx, bt = [], [], [], []
        for r, beta, a in zip(lay.x, lay.betas, lay.cotangent(grad_output, reduction)):
            if beta is None:  # an ignored row receives no cotangent
                gx.extend([mpf(0)] * C)
                gt.extend([mpf(0)] * C)
                bx.extend([0] * C)
                bt.extend([0] * C)
                continue
            sr = softmax_row(r)
            # a·(rest_j·p_j − β_j·(1 − p_j)), rest_j = Σ_{c≠j} β_c: the object formula's libmp steps
            prec, rnd = mp._prec_rounding
            ra, rb = a._mpf_, [b._mpf_ for b in beta]
            for j, rest in enumerate(sums_except_raw(rb, prec, rnd)):
                u, v = mpf_mul(rest, sr.p_raw(j), prec, rnd), mpf_mul(rb[j], sr.one_minus_p_raw(j), prec, rnd)
                d = mpf_sub(u, v, prec, rnd)
                gx.append(mp.make_mpf(mpf_mul(ra, d, prec, rnd)))
                bx.append(EXACT if sr.bad or not _finite(ra) else
                          cancel_bound(max(_mag0(u), _mag0(v)) + 5, d, 2) if d[1] or u[1] or v[1] else 0)
                if lay.prob:
                    gt.append(a * one_eps * lay.w[j] * sr.neg_log_p(j))
                    bt.append(4 if sr.bound(j) != EXACT and _finite(ra) else EXACT)
        out = {"input": _moved(gx, lay.lead, C, lay.dim)}
        bounds = _moved(bx, lay.lead, C, lay.dim).reshape(-1).tolist()
        if lay.prob:
            out["target"] = _moved(gt, lay.lead, C, lay.dim)
            bounds += _moved(bt, lay.lead, C, lay.dim).reshape(-1).tolist()
        certify(out, bounds if lay.certifiable else [None] * len(bounds))
        return out


def _finite(t: tuple) -> bool:
    return bool(t[1]) or not t[2]


def nll_loss(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean", *,
             mean_over: str = "weights", empty_mean: str = "nan"):
    """Exact negative log-likelihood ``−w_y·input_y`` of log-probabilities ``input``. Certified:
    the coefficients are the weights themselves (ε = 0), each row one product rounded and one
    once-rounded sum (specials from the inputs alone)."""
    with workprec():
        lay = _layout(input, target, weight, ignore_index, 0.0, "eps_over_c", mean_over, empty_mean)
        prec, rnd = mp._prec_rounding
        vals, bounds = [], []
        for r, b in zip(lay.x, lay.betas):
            if b is None:
                vals.append(fzero)
                bounds.append(0)
                continue
            terms = [mpf_mul(bc._mpf_, xc._mpf_, prec, rnd) for bc, xc in zip(b, r) if bc._mpf_ != fzero]
            total = mpf_pos(sum_raw(terms, prec, rnd), prec, rnd)
            vals.append(mpf_neg(total, prec, rnd))  # −mp_sum(β_c·x_c)
            bounds.append(sum_bound([mag(t) for t in terms if t[1]], total))
        if not lay.certifiable:
            bounds = [None] * len(vals)
        return _reduced(lay, vals, bounds, reduction)


def nll_loss_grad(grad_output, input, target, weight=None, ignore_index: int = -100,
                  reduction: str = "mean", *, mean_over: str = "weights",
                  empty_mean: str = "nan") -> dict[str, np.ndarray]:
    """VJP of :func:`nll_loss`: ``−a_i·w_{y_i}`` at the target entry; every other entry (and every
    ignored row) does not enter the loss and gets exactly 0. Certified: ``a`` within 2u under a
    mean, one product."""
    with workprec():
        lay = _layout(input, target, weight, ignore_index, 0.0, "eps_over_c", mean_over, empty_mean)
        C = lay.x.shape[-1]
        g, bounds = [], []
        prec, rnd = mp._prec_rounding
        zero = mpf(0)
        for t, beta, a in zip(lay.t, lay.betas, lay.cotangent(grad_output, reduction)):
            y = int(t) if beta is not None else -1
            at = a._mpf_
            for c in range(C):  # −a·β_c at the target: the mpf operators' libmp steps
                g.append(mp.make_mpf(mpf_mul(mpf_neg(at, prec, rnd), beta[c]._mpf_, prec, rnd)) if c == y else zero)
            bounds.extend((2 if _finite(at) else EXACT) if c == y else 0 for c in range(C))
        out = {"input": _moved(g, lay.lead, C, lay.dim)}
        if not lay.certifiable:
            bounds = [None] * len(g)
        elif lay.dim != len(lay.lead):
            bounds = _moved(bounds, lay.lead, C, lay.dim).reshape(-1).tolist()
        certify(out, bounds)
        return out


# ----------------------------------------------------------------------------------------------
# Reduction sizes (the log2(n) allowance)


def _reduced_terms(inputs, params) -> int:
    """Rows summed by a ``sum``/``mean`` reduction, times the classes summed per row when the row
    loss is a sum over classes (label smoothing or probability targets)."""
    x = inputs["input"]
    if not np.ndim(x):
        return 1
    C = max(np.shape(x)[_class_dim(x)], 1)
    rows = np.size(x) // C if params.get("reduction", "mean") != "none" else 1
    soft = params.get("label_smoothing", 0.0) > 0 or is_floating(inputs["target"])
    return max(rows, 1) * (C if soft else 1)


# ----------------------------------------------------------------------------------------------
# Edge catalogue and generated cases

_F = np.float64


def _ce_case(id_, x, t, weight=None, note="", raises=None, **params) -> Case:
    t = np.asarray(t)
    inputs = {"input": np.asarray(x, dtype=_F) if raises is not TypeError else np.asarray(x),
              "target": t.astype(_F) if t.dtype.kind == "f" else t.astype(np.int64),
              "weight": None if weight is None else np.asarray(weight, dtype=_F)}
    return Case(id_, inputs, params, raises=raises, note=note)


def _shared_cases(prefix: str, with_smoothing: bool) -> list[Case]:
    """Edge and generated cases for index targets (cross_entropy and nll_loss share them)."""
    r = rng_for(prefix, "edge")
    x45 = logits(r, (4, 5), "half")
    ls = [0.0, 0.1, 1.0] if with_smoothing else [0.0]
    cases = []
    for red in ("none", "mean", "sum"):
        cases += [
            _ce_case(f"basic_{red}", x45, [0, 4, 2, 1], reduction=red),
            _ce_case(f"huge_1e4_{red}", [[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 1e4, -1e4]], [0, 0, 1],
                     reduction=red),
            _ce_case(f"ignore_some_{red}", x45, [0, -100, 3, -100], reduction=red),
            _ce_case(f"ignore_all_{red}", x45, [-100] * 4, reduction=red,
                     note="all ignored: mean is 0/0 = NaN, gradient 0"),
            _ce_case(f"empty_batch_{red}", np.zeros((0, 5)), np.zeros(0, np.int64), reduction=red),
            _ce_case(f"spatial_{red}", logits(r, (2, 3, 2, 2), "half"), class_indices(r, (2, 2, 2), 3),
                     reduction=red),
        ]
    cases += [
        _ce_case("all_equal", np.zeros((3, 4)), [0, 1, 3]),
        _ce_case("dominant_target_by_1e3", [[1000.0, 0.0, 0.0], [0.0, -1.0, 1000.0]], [0, 2], reduction="none",
                 note="loss ~ e^-1000: log1p form, no cancellation"),
        _ce_case("dominant_other_by_1e3", [[1000.0, 0.0, 0.0], [0.0, -1.0, 1000.0]], [1, 0], reduction="none"),
        _ce_case("tail_margin_20", [[20.0, 0.0], [0.0, 40.0]], [0, 1], reduction="none"),
        _ce_case("single_class", [[3.0], [-1e4]], [0, 0], reduction="none"),
        _ce_case("one_dim_input", [0.5, -1.0, 2.0], np.int64(2)),
        _ce_case("one_dim_ignored", [0.5, -1.0, 2.0], np.int64(-100), note="mean over nothing: NaN"),
        _ce_case("weights_with_zeros", x45, [0, 1, 2, 3], weight=[0.0, 2.0, 0.5, 1.0, 0.0]),
        _ce_case("weights_with_zeros_none", x45, [0, 1, 2, 3], weight=[0.0, 2.0, 0.5, 1.0, 0.0], reduction="none"),
        _ce_case("all_weights_zero", x45, [0, 4, 0, 4], weight=[0.0, 2.0, 0.5, 1.0, 0.0],
                 note="every target weight 0: mean is 0/0 = NaN, and so is the gradient (NaN cotangent × 0)"),
        _ce_case("ignore_index_is_class", x45, [0, 1, 1, 2], ignore_index=1),
        _ce_case("weight_and_ignore", x45, [3, -100, 2, 0], weight=[1.0, 2.0, 0.5, 4.0, 0.25]),
        _ce_case("fp16_overflow_11", [[11.125, -11.125, 0.0]], [1], reduction="none"),
        _ce_case("fp32_overflow_88", [[88.75, -88.75, 0.0], [89.0, 0.0, 0.0]], [1, 0], reduction="none"),
    ]
    for eps in ls[1:]:
        cases += [
            _ce_case(f"smoothing_{eps}", x45, [0, 4, 2, 1], label_smoothing=eps),
            _ce_case(f"smoothing_{eps}_none", x45, [0, 4, 2, 1], label_smoothing=eps, reduction="none"),
            _ce_case(f"smoothing_{eps}_weight_ignore", x45, [0, -100, 2, 1], weight=[1.0, 2.0, 0.5, 4.0, 0.0],
                     label_smoothing=eps),
            _ce_case(f"smoothing_{eps}_ignore_all", x45, [-100] * 4, label_smoothing=eps),
            _ce_case(f"smoothing_{eps}_huge", [[1e4, -1e4, 0.0]], [0], label_smoothing=eps, reduction="sum"),
        ]
    for grid in GRIDS:
        for i, (red, w) in enumerate([("mean", None), ("sum", True), ("none", None), ("mean", True)]):
            rg = rng_for(prefix, grid, i)
            C = int(rg.integers(2, 12))
            weight = np.abs(logits(rg, (C,), grid, 1.0)) if w else None
            t = class_indices(rg, (9,), C)
            t[rg.random(9) < 0.2] = -100
            smoothing = {"label_smoothing": 0.125 * (i % 2 == 0)} if with_smoothing else {}
            cases.append(_ce_case(f"random_{grid}_{i}", logits(rg, (9, C), grid), t, weight=weight, reduction=red,
                                  **smoothing))
    cases += _bad_input_cases(x45)
    return cases


def _bad_input_cases(x45) -> list[Case]:
    return [
        _ce_case("bad_target_batch", x45, [0, 1, 2], raises=ValueError, note="target shape mismatch"),
        _ce_case("bad_target_class", x45, [0, 1, 5, 2], raises=ValueError, note="class index out of range"),
        _ce_case("bad_target_negative", x45, [0, -1, 2, 2], raises=ValueError, note="negative index, not ignored"),
        _ce_case("bad_weight_length", x45, [0, 1, 2, 3], weight=[1.0, 1.0], raises=ValueError),
        _ce_case("bad_reduction", x45, [0, 1, 2, 3], reduction="avg", raises=ValueError),
        _ce_case("bad_integer_input", [[1, 2], [3, 4]], [0, 1], raises=TypeError, note="non-floating logits"),
    ]


def _ce_cases() -> list[Case]:
    r = rng_for("cross_entropy", "prob")
    x45 = logits(r, (4, 5), "half")
    soft = probabilities(r, (4, 5), "half")
    onehot = np.eye(5)[[0, 4, 2, 1]]
    cases = _shared_cases("cross_entropy", with_smoothing=True)
    cases += [
        _ce_case("prob_soft_mean", x45, soft),
        _ce_case("prob_soft_none", x45, soft, reduction="none"),
        _ce_case("prob_onehot_weight", x45, onehot, weight=[1.0, 2.0, 0.5, 4.0, 0.25]),
        _ce_case("prob_smoothing_0.1", x45, soft, label_smoothing=0.1, reduction="sum"),
        _ce_case("prob_spatial", logits(r, (2, 3, 2), "half"), probabilities(r, (2, 3, 2), "half")),
        _ce_case("prob_huge_1e4", [[1e4, -1e4, 0.0]], [[0.25, 0.5, 0.25]], reduction="sum"),
        _ce_case("bad_label_smoothing", x45, [0, 1, 2, 3], label_smoothing=1.5, raises=ValueError),
        _ce_case("bad_prob_target_shape", x45, soft[:, :4], raises=ValueError,
                 note="probability targets must have the input's shape"),
    ]
    for grid in GRIDS:
        rg = rng_for("cross_entropy", "prob", grid)
        cases.append(_ce_case(f"prob_random_{grid}", logits(rg, (6, 7), grid), probabilities(rg, (6, 7), grid),
                              weight=np.abs(logits(rg, (7,), grid, 1.0)), reduction="mean"))
    return cases


def _nll_cases() -> list[Case]:
    """The index-target catalogue with the logits replaced by exact log-softmax-like inputs."""
    return _shared_cases("nll_loss", with_smoothing=False)


_SMOOTHING_FORM = Convention(
    "smoothing_form", "eps_over_c", "index targets: eps_over_c ((1 − ε)·onehot + ε/C, PyTorch, Keras) | "
    "eps_over_c_minus_1 (1 − ε on the true class, ε/(C − 1) on each other one)", values=("eps_over_c_minus_1",))
_MEAN_OVER = Convention(
    "mean_over", "weights", "mean denominator: weights (Σ w_y of the counted targets, PyTorch; N·d1⋯ for probability "
    "targets) | targets (their count, weights not normalised) | rows (N·d1⋯, ignored rows counted: Keras, "
    "kornia-style masks) | elements (N·C·d1⋯: the mean over every entry of −q·log p)",
    values=("targets", "rows", "elements"))
_EMPTY_MEAN = Convention("empty_mean", "nan", "a mean over nothing (all ignored, empty batch, every weight 0): "
                                              "nan (0/0, PyTorch) | zero (Keras ignore_class)", values=("zero",))

_LOSS_SPECS = (
    Spec(
        name="cross_entropy",
        signature='cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", '
                  "label_smoothing=0.0)",
        definition="l_i = (1−ε) w_y (−log p_iy) + (ε/C) Σ_c w_c (−log p_ic), 0 if ignored; mean = Σ l / Σ w_y; "
                   "probability targets: −Σ_c w_c q_ic log p_ic, q = (1−ε)t + ε/C, mean = Σ l / N",
        source="PyTorch docs torch.nn.functional.cross_entropy; Szegedy et al. 2016 (label smoothing)",
        args=(Arg("input", "logits", differentiable=True), Arg("target", "class_index_or_probability_target",
                                                                 differentiable=True),
              Arg("weight", "weight", positional=False)),
        params={"ignore_index": -100, "reduction": "mean", "label_smoothing": 0.0},
        oracle=cross_entropy,
        gradient=cross_entropy_grad,
        cases=_ce_cases,
        conventions=(_SMOOTHING_FORM, _MEAN_OVER, _EMPTY_MEAN),
        reduced_terms=_reduced_terms,
        edge_notes=("all targets ignored or an empty batch under mean: NaN (0/0); ignored rows receive no "
                    "cotangent, so the gradient is 0",
                    "every non-ignored target weight 0 under mean: NaN, and the gradient is NaN (the chain rule "
                    "with cotangent g/0)",
                    "a −inf logit with label_smoothing > 0 gives +inf",
                    "probability target 0 on a −inf logit contributes 0 (0·log 0 = 0)"),
    ),
    Spec(
        name="nll_loss",
        signature='nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean")',
        definition="l_i = −w_y input_iy, 0 if ignored; mean = Σ l / Σ w_y",
        source="PyTorch docs torch.nn.functional.nll_loss",
        args=(Arg("input", "log_probabilities", differentiable=True), Arg("target", "class_index"),
              Arg("weight", "weight", positional=False)),
        params={"ignore_index": -100, "reduction": "mean"},
        oracle=nll_loss,
        gradient=nll_loss_grad,
        cases=_nll_cases,
        conventions=(_MEAN_OVER, _EMPTY_MEAN),
        reduced_terms=_reduced_terms,
        edge_notes=("all targets ignored or an empty batch under mean: NaN (0/0)",),
    ),
)


SPECS = (*_SOFTMAX_SPECS, *_LOSS_SPECS)
