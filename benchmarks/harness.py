"""What the asv suites and ``ratios.py`` share: every loss's workloads (the registry's, plus one
derived from the catalogue for a loss the registry does not name), its inputs at benchmark size,
its callables (ours in torch and NumPy, the baseline) and one timed step of each.

Inputs are deterministic (fixed seeds, append-only: never change an existing workload's data).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

try:  # imported by the asv suites (a package), or by a script in this folder
    from .baselines import BASELINES, IDIOMS, WORKLOADS, Workload
except ImportError:
    from baselines import BASELINES, IDIOMS, WORKLOADS, Workload

__all__ = ["workloads", "workload", "arrays", "params", "make_inputs", "Variant", "VARIANTS", "variant", "floors",
           "baseline_name", "FALLBACK_ELEMENTS"]

# a loss the registry does not name: its catalogue case tiled along axis 0 to about this many elements
# (every tiled argument grows: a pairwise loss, whose output grows with two of them, needs a registry entry)
FALLBACK_ELEMENTS = 2**16


def _spec(loss: str):
    from lossoracle import specs

    return specs.get(loss)


def _fallback(loss: str) -> Workload | None:
    """A workload for a loss the registry does not name: its first generated (else first valid)
    catalogue case whose first argument is floating, tiled along axis 0 (``kinds={"*": "tile"}``)."""
    spec = _spec(loss)
    cases = [c for c in spec.cases() if c.raises is None]
    first = spec.args[0].name
    cases = [c for c in cases if c.inputs.get(first) is not None and c.inputs[first].dtype.kind == "f"
             and c.inputs[first].ndim >= 1 and np.all(np.isfinite(c.inputs[first]))]
    if not cases:
        return None
    case = next((c for c in cases if c.id.startswith("random")), cases[0])
    n = max(1, case.inputs[first].size)
    factor = 2 ** round(math.log2(max(1, FALLBACK_ELEMENTS // n)))
    shape = (case.inputs[first].shape[0] * factor, *case.inputs[first].shape[1:])
    return Workload(loss, shape, dict(case.params), kinds={"*": f"tile:{case.id}:{factor}"}, label="catalogue")


def workloads() -> list[Workload]:
    """The registry's workloads, then one derived from the catalogue for each other loss."""
    from lossoracle import specs

    named = {w.loss for w in WORKLOADS}
    out = list(WORKLOADS)
    for loss in specs.names():
        if loss not in named:
            w = _fallback(loss)
            if w is not None:
                out.append(w)
    return out


def workload(key: str) -> Workload:
    for w in workloads():
        if w.key == key:
            return w
    raise KeyError(f"unknown workload {key!r}")


def _class_axis_dropped(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape[:1] + shape[2:] if len(shape) >= 2 else ()


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _draw(kind: str, shape: tuple[int, ...], primary: tuple[int, ...], rng: np.random.Generator,
          first_boxes: np.ndarray | None, domain: tuple[float, float] | None) -> np.ndarray:
    if kind in ("class_index", "class_index_or_probability_target"):
        classes = primary[1] if len(primary) >= 2 else primary[0]
        return rng.integers(0, classes, size=_class_axis_dropped(primary)).astype(np.int64)
    if kind == "logits":
        return rng.standard_normal(shape) * 3
    if kind == "log_probabilities":
        return np.log(_softmax(rng.standard_normal(shape) * 3))
    if kind in ("distribution", "probabilities_or_log_probabilities"):
        return _softmax(rng.standard_normal(shape) * 2)
    if kind == "probabilities":
        return 1 / (1 + np.exp(-2 * rng.standard_normal(shape)))
    if kind == "binary_target":
        return (rng.random(shape) < 0.1).astype(np.float64)
    if kind == "probability_target":
        return rng.random(shape)
    if kind == "task_loss":
        return np.exp(rng.random(shape) * 8 - 4)
    if kind == "kpi":
        return rng.random(shape) * 0.9 + 0.05
    if kind == "weight":
        return np.ones(shape)
    if kind == "boxes":  # centres in [0, 1000)², sizes log-uniform in [4, 400]; later boxes jitter the first
        n = shape[0]
        if first_boxes is None:
            c = rng.random((n, 2)) * 1000
            s = np.exp(rng.random((n, 2)) * np.log(100.0)) * 4
        else:
            c0, s0 = (first_boxes[:, :2] + first_boxes[:, 2:]) / 2, first_boxes[:, 2:] - first_boxes[:, :2]
            c, s = c0 + rng.standard_normal((n, 2)) * 0.2 * s0, s0 * np.exp(rng.standard_normal((n, 2)) * 0.2)
        return np.concatenate([c - s / 2, c + s / 2], axis=1)
    if domain is not None:
        return domain[0] + rng.random(shape) * (domain[1] - domain[0])
    raise ValueError(f"no generator for argument kind {kind!r}: name one in the workload's kinds")


def _tiled(w: Workload) -> dict[str, np.ndarray | None]:
    _, case_id, factor = w.kinds["*"].split(":")
    case = next(c for c in _spec(w.loss).cases() if c.id == case_id)
    return {k: None if v is None else np.tile(v, (int(factor),) + (1,) * (v.ndim - 1)) for k, v in case.inputs.items()}


def arrays(w: Workload) -> dict[str, np.ndarray]:
    """The positional inputs of ``w`` as float64 / int64 arrays, in the spec's order."""
    spec = _spec(w.loss)
    if "*" in w.kinds:
        tiled = _tiled(w)
        return {a.name: tiled[a.name] for a in spec.args if a.positional and tiled.get(a.name) is not None}
    from lossoracle.strategies import KIND_DOMAINS

    out: dict[str, np.ndarray] = {}
    first_boxes = None
    for i, a in enumerate(a for a in spec.args if a.positional):
        rng = np.random.default_rng([20261206, i])
        kind = w.kinds.get(a.name, a.kind)
        v = _draw(kind, w.shape, w.shape, rng, first_boxes, a.domain or KIND_DOMAINS.get(kind))
        if kind == "boxes" and first_boxes is None:
            first_boxes = v
        out[a.name] = v
    return out


def params(w: Workload) -> dict[str, Any]:
    """The keyword parameters: the spec's defaults, overridden by the workload's."""
    return {**_spec(w.loss).params, **w.params}


def grad_args(w: Workload) -> tuple[str, ...]:
    spec = _spec(w.loss)
    if w.grad is not None:
        return w.grad
    return tuple(a.name for a in spec.args if a.differentiable)[:1]


def make_inputs(w: Workload, dtype: str, device: str = "cpu", framework: str = "torch",
                base: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The positional inputs as tensors (or NumPy arrays) in ``dtype``; float inputs named by
    :func:`grad_args` require gradients."""
    base = arrays(w) if base is None else base
    if framework == "numpy":
        if dtype == "bfloat16":
            raise NotImplementedError("NumPy has no bfloat16")
        return {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in base.items()}
    import torch

    want = set(grad_args(w))
    out = {}
    for k, v in base.items():
        t = torch.from_numpy(v)
        if t.is_floating_point():
            t = t.to(device=device, dtype=getattr(torch, dtype)).requires_grad_(k in want)
        else:
            t = t.to(device)
        out[k] = t
    return out


def _resolve(path: str) -> Callable:
    if path in IDIOMS:
        return IDIOMS[path]
    from lossoracle.catalog import resolve

    return resolve(path)


def _ours(loss: str, framework: str) -> tuple[Callable, Callable | None] | None:
    from lossoracle.implementations import numpy_impl, torch_impl

    mod = torch_impl if framework == "torch" else numpy_impl
    if loss not in mod.__all__:
        return None
    grad = getattr(mod, f"{loss}_grad", None) if framework == "numpy" else None
    return getattr(mod, loss), grad


@dataclass
class Variant:
    """One implementation of a workload's loss, ready to run: ``forward()`` and
    ``forward_backward()`` on fixed inputs (gradients cleared first; the cotangent is ones)."""

    name: str
    framework: str
    fn: Callable
    grad: Callable | None
    inputs: dict[str, Any]
    kwargs: dict[str, Any]
    _cotangent: Any = None

    def forward(self):
        return self.fn(*self.inputs.values(), **self.kwargs)

    def forward_backward(self):
        if self.framework == "numpy":
            out = self.forward()
            if self._cotangent is None:
                self._cotangent = np.ones_like(out)
            return self.grad(self._cotangent, *self.inputs.values(), **self.kwargs)
        for t in self.inputs.values():
            if getattr(t, "requires_grad", False):
                t.grad = None
        out = self.forward()
        if self._cotangent is None:
            import torch

            self._cotangent = torch.ones_like(out)
        out.backward(self._cotangent)
        if out.is_cuda:
            import torch

            torch.cuda.synchronize()
        return out.detach()


VARIANTS = ("ours", "baseline", "ours-numpy")


def variant(w: Workload, name: str, dtype: str, device: str = "cpu",
            base: dict[str, np.ndarray] | None = None) -> Variant:
    """``name`` in :data:`VARIANTS` for ``w``; ``NotImplementedError`` when it does not exist
    (no baseline, no NumPy implementation, NumPy on CUDA, a dtype NumPy lacks)."""
    framework = "numpy" if name == "ours-numpy" else "torch"
    if framework == "numpy" and device != "cpu":
        raise NotImplementedError("NumPy runs on the host")
    if name == "baseline":
        if w.loss not in BASELINES:
            raise NotImplementedError(f"{w.loss}: no baseline")
        try:
            fns: tuple[Callable, Callable | None] | None = (_resolve(BASELINES[w.loss]), None)
        except ImportError as e:
            raise NotImplementedError(f"{w.loss}: baseline not installed ({e})") from None
    else:
        fns = _ours(w.loss, framework)
        if fns is None or (framework == "numpy" and fns[1] is None):
            raise NotImplementedError(f"{w.loss}: no {framework} implementation of ours")
    return Variant(name, framework, fns[0], fns[1], make_inputs(w, dtype, device, framework, base), params(w))


def baseline_name(loss: str) -> str:
    path = BASELINES.get(loss)
    return "" if path is None else path.replace(":", ".").replace("lossoracle.ecosystem.", "")


def floors(inputs: dict[str, Any], repeat: int = 5) -> dict[str, float]:
    """Seconds (minimum of ``repeat``) to read every input once (a sum of each: the cheapest pass
    that touches every byte) and for one ``exp`` pass over the first floating input (clamped to
    [−10, 10]) into a preallocated output."""
    import torch

    ts = [t.detach() for t in inputs.values()]
    x = next(t for t in ts if t.is_floating_point())
    x = x.clamp(-10, 10)  # the pass's cost, not that of overflow (box coordinates reach 1000)
    buf = torch.empty_like(x)

    def best(fn) -> float:
        fn()
        out = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            if x.is_cuda:
                torch.cuda.synchronize()
            out.append(time.perf_counter() - t0)
        return min(out)

    return {"read": best(lambda: [t.sum() for t in ts]), "exp": best(lambda: torch.exp(x, out=buf))}
