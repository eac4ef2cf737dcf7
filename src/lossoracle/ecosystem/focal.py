"""The ecosystem's focal losses (CONVENTIONS.md §6).

Each third-party callable is judged under the convention it documents (the oracle variant in
``conventions``); what still differs is reported with the one-line ``note``. The small adapters
below map the canonical signatures onto each library's interface and do nothing else: layout
(channels-first maps, one-hot targets, a trailing axis for Keras's per-sample mean), α's spelling
(None / −1 / ``apply_class_balancing``; a per-class α as kornia's class ``weight``), and summing a
per-class ``none`` map over its class axis.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..catalog import Implementation
from ..spec import Case

__all__ = ["IMPLEMENTATIONS"]

# Keras is judged on its torch backend; ``Implementation.installed`` imports it before any adapter
# runs, so the backend is chosen here (a backend the caller already chose is kept).
os.environ.setdefault("KERAS_BACKEND", "torch")

_SIG, _SM = "sigmoid_focal_loss", "softmax_focal_loss"
_NP, _TORCH = "lossoracle.implementations.numpy_impl", "lossoracle.implementations.torch_impl"


def _alpha_or_none(alpha: float | None) -> float | None:
    """torchvision's α = −1 ("no weighting") as the None the other libraries use."""
    return None if alpha is None or alpha < 0 else float(alpha)


def _as_2d(x):
    """kornia and MONAI want ``(B, C, …)``: a 0-d or 1-d tensor becomes one row."""
    return x.reshape(1, -1) if x.ndim < 2 else x


def _reduce_like(out, x, reduction: str):
    return out.reshape(x.shape) if reduction == "none" else out


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    return keras


_KERAS_REDUCTION = {"none": None, "mean": "sum_over_batch_size", "sum": "sum"}


# ----------------------------------------------------------------------------------------------
# sigmoid_focal_loss adapters


def kornia_binary_focal(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """``kornia.losses.binary_focal_loss_with_logits`` (α = −1 → None)."""
    from kornia.losses import binary_focal_loss_with_logits

    out = binary_focal_loss_with_logits(_as_2d(inputs), _as_2d(targets), alpha=_alpha_or_none(alpha), gamma=gamma,
                                        reduction=reduction)
    return _reduce_like(out, inputs, reduction)


def monai_sigmoid_focal(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """``monai.losses.FocalLoss(use_softmax=False)``."""
    from monai.losses import FocalLoss

    loss = FocalLoss(gamma=gamma, alpha=_alpha_or_none(alpha), reduction=reduction, use_softmax=False)
    return _reduce_like(loss(_as_2d(inputs), _as_2d(targets)), inputs, reduction)


def keras_binary_focal(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """``keras.losses.BinaryFocalCrossentropy(from_logits=True)`` in the input's dtype; a trailing
    axis of size 1 makes Keras's mean over the last axis the identity."""
    keras = _keras()
    a = _alpha_or_none(alpha)
    loss = keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=a is not None, alpha=0.25 if a is None else a, gamma=gamma, from_logits=True,
        reduction=_KERAS_REDUCTION[reduction], dtype=str(inputs.dtype).replace("torch.", ""))
    return loss(targets[..., None], inputs[..., None])


def optax_sigmoid_focal(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """``optax.losses.sigmoid_focal_loss`` (element-wise; the reduction is applied here)."""
    import jax.numpy as jnp
    import optax

    out = optax.losses.sigmoid_focal_loss(inputs, targets, alpha=_alpha_or_none(alpha), gamma=gamma)
    return {"none": out, "mean": jnp.mean(out), "sum": jnp.sum(out)}[reduction]


# ----------------------------------------------------------------------------------------------
# softmax_focal_loss adapters


def smp_focal(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """``segmentation_models_pytorch.losses.FocalLoss(mode="binary")`` (flattens; α = −1 → None)."""
    from segmentation_models_pytorch.losses import FocalLoss

    out = FocalLoss("binary", alpha=_alpha_or_none(alpha), gamma=gamma, reduction=reduction)(inputs, targets)
    return _reduce_like(out, inputs, reduction)


def toolbelt_binary_focal(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """``pytorch_toolbelt.losses.BinaryFocalLoss`` (α = −1 → None)."""
    from pytorch_toolbelt.losses import BinaryFocalLoss

    return BinaryFocalLoss(alpha=_alpha_or_none(alpha), gamma=gamma, reduction=reduction)(inputs, targets)


def _is_vector(alpha) -> bool:
    return alpha is not None and np.ndim(alpha) > 0


def kornia_focal(input, target, alpha=None, gamma=2.0, ignore_index=-100, reduction="mean"):
    """``kornia.losses.focal_loss``; a per-class α goes in as kornia's class ``weight``; the
    ``none`` map ``(N, C, …)`` (zero off the target class) is summed over its class axis."""
    import torch
    from kornia.losses import focal_loss

    weight = torch.as_tensor(alpha, dtype=input.dtype, device=input.device) if _is_vector(alpha) else None
    out = focal_loss(input, target, None if _is_vector(alpha) else alpha, gamma=gamma, reduction=reduction,
                     weight=weight, ignore_index=ignore_index)
    return out.sum(1) if reduction == "none" else out


def monai_softmax_focal(input, target, alpha=None, gamma=2.0, ignore_index=-100, reduction="mean"):
    """``monai.losses.FocalLoss(use_softmax=True, to_onehot_y=True, ignore_index=…)``."""
    from monai.losses import FocalLoss

    a = list(alpha) if _is_vector(alpha) else alpha
    loss = FocalLoss(to_onehot_y=True, gamma=gamma, alpha=a, reduction=reduction, use_softmax=True,
                     ignore_index=ignore_index)
    out = loss(input, target.unsqueeze(1))
    return out.sum(1) if reduction == "none" else out


def keras_categorical_focal(input, target, alpha=None, gamma=2.0, ignore_index=-100, reduction="mean"):
    """``keras.losses.CategoricalFocalCrossentropy(from_logits=True)`` in the input's dtype, on
    class-last logits and one-hot targets."""
    import torch

    keras = _keras()
    C = input.shape[1]
    y = torch.nn.functional.one_hot(target, C).to(input.dtype)
    loss = keras.losses.CategoricalFocalCrossentropy(
        alpha=1.0 if alpha is None else float(alpha), gamma=gamma, from_logits=True,
        reduction=_KERAS_REDUCTION[reduction], dtype=str(input.dtype).replace("torch.", ""))
    return loss(y, input.movedim(1, -1))


def _keras_categorical_accepts(case: Case) -> str | None:
    if _is_vector(case.params.get("alpha")):
        return "Keras takes one scalar alpha for every class"
    t = case.inputs.get("target")
    if t is not None and t.dtype.kind in "iu" and bool(np.any(t == case.params.get("ignore_index", -100))):
        return "Keras CategoricalFocalCrossentropy has no ignore_index"
    return None


# ----------------------------------------------------------------------------------------------
# The catalogue

_TAIL_NOTE = "1 − p_t = 1 − σ(x) from a rounded σ"


IMPLEMENTATIONS: Sequence[Implementation] = [
    Implementation(_SIG, "torchvision.ops.sigmoid_focal_loss", "torch", "torchvision.ops:sigmoid_focal_loss",
                   requires=("torchvision",),
                   note=f"{_TAIL_NOTE}: loss 0 and NaN gradient (γ < 1) once σ(x) rounds to 1; BCE-with-logits "
                        "(1 − y)·x − log σ(x) cancels for x ≪ 0, y = 0; targets not validated"),
    Implementation(_SIG, "fvcore.nn.sigmoid_focal_loss", "torch", "fvcore.nn:sigmoid_focal_loss",
                   requires=("fvcore",),
                   note=f"torchvision's formula ({_TAIL_NOTE}); inputs cast to float32, float64 included"),
    Implementation(_SIG, "kornia.losses.binary_focal_loss_with_logits", "torch",
                   "lossoracle.ecosystem.focal:kornia_binary_focal", requires=("kornia",),
                   conventions={"p_t": "per_term"},
                   note="(1 − p_t)^γ as exp(γ·logsigmoid(∓x)): finite at saturation, but γ multiplies the "
                        "rounding of logsigmoid; targets not validated"),
    Implementation(_SIG, "monai.losses.FocalLoss(use_softmax=False)", "torch",
                   "lossoracle.ecosystem.focal:monai_sigmoid_focal", requires=("monai",),
                   conventions={"p_t": "sign", "sum_rule": "spatial_mean"},
                   note="computes in float32 for every dtype; BCE as x − x·y − logsigmoid(x) cancels for x ≪ 0, "
                        "y = 0; reduction='sum' on (B, C) input is the mean (torch reads mean(dim=[]) as all dims)"),
    Implementation(_SIG, "keras.losses.BinaryFocalCrossentropy(from_logits=True)", "torch",
                   "lossoracle.ecosystem.focal:keras_binary_focal", requires=("keras",),
                   conventions={"probability_clip": 1e-7},
                   note=f"BCE of σ(x) clipped to [1e-7, 1 − 1e-7] (1 − 1e-7 rounds to 1 − 2^-23 in float32, to 1 "
                        f"in float16); {_TAIL_NOTE}; ops.mean computes float64 in float32"),
    Implementation(_SIG, "optax.losses.sigmoid_focal_loss", "jax", "lossoracle.ecosystem.focal:optax_sigmoid_focal",
                   requires=("jax", "optax"),
                   note="log(1 − p_t) = logsumexp(log σ(±x), b=[1 − y, y]): finite at saturation, but ∂/∂y is wrong "
                        "at y ∈ {0, 1} (jax's logsumexp drops the gradient of a zero weight b)"),
    Implementation(_SIG, "segmentation_models_pytorch.losses.FocalLoss(mode='binary')", "torch",
                   "lossoracle.ecosystem.focal:smp_focal", requires=("segmentation_models_pytorch",),
                   conventions={"p_t": "exp_bce"},
                   note="p_t = exp(−BCE) from F.binary_cross_entropy_with_logits (convention p_t='exp_bce'), then "
                        "(1 − p_t)^γ·BCE: 1 − p_t cancels for confident predictions; targets not validated"),
    Implementation(_SIG, "pytorch_toolbelt.losses.BinaryFocalLoss", "torch",
                   "lossoracle.ecosystem.focal:toolbelt_binary_focal", requires=("pytorch_toolbelt",),
                   conventions={"p_t": "exp_bce"},
                   note="segmentation_models_pytorch's formula (shared ancestry: p_t = exp(−BCE)), computed and "
                        "returned in float32 for every dtype"),
    Implementation(_SM, "kornia.losses.focal_loss", "torch", "lossoracle.ecosystem.focal:kornia_focal",
                   requires=("kornia",), conventions={"scalar_alpha": "background", "mean_over": "elements"},
                   note="1 − p = 1 − exp(log_softmax) and log p from a rounded log-sum-exp: both lose the confident "
                        "tail (a detached power keeps the gradient finite); gamma and alpha not validated"),
    Implementation(_SM, "monai.losses.FocalLoss(use_softmax=True)", "torch",
                   "lossoracle.ecosystem.focal:monai_softmax_focal", requires=("monai",),
                   conventions={"scalar_alpha": "background", "empty_mean": "zero", "sum_rule": "spatial_mean"},
                   note="computes in float32; (1 − exp(log_softmax))^γ: 0 once p_y rounds to 1, NaN gradient there "
                        "for γ < 1 and at −inf logits; reduction='sum' on (N, C) input is the mean"),
    Implementation(_SM, "keras.losses.CategoricalFocalCrossentropy(from_logits=True)", "torch",
                   "lossoracle.ecosystem.focal:keras_categorical_focal", requires=("keras",),
                   conventions={"probability_clip": 1e-7}, accepts=_keras_categorical_accepts,
                   note="softmax, renormalise, clip to [1e-7, 1 − 1e-7] in the compute dtype (1 − 1e-7 rounds in "
                        "float32 and half types), then (1 − p)^γ·log p of the clipped p"),
]
