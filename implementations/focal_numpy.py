"""NumPy focal losses: values and explicit vector-Jacobian products.

``sigmoid_focal_loss`` (torchvision's signature and semantics) and ``softmax_focal_loss``
(class-index targets, class axis 1), computed by :mod:`focal_core` in a wider arithmetic —
float32 data in float64, float16 in float32, float64 in double-double — and rounded once to the
data's dtype, so values and gradients are faithful (a few tenths of an ULP measured) over the
whole logit range, the saturated tails included. Reductions are summed in the wide arithmetic.
"""

from __future__ import annotations

import math

import numpy as np

from .focal_core import arithmetic, sigmoid_focal_terms, softmax_focal_terms
from .validation import class_target_shape, require_floating, require_range, require_reduction, require_same_shape

__all__ = ["sigmoid_focal_loss", "sigmoid_focal_loss_grad", "softmax_focal_loss", "softmax_focal_loss_grad"]

MEAN_OVER = ("elements", "positives")


def check_gamma(gamma: float) -> float:
    """γ must be a finite number ≥ 0."""
    g = float(gamma)
    if not (math.isfinite(g) and g >= 0):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")
    return g


def check_alpha(alpha, n_classes: int | None = None):
    """Sigmoid (``n_classes`` None): α ∈ [0, 1], or −1 / None to disable — returns the float or None.
    Softmax: None, a scalar in [0, 1], or ``n_classes`` values in [0, 1] — returns None, a float or an array."""
    if alpha is None:
        return None
    a = np.asarray(alpha, dtype=np.float64)
    if n_classes is None or a.ndim == 0:
        if a.ndim != 0:
            raise ValueError(f"alpha must be a number, got an array of shape {a.shape}")
        v = float(a)
        if n_classes is None and v == -1:
            return None
        if not 0.0 <= v <= 1.0:
            extra = " or -1 (no weighting)" if n_classes is None else ""
            raise ValueError(f"alpha must lie in [0, 1]{extra}, got {alpha!r}")
        return v
    if a.shape != (n_classes,):
        raise ValueError(f"alpha must be a number or hold one value per class ({n_classes}), got shape {a.shape}")
    if not bool(np.all((a >= 0) & (a <= 1))):
        raise ValueError(f"alpha values must lie in [0, 1], got {a.tolist()!r}")
    return a


def _dtype(*arrays) -> np.dtype:
    return np.result_type(*arrays)


def _flat_sum(A, v):
    if isinstance(v, tuple):
        return A.sum_last((v[0].reshape(-1), v[1].reshape(-1)))
    return A.sum_last(v.reshape(-1))


def _scalar(A, value: float, like):
    return A.const(value, np.zeros((), dtype=like.dtype if not isinstance(like, tuple) else like[0].dtype))


# ----------------------------------------------------------------------------------------------
# Sigmoid focal loss


def _sigmoid_setup(inputs, targets, alpha, gamma, reduction, mean_over):
    inputs, targets = np.asarray(inputs), np.asarray(targets)
    require_floating("inputs", inputs)
    require_floating("targets", targets)
    require_same_shape("targets", targets, "inputs", inputs)
    require_range("targets", targets, 0.0, 1.0)
    require_reduction(reduction)
    if mean_over not in MEAN_OVER:
        raise ValueError(f"mean_over must be one of {MEAN_OVER}, got {mean_over!r}")
    a, g = check_alpha(alpha), check_gamma(gamma)
    dtype = _dtype(inputs, targets)
    A, cdt = arithmetic(dtype.name)
    return A, inputs.astype(cdt), targets.astype(cdt), a, g, dtype


def _sigmoid_den(targets, mean_over: str) -> float:
    if mean_over == "positives":
        return float(max(1, int(np.sum(targets == 1))))
    return float(targets.size)


def sigmoid_focal_loss(inputs, targets, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "none", *,
                       mean_over: str = "elements") -> np.ndarray:
    """``α_t (1 − p_t)^γ BCE(x, y)``, ``p_t = σ(x)·y + σ(−x)(1 − y)``, ``α_t = α·y + (1 − α)(1 − y)``.

    ``alpha = −1`` (or None) disables ``α_t``; soft targets in [0, 1] use the linear ``p_t``.
    ``reduction``: ``none`` | ``mean`` | ``sum``; ``mean_over="positives"`` makes ``mean`` the
    RetinaNet normalisation ``Σ ℓ / max(1, #{y = 1})``.
    """
    A, x, y, a, g, dtype = _sigmoid_setup(inputs, targets, alpha, gamma, reduction, mean_over)
    with np.errstate(all="ignore"):
        value, _, _ = sigmoid_focal_terms(A, x, y, a, g, grads=False)
        if reduction == "none":
            return A.round(value).astype(dtype)
        total = _flat_sum(A, value)
        if reduction == "mean":
            total = A.div(total, _scalar(A, _sigmoid_den(y, mean_over) if y.size else 0.0, x))
        return np.asarray(A.round(total)).astype(dtype)


def sigmoid_focal_loss_grad(grad_output, inputs, targets, alpha: float = 0.25, gamma: float = 2.0,
                            reduction: str = "none", *, mean_over: str = "elements") -> dict[str, np.ndarray]:
    """VJP of :func:`sigmoid_focal_loss` w.r.t. ``inputs`` and ``targets``.

    Both derivatives come from cancellation-free forms (:func:`focal_core.sigmoid_focal_terms`);
    for γ < 1 at saturated logits they return the finite limit 0.
    """
    A, x, y, a, g, dtype = _sigmoid_setup(inputs, targets, alpha, gamma, reduction, mean_over)
    go = np.asarray(grad_output).astype(x.dtype)
    with np.errstate(all="ignore"):
        _, dx, dy = sigmoid_focal_terms(A, x, y, a, g, grads=True)
        g_elem = go if reduction == "none" else go.reshape(-1)[0]
        cot = A.lift(np.broadcast_to(g_elem, x.shape).copy())
        if reduction == "mean":
            cot = A.div(cot, A.const(_sigmoid_den(y, mean_over) if y.size else 0.0, x))
        return {"inputs": A.round(A.mul(dx, cot)).astype(dtype), "targets": A.round(A.mul(dy, cot)).astype(dtype)}


# ----------------------------------------------------------------------------------------------
# Softmax focal loss


def _softmax_setup(input, target, alpha, gamma, ignore_index, reduction):
    input, target = np.asarray(input), np.asarray(target)
    require_floating("input", input)
    if input.ndim < 2:
        raise ValueError(f"input must have shape (N, C) or (N, C, d1, ...), got {input.shape}")
    if target.dtype.kind not in "iu":
        raise TypeError(f"target must hold class indices (an integer array), got dtype {target.dtype}")
    want = class_target_shape(input.shape)
    if target.shape != want:
        raise ValueError(f"target shape {target.shape} does not match the expected {want} for input {input.shape}")
    C = input.shape[1]
    t = target.reshape(-1).astype(np.int64)
    valid = t != ignore_index
    if bool(np.any(valid & ((t < 0) | (t >= C)))):
        raise ValueError(f"target class indices must lie in [0, {C - 1}] (or equal ignore_index={ignore_index})")
    require_reduction(reduction)
    a, g = check_alpha(alpha, C), check_gamma(gamma)
    A, cdt = arithmetic(input.dtype.name)
    x = np.moveaxis(input, 1, -1).reshape(-1, C).astype(cdt)
    tt = np.where(valid, t, 0)
    alpha_y = None if a is None else (np.full(t.shape, a, dtype=cdt) if np.ndim(a) == 0 else a[tt].astype(cdt))
    lead = (input.shape[0], *input.shape[2:])
    return A, x, tt, valid, alpha_y, g, lead


def softmax_focal_loss(input, target, alpha=None, gamma: float = 2.0, ignore_index: int = -100,
                       reduction: str = "mean") -> np.ndarray:
    """``−α_y (1 − p_y)^γ log p_y`` per position (0 where ``target == ignore_index``).

    ``alpha``: None, a scalar (every class) or one value per class, all in [0, 1].
    ``mean`` divides the sum by the number of counted targets (0/0 = NaN when there is none).
    """
    A, x, t, valid, alpha_y, g, lead = _softmax_setup(input, target, alpha, gamma, ignore_index, reduction)
    dtype = np.asarray(input).dtype
    with np.errstate(all="ignore"):
        value, _ = softmax_focal_terms(A, x, t, alpha_y, g, grads=False)
        value = A.where(valid, value, A.const(0.0, valid.astype(x.dtype)))
        if reduction == "none":
            return A.round(value).astype(dtype).reshape(lead)
        total = _flat_sum(A, value)
        if reduction == "mean":
            total = A.div(total, _scalar(A, float(valid.sum()), x))
        return np.asarray(A.round(total)).astype(dtype)


def softmax_focal_loss_grad(grad_output, input, target, alpha=None, gamma: float = 2.0, ignore_index: int = -100,
                            reduction: str = "mean") -> dict[str, np.ndarray]:
    """VJP of :func:`softmax_focal_loss` w.r.t. ``input`` (0 on ignored positions)."""
    A, x, t, valid, alpha_y, g, lead = _softmax_setup(input, target, alpha, gamma, ignore_index, reduction)
    dtype = np.asarray(input).dtype
    go = np.asarray(grad_output).astype(x.dtype)
    with np.errstate(all="ignore"):
        _, grad = softmax_focal_terms(A, x, t, alpha_y, g, grads=True)
        rows = t.shape[0]
        cot = go.reshape(-1) if reduction == "none" else np.full(rows, go.reshape(-1)[0])
        cot = A.lift(np.where(valid, cot, 0.0).astype(x.dtype))
        if reduction == "mean":
            cot = A.div(cot, A.const(float(max(valid.sum(), 1)), valid.astype(x.dtype)))
        col = (cot[0][:, None], cot[1][:, None]) if isinstance(cot, tuple) else cot[:, None]
        out = A.round(A.mul(grad, col))
        out = np.where(valid[:, None], out, 0.0).astype(dtype)
        return {"input": np.moveaxis(out.reshape(*lead, x.shape[-1]), -1, 1)}
