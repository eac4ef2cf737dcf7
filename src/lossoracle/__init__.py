"""lossoracle: high-precision oracles and a conformance checker for ML loss functions."""

__version__ = "0.1.0"
