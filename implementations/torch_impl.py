"""PyTorch implementations (autograd; CPU and CUDA; float16/bfloat16 computed in float32).

Each loss family lives in its own ``torch_<family>`` module; this module is the public surface.
"""

from .torch_binary import binary_cross_entropy, binary_cross_entropy_with_logits  # noqa: F401
from .torch_information import entropy, kl_div, kl_divergence  # noqa: F401
from .torch_softmax import cross_entropy, log_softmax, nll_loss, softmax  # noqa: F401
from .torch_focal import sigmoid_focal_loss  # noqa: F401
from .torch_softmax_focal import softmax_focal_loss  # noqa: F401
