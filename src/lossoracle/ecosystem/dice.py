"""The ecosystem's Dice family (CONVENTIONS.md §7).

Each library is judged at the setting of ``lossoracle.reference.dice`` that its documentation
describes (the mapping table is in ``lossoracle describe dice_loss``): canonical parameters the
library exposes are passed through by the adapter (translated: MONAI's Jaccard smoothing is not
halved, SMP's and optax's Dice smoothing enters doubled), and what a library fixes goes to the
oracle as ``conventions`` — SMP/pytorch-toolbelt sum over the batch, score an absent class 0 and
floor the denominator at 1e-7; kornia pools the classes with eps = 1e-8 in the denominator only;
Keras adds 1e-7 to the denominator only. A case outside a library's documented interface (its
target format, activation, layout, or a parameter it has no spelling for) is ``unsupported``,
with the reason. The adapters only translate: layout (class axis last for Keras/optax, a trailing
unit axis for kornia's 4-D requirement), target format (MONAI's (N, 1, …) indices), parameter
spellings, the reduction of a per-element result, and the shape of a ``none`` result.
"""

from __future__ import annotations

import os

import numpy as np

from ..catalog import Implementation
from ..spec import Case

__all__ = ["IMPLEMENTATIONS"]

os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras is judged on its torch backend

_HERE = "lossoracle.ecosystem.dice"
LOSSES = ("dice_loss", "jaccard_loss", "tversky_loss", "generalized_dice_loss")


def _index_target(t) -> bool:
    return not t.is_floating_point()


def _none_shape(out, N: int, C1: int, batch: bool, pooled: bool = False):
    if pooled:
        return out.reshape(()) if batch else out.reshape(N)
    return out.reshape(C1) if batch else out.reshape(N, C1)


def _c1(input, include_background: bool) -> int:
    return input.shape[1] - (0 if include_background else 1)


# ----------------------------------------------------------------------------------------------
# MONAI


def _monai_target(input, target, ignore_index):
    """(target for MONAI, to_onehot_y, MONAI's ignore_index)."""
    if _index_target(target):
        return target[:, None], True, ignore_index
    return target, False, None


def monai_dice(input, target, weight=None, *, activation="none", include_background=True, squared=False,
               batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean", jaccard=False):
    """``monai.losses.DiceLoss`` (``jaccard=True``: its Jaccard, whose smoothing is not halved)."""
    from monai.losses import DiceLoss

    tgt, onehot, ign = _monai_target(input, target, ignore_index)
    w = None if weight is None else (weight if include_background else weight[1:])
    scale = 2.0 if jaccard else 1.0
    loss = DiceLoss(include_background=include_background, to_onehot_y=onehot, sigmoid=activation == "sigmoid",
                    softmax=activation == "softmax", squared_pred=squared, jaccard=jaccard, reduction=reduction,
                    smooth_nr=smooth_nr * scale, smooth_dr=smooth_dr * scale, batch=batch, weight=w,
                    ignore_index=ign)
    out = loss(input, tgt)
    return _none_shape(out, input.shape[0], _c1(input, include_background), batch) if reduction == "none" else out


def monai_jaccard(input, target, weight=None, *, activation="none", include_background=True, squared=False,
                  batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean"):
    """``monai.losses.DiceLoss(jaccard=True, smooth_nr=2·s_nr, smooth_dr=2·s_dr)``."""
    return monai_dice(input, target, weight, activation=activation, include_background=include_background,
                      squared=squared, batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr, ignore_index=ignore_index,
                      reduction=reduction, jaccard=True)


def monai_tversky(input, target, weight=None, *, alpha=0.5, beta=0.5, activation="none", include_background=True,
                  batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean"):
    """``monai.losses.TverskyLoss``."""
    from monai.losses import TverskyLoss

    tgt, onehot, ign = _monai_target(input, target, ignore_index)
    loss = TverskyLoss(include_background=include_background, to_onehot_y=onehot, sigmoid=activation == "sigmoid",
                       softmax=activation == "softmax", alpha=alpha, beta=beta, reduction=reduction,
                       smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch=batch, ignore_index=ign)
    out = loss(input, tgt)
    return _none_shape(out, input.shape[0], _c1(input, include_background), batch) if reduction == "none" else out


def monai_generalized_dice(input, target, *, w_type="square", activation="none", include_background=True,
                           batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean"):
    """``monai.losses.GeneralizedDiceLoss``."""
    from monai.losses import GeneralizedDiceLoss

    tgt, onehot, _ = _monai_target(input, target, ignore_index)
    loss = GeneralizedDiceLoss(include_background=include_background, to_onehot_y=onehot,
                               sigmoid=activation == "sigmoid", softmax=activation == "softmax", w_type=w_type,
                               reduction=reduction, smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch=batch)
    out = loss(input, tgt)
    return _none_shape(out, input.shape[0], 0, batch, pooled=True) if reduction == "none" else out


def _monai_no_weight(case: Case) -> str | None:
    if case.inputs.get("weight") is not None:
        return "MONAI TverskyLoss has no class weights"
    return None


def _monai_gdl_accepts(case: Case) -> str | None:
    t = case.inputs["target"]
    if t.dtype.kind in "iu" and bool((t == case.params.get("ignore_index", -100)).any()):
        return "MONAI GeneralizedDiceLoss has no ignore_index"
    return None


# ----------------------------------------------------------------------------------------------
# segmentation_models_pytorch and pytorch-toolbelt (the toolbelt's losses are SMP's ancestors)


def _smp_mode(case: Case) -> str | None:
    """Why SMP/toolbelt cannot run ``case`` (None when they can)."""
    act, idx = case.params.get("activation", "none"), case.inputs["target"].dtype.kind in "iu"
    if act == "softmax" and not idx:
        return "SMP/toolbelt multiclass mode takes class-index targets"
    if act == "sigmoid" and idx:
        return "SMP/toolbelt sigmoid modes (binary, multilabel) take one-hot targets"
    if case.inputs.get("weight") is not None:
        return "class_weights are normalised by Σw (Σ w_c ℓ_c / Σ w_c): not a setting of the spec"
    if case.params.get("smooth_nr", 1e-5) != case.params.get("smooth_dr", 1e-5):
        return "one smoothing constant for numerator and denominator"
    if case.params.get("squared", False):
        return "no squared form"
    return None


def _toolbelt_accepts(case: Case) -> str | None:
    if not case.params.get("include_background", True):
        return ("classes=[…] is broken in pytorch_toolbelt 0.8: its to_tensor builds np.ndarray(list), an "
                "uninitialised array of that *shape*, so loss[classes] indexes garbage (IndexError or wrong classes)")
    return _smp_mode(case)


def _smp_like(module: str, cls: str, input, target, *, activation, include_background, smooth, ignore_index,
              **extra):
    import importlib

    loss_cls = getattr(importlib.import_module(module), cls)
    idx = _index_target(target)
    mode = "multiclass" if idx else "multilabel"
    classes = None if include_background else list(range(1, input.shape[1]))
    if cls != "JaccardLoss" or module.startswith("segmentation"):
        extra["ignore_index"] = ignore_index if idx else None
    elif idx and bool((target == ignore_index).any()):
        raise NotImplementedError("pytorch_toolbelt JaccardLoss has no ignore_index")
    loss = loss_cls(mode, classes=classes, from_logits=activation != "none", smooth=smooth, **extra)
    return loss(input, target)


def smp_dice(input, target, weight=None, *, activation="none", include_background=True, squared=False, batch=False,
             smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean"):
    """``segmentation_models_pytorch.losses.DiceLoss(mode, smooth=s_nr/2)``: (2I + 2s)/(P + G + 2s)."""
    return _smp_like("segmentation_models_pytorch.losses", "DiceLoss", input, target, activation=activation,
                     include_background=include_background, smooth=smooth_nr / 2, ignore_index=ignore_index)


def smp_jaccard(input, target, weight=None, *, activation="none", include_background=True, squared=False,
                batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean"):
    """``segmentation_models_pytorch.losses.JaccardLoss(mode, smooth=s)``."""
    return _smp_like("segmentation_models_pytorch.losses", "JaccardLoss", input, target, activation=activation,
                     include_background=include_background, smooth=smooth_nr, ignore_index=ignore_index)


def smp_tversky(input, target, weight=None, *, alpha=0.5, beta=0.5, activation="none", include_background=True,
                batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean"):
    """``segmentation_models_pytorch.losses.TverskyLoss(mode, alpha, beta, smooth=s, gamma=1)``."""
    return _smp_like("segmentation_models_pytorch.losses", "TverskyLoss", input, target, activation=activation,
                     include_background=include_background, smooth=smooth_nr, ignore_index=ignore_index,
                     alpha=alpha, beta=beta)


def toolbelt_dice(input, target, weight=None, *, activation="none", include_background=True, squared=False,
                  batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean"):
    """``pytorch_toolbelt.losses.DiceLoss(mode, smooth=s)``: (2I + s)/(P + G + s)."""
    return _smp_like("pytorch_toolbelt.losses", "DiceLoss", input, target, activation=activation,
                     include_background=include_background, smooth=smooth_nr, ignore_index=ignore_index)


def toolbelt_jaccard(input, target, weight=None, *, activation="none", include_background=True, squared=False,
                     batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean"):
    """``pytorch_toolbelt.losses.JaccardLoss(mode, smooth=s)``."""
    return _smp_like("pytorch_toolbelt.losses", "JaccardLoss", input, target, activation=activation,
                     include_background=include_background, smooth=smooth_nr, ignore_index=ignore_index)


_TOOLBELT_CONV = {"batch": True, "empty_target_loss": 0.0, "denominator_floor": 1e-7, "reduction": "mean"}
_SMP_CONV = {**_TOOLBELT_CONV, "intersection": "min"}  # SMP ≥ 0.5: I = (ΣP + ΣG − ‖p − y‖₁)/2


# ----------------------------------------------------------------------------------------------
# kornia


def kornia_dice(input, target, weight=None, *, activation="none", include_background=True, squared=False,
                batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean"):
    """``kornia.losses.dice_loss(average='micro', eps=1e-8)``; (N, C, S) maps get a trailing unit axis
    (kornia takes 4-D input only)."""
    from kornia.losses import dice_loss

    x = input.reshape(*input.shape[:2], -1, 1)
    t = target.reshape(target.shape[0], -1, 1)
    return dice_loss(x, t, average="micro", eps=1e-8, weight=weight, ignore_index=ignore_index)


def _kornia_accepts(case: Case) -> str | None:
    if case.params.get("activation", "none") != "softmax" or case.inputs["target"].dtype.kind not in "iu":
        return "kornia dice_loss takes logits (softmax inside) and class-index targets"
    if not case.params.get("include_background", True) or case.params.get("batch", False):
        return "kornia dice_loss has no include_background or batch option"
    if case.params.get("squared", False):
        return "kornia dice_loss has no squared form"
    return None


# ----------------------------------------------------------------------------------------------
# Keras 3 (torch backend) and optax (JAX): channels last


_KERAS_REDUCTION = {"none": None, "mean": "sum_over_batch_size", "sum": "sum"}


def _keras_axis(ndim: int, batch: bool):
    spatial = tuple(range(1, ndim - 1))
    return (0, *spatial) if batch else spatial


def keras_dice(input, target, weight=None, *, activation="none", include_background=True, squared=False,
               batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean"):
    """``keras.losses.Dice(axis=spatial dims (and the batch))`` on the class-last layout, in the input's dtype."""
    import keras

    x, y = input.movedim(1, -1), target.movedim(1, -1)
    loss = keras.losses.Dice(reduction=_KERAS_REDUCTION[reduction], axis=_keras_axis(x.ndim, batch),
                             dtype=str(input.dtype).replace("torch.", ""))
    return loss(y, x)


def keras_dice_global(input, target, weight=None, *, activation="none", include_background=True, squared=False,
                      batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean"):
    """``keras.losses.Dice()`` — its default ``axis=None``: one Dice over the whole tensor."""
    import keras

    loss = keras.losses.Dice(dtype=str(input.dtype).replace("torch.", ""))
    return loss(target.movedim(1, -1), input.movedim(1, -1))


def keras_tversky(input, target, weight=None, *, alpha=0.5, beta=0.5, activation="none", include_background=True,
                  batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean", swap=False):
    """``keras.losses.Tversky(alpha, beta, axis=spatial dims)`` (``swap``: α and β exchanged)."""
    import keras

    x, y = input.movedim(1, -1), target.movedim(1, -1)
    a, b = (beta, alpha) if swap else (alpha, beta)
    loss = keras.losses.Tversky(alpha=a, beta=b, reduction=_KERAS_REDUCTION[reduction],
                                axis=_keras_axis(x.ndim, batch), dtype=str(input.dtype).replace("torch.", ""))
    return loss(y, x)


def keras_tversky_swapped(input, target, weight=None, *, alpha=0.5, beta=0.5, **kw):
    """``keras.losses.Tversky(alpha=β, beta=α)``: Keras's α multiplies Σ(1 − p)·y (false negatives)."""
    return keras_tversky(input, target, weight, alpha=alpha, beta=beta, swap=True, **kw)


def _keras_accepts(case: Case) -> str | None:
    if case.params.get("activation", "none") != "none":
        return "Keras Dice/Tversky take probabilities (no activation)"
    if case.inputs["target"].dtype.kind in "iu":
        return "Keras Dice/Tversky take one-hot or soft targets of the input's shape"
    if case.inputs.get("weight") is not None or not case.params.get("include_background", True):
        return "Keras Dice/Tversky have no class weights or background option"
    if case.params.get("squared", False):
        return "Keras Dice has no squared form"
    return None


def optax_dice(input, target, weight=None, *, activation="none", include_background=True, squared=False,
               batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean", tversky=None):
    """``optax.losses.dice_loss(smooth=s_nr/2)`` (``tversky=(α, β)``: ``smooth=s_nr``), class axis last;
    its per-sample class reduction is taken per (sample, class) and reduced here."""
    import jax.numpy as jnp
    import optax

    x, y = jnp.moveaxis(input, 1, -1), jnp.moveaxis(target, 1, -1)
    alpha, beta = tversky or (0.5, 0.5)
    smooth = smooth_nr if tversky else smooth_nr / 2
    axis = tuple(range(0 if batch else 1, x.ndim - 1))
    out = optax.losses.dice_loss(x, y, class_weights=weight, smooth=smooth, alpha=alpha, beta=beta,
                                 apply_softmax=activation != "none", reduction="none",
                                 ignore_background=not include_background, axis=axis)
    return {"none": out, "mean": jnp.mean(out), "sum": jnp.sum(out)}[reduction]


def optax_tversky(input, target, weight=None, *, alpha=0.5, beta=0.5, activation="none", include_background=True,
                  batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean"):
    """``optax.losses.dice_loss(alpha, beta, smooth=s)``."""
    return optax_dice(input, target, weight, activation=activation, include_background=include_background,
                      batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr, reduction=reduction,
                      tversky=(alpha, beta))


def _optax_accepts(case: Case) -> str | None:
    act, x = case.params.get("activation", "none"), case.inputs["input"]
    if x.ndim < 2:
        return None
    if case.inputs["target"].dtype.kind in "iu":
        return "optax dice_loss takes one-hot targets"
    if act == "sigmoid" and x.ndim > 1 and x.shape[1] != 1:
        return "optax applies a sigmoid only to a single channel (softmax otherwise)"
    if act == "none" and not np.allclose(np.sum(x, axis=1), 1.0, rtol=1e-5):
        return "apply_softmax=False requires probabilities summing to 1 over the classes (documented ValueError)"
    if case.params.get("squared", False):
        return "optax dice_loss has no squared form"
    if case.params.get("smooth_nr", 1e-5) != case.params.get("smooth_dr", 1e-5):
        return "one smoothing constant for numerator and denominator"
    return None


# ----------------------------------------------------------------------------------------------
# The catalogue

_MONAI_NOTE = ("MONAI forms fp = ΣP − tp and fn = ΣG − tp by subtraction and the loss as 1 − ratio: both cancel "
               "near a perfect prediction; squared_pred goes through ‖p − y‖² − ‖p‖² − ‖y‖²; a one-channel softmax "
               "is warned about and skipped, and no argument is range-checked")
_SMP_NOTE = ("mean over classes of 1 − (I + s)/(I + αFP + βFN + s) with I = (ΣP + ΣG − ‖p − y‖₁)/2, p = exp(log-"
             "softmax) or exp(log-sigmoid), batch summed, absent classes scored 0, denominator clamped at 1e-7: "
             "cancellation near a perfect prediction; assertions instead of errors")
_KERAS_NOTE = "1 − 2Σyp/(Σy + Σp + 1e-7) in the input's dtype (1e-7 rounds in float16): 1 − ratio cancels"

IMPLEMENTATIONS = [
    Implementation("dice_loss", "monai.losses.DiceLoss", "torch", f"{_HERE}:monai_dice", requires=("monai",),
                   note=_MONAI_NOTE),
    Implementation("dice_loss", "segmentation_models_pytorch.losses.DiceLoss", "torch", f"{_HERE}:smp_dice",
                   requires=("segmentation_models_pytorch",), conventions=_SMP_CONV, accepts=_smp_mode,
                   note=_SMP_NOTE),
    Implementation("dice_loss", "pytorch_toolbelt.losses.DiceLoss", "torch", f"{_HERE}:toolbelt_dice",
                   requires=("pytorch_toolbelt",), conventions=_TOOLBELT_CONV, accepts=_toolbelt_accepts,
                   note="(2I + s)/(ΣP + ΣG + s) clamped at 1e-7, batch summed, absent classes 0: 1 − ratio cancels"),
    Implementation("dice_loss", "kornia.losses.dice_loss", "torch", f"{_HERE}:kornia_dice", requires=("kornia",),
                   conventions={"pool_classes": True, "smooth_nr": 0.0, "smooth_dr": 1e-8, "reduction": "mean",
                                "batch": False},
                   accepts=_kornia_accepts,
                   note="micro: 1 − 2Σ_c w_c I_c/(Σ_c w_c(P_c + G_c) + 1e-8) per sample from a softmax: 1 − ratio "
                        "cancels near a perfect prediction"),
    Implementation("dice_loss", "keras.losses.Dice", "torch", f"{_HERE}:keras_dice", requires=("keras",),
                   conventions={"smooth_nr": 0.0, "smooth_dr": 1e-7}, accepts=_keras_accepts, note=_KERAS_NOTE),
    Implementation("dice_loss", "keras.losses.Dice (axis=None)", "torch", f"{_HERE}:keras_dice_global",
                   requires=("keras",), accepts=_keras_accepts,
                   conventions={"smooth_nr": 0.0, "smooth_dr": 1e-7, "pool_classes": True, "batch": True,
                                "reduction": "mean"},
                   note="the default axis=None pools batch, classes and positions into one Dice; " + _KERAS_NOTE),
    Implementation("dice_loss", "optax.losses.dice_loss", "jax", f"{_HERE}:optax_dice", requires=("jax", "optax"),
                   accepts=_optax_accepts,
                   note="(I + s)/(I + ½(ΣP − I) + ½(ΣG − I) + s): subtractions and 1 − ratio cancel near a perfect "
                        "prediction; class axis last"),
    Implementation("jaccard_loss", "monai.losses.DiceLoss(jaccard=True)", "torch", f"{_HERE}:monai_jaccard",
                   requires=("monai",), note=_MONAI_NOTE + "; its smoothing is not halved (adapter doubles ours)"),
    Implementation("jaccard_loss", "segmentation_models_pytorch.losses.JaccardLoss", "torch", f"{_HERE}:smp_jaccard",
                   requires=("segmentation_models_pytorch",), conventions=_SMP_CONV, accepts=_smp_mode,
                   note=_SMP_NOTE),
    Implementation("jaccard_loss", "pytorch_toolbelt.losses.JaccardLoss", "torch", f"{_HERE}:toolbelt_jaccard",
                   requires=("pytorch_toolbelt",), conventions=_TOOLBELT_CONV, accepts=_toolbelt_accepts,
                   note="(I + s)/(ΣP + ΣG − I + s) clamped at 1e-7, batch summed, absent classes 0; multiplies by a "
                        "float32 mask (float16 input returns float32)"),
    Implementation("tversky_loss", "monai.losses.TverskyLoss", "torch", f"{_HERE}:monai_tversky",
                   requires=("monai",), accepts=_monai_no_weight,
                   note="MONAI sums Σp(1 − y) and Σ(1 − p)y directly but returns 1 − ratio: cancels near a perfect "
                        "prediction; no argument is range-checked"),
    Implementation("tversky_loss", "segmentation_models_pytorch.losses.TverskyLoss", "torch", f"{_HERE}:smp_tversky",
                   requires=("segmentation_models_pytorch",), conventions=_SMP_CONV, accepts=_smp_mode,
                   note=_SMP_NOTE),
    Implementation("tversky_loss", "keras.losses.Tversky", "torch", f"{_HERE}:keras_tversky", requires=("keras",),
                   conventions={"smooth_nr": 0.0, "smooth_dr": 1e-7}, accepts=_keras_accepts,
                   note="documented: alpha weights false positives; computed: alpha multiplies Σ(1 − p)·y, the false "
                        "negatives (α and β exchanged); 1 − ratio cancels"),
    Implementation("tversky_loss", "keras.losses.Tversky (α, β exchanged)", "torch",
                   f"{_HERE}:keras_tversky_swapped", requires=("keras",),
                   conventions={"smooth_nr": 0.0, "smooth_dr": 1e-7}, accepts=_keras_accepts,
                   note="Keras's Tversky with α and β passed exchanged, the setting it computes; " + _KERAS_NOTE),
    Implementation("tversky_loss", "optax.losses.dice_loss (alpha, beta)", "jax", f"{_HERE}:optax_tversky",
                   requires=("jax", "optax"), accepts=_optax_accepts,
                   note="(I + s)/(I + α(ΣP − I) + β(ΣG − I) + s): subtractions and 1 − ratio cancel"),
    Implementation("generalized_dice_loss", "monai.losses.GeneralizedDiceLoss", "torch",
                   f"{_HERE}:monai_generalized_dice", requires=("monai",), accepts=_monai_gdl_accepts,
                   note="MONAI computes the weights from float32 target sums, fp = ΣP − tp by subtraction and "
                        "1 − ratio"),
]
