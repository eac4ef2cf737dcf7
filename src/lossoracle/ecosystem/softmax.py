"""The ecosystem's softmax family: PyTorch's functions, optax's cross-entropies and the
label-smoothed ``SoftCrossEntropyLoss`` of segmentation_models_pytorch and pytorch-toolbelt."""

from __future__ import annotations

import numpy as np

from ..catalog import Implementation

_NOTES = {
    "log_softmax": "x − logsumexp(x) keeps only absolute accuracy (tail) for a dominant class",
    "softmax": "backward evaluates p·(g − Σ g·p) directly: cancels when one probability dominates",
    "nll_loss": "",
    "cross_entropy": "log p = x − logsumexp(x) keeps only absolute accuracy (tail) for confident predictions",
}

IMPLEMENTATIONS = [
    Implementation(loss, f"torch.nn.functional.{loss}", "torch", f"torch.nn.functional:{loss}", note=note)
    for loss, note in _NOTES.items()
]


def optax_cross_entropy(input, target, reduction: str = "mean", **unsupported):
    """optax's per-example integer-label cross-entropy, reduced as PyTorch's (no weights)."""
    import optax

    if unsupported:
        raise TypeError(f"optax cross-entropy has no {sorted(unsupported)}")
    per_example = optax.softmax_cross_entropy_with_integer_labels(input, target)
    return {"none": per_example, "sum": per_example.sum(), "mean": per_example.mean()}[reduction]


def _optax_accepts(case):
    """optax takes (N, C) logits and in-range integer labels: no weights, ignore_index, smoothing."""
    x, t = case.inputs["input"], case.inputs["target"]
    if case.raises is not None:
        return "optax validates no values (jax cannot raise on data inside jit)"
    if case.inputs.get("weight") is not None or case.params.get("label_smoothing", 0.0):
        return "optax has no class weights or label smoothing"
    if t.dtype.kind == "f" or np.ndim(x) != 2 or (t == case.params.get("ignore_index", -100)).any():
        return "optax takes (N, C) logits with in-range integer labels only"
    if "ignore_index" in case.params:
        return "optax has no ignore_index"
    return None


IMPLEMENTATIONS.append(Implementation(
    "cross_entropy", "optax.softmax_cross_entropy_with_integer_labels", "jax",
    "lossoracle.ecosystem.softmax:optax_cross_entropy", requires=("jax", "optax"), accepts=_optax_accepts,
    note="logsumexp(x) − x_y is scale-accurate, not faithful, for confident predictions"))


def optax_cross_entropy_probs(input, target, reduction: str = "mean", **unsupported):
    """``optax.losses.softmax_cross_entropy`` on probability targets (class axis last, (N, C))."""
    import optax

    if unsupported:
        raise TypeError(f"optax cross-entropy has no {sorted(unsupported)}")
    per_example = optax.losses.softmax_cross_entropy(input, target)
    return {"none": per_example, "sum": per_example.sum(), "mean": per_example.mean()}[reduction]


def _optax_probs_accepts(case):
    """optax's softmax_cross_entropy takes (N, C) logits and probability rows, nothing else."""
    if case.raises is not None:
        return "optax validates no values (jax cannot raise on data inside jit)"
    t = case.inputs["target"]
    if t.dtype.kind != "f" or np.ndim(case.inputs["input"]) != 2:
        return "optax's softmax_cross_entropy takes (N, C) logits with probability targets only"
    if case.inputs.get("weight") is not None or case.params.get("label_smoothing", 0.0):
        return "optax has no class weights or label smoothing"
    return None


def _soft_ce(cls):
    def call(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean",
             label_smoothing: float = 0.0):
        if weight is not None:
            raise NotImplementedError("SoftCrossEntropyLoss has no class weights")
        return cls(reduction=reduction, smooth_factor=label_smoothing, ignore_index=ignore_index)(input, target)
    return call


def smp_soft_ce(*args, **kwargs):
    """``segmentation_models_pytorch.losses.SoftCrossEntropyLoss`` (dim = 1)."""
    from segmentation_models_pytorch.losses import SoftCrossEntropyLoss

    return _soft_ce(SoftCrossEntropyLoss)(*args, **kwargs)


def toolbelt_soft_ce(*args, **kwargs):
    """``pytorch_toolbelt.losses.SoftCrossEntropyLoss`` (dim = 1)."""
    from pytorch_toolbelt.losses import SoftCrossEntropyLoss

    return _soft_ce(SoftCrossEntropyLoss)(*args, **kwargs)


def _soft_ce_accepts(case):
    """Batched class-index targets without class weights (the modules take no weight, no
    probabilities, and their class axis is 1)."""
    if np.ndim(case.inputs["input"]) < 2:
        return "SoftCrossEntropyLoss takes batched (N, C, …) input (class axis 1)"
    if case.inputs.get("weight") is not None:
        return "SoftCrossEntropyLoss has no class weights"
    if case.inputs["target"].dtype.kind == "f":
        return "SoftCrossEntropyLoss takes class indices only"
    return None


_SOFT_CE_NOTE = ("fairseq's label_smoothed_nll_loss on F.log_softmax: smoothing ε/C as PyTorch, but ignored rows "
                 "count in the mean's denominator (and keep a trailing axis with reduction='none'); log p = x − "
                 "logsumexp(x) keeps only absolute accuracy for confident predictions")

IMPLEMENTATIONS += [
    Implementation("cross_entropy", "optax.losses.softmax_cross_entropy", "jax",
                   "lossoracle.ecosystem.softmax:optax_cross_entropy_probs", requires=("jax", "optax"),
                   accepts=_optax_probs_accepts,
                   note="−Σ y·log_softmax(x): log_softmax keeps only absolute accuracy for confident predictions"),
    Implementation("cross_entropy", "segmentation_models_pytorch.losses.SoftCrossEntropyLoss", "torch",
                   "lossoracle.ecosystem.softmax:smp_soft_ce", requires=("segmentation_models_pytorch",),
                   accepts=_soft_ce_accepts, note=_SOFT_CE_NOTE),
    Implementation("cross_entropy", "pytorch_toolbelt.losses.SoftCrossEntropyLoss", "torch",
                   "lossoracle.ecosystem.softmax:toolbelt_soft_ce", requires=("pytorch_toolbelt",),
                   accepts=_soft_ce_accepts, note=_SOFT_CE_NOTE),
]
