"""Implementations of the softmax cross-entropy family: ours and PyTorch's."""

from __future__ import annotations

from .catalog import Implementation

_NOTES = {
    "log_softmax": "x − logsumexp(x) is scale-accurate, not faithful, for a dominant class",
    "softmax": "backward evaluates p·(g − Σ g·p) directly: cancels when one probability dominates",
    "nll_loss": "",
    "cross_entropy": "log p = x − logsumexp(x) is scale-accurate, not faithful, for confident predictions",
}

IMPLEMENTATIONS = [
    impl
    for loss, note in _NOTES.items()
    for impl in (
        Implementation(loss, f"lossoracle.implementations.numpy_impl.{loss}", "numpy",
                       f"lossoracle.implementations.numpy_impl:{loss}",
                       grad=f"lossoracle.implementations.numpy_impl:{loss}_grad", ours=True),
        Implementation(loss, f"lossoracle.implementations.torch_impl.{loss}", "torch",
                       f"lossoracle.implementations.torch_impl:{loss}", ours=True),
        Implementation(loss, f"torch.nn.functional.{loss}", "torch", f"torch.nn.functional:{loss}",
                       note=note),
    )
]
