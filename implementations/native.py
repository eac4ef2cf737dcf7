"""Hand-written C++ CPU kernels (``implementations/native/*.cpp``), built on first use, with an eager fallback.

Where ``torch.compile`` cannot fuse a kernel the way it must be (a row's maximum, its sum of
exponentials and its output in one pass over a row held in L1), a small C++ source is built with
``torch.utils.cpp_extension.load`` (cached per source hash under ``TORCH_EXTENSIONS_DIR``) and
vectorised with ATen's ``at::vec::Vectorized`` for the CPU capability PyTorch itself dispatches to.
``module(name)`` returns the built module, or None: ``LOSSORACLE_COMPILE=0``, no C++ compiler or a
failed build (a warning once; the process stops trying), or ``LOSSORACLE_NATIVE_BUILD=0`` (set in the
validator's forked workers: only a module this process already had is used) — callers then run
their eager kernels, which are exact too. A build lock older than :data:`STALE_LOCK_S` (a build
killed halfway; torch would wait on it forever) is removed with a warning.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from types import ModuleType

import torch

from .compiled import ENABLED

__all__ = ["module", "STALE_LOCK_S"]

STALE_LOCK_S = 600.0  # a build takes 25–95 s here, even on a loaded machine

_SOURCES = Path(__file__).with_name("native")
# The flags for the capability ATen dispatches to on this CPU (``at::vec`` picks its
# implementation from CPU_CAPABILITY_*); anything else builds the portable scalar ``Vectorized``.
_CAPABILITY_FLAGS = {
    "AVX2": ["-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"],
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma",
               "-DCPU_CAPABILITY_AVX512", "-DCPU_CAPABILITY=AVX512"],
}


_MODULES: dict[str, ModuleType | None] = {}


def _clear_stale_lock(extension: str) -> None:
    from torch.utils import cpp_extension

    try:
        lock = Path(cpp_extension._get_build_directory(extension, False)) / "lock"
        age = time.time() - lock.stat().st_mtime
    except (AttributeError, OSError):  # no lock (the usual case), or torch's private helper moved
        return
    if age > STALE_LOCK_S:
        warnings.warn(f"lossoracle native kernels: removing a stale build lock ({lock}, {age:.0f} s old)",
                      RuntimeWarning)
        lock.unlink(missing_ok=True)


def _build(name: str) -> ModuleType | None:
    from torch.utils.cpp_extension import load

    capability = torch.backends.cpu.get_cpu_capability()
    flags = _CAPABILITY_FLAGS.get(capability, ["-DCPU_CAPABILITY=DEFAULT"])
    extension = f"lossoracle_{name}_{capability.lower()}"
    _clear_stale_lock(extension)
    try:
        return load(extension, [str(_SOURCES / f"{name}.cpp")],
                    # never -ffast-math: the error-free transformations (TwoSum, FMA products) need IEEE rounding
                    extra_cflags=["-O3", "-fno-math-errno", *flags], verbose=False)
    except Exception as err:  # no compiler, no headers, a failed build: the eager kernels are exact too
        warnings.warn(f"lossoracle native kernels ({name}): build failed, using eager kernels ({err!r})",
                      RuntimeWarning)
        return None


def module(name: str) -> ModuleType | None:
    """The built extension ``native/<name>.cpp``, or None where native kernels are off or cannot be built."""
    if not ENABLED["on"]:
        return None
    if name not in _MODULES:
        if os.environ.get("LOSSORACLE_NATIVE_BUILD", "1") == "0":
            return None
        _MODULES[name] = _build(name)
    return _MODULES[name]
