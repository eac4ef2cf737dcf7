"""The catalogue of implementations ``lossoracle check`` validates: ours and the ecosystem's.

Each loss family lists its implementations in one ``lossoracle.adapters_<family>`` module as
``IMPLEMENTATIONS``: the callable (by dotted path, imported lazily so a missing library gives a
"not installed" row, never an import error), the framework, the convention it documents, and
for third-party callables whose signature is not canonical, a small adapter in that module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .report import Report, Result
from .spec import Case

__all__ = ["Implementation", "resolve", "implementations", "run", "FAMILY_MODULES"]

FAMILY_MODULES = (
    "lossoracle.adapters_softmax",
    "lossoracle.adapters_binary",
    "lossoracle.adapters_information",
    "lossoracle.adapters_focal",
)


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


def implementations(loss: str | None = None) -> list[Implementation]:
    """Every catalogued implementation (of ``loss`` if given), ours first."""
    out = []
    for mod in FAMILY_MODULES:
        out.extend(importlib.import_module(mod).IMPLEMENTATIONS)
    if loss is not None:
        out = [i for i in out if i.loss == loss]
    return sorted(out, key=lambda i: (not i.ours,))


def run(impl: Implementation, **options: Any) -> Report:
    """Check one catalogued implementation; a missing library gives one ``not_installed`` row."""
    from .engine import check

    missing = impl.installed()
    if missing:
        return Report([Result(impl.loss, impl.name, None, "-", "-", "value", "-", None, None, 0, "not_installed",
                              None, missing, finding="not_installed")])
    return check(resolve(impl.target), impl.loss, impl.framework, name=impl.name,
                 grad=resolve(impl.grad) if impl.grad else None, conventions=impl.conventions,
                 accepts=impl.accepts, unsupported_dtypes=impl.unsupported_dtypes, upcast=impl.upcast,
                 note=impl.note, strict_errors=impl.ours, target=impl.target, **options)
