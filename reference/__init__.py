"""mpmath oracles: one module per loss family, each exporting its functions and ``SPECS``.

``lossoracle.reference.<name>(...)`` is the exact value; ``<name>_grad(grad_output, ...)`` its
vector-Jacobian product. Inputs are taken as exact binary values; results are unrounded mpf.
"""

from .cross_entropy import cross_entropy, cross_entropy_grad, nll_loss, nll_loss_grad
from .softmax import log_softmax, log_softmax_grad, softmax, softmax_grad

FAMILIES = (
    "softmax",
    "cross_entropy",
)
