"""mpmath oracles: one module per loss family, each exporting its functions and ``SPECS``.

``lossoracle.reference.<name>(...)`` is the exact value; ``<name>_grad(grad_output, ...)`` its
vector-Jacobian product. Inputs are taken as exact binary values; results are unrounded mpf.
"""

from .binary import (
    binary_cross_entropy, binary_cross_entropy_grad, binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_grad,
)
from .cross_entropy import cross_entropy, cross_entropy_grad, nll_loss, nll_loss_grad
from .focal import sigmoid_focal_loss, sigmoid_focal_loss_grad, softmax_focal_loss, softmax_focal_loss_grad
from .information import (
    entropy, entropy_grad, kl_div, kl_div_grad, kl_divergence, kl_divergence_grad,
)
from .softmax import log_softmax, log_softmax_grad, softmax, softmax_grad

FAMILIES = (
    "softmax",
    "cross_entropy",
    "binary",
    "focal",
    "information",
)
