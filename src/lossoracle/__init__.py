"""lossoracle: high-precision oracles and a conformance checker for ML loss functions."""

__version__ = "0.1.0"

from .engine import Options, check  # noqa: E402
from .report import Report  # noqa: E402

__all__ = ["check", "Options", "Report", "__version__"]
