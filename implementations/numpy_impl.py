"""NumPy implementations: ``<name>(...)`` values and ``<name>_grad(grad_output, ...)`` explicit VJPs.

The public surface, generated: every ``implementations/<family>_numpy.py`` module's public names
(:mod:`._surface`). The code lives in the family modules.
"""

from ._surface import export

__all__ = export(globals(), "numpy")
