"""mpmath oracles: one module per loss family (``reference/<family>.py``), each exporting ``SPECS``.

``lossoracle.reference.<name>(...)`` is the exact value; ``<name>_grad(grad_output, ...)`` its
vector-Jacobian product. Inputs are taken as exact binary values; results are unrounded mpf.
The families are discovered (every module of this package with a ``SPECS`` tuple), and so are
the names re-exported here: a new ``reference/<family>.py`` needs no edit elsewhere.
"""

from __future__ import annotations

import importlib
import pkgutil

__all__: list[str] = []


def family_modules() -> list:
    """The family modules (those with ``SPECS``), imported, in name order."""
    out = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "SPECS"):
            out.append(module)
    return out


for _module in family_modules():
    for _spec in _module.SPECS:
        globals()[_spec.name] = _spec.oracle
        __all__.append(_spec.name)
        if _spec.gradient is not None:
            globals()[f"{_spec.name}_grad"] = _spec.gradient
            __all__.append(f"{_spec.name}_grad")
