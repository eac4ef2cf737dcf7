"""The spec registry: every loss lossoracle knows, by canonical name (discovered from ``reference/``)."""

from __future__ import annotations

from functools import lru_cache

from .spec import Spec

__all__ = ["names", "get", "all_specs"]


@lru_cache(maxsize=1)
def _registry() -> dict[str, Spec]:
    from lossoracle import reference

    out: dict[str, Spec] = {}
    for module in reference.family_modules():
        for spec in module.SPECS:
            if spec.name in out:
                raise RuntimeError(f"loss {spec.name!r} is specified twice")
            out[spec.name] = spec
    return out


def names() -> list[str]:
    """Canonical names of every specified loss, in registry order."""
    return list(_registry())


def get(name: str) -> Spec:
    """The spec of loss ``name``; ``KeyError`` naming the known losses otherwise."""
    try:
        return _registry()[name]
    except KeyError:
        raise KeyError(f"unknown loss {name!r}; known: {', '.join(names())}") from None


def all_specs() -> list[Spec]:
    return list(_registry().values())
