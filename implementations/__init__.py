"""Implementations judged by lossoracle: ``numpy_impl`` (forward and explicit VJPs) and
``torch_impl`` (autograd; CPU and CUDA)."""
