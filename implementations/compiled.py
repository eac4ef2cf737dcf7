"""``torch.compile`` for the fused CPU kernels, with a budget of variants and an eager fallback.

A :class:`Kernel` compiles its function once (``dynamic=True``); each new *variant* — the arguments
that force a recompile (dtypes, flags, γ, …) — counts against its budget, beyond which the call
returns None and the caller runs its eager kernels. A failed compilation (no C++ compiler, an
unsupported platform) turns compilation off for the process with a warning: the eager kernels
are exact too. ``LOSSORACLE_COMPILE=0`` never compiles.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Hashable
from typing import Any

import torch

__all__ = ["ENABLED", "Kernel"]

ENABLED = {"on": os.environ.get("LOSSORACLE_COMPILE", "1") != "0"}


@functools.cache
def _prime_autograd() -> None:
    """One tiny backward before the process's first compiled call. The autograd engine sets up its
    device threads once, on its first backward; when that first backward comes after a compiled call
    it starts worker threads, and a child forked from the process (the validator's isolated workers,
    :mod:`lossoracle.isolation`) then refuses every backward ("autograd's threading in combination
    with fork-based multiprocessing"). A backward first keeps the engine thread-free."""
    with torch.enable_grad():
        torch.zeros((), requires_grad=True).mul(1.0).backward()


class Kernel:
    """``fn`` through ``torch.compile``: ``kernel(variant, *args)`` is ``fn(*args)`` compiled, or None."""

    def __init__(self, fn: Callable, label: str, max_variants: int, options: dict | None = None) -> None:
        self.fn, self.label, self.max_variants, self.options = fn, label, max_variants, options
        self.compiled: Callable | None = None
        self.variants: set[Hashable] = set()

    def __call__(self, variant: Hashable, *args: Any) -> Any:
        if not ENABLED["on"] or torch.compiler.is_compiling():
            return None
        if variant not in self.variants:
            if len(self.variants) >= self.max_variants:
                return None
            self.variants.add(variant)
        try:
            if self.compiled is None:
                _prime_autograd()
                self.compiled = torch.compile(self.fn, dynamic=True, options=self.options)
            return self.compiled(*args)
        except Exception as err:  # no C++ compiler, unsupported platform, ...: the eager kernels are exact too
            ENABLED["on"] = False
            warnings.warn(f"{self.label}: torch.compile failed, using eager kernels ({err!r})", RuntimeWarning)
            return None
