"""NumPy implementations: ``<name>(...)`` values and ``<name>_grad(grad_output, ...)`` explicit VJPs.

Each loss family lives in its own ``np_<family>`` module; this module is the public surface.
"""

from .np_softmax import (  # noqa: F401
    cross_entropy, cross_entropy_grad, log_softmax, log_softmax_grad, nll_loss, nll_loss_grad, softmax,
    softmax_grad,
)
