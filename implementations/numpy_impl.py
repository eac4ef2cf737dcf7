"""NumPy implementations: ``<name>(...)`` values and ``<name>_grad(grad_output, ...)`` explicit VJPs.

Each loss family lives in its own ``np_<family>`` module; this module is the public surface.
"""

from .np_binary import (  # noqa: F401
    binary_cross_entropy, binary_cross_entropy_grad, binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_grad,
)
from .np_information import (  # noqa: F401
    entropy, entropy_grad, kl_div, kl_div_grad, kl_divergence, kl_divergence_grad,
)
from .np_softmax import (  # noqa: F401
    cross_entropy, cross_entropy_grad, log_softmax, log_softmax_grad, nll_loss, nll_loss_grad, softmax,
    softmax_grad,
)
from .np_focal import (  # noqa: F401
    sigmoid_focal_loss, sigmoid_focal_loss_grad, softmax_focal_loss, softmax_focal_loss_grad,
)
