"""JAX executables kept across runs, found without tracing (:class:`lossoracle.frameworks.JaxBackend`).

XLA's own persistent cache (``jax_compilation_cache_dir``) skips the compilation of a repeated
call, but not the tracing and lowering that compute its key: ~50 ms of Python per call of an
optax loss, most of a repeated ``lossoracle check``'s JAX time. Here the compiled value-and-VJP
computation of one call is stored (``jax.experimental.serialize_executable``, as XLA's cache
stores it) under a key of everything the traced computation can depend on, and loaded instead
of tracing:

- the call: the implementation (module and name), the spec, the dtype, every input's shape and
  dtype (the arrays are arguments of the computation, never constants), the parameters (type and
  ``repr``: 1, 1.0 and True differ);
- the code: the source of the implementation's module and of :mod:`lossoracle.frameworks`;
  the size and modification time of every file of ``jax``, ``jaxlib`` and the implementation's
  top-level package; the version of every installed distribution (the ``*.dist-info`` names of
  the environment's ``site-packages``: optax, chex, ml_dtypes, numpy, ...); the Python version;
- the compiler: every ``jax.config`` value, ``XLA_FLAGS``, the backend's platform version.

Change any of them and the key changes (a stale entry is never read, only left behind). A
file is written whole under a temporary name and renamed, so processes sharing the cache never
read a partial entry; an entry that fails to load or to run is ignored (traced and compiled
afresh). Only a fresh compilation is stored (:func:`compile_fresh`): an executable that XLA's
cache loaded serialises without its machine code (it then fails to run: "Function ... not
found").
``LOSSORACLE_JAX_CACHE=0`` turns this off together with XLA's cache.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import pathlib
import pickle
import site
import sys
import tempfile
from collections.abc import Callable
from typing import Any

__all__ = ["folder", "key", "load", "store", "compile_fresh"]


def folder() -> pathlib.Path | None:
    """``$LOSSORACLE_CACHE/jax-exec`` (None when ``LOSSORACLE_CACHE=off`` or ``LOSSORACLE_JAX_CACHE=0``)."""
    root = os.environ.get("LOSSORACLE_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "lossoracle"))
    if root == "off" or os.environ.get("LOSSORACLE_JAX_CACHE", "1") == "0":
        return None
    return pathlib.Path(root) / "jax-exec"


@functools.lru_cache(maxsize=None)
def _tree_stats(root: str) -> str:
    """Digest of (path, size, mtime) of every file under ``root``."""
    h = hashlib.sha256()
    for base, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")):
                continue
            path = os.path.join(base, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def _distributions() -> str:
    """The installed distributions and their versions (the ``*.dist-info`` / ``*.egg-info`` names)."""
    names = []
    for d in [*site.getsitepackages(), site.getusersitepackages(), *sys.path]:
        try:
            names += [f"{d}/{n}" for n in os.listdir(d) if n.endswith((".dist-info", ".egg-info"))]
        except OSError:
            continue
    return "\n".join(sorted(set(names)))


def _package_dir(module_name: str) -> str | None:
    module = sys.modules.get(module_name.split(".")[0])
    paths = list(getattr(module, "__path__", []) or [])
    if paths:
        return paths[0]
    file = getattr(module, "__file__", None)
    return os.path.dirname(file) if file else None


def _environment(module_name: str) -> str:
    """The code and compiler part of the key, for an implementation defined in ``module_name``: the
    code's digests once per process, the compiler's settings (``jax.config``, ``XLA_FLAGS``) at every
    call — a process may change them between two calls."""
    import jax

    config = repr(sorted((k, repr(v)) for k, v in jax.config.values.items()))
    return repr((_code(module_name), config, os.environ.get("XLA_FLAGS", "")))


@functools.lru_cache(maxsize=None)
def _code(module_name: str) -> str:
    """The code part of the key, and the platform, for an implementation defined in ``module_name``."""
    import jax
    import jaxlib

    from . import frameworks

    files = [inspect.getsourcefile(sys.modules[module_name]), inspect.getsourcefile(frameworks)]
    sources = [hashlib.sha256(pathlib.Path(f).read_bytes()).hexdigest() for f in files if f]
    trees = [_tree_stats(d) for d in {os.path.dirname(jax.__file__), os.path.dirname(jaxlib.__file__),
                                      _package_dir(module_name)} if d]
    device = jax.devices("cpu")[0]
    return repr((sys.version, sources, sorted(trees), _distributions(), device.client.platform_version,
                 device.device_kind))


def key(fn: Callable, spec_name: str, dtype: str, arrays: dict[str, Any], params: dict[str, Any],
        layout: Any) -> str | None:
    """The key of the compiled value-and-VJP of ``fn`` on these inputs (shapes and dtypes of
    ``arrays``, ``params``, and ``layout``: how they are passed), or None when ``fn`` has no
    importable module (a lambda's module source does not pin it down: not cached)."""
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not module or not name or "<" in name or module not in sys.modules or module == "__main__":
        return None
    try:
        env = _environment(module)
    except (OSError, TypeError):  # no source file to hash: not cached
        return None
    call = (module, name, spec_name, dtype, sorted((k, tuple(a.shape), str(a.dtype)) for k, a in arrays.items()),
            sorted((k, type(v).__name__, repr(v)) for k, v in params.items()), repr(layout))
    return hashlib.sha256(repr((env, call)).encode()).hexdigest()


def load(k: str | None):
    """The stored executable of key ``k``, loaded, or None."""
    where = folder()
    if k is None or where is None:
        return None
    try:
        payload, in_tree, out_tree = pickle.loads((where / f"{k}.pkl").read_bytes())
        from jax.experimental.serialize_executable import deserialize_and_load

        return deserialize_and_load(payload, in_tree, out_tree)
    except Exception:  # missing, or unreadable: traced and compiled afresh
        return None


def compile_fresh(lowered):
    """``lowered.compile()`` bypassing XLA's persistent cache when this cache is on (see the module
    docstring); the same compilation, so the same executable."""
    if folder() is None:
        return lowered.compile()
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    before = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()  # it remembers whether it is on
    try:
        return lowered.compile()
    finally:
        jax.config.update("jax_enable_compilation_cache", before)
        compilation_cache.reset_cache()


def store(k: str | None, compiled) -> None:
    """Keep ``compiled`` (a ``jax.stages.Compiled``) under key ``k`` (best effort)."""
    where = folder()
    if k is None or where is None:
        return
    try:
        from jax.experimental.serialize_executable import serialize

        data = pickle.dumps(serialize(compiled))
        where.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=where, suffix=".tmp")
    except Exception:  # a cache never fails a run
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, where / f"{k}.pkl")
    except OSError:
        pathlib.Path(tmp).unlink(missing_ok=True)
