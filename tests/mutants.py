"""Deliberately wrong implementations (mutants), and honest ones, with the grading each must get.

Every entry of :data:`MUTANTS` is data: a callable with the canonical signature of one loss, the
framework it runs under (and the NumPy VJP where the framework needs one), which dtypes and cases
to run, the dtypes where the defect applies, and the *reason* a correct grading gives — the
findings (``Result.finding``: ``nonfinite``, ``sign``, ``gross``, ``inaccurate``, ``tail``,
``dtype``, ``shape``, ``error``, ``not_credited``, …) that must show up. ``tests/test_mutants.py``
runs :func:`lossoracle.check` on each entry and asserts both the verdict and the reason. Adding a
mutant is adding one :class:`Mutant` to the list.

Most mutants wrap one of our own implementations (which conform on every case) and change one
thing, so that whatever the grading reports can only come from the injected defect; in the dtypes
a defect does not reach, the same cell must still conform.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from lossoracle import specs
from lossoracle.implementations import torch_impl

ALL_DTYPES = ("float16", "bfloat16", "float32", "float64")
# Failing findings of a numerically wrong result (compare.FINDINGS, less "tail").
NUMERIC = frozenset({"nonfinite", "sign", "gross", "inaccurate"})


@dataclass(frozen=True)
class Mutant:
    """One implementation under test and the grading it must get.

    ``expect``: at least one of these findings must be observed (the reason the defect is
    caught); ``allow``: every failing or tail finding observed must be in ``expect | allow`` (the
    grading blames the right thing and nothing else). ``defective``: the dtypes whose cell must
    not conform (``None``: every dtype run); every other dtype run must conform. ``honest``:
    must not be flagged — each cell's verdict is ``verdicts.get(dtype, "conforms")``, and a
    ``tail`` cell has only ``tail`` findings. ``tail_only``: the defect is only the loss of
    relative accuracy on tiny results — cells ``tail``, ``report.passes()`` still True.
    """

    name: str
    loss: str
    fn: Callable
    framework: str = "torch"
    grad: Callable | None = None
    expect: frozenset[str] = frozenset()
    allow: frozenset[str] = frozenset()
    dtypes: tuple[str, ...] = ALL_DTYPES
    cases: Callable | tuple[str, ...] | None = None  # ids, or a predicate on the Case
    defective: tuple[str, ...] | None = None
    honest: bool = False
    tail_only: bool = False
    verdicts: dict[str, str] = field(default_factory=dict)
    why: str = ""

    def case_ids(self) -> list[str] | None:
        if self.cases is None or isinstance(self.cases, tuple):
            return None if self.cases is None else list(self.cases)
        return [c.id for c in specs.get(self.loss).cases() if self.cases(c)]


def valid_only(*excluded: str) -> Callable:
    """Cases on valid input (input validation is not what these numerics tests are about)."""
    return lambda c: c.raises is None and c.id not in excluded


def _wide(x: torch.Tensor) -> torch.dtype:
    """Working dtype: float32 for the half formats (the grading's u_c assumes it), else x's."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


# --------------------------------------------------------------------------------------------
# Honest implementations, written from the math.


def _softmax_wide(x: torch.Tensor, dim: int) -> torch.Tensor:
    xw = x.to(_wide(x))
    e = torch.exp(xw - torch.amax(xw, dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def _softmax_vjp_pairwise(p: torch.Tensor, g: torch.Tensor, dim: int) -> torch.Tensor:
    """p_i · Σ_j p_j (g_i − g_j): no cancellation between large terms (g_i − g_j is exact for
    the checker's cotangents, and every product is of non-negative p's)."""
    p, g = p.movedim(dim, -1), g.movedim(dim, -1)
    inner = (p.unsqueeze(-2) * (g.unsqueeze(-1) - g.unsqueeze(-2))).sum(-1)
    return (p * inner).movedim(-1, dim)


def _softmax_vjp_naive(p: torch.Tensor, g: torch.Tensor, dim: int) -> torch.Tensor:
    """p · (g − Σ g·p), as PyTorch's backward: cancels when one probability dominates."""
    return p * (g - (g * p).sum(dim=dim, keepdim=True))


def _flip_below(grad: torch.Tensor, dim: int, ratio: float = 1e-9) -> torch.Tensor:
    """Flip the sign of every entry below ``ratio`` of the row's largest magnitude."""
    row_max = grad.abs().amax(dim=dim, keepdim=True)
    return torch.where(grad.abs() < ratio * row_max, -grad, grad)


def _softmax_function(vjp: Callable, wide: bool = True) -> Callable:
    """softmax as a torch.autograd.Function with the VJP ``vjp(p, g, dim)`` evaluated in the
    working dtype, on the working-precision p (``wide``) or, as PyTorch's own backward, on the
    output p rounded to the input dtype."""

    class _Softmax(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, dim):
            p = _softmax_wide(x, dim)
            ctx.save_for_backward(p if wide else p.to(x.dtype).to(p.dtype))
            ctx.dim, ctx.dtype = dim, x.dtype
            return p.to(x.dtype)

        @staticmethod
        def backward(ctx, g):
            (p,) = ctx.saved_tensors
            return vjp(p, g.to(p.dtype), ctx.dim).to(ctx.dtype), None

    def softmax(input, dim):
        return _Softmax.apply(input, dim)

    return softmax


honest_softmax_torch = _softmax_function(_softmax_vjp_pairwise)


def honest_log_softmax_textbook(input, dim):
    """x − m − log Σ exp(x − m) (in float32 for the half formats)."""
    x = input.to(_wide(input))
    m = torch.amax(x, dim=dim, keepdim=True).detach()
    return (x - m - torch.log(torch.exp(x - m).sum(dim=dim, keepdim=True))).to(input.dtype)


def _softplus(z: torch.Tensor) -> torch.Tensor:
    """softplus(z) = max(z, 0) + log1p(exp(−|z|)), with max and |z| taking the same branch at
    z = 0 so that autograd differentiates one analytic piece (z + log1p(e^−z)) and gets σ(0) = ½."""
    pos = z >= 0
    return torch.where(pos, z, torch.zeros_like(z)) + torch.log1p(torch.exp(torch.where(pos, -z, z)))


def _softplus_clamp_abs(z: torch.Tensor) -> torch.Tensor:
    """The same formula with clamp and abs: autograd takes d max(z, 0)/dz = 1 and d|z|/dz = 0
    at z = 0, so the derivative there is 1, not σ(0) = ½."""
    return torch.clamp(z, min=0) + torch.log1p(torch.exp(-z.abs()))


def _bce_with_logits_textbook(softplus: Callable) -> Callable:
    def bce_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
        """l = w·[pw·y·softplus(−x) + (1 − y)·softplus(x)], softplus(z) = max(z, 0) + log1p(e^−|z|):
        with pw = 1 this is max(x, 0) − x·y + log1p(e^−|x|), the textbook stable form."""
        x, y = input.to(_wide(input)), target.to(_wide(input))
        pw = 1.0 if pos_weight is None else pos_weight.to(x.dtype)
        loss = pw * y * softplus(-x) + (1 - y) * softplus(x)
        if weight is not None:
            loss = weight.to(x.dtype) * loss
        loss = {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]
        return loss.to(input.dtype)

    return bce_with_logits


honest_bce_with_logits_textbook = _bce_with_logits_textbook(_softplus)
bce_with_logits_clamp_abs = _bce_with_logits_textbook(_softplus_clamp_abs)


def _np_wide(x: np.ndarray) -> np.dtype:
    return np.promote_types(x.dtype, np.float32)


def _np_softmax_wide(x: np.ndarray, dim: int) -> np.ndarray:
    xw = x.astype(_np_wide(x))
    e = np.exp(xw - np.max(xw, axis=dim, keepdims=True)) if xw.size else xw
    return e / np.sum(e, axis=dim, keepdims=True) if xw.size else xw


def honest_softmax_numpy(input, dim):
    """exp(x − m) / Σ exp(x − m), in float32 for float16 input."""
    return _np_softmax_wide(input, dim).astype(input.dtype)


def honest_softmax_numpy_grad(grad_output, input, dim):
    """The cancellation-free VJP p_i · Σ_j p_j (g_i − g_j)."""
    p = np.moveaxis(_np_softmax_wide(input, dim), dim, -1)
    g = np.moveaxis(grad_output.astype(p.dtype), dim, -1)
    inner = np.sum(p[..., None, :] * (g[..., :, None] - g[..., None, :]), axis=-1)
    return {"input": np.moveaxis(p * inner, -1, dim).astype(input.dtype)}


def naive_softmax_numpy_grad(grad_output, input, dim):
    """p · (g − Σ g·p) on the output p (rounded to the input dtype), in the working dtype."""
    p = honest_softmax_numpy(input, dim).astype(_np_wide(input))
    g = grad_output.astype(p.dtype)
    return {"input": (p * (g - np.sum(g * p, axis=dim, keepdims=True))).astype(input.dtype)}


# --------------------------------------------------------------------------------------------
# Mutants.


def always_raises(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    raise RuntimeError("this implementation never works")


def raises_for_float16(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    if input.dtype == torch.float16:
        raise RuntimeError('"log_softmax_lastdim_kernel_impl" not implemented for \'Half\'')
    return torch_impl.cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)


def misspelled_keyword(input, target, weight=None, ignore_index=-100, reduction="mean", label_smothing=0.0):
    return torch_impl.cross_entropy(input, target, weight, ignore_index, reduction, label_smothing)


def keepdim_reduction(input, target, weight=None, reduction="mean", pos_weight=None):
    """A reduced loss of shape (1,) instead of a scalar."""
    out = torch_impl.binary_cross_entropy_with_logits(input, target, weight, reduction, pos_weight)
    return out if reduction == "none" else out.reshape(1)


def float32_returns_float64(input, dim):
    """Computes float32 input in float64 and forgets to cast back."""
    return torch_impl.softmax(input.double() if input.dtype == torch.float32 else input, dim)


sign_flip_softmax = _softmax_function(lambda p, g, dim: _flip_below(_softmax_vjp_pairwise(p, g, dim), dim))
naive_vjp_softmax = _softmax_function(_softmax_vjp_naive, wide=False)


def _ftz(t: torch.Tensor) -> torch.Tensor:
    """Every element below the dtype's epsilon (in magnitude) flushed to zero."""
    return torch.where(t.abs() < torch.finfo(t.dtype).eps, torch.zeros_like(t), t)


class _FlushGrad(torch.autograd.Function):
    """Identity forward; flushes the tiny entries of the gradient flowing back."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return _ftz(g)


def flush_to_zero(input, target, weight=None, reduction="mean", pos_weight=None):
    """Results (value and input gradient) below the dtype's epsilon flushed to zero: an absolute
    error below eps ≤ k·u·S, i.e. only relative accuracy is lost, on tiny results."""
    out = torch_impl.binary_cross_entropy_with_logits(_FlushGrad.apply(input), target, weight, reduction, pos_weight)
    return _FlushValue.apply(out)


class _FlushValue(torch.autograd.Function):
    """Flushes the tiny values; the gradient passes unchanged."""

    @staticmethod
    def forward(ctx, x):
        return _ftz(x)

    @staticmethod
    def backward(ctx, g):
        return g


def log_of_softmax(input, dim):
    return torch.log(torch_impl.softmax(input, dim))


def smoothing_over_c_minus_1(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Label smoothing that gives the true class 1 − ε and each other class ε/(C − 1), instead of
    (1 − ε)·onehot + ε/C."""
    if label_smoothing == 0.0 or target.is_floating_point():
        return torch_impl.cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)
    cdim = 1 if input.ndim > 1 else 0
    n_classes = input.shape[cdim]
    logp = torch_impl.log_softmax(input, cdim)
    w = torch.ones(n_classes, dtype=input.dtype, device=input.device) if weight is None else weight
    shape = [1] * input.ndim
    shape[cdim] = n_classes
    valid = target != ignore_index
    t = torch.where(valid, target, torch.zeros_like(target))
    onehot = F.one_hot(t, n_classes).movedim(-1, cdim).to(input.dtype)
    q = (1 - label_smoothing) * onehot + label_smoothing / (n_classes - 1) * (1 - onehot)
    per = torch.where(valid, -(w.view(shape) * q * logp).sum(cdim), torch.zeros((), dtype=input.dtype))
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / torch.where(valid, w[t], torch.zeros((), dtype=input.dtype)).sum()


def weighted_mean_over_n(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """The weighted mean divided by the number of non-ignored targets, not by Σ w_y."""
    if reduction != "mean" or weight is None or target.is_floating_point():
        return torch_impl.cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)
    total = torch_impl.cross_entropy(input, target, weight, ignore_index, "sum", label_smoothing)
    return total / (target != ignore_index).sum().to(total.dtype)


def doubled_bce_with_logits(input, target, weight=None, reduction="mean", pos_weight=None):
    """Twice PyTorch's value: grossly wrong on every ordinary input, and NaN at x = ±inf (as PyTorch)."""
    return 2 * F.binary_cross_entropy_with_logits(input, target, weight=weight, reduction=reduction,
                                                  pos_weight=pos_weight)


def clipped_bce(input, target, weight=None, reduction="mean"):
    """Keras-style: probabilities clipped to [1e-7, 1 − 1e-7] before the logarithms."""
    return torch_impl.binary_cross_entropy(input.clamp(1e-7, 1 - 1e-7), target, weight, reduction)


def float64_in_float32(input, dim):
    """float64 input computed in float32 and cast back: only the accuracy betrays it."""
    if input.dtype == torch.float64:
        return torch_impl.log_softmax(input.float(), dim).double()
    return torch_impl.log_softmax(input, dim)


def jax_log_of_softmax(input, dim):
    import jax

    return jax.numpy.log(jax.nn.softmax(input, axis=dim))


def clipped_bce_at(c: float | None) -> Callable:
    """BCE of p clipped to [c, 1 − c] (``None``: the dtype's machine epsilon, as scikit-learn)."""

    def bce(input, target, weight=None, reduction="mean"):
        eps = torch.finfo(input.dtype).eps if c is None else c
        return torch_impl.binary_cross_entropy(input.clamp(eps, 1 - eps), target, weight, reduction)

    bce.__qualname__ = f"clipped_bce_at_{'eps' if c is None else format(c, 'g')}"
    return bce


def bce_log_clamp_100(input, target, weight=None, reduction="mean"):
    """−w·[y·max(log p, −100) + (1 − y)·max(log(1 − p), −100)] in float64 (as PyTorch's forward),
    differentiated through the clamp (no gradient where a logarithm is clamped)."""
    p, y = input.double(), target.double()
    floor = math.exp(-100.0)

    def clamped(log, q, live):  # the unclamped branch never sees a clamped q: no 0·inf in the backward
        return torch.where(live, log(torch.where(live, q, torch.full_like(q, 0.5))), torch.full_like(q, -100.0))

    loss = -(y * clamped(torch.log, p, p > floor) + (1 - y) * clamped(lambda q: torch.log1p(-q), p, 1 - p > floor))
    if weight is not None:
        loss = loss * weight.double()
    loss = loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss
    return loss.to(input.dtype)


def mean_over_n_times_c(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """A mean over every entry N·C·d1⋯ (the mean of the per-class map −q·log p), not over the targets."""
    if reduction != "mean":
        return torch_impl.cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)
    total = torch_impl.cross_entropy(input, target, weight, ignore_index, "sum", label_smoothing)
    return total / input.numel()


def normalised_entropy(p, dim=-1):
    """Rows divided by their sums first (scipy.stats.entropy)."""
    return torch_impl.entropy(p / p.sum(dim, keepdim=True), dim)


@dataclass(frozen=True)
class Planted:
    """An implementation following another documented convention than the spec's default, and the
    setting the convention search must report as matching in every dtype run."""

    name: str
    loss: str
    fn: Callable
    convention: str  # Setting.shown of the expected match
    dtypes: tuple[str, ...] = ALL_DTYPES
    cases: Callable | tuple[str, ...] | None = None
    verdict: str = "conforms"  # the cell's verdict under the matching setting
    why: str = ""

    def case_ids(self) -> list[str] | None:
        return Mutant.case_ids(self)  # type: ignore[arg-type]


_NO_NAN = valid_only("nan_propagates", "nan_mean")
PLANTED: list[Planted] = [
    Planted("smoothing_eps_over_c_minus_1", "cross_entropy", smoothing_over_c_minus_1,
            "smoothing_form='eps_over_c_minus_1'",
            cases=("smoothing_0.1", "smoothing_0.1_none", "smoothing_1.0_none", "smoothing_0.1_weight_ignore",
                   "random_half_0", "random_float64_0", "basic_mean")),
    Planted("weighted_mean_over_n", "cross_entropy", weighted_mean_over_n, "mean_over='targets'",
            cases=("basic_mean", "weights_with_zeros", "weight_and_ignore", "smoothing_0.1_weight_ignore",
                   "random_float64_3")),
    Planted("mean_over_n_times_c", "cross_entropy", mean_over_n_times_c, "mean_over='elements'",
            cases=("basic_mean", "ignore_some_mean", "spatial_mean", "weight_and_ignore", "random_float32_0",
                   "prob_soft_mean")),
    *(Planted(f"clipped_bce_{c:g}", "binary_cross_entropy", clipped_bce_at(c), f"probability_clip={c!r}",
              dtypes=("float32", "float64") if c == 1e-7 else ("float64",), cases=valid_only())
      for c in (1e-7, 1e-8, 1e-12, 1e-15)),
    Planted("clipped_bce_eps", "binary_cross_entropy", clipped_bce_at(None), "probability_clip=eps (",
            dtypes=("float32", "float64"), cases=valid_only()),
    Planted("bce_log_clamp_100", "binary_cross_entropy", bce_log_clamp_100, "log_floor=-100.0", cases=_NO_NAN),
    Planted("normalised_entropy", "entropy", normalised_entropy, "normalize=True", dtypes=("float32", "float64"),
            cases=lambda c: c.raises is None and np.size(c.inputs["p"]) > 0 and bool(np.all(c.inputs["p"] > 0))
            and bool(np.all(np.isfinite(c.inputs["p"]))), verdict="tail",
            why="autograd through p/Σp: 0·inf = NaN at p = 0 (so no zeros), and tiny gradients lose their relative "
                "accuracy (−1.0e-6 for −9.9e-7 beside p = 1 − 2^-24): tail under the matching setting"),
    Planted("float64_computed_in_float32", "log_softmax", float64_in_float32, "compute_dtype='float32'",
            dtypes=("float64",), cases=valid_only()),
]


# The BCE-with-logits cases the textbook formula cannot do: an infinite logit or a zero weight
# on an infinite term makes 0·inf = NaN where the spec takes the limit.
_INFINITE = ("infinite_logits", "infinite_logit_pos_weight_zero", "zero_weight_masks_infinite")
# NaN propagation: the spec makes every derivative of an element NaN when any of its inputs is
# NaN, also d/dy of a loss linear in y (where the textbook formula's autograd gives a number).
_NAN = ("nan_propagates", "nan_mean")
_CE_QUICK = ("basic_mean", "basic_none", "basic_sum", "smoothing_0.1", "smoothing_0.1_none", "smoothing_1.0",
             "random_half_0", "random_half_2", "random_float32_0", "random_float64_0", "bad_reduction",
             "bad_target_class")

MUTANTS: list[Mutant] = [
    Mutant("always_raises", "cross_entropy", always_raises, cases=_CE_QUICK,
           expect=frozenset({"error"}), allow=frozenset({"not_credited"}),
           why="raises on every valid case: error, and its raising on bad input is not credited"),
    Mutant("raises_for_float16", "cross_entropy", raises_for_float16, cases=_CE_QUICK,
           defective=("float16",), expect=frozenset({"error"}),
           why="raises only for float16: that cell is an error, the others conform"),
    Mutant("misspelled_label_smoothing", "cross_entropy", misspelled_keyword, cases=_CE_QUICK,
           expect=frozenset({"error"}),
           why="label_smothing=: every call passing label_smoothing raises TypeError"),
    Mutant("keepdim_reduction_shape", "binary_cross_entropy_with_logits", keepdim_reduction,
           cases=("basic_none", "basic_mean", "basic_sum", "tail_40"), expect=frozenset({"shape"}),
           why="mean/sum of shape (1,) instead of ()"),
    Mutant("float32_returns_float64", "softmax", float32_returns_float64, defective=("float32",),
           cases=valid_only(), expect=frozenset({"dtype"}),
           why="float32 input comes back as float64 (accurate, but an undeclared dtype change)"),
    Mutant("softmax_vjp_sign_flip", "softmax", sign_flip_softmax, cases=valid_only(),
           defective=("float32", "float64"), expect=frozenset({"sign"}), allow=frozenset({"tail"}),
           why="a VJP that flips every entry below 1e-9 of the row's largest: wrong sign where it is "
               "determined (1.4e-39 beside 88.75, case fp32_overflow_88; the half-format cases have no "
               "nonzero entry that small: in float16 p ≥ 6e-8, and that case is not exact in bfloat16)"),
    Mutant("flush_to_zero", "binary_cross_entropy_with_logits", flush_to_zero, cases=valid_only(),
           tail_only=True, expect=frozenset({"tail"}),
           why="values and gradients below eps flushed to 0: absolute error below eps ≤ k·u·S, only the "
               "relative accuracy of tiny results is lost — tail, not deviates"),
    Mutant("softmax_vjp_naive", "softmax", naive_vjp_softmax, cases=valid_only(),
           expect=frozenset({"sign"}), allow=frozenset({"tail"}),
           verdicts={"float16": "deviates", "bfloat16": "deviates", "float32": "tail", "float64": "tail"},
           why="p·(g − Σ g·p) on the output p cancels when one probability dominates: from the p rounded "
               "to a half format, the wrong sign (−1.5e-4 for 6.5e-5, as F.softmax); in float32/float64 "
               "the error stays below k·u·S, so only the tail (0 for 2.7e-8, 0 for −1e-30)"),
    Mutant("log_of_softmax", "log_softmax", log_of_softmax, cases=valid_only(),
           expect=frozenset({"nonfinite"}), allow=NUMERIC | {"tail"},
           why="softmax underflows to 0 and log gives −inf for a finite log-probability"),
    Mutant("smoothing_eps_over_c_minus_1", "cross_entropy", smoothing_over_c_minus_1,
           cases=("smoothing_0.1", "smoothing_0.1_none", "smoothing_1.0", "smoothing_1.0_none",
                  "smoothing_0.1_weight_ignore", "random_half_0", "random_float32_0", "random_float64_0"),
           expect=frozenset({"gross", "inaccurate"}), allow=frozenset({"sign", "tail"}),
           why="the smoothing mass spread as ε/(C − 1) over the other classes"),
    Mutant("weighted_mean_over_n", "cross_entropy", weighted_mean_over_n,
           cases=("basic_mean", "weights_with_zeros", "weight_and_ignore", "all_weights_zero",
                  "smoothing_0.1_weight_ignore"),
           expect=frozenset({"gross", "inaccurate"}), allow=frozenset({"nonfinite", "tail"}),
           why="Σ w·l / N instead of Σ w·l / Σ w_y (and 0 instead of 0/0 = NaN when every weight is 0)"),
    Mutant("clipped_bce", "binary_cross_entropy", clipped_bce, cases=valid_only(),
           expect=frozenset({"nonfinite", "gross"}), allow=NUMERIC,
           why="p clipped to [1e-7, 1 − 1e-7]: finite where the loss is +inf, wrong near 0 and 1"),
    Mutant("float64_computed_in_float32", "log_softmax", float64_in_float32, cases=valid_only(),
           defective=("float64",), expect=frozenset({"inaccurate"}), allow=frozenset({"tail"}),
           why="float64 in, float64 out, float32 digits: beyond the float64 conditioning bound"),
    Mutant("numpy_softmax_vjp_naive", "softmax", honest_softmax_numpy, framework="numpy",
           grad=naive_softmax_numpy_grad, dtypes=("float16", "float32", "float64"), cases=valid_only(),
           expect=frozenset({"sign"}), allow=frozenset({"tail"}),
           verdicts={"float16": "deviates", "float32": "tail", "float64": "tail"},
           why="the naive VJP in NumPy: as softmax_vjp_naive"),
    Mutant("jax_log_of_softmax", "log_softmax", jax_log_of_softmax, framework="jax",
           dtypes=("float32", "float64"), cases=("huge_1e4", "dominant_by_1e3", "random_float32_0"),
           expect=frozenset({"nonfinite"}), allow=NUMERIC | {"tail"},
           why="log(softmax(x)) in JAX"),
    Mutant("bce_with_logits_textbook_infinite", "binary_cross_entropy_with_logits",
           honest_bce_with_logits_textbook, cases=_INFINITE, expect=frozenset({"nonfinite"}),
           why="the textbook form has no limits at ±inf: 0·inf = NaN where the spec says 0 or inf"),
    Mutant("bce_with_logits_clamp_abs_autograd", "binary_cross_entropy_with_logits", bce_with_logits_clamp_abs,
           cases=("tiny_logits", "basic_none"), defective=("bfloat16", "float32", "float64"),
           expect=frozenset({"gross"}), allow=frozenset({"tail"}),
           why="the textbook form written with clamp(min=0) and abs: autograd's derivative at x = 0 is "
               "1·(1 − y) − y·1 instead of σ(0) − y (tiny_logits is not exact in float16: that cell "
               "runs basic_none only, and conforms)"),
    Mutant("doubled_bce_with_logits", "binary_cross_entropy_with_logits", doubled_bce_with_logits,
           dtypes=("float32", "float64"), cases=("tiny_logits", "scalar_none", "infinite_logits"),
           expect=frozenset({"gross", "nonfinite"}), allow=NUMERIC | {"tail"},
           why="2× the loss: gross on ordinary inputs, and NaN at x = ±inf (tests/test_findings.py: the gross "
               "error is listed under its tag, not hidden behind the NaN)"),
    # ---- honest: must not be flagged.
    Mutant("honest_softmax_torch", "softmax", honest_softmax_torch, honest=True, cases=valid_only(),
           why="stable forward, cancellation-free VJP (torch.autograd.Function)"),
    Mutant("honest_softmax_numpy", "softmax", honest_softmax_numpy, framework="numpy",
           grad=honest_softmax_numpy_grad, dtypes=("float16", "float32", "float64"), honest=True,
           cases=valid_only(), why="NumPy softmax with the cancellation-free VJP"),
    Mutant("honest_log_softmax_textbook", "log_softmax", honest_log_softmax_textbook, honest=True,
           cases=valid_only(), verdicts={"bfloat16": "tail", "float32": "tail", "float64": "tail"},
           why="x − m − log Σ exp(x − m) returns 0 at the dominant class, where the exact value is "
               "−log1p(Σ_other e^(x−m)) (−5.2e-8, −7.3e-31): the error is below k·u·S, so tail — "
               "legitimately, it is the textbook's known limit (log1p of the rest is exact). float16: "
               "0 for −5.2e-8 is within the budget (the subnormal spacing is 6e-8), so conforms"),
    Mutant("honest_bce_with_logits_textbook", "binary_cross_entropy_with_logits",
           honest_bce_with_logits_textbook, honest=True, cases=valid_only(*_INFINITE, *_NAN),
           verdicts={"bfloat16": "tail", "float32": "tail", "float64": "tail"},
           why="max(x, 0) − x·y + log1p(exp(−|x|)) (softplus form with pos_weight): the value and input "
               "gradient conform; the target gradient softplus(−x) − softplus(x) = −x cancels to 0 for "
               "tiny x (−6.5e-19, case tiny_logits) — tail, legitimately (float16 cannot hold such x)"),
]
