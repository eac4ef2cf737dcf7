"""PyTorch implementations (autograd; CPU and CUDA; float16/bfloat16 computed in float32).

Each loss family lives in its own ``torch_<family>`` module; this module is the public surface.
"""

from .torch_softmax import cross_entropy, log_softmax, nll_loss, softmax  # noqa: F401
