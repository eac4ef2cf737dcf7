"""The ecosystem's binary cross-entropies: PyTorch's, a SciPy composition, scikit-learn's
``log_loss``, optax's, and the soft-BCE modules of segmentation_models_pytorch and pytorch-toolbelt.

PyTorch's ``binary_cross_entropy`` is listed twice: under the convention it documents and
implements (each log clamped at −100; backward ``w(p − y)/max(p(1 − p), 1e-12)`` and
``w·log((1 − p)/p)``, the derivatives of the *unclamped* loss), where it should conform, and
against the exact spec, where the clamp and the floored backward show as deviations.
"""

from __future__ import annotations

from typing import Any

from ..catalog import Implementation
from ..spec import Case

_BCE, _BCEL = "binary_cross_entropy", "binary_cross_entropy_with_logits"
# PyTorch's backward floors p(1 − p) at its EPSILON = 1e-12 taken as a float32 constant in every dtype
# (measured, torch 2.14.1 CPU float64: p = 1e-13, y = 1 gives −1.000000004e12, not −1e12).
TORCH_BCE_CONVENTIONS = {"log_floor": -100.0, "grad_floor": 9.999999960041972e-13}  # float32(1e-12)


def scipy_log_expit_bce_with_logits(input: Any, target: Any, weight: Any = None, reduction: str = "mean",
                                    pos_weight: Any = None) -> Any:
    """``−w·[pw·y·log_expit(x) + (1 − y)·log_expit(−x)]`` with ``scipy.special.log_expit``, reduced
    (mean = Σ / numel) — the composition a NumPy user writes; it checks no argument."""
    import numpy as np
    from scipy.special import log_expit

    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be one of ('none', 'mean', 'sum'), got {reduction!r}")
    pw = 1.0 if pos_weight is None else pos_weight
    with np.errstate(invalid="ignore", divide="ignore"):  # 0·(−inf) and the empty mean give NaN, silently
        loss = -(pw * target * log_expit(input) + (1 - target) * log_expit(-input))
        if weight is not None:
            loss = weight * loss
        if reduction == "none":
            return loss
        return np.sum(loss) / (loss.size if reduction == "mean" else 1)


def sklearn_log_loss(input: Any, target: Any, weight: Any = None, reduction: str = "mean") -> Any:
    """``sklearn.metrics.log_loss(target, input, labels=[0, 1])``: the mean (``normalize=True``) or sum
    of the binary cross-entropy of the flattened probabilities of the positive class."""
    import inspect

    from sklearn.metrics import log_loss

    if weight is not None or reduction == "none":
        raise NotImplementedError("log_loss has no per-element weights and always reduces")
    proba = "y_proba" if "y_proba" in inspect.signature(log_loss).parameters else "y_pred"
    return log_loss(target.reshape(-1), **{proba: input.reshape(-1)}, labels=[0, 1], normalize=reduction == "mean")


def _sklearn_accepts(case: Case) -> str | None:
    t = case.inputs.get("target")
    if case.inputs.get("weight") is not None or case.params.get("reduction", "mean") == "none":
        return "log_loss has no per-element weights (its sample_weight divides by Σw) and always reduces"
    if t is not None and t.dtype.kind == "f" and not bool(((t == 0) | (t == 1)).all()):
        return "log_loss takes class labels, not soft targets"
    if case.raises is not None:
        return "log_loss's input checks are for labels and probability rows, not the spec's arguments"
    return None


def optax_sigmoid_bce(input: Any, target: Any, weight: Any = None, reduction: str = "mean",
                      pos_weight: Any = None) -> Any:
    """``optax.losses.sigmoid_binary_cross_entropy`` (elementwise), reduced as PyTorch's."""
    import optax

    if weight is not None or pos_weight is not None:
        raise NotImplementedError("optax's sigmoid_binary_cross_entropy has no weight or pos_weight")
    loss = optax.losses.sigmoid_binary_cross_entropy(input, target)
    return {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]


def _module_bce(cls: Any):
    """A soft-BCE module (smooth_factor=None) called with the canonical signature."""
    def call(input: Any, target: Any, weight: Any = None, reduction: str = "mean", pos_weight: Any = None) -> Any:
        return cls(weight=weight, reduction=reduction, pos_weight=pos_weight)(input, target)
    return call


def smp_soft_bce(*args: Any, **kwargs: Any) -> Any:
    """``segmentation_models_pytorch.losses.SoftBCEWithLogitsLoss`` (no smoothing)."""
    from segmentation_models_pytorch.losses import SoftBCEWithLogitsLoss

    return _module_bce(SoftBCEWithLogitsLoss)(*args, **kwargs)


def toolbelt_soft_bce(*args: Any, **kwargs: Any) -> Any:
    """``pytorch_toolbelt.losses.SoftBCEWithLogitsLoss`` (no smoothing)."""
    from pytorch_toolbelt.losses import SoftBCEWithLogitsLoss

    return _module_bce(SoftBCEWithLogitsLoss)(*args, **kwargs)


def _torch_rejects_nan(case: Case) -> str | None:
    """PyTorch's range check on probabilities fails on NaN: it raises instead of propagating."""
    p = case.inputs.get("input")
    if case.raises is None and p is not None and p.dtype.kind == "f" and bool((p != p).any()):
        return "PyTorch rejects NaN probabilities (its [0, 1] range check fails on NaN)"
    return None


def _no_argument_checks(case: Case) -> str | None:
    return "an elementwise composition checks no argument" if case.raises is not None else None


def _optax_accepts(case: Case) -> str | None:
    if case.inputs.get("weight") is not None or case.inputs.get("pos_weight") is not None:
        return "optax's sigmoid_binary_cross_entropy has no weight or pos_weight"
    return "optax validates no values (jax cannot raise on data inside jit)" if case.raises is not None else None


_SOFT_BCE_NOTE = ("F.binary_cross_entropy_with_logits times an ignore_index (−100) mask: PyTorch's formula, so "
                  "PyTorch's findings (it cancels for confident predictions; x = ±inf gives NaN)")


IMPLEMENTATIONS = [
    Implementation(_BCE, f"torch.nn.functional.{_BCE}", "torch", f"torch.nn.functional:{_BCE}",
                   conventions=TORCH_BCE_CONVENTIONS, accepts=_torch_rejects_nan,
                   note="judged under PyTorch's own convention (log clamp −100, backward floored at 1e-12)"),
    Implementation(_BCE, f"torch.nn.functional.{_BCE} (exact spec)", "torch", f"torch.nn.functional:{_BCE}",
                   accepts=_torch_rejects_nan,
                   note="PyTorch clamps each log at −100 (loss ≤ 100 where the exact loss is larger or +inf) and "
                        "its backward is w(p − y)/max(p(1 − p), 1e-12) and w·log((1 − p)/p) (unclamped); NaN "
                        "probabilities raise"),
    Implementation(_BCEL, f"torch.nn.functional.{_BCEL}", "torch", f"torch.nn.functional:{_BCEL}",
                   note="PyTorch computes (1 − t)·x − (1 + (pw − 1)·t)·log σ(x) and "
                        "(1 + (pw − 1)·t)·σ(x) − pw·t: both cancel for confident correct predictions; "
                        "x = ±inf gives NaN; targets outside [0, 1] are accepted"),
    Implementation(_BCEL, "scipy.special.log_expit (BCE-with-logits composition)", "numpy",
                   "lossoracle.ecosystem.binary:scipy_log_expit_bce_with_logits", requires=("scipy",),
                   accepts=_no_argument_checks, upcast=True,
                   note="−w·[pw·y·log_expit(x) + (1 − y)·log_expit(−x)]: 0·log_expit(∓inf) is "
                        "0·(−inf) = NaN; float16 input: 1 − y rounds in float16, the rest is float64"),
    Implementation(_BCE, "sklearn.metrics.log_loss", "numpy", "lossoracle.ecosystem.binary:sklearn_log_loss",
                   requires=("sklearn",), accepts=_sklearn_accepts, upcast=True,
                   note="clips p to [eps, 1 − eps] with eps the machine epsilon of p's dtype (the loss saturates at "
                        "−log eps for p → 0); labels only, mean or sum; value only (no gradient)"),
    Implementation(_BCEL, "optax.losses.sigmoid_binary_cross_entropy", "jax",
                   "lossoracle.ecosystem.binary:optax_sigmoid_bce", requires=("jax", "optax"),
                   accepts=_optax_accepts,
                   note="−y·log_sigmoid(x) − (1 − y)·log_sigmoid(−x): accurate terms, 0·(−inf) = NaN at x = ±inf"),
    Implementation(_BCEL, "segmentation_models_pytorch.losses.SoftBCEWithLogitsLoss", "torch",
                   "lossoracle.ecosystem.binary:smp_soft_bce", requires=("segmentation_models_pytorch",),
                   note=_SOFT_BCE_NOTE),
    Implementation(_BCEL, "pytorch_toolbelt.losses.SoftBCEWithLogitsLoss", "torch",
                   "lossoracle.ecosystem.binary:toolbelt_soft_bce", requires=("pytorch_toolbelt",),
                   note=_SOFT_BCE_NOTE),
]
