"""Discovery behind the public surface: ``numpy_impl`` and ``torch_impl`` re-export every family module.

A family's implementations live in ``implementations/<family>_numpy.py`` and
``implementations/<family>_torch.py``; their public names (``__all__``, else every public
function or class defined there) appear in ``numpy_impl`` / ``torch_impl`` with no list kept by
hand. A new family module shows up by existing.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["family_modules", "export"]


def family_modules(framework: str) -> list[ModuleType]:
    """The ``<family>_<framework>`` modules of this package, imported, in name order."""
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.endswith(f"_{framework}"))
    return [importlib.import_module(f"{__package__}.{n}") for n in names]


def _public(module: ModuleType) -> list[str]:
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [k for k, v in vars(module).items()
            if not k.startswith("_") and callable(v) and getattr(v, "__module__", None) == module.__name__]


def export(namespace: dict[str, Any], framework: str) -> list[str]:
    """Copy every family module's public names into ``namespace``; a name defined twice is an error."""
    names: list[str] = []
    for module in family_modules(framework):
        for name in _public(module):
            if name in namespace and namespace[name] is not getattr(module, name):
                raise RuntimeError(f"{name!r} is exported by two {framework} family modules")
            namespace[name] = getattr(module, name)
            names.append(name)
    return names
