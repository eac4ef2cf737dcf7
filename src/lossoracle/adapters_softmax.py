"""Implementations of the softmax cross-entropy family: ours and PyTorch's."""

from __future__ import annotations

from .catalog import Implementation

_LOSSES = ("log_softmax", "softmax", "nll_loss", "cross_entropy")

IMPLEMENTATIONS = [
    impl
    for loss in _LOSSES
    for impl in (
        Implementation(loss, f"lossoracle.implementations.numpy_impl.{loss}", "numpy",
                       f"lossoracle.implementations.numpy_impl:{loss}",
                       grad=f"lossoracle.implementations.numpy_impl:{loss}_grad", ours=True),
        Implementation(loss, f"lossoracle.implementations.torch_impl.{loss}", "torch",
                       f"lossoracle.implementations.torch_impl:{loss}", ours=True),
        Implementation(loss, f"torch.nn.functional.{loss}", "torch", f"torch.nn.functional:{loss}",
                       note="PyTorch computes log p as x − logsumexp(x): cancels for confident predictions"),
    )
]
