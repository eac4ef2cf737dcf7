"""Hand-written C++ CPU kernels (``implementations/native/*.cpp``), built on first use, with an eager fallback.

Where ``torch.compile`` cannot fuse a kernel the way it must be (a row's maximum, its sum of
exponentials and its output in one pass over a row held in L1), a small C++ source is built with
``torch.utils.cpp_extension.load`` (cached under ``TORCH_EXTENSIONS_DIR``) and
vectorised with ATen's ``at::vec::Vectorized`` for the CPU capability PyTorch itself dispatches to.
``module(name)`` returns the built module, or None: ``LOSSORACLE_COMPILE=0``, no C++ compiler or a
failed build (a warning once; the process stops trying), or ``LOSSORACLE_NATIVE_BUILD=0`` (set in the
validator's forked workers: only a module this process already had is used) — callers then run
their eager kernels, which are exact too. The extension's name carries a digest of its source and
flags, so checkouts sharing ``TORCH_EXTENSIONS_DIR`` never load each other's build (torch tracks
source changes only within one process).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from types import ModuleType

import torch

from .compiled import ENABLED

__all__ = ["module"]

_SOURCES = Path(__file__).with_name("native")
# The flags for the capability ATen dispatches to on this CPU (``at::vec`` picks its
# implementation from CPU_CAPABILITY_*); anything else builds the portable scalar ``Vectorized``.
_CAPABILITY_FLAGS = {
    "AVX2": ["-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"],
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma",
               "-DCPU_CAPABILITY_AVX512", "-DCPU_CAPABILITY=AVX512"],
}


_MODULES: dict[str, ModuleType | None] = {}


def _build(name: str) -> ModuleType | None:
    from torch.utils.cpp_extension import load

    capability = torch.backends.cpu.get_cpu_capability()
    flags = _CAPABILITY_FLAGS.get(capability, ["-DCPU_CAPABILITY=DEFAULT"])
    source = _SOURCES / f"{name}.cpp"
    digest = hashlib.sha256(source.read_bytes() + " ".join(flags).encode()).hexdigest()[:12]
    try:
        return load(f"lossoracle_{name}_{capability.lower()}_{digest}", [str(source)],
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
