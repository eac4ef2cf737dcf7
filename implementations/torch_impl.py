"""PyTorch implementations (autograd; CPU and CUDA; float16/bfloat16 computed in float32).

The public surface, generated: every ``implementations/<family>_torch.py`` module's public names
(:mod:`._surface`). The code lives in the family modules.
"""

from ._surface import export

__all__ = export(globals(), "torch")
