"""The ecosystem's softmax family: PyTorch's functions and optax's cross-entropy."""

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
