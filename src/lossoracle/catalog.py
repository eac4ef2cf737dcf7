"""The catalogue of implementations ``lossoracle check`` validates: ours and the ecosystem's.

Both are discovered, with no list kept by hand:

- ours: every public name of ``lossoracle.implementations.numpy_impl`` / ``torch_impl`` (which
  re-export the ``implementations/<family>_numpy.py`` / ``_torch.py`` modules) that is a spec's
  name; NumPy ones with their ``<name>_grad`` VJP;
- the ecosystem's: each module ``lossoracle.ecosystem.<family>`` lists its third-party
  implementations as ``IMPLEMENTATIONS``: the callable (by dotted path, imported lazily so a
  missing library gives a ``not_installed`` row, never an import error), the framework, the
  convention it documents, and for callables whose signature is not canonical, a small adapter
  in that module.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .report import Report, Result
from .spec import Case

__all__ = ["Implementation", "resolve", "implementations", "run", "ours", "ecosystem_modules"]

_OURS = "lossoracle.implementations"


def resolve(path: str) -> Callable:
    """Import ``package.module:attr.attr`` or ``package.module.attr`` and return the object."""
    if ":" in path:
        mod, attr = path.split(":", 1)
    else:
        mod, attr = path.rsplit(".", 1)
        while True:
            try:
                importlib.import_module(mod)
                break
            except ModuleNotFoundError:
                if "." not in mod:
                    raise
                mod, head = mod.rsplit(".", 1)
                attr = f"{head}.{attr}"
    obj: Any = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Implementation:
    """One implementation of one loss.

    ``name`` is what reports show (the library's own dotted path); ``target`` the callable with
    the canonical signature (the library's function itself, or our adapter around it);
    ``grad`` an explicit VJP for NumPy callables; ``conventions`` the oracle variant the
    library documents; ``note`` the one-line explanation shown beside a deviation;
    ``accepts(case)`` a reason why a case lies outside the documented interface, and
    ``unsupported_dtypes`` why a dtype does (both give ``unsupported`` rows, never scored);
    ``upcast`` declares that results come back in a wider dtype than the input's.
    """

    loss: str
    name: str
    framework: str
    target: str
    grad: str | None = None
    conventions: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""
    ours: bool = False
    requires: tuple[str, ...] = ()
    accepts: Callable[[Case], str | None] | None = None
    unsupported_dtypes: Mapping[str, str] = field(default_factory=dict)
    upcast: bool = False

    def installed(self) -> str | None:
        """None when importable, else the reason ("not installed: kornia")."""
        for mod in (*self.requires, self.framework if self.framework != "numpy" else "numpy"):
            try:
                importlib.import_module(mod)
            except Exception as e:  # a broken install is reported, not raised
                return f"not installed: {mod} ({type(e).__name__})"
        return None


def ours() -> list[Implementation]:
    """Our implementations: every spec name that ``numpy_impl`` / ``torch_impl`` export."""
    from . import specs
    from .implementations import numpy_impl, torch_impl

    out = []
    for loss in specs.names():
        if loss in numpy_impl.__all__:
            grad = f"{_OURS}.numpy_impl:{loss}_grad" if f"{loss}_grad" in numpy_impl.__all__ else None
            out.append(Implementation(loss, f"{_OURS}.numpy_impl.{loss}", "numpy", f"{_OURS}.numpy_impl:{loss}",
                                      grad=grad, ours=True))
        if loss in torch_impl.__all__:
            out.append(Implementation(loss, f"{_OURS}.torch_impl.{loss}", "torch", f"{_OURS}.torch_impl:{loss}",
                                      ours=True))
    return out


def ecosystem_modules() -> list:
    """The ``lossoracle.ecosystem.<family>`` modules, imported, in name order."""
    from . import ecosystem

    return [importlib.import_module(f"{ecosystem.__name__}.{m.name}")
            for m in sorted(pkgutil.iter_modules(ecosystem.__path__), key=lambda m: m.name)]


def implementations(loss: str | None = None) -> list[Implementation]:
    """Every catalogued implementation (of ``loss`` if given), ours first, in spec order."""
    from . import specs

    out = ours() + [i for m in ecosystem_modules() for i in m.IMPLEMENTATIONS]
    if loss is not None:
        out = [i for i in out if i.loss == loss]
    order = {name: k for k, name in enumerate(specs.names())}
    return sorted(out, key=lambda i: (order.get(i.loss, len(order)), not i.ours))


def run(impl: Implementation, **options: Any) -> Report:
    """Check one catalogued implementation; a missing library gives one ``not_installed`` row."""
    from .engine import check

    missing = impl.installed()
    if missing:
        return Report([Result(impl.loss, impl.name, None, "-", "-", "value", "-", None, None, 0, "not_installed",
                              None, missing, finding="not_installed")])
    return check(resolve(impl.target), impl.loss, impl.framework, grad=resolve(impl.grad) if impl.grad else None,
                 conventions=impl.conventions, name=impl.name, accepts=impl.accepts,
                 unsupported_dtypes=impl.unsupported_dtypes, upcast=impl.upcast, note=impl.note,
                 strict_errors=impl.ours, target=impl.target, **options)
