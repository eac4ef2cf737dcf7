"""Framework back-ends: build inputs in a dtype and device, call an implementation, take gradients.

Each back-end returns an :class:`Outcome`: the value and each gradient as float64 arrays
(exact widenings) together with the dtype they were computed in, which is the dtype the ULP
error is measured in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .spec import Case, Spec

__all__ = ["Outcome", "BACKENDS", "cotangent", "backend"]

# exact in every format; negative and zero entries, so a VJP that ignores the cotangent's sign or
# lets a masked element leak (0·inf) is caught
_PATTERN = np.array([1.0, 0.5, 2.0, -0.75, 1.25, 0.0, -1.0, 0.25])
_LONG = np.resize(_PATTERN, 4096)
_LONG.flags.writeable = False


def cotangent(shape: tuple[int, ...]) -> np.ndarray:
    """The fixed cotangent used for vector-Jacobian products of non-scalar outputs (1 for scalars)."""
    if not shape:
        return np.array(1.0)
    n = math.prod(shape)
    if n <= _LONG.size:
        return _LONG[:n].copy().reshape(shape)  # (np.resize's values, a fresh writable array)
    return np.resize(_PATTERN, n).reshape(shape)


@dataclass
class Outcome:
    value: np.ndarray
    value_dtype: str
    grads: dict[str, tuple[np.ndarray, str]] = field(default_factory=dict)


def _split(spec: Spec, case: Case, make: Callable[[str, np.ndarray], Any]):
    """Positional and keyword arguments of a call, tensors built by ``make(name, array)``."""
    pos, kw = [], {}
    for arg in spec.args:
        a = case.inputs.get(arg.name)
        if arg.positional:
            pos.append(None if a is None else make(arg.name, a))
        elif a is not None:
            kw[arg.name] = make(arg.name, a)
    kw.update(case.params)
    return pos, kw


class TorchBackend:
    name = "torch"

    @staticmethod
    def devices() -> list[str]:
        import torch

        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    dtypes = ("float16", "bfloat16", "float32", "float64")

    @staticmethod
    def run(fn: Callable, grad_fn, spec: Spec, case: Case, dtype: str, device: str) -> Outcome:
        import torch

        tdtype = getattr(torch, dtype)
        leaves: dict[str, Any] = {}

        def make(name: str, a: np.ndarray):
            if a.dtype.kind != "f":
                return torch.as_tensor(a, device=device)
            t = torch.as_tensor(a, dtype=torch.float64).to(device=device, dtype=tdtype)
            if spec.arg(name).differentiable:
                t.requires_grad_(True)
                leaves[name] = t
            return t

        pos, kw = _split(spec, case, make)
        out = fn(*pos, **kw)
        if not isinstance(out, torch.Tensor):
            out = torch.as_tensor(out)
        value = out.detach().to("cpu", torch.float64).numpy()
        result = Outcome(value, str(out.dtype).replace("torch.", ""))
        if leaves and out.requires_grad:
            g = torch.as_tensor(cotangent(tuple(out.shape)), dtype=torch.float64).to(device=device, dtype=out.dtype)
            grads = torch.autograd.grad(out, list(leaves.values()), g, allow_unused=True)
            for (name, leaf), gr in zip(leaves.items(), grads):
                gr = torch.zeros_like(leaf) if gr is None else gr
                result.grads[name] = (gr.detach().to("cpu", torch.float64).numpy(), str(gr.dtype).replace("torch.", ""))
        return result


class NumpyBackend:
    name = "numpy"

    @staticmethod
    def devices() -> list[None]:
        return [None]

    dtypes = ("float16", "float32", "float64")

    @staticmethod
    def run(fn: Callable, grad_fn, spec: Spec, case: Case, dtype: str, device: None) -> Outcome:
        def make(name: str, a: np.ndarray):
            return a.astype(dtype) if a.dtype.kind == "f" else a

        pos, kw = _split(spec, case, make)
        out = np.asarray(fn(*pos, **kw))
        result = Outcome(out.astype(np.float64), out.dtype.name)
        if grad_fn is not None:
            g = cotangent(out.shape).astype(out.dtype)
            for name, gr in grad_fn(g, *pos, **kw).items():
                gr = np.asarray(gr)
                result.grads[name] = (gr.astype(np.float64), gr.dtype.name)
        return result


def _jax_setup(jax) -> None:
    """float64 on; XLA's compilations kept on disk (``LOSSORACLE_CACHE``, default
    ``~/.cache/lossoracle``) so a forked worker does not start from nothing on every run; and
    :data:`XLA_FLAGS` for the backend this process starts (a worker starts its own)."""
    import os

    flags = os.environ.get("XLA_FLAGS", "")
    missing = [f for f in XLA_FLAGS if f.split("=")[0] not in flags]
    if missing:
        os.environ["XLA_FLAGS"] = " ".join([flags, *missing]).strip()
    jax.config.update("jax_enable_x64", True)
    if jax.config.jax_compilation_cache_dir is None and os.environ.get("LOSSORACLE_JAX_CACHE", "1") != "0":
        root = os.environ.get("LOSSORACLE_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "lossoracle"))
        jax.config.update("jax_compilation_cache_dir", os.path.join(root, "jax"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


# A jitted call should round where the library's operations round, as they do one by one: no
# float16/bfloat16 intermediate kept in float32 across a fusion (excess precision), no a·b + c
# contracted into one FMA by LLVM (optimisation level 0; it also compiles faster).
XLA_FLAGS = ("--xla_allow_excess_precision=false", "--xla_backend_optimization_level=0")


class JaxBackend:
    """The value and VJP of one call as one jitted XLA computation per case shape, dtype and
    parameters (eager JAX lowers and compiles every primitive on its own, op by op: ~90 % of a
    run). Every array is an argument of the computation — none is folded as a constant at
    compile time — and a callable that cannot be traced (Python control flow on values) runs
    eagerly, as before. The compiled computation is kept across runs (:mod:`lossoracle.jaxcache`)."""

    name = "jax"

    @staticmethod
    def devices() -> list[str]:
        return ["cpu"]

    dtypes = ("float16", "bfloat16", "float32", "float64")

    @staticmethod
    def run(fn: Callable, grad_fn, spec: Spec, case: Case, dtype: str, device: str) -> Outcome:
        import jax
        import jax.numpy as jnp

        from . import jaxcache

        _jax_setup(jax)
        arrays: dict[str, Any] = {}

        def make(name: str, a: np.ndarray):
            # exact: the case is valid in ``dtype`` only where its values are representable there
            arrays[name] = jnp.asarray(a if a.dtype.kind != "f" else a.astype(jnp.dtype(dtype)))
            return name  # a placeholder, filled in from the computation's arguments

        pos, kw = _split(spec, case, make)
        diff = [n for n in arrays if spec.arg(n).differentiable and jnp.issubdtype(arrays[n].dtype, jnp.floating)]
        fixed = [n for n in arrays if n not in diff]
        positional = [a for a in spec.args if a.positional]

        def value_and_vjp(leaves, others):
            env = dict(zip(fixed, others))

            def call(*leaves):
                env.update(zip(diff, leaves))
                p = [env[x] if a.name in arrays else x for a, x in zip(positional, pos)]
                k = {key: env[v] if key in arrays else v for key, v in kw.items()}
                return fn(*p, **k)

            out, vjp = jax.vjp(call, *leaves)
            return out, vjp(jnp.asarray(cotangent(tuple(out.shape)), dtype=out.dtype))

        leaves, others = [arrays[n] for n in diff], [arrays[n] for n in fixed]
        def outcome(out, grads) -> Outcome:
            result = Outcome(np.asarray(out, dtype=np.float64), str(out.dtype))
            for name, gr in zip(diff, grads):
                result.grads[name] = (np.asarray(gr, dtype=np.float64), str(gr.dtype))
            return result

        stored = jaxcache.key(fn, spec.name, dtype, arrays, case.params, (pos, sorted(kw.items()), diff, fixed))
        kept = jaxcache.load(stored)  # compiled by an earlier run: no tracing (lossoracle.jaxcache)
        if kept is not None:
            try:
                return outcome(*kept(leaves, others))
            except Exception:  # an entry that does not run: traced and compiled afresh below
                pass
        try:
            compiled = jaxcache.compile_fresh(jax.jit(value_and_vjp).lower(leaves, others))
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
                jax.errors.TracerIntegerConversionError, jax.errors.TracerBoolConversionError):
            return outcome(*value_and_vjp(leaves, others))
        jaxcache.store(stored, compiled)
        return outcome(*compiled(leaves, others))


BACKENDS: Mapping[str, Any] = {"torch": TorchBackend, "numpy": NumpyBackend, "jax": JaxBackend}


def backend(framework: str):
    try:
        return BACKENDS[framework]
    except KeyError:
        raise ValueError(f"framework must be one of {sorted(BACKENDS)}, got {framework!r}") from None
