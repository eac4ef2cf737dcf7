"""The ecosystem's information-theory family: PyTorch's, SciPy's, torchmetrics' and optax's.

SciPy's elementwise functions are summed over ``dim`` by the small adapters below (the
canonical signature is a row reduction); ``scipy.stats.entropy`` defaults to ``axis=0``, so its
adapters always pass ``axis=dim``. SciPy has no gradients: its rows are value-only.
"""

from __future__ import annotations

from typing import Any

from ..catalog import Implementation
from ..spec import Case


def scipy_entr(p: Any, dim: int = -1) -> Any:
    """``Σ scipy.special.entr(p)`` over ``dim``."""
    import numpy as np
    import scipy.special

    return np.sum(scipy.special.entr(p), axis=dim)


def scipy_stats_entropy(p: Any, dim: int = -1) -> Any:
    """``scipy.stats.entropy(p, axis=dim)`` (normalizes each row)."""
    import scipy.stats

    return scipy.stats.entropy(p, axis=dim)


def torch_entr(p: Any, dim: int = -1) -> Any:
    """``torch.special.entr(p).sum(dim)``."""
    import torch

    return torch.special.entr(p).sum(dim)


def scipy_rel_entr(p: Any, q: Any, dim: int = -1) -> Any:
    """``Σ scipy.special.rel_entr(p, q)`` over ``dim``."""
    import numpy as np
    import scipy.special

    return np.sum(scipy.special.rel_entr(p, q), axis=dim)


def scipy_kl_div(p: Any, q: Any, dim: int = -1) -> Any:
    """``Σ scipy.special.kl_div(p, q)`` over ``dim`` (the generalized KL)."""
    import numpy as np
    import scipy.special

    return np.sum(scipy.special.kl_div(p, q), axis=dim)


def scipy_stats_entropy_kl(p: Any, q: Any, dim: int = -1) -> Any:
    """``scipy.stats.entropy(p, q, axis=dim)`` (normalizes both rows)."""
    import scipy.stats

    return scipy.stats.entropy(p, q, axis=dim)


def _skipping(**reasons: str):
    """An ``accepts`` that skips the bad-input cases whose id starts with a key, giving its reason."""

    def accepts(case: Case) -> str | None:
        return next((why for prefix, why in reasons.items() if case.id.startswith(prefix)), None)

    return accepts


_UFUNC_INT = "NumPy ufuncs cast integer input to float by design"
_SCIPY_UFUNC = _skipping(
    bad_integer=_UFUNC_INT,
    bad_negative="documented value outside the domain (entr: −inf; rel_entr/kl_div: +inf), not an error",
)
_TORCH_ENTR = _skipping(
    bad_integer="torch.special functions promote integer input to float by design",
    bad_negative="documented value entr(x) = −inf for x < 0, not an error",
)
_SCIPY_STATS = _skipping(bad_integer="array_like input: integers are cast to float by design")


_HERE = "lossoracle.ecosystem.information"

IMPLEMENTATIONS = [
    Implementation("entropy", "torch.special.entr", "torch", f"{_HERE}:torch_entr", accepts=_TORCH_ENTR,
                   note="summed over dim by the adapter; autograd gives −(log p + 1), which cancels near p = 1/e"),
    Implementation("entropy", "scipy.special.entr", "numpy", f"{_HERE}:scipy_entr", requires=("scipy",),
                   accepts=_SCIPY_UFUNC, upcast=True,
                   note="summed over dim by the adapter (np.sum, pairwise); a ufunc: float16 runs its float32 "
                        "loop (declared upcast)"),
    Implementation("entropy", "scipy.stats.entropy", "numpy", f"{_HERE}:scipy_stats_entropy",
                   requires=("scipy",), conventions={"normalize": True}, accepts=_SCIPY_STATS,
                   note="normalizes each row (convention normalize=True; axis passed explicitly, default 0); "
                        "float16 input is normalized in float16 but returned as float32"),
    Implementation("kl_div", "torch.nn.functional.kl_div", "torch", "torch.nn.functional:kl_div",
                   note="xlogy(p, p) − p·input: 0·(−inf) = NaN where target = 0 and input = −inf; the target "
                        "gradient at target = 0 is NaN (xlogy's y-gradient) where the one-sided derivative is "
                        "−inf; log_target: e^t is rounded (to a subnormal below t ≈ −708) before the product, "
                        "so tiny terms lose all accuracy; target is broadcast to input's shape although "
                        "documented as the same shape; negative targets give NaN instead of an error"),
    Implementation("kl_divergence", "scipy.special.rel_entr", "numpy", f"{_HERE}:scipy_rel_entr",
                   requires=("scipy",), accepts=_SCIPY_UFUNC, upcast=True,
                   note="summed over dim by the adapter; x·log(x/y) of the rounded ratio; float16 runs the "
                        "float32 loop (declared upcast)"),
    Implementation("kl_divergence", "scipy.special.kl_div", "numpy", f"{_HERE}:scipy_kl_div",
                   requires=("scipy",), conventions={"generalized": True}, accepts=_SCIPY_UFUNC, upcast=True,
                   note="generalized KL x·log(x/y) − x + y (convention generalized=True), summed over dim; "
                        "float16 runs the float32 loop (declared upcast)"),
    Implementation("kl_divergence", "scipy.stats.entropy", "numpy", f"{_HERE}:scipy_stats_entropy_kl",
                   requires=("scipy",), conventions={"normalize": True}, accepts=_SCIPY_STATS,
                   note="entropy(pk, qk, axis=dim): normalizes both rows (convention normalize=True); float16 "
                        "input is normalized in float16 but returned as float32"),
]


def torchmetrics_kl(p: Any, q: Any, dim: int = -1) -> Any:
    """``torchmetrics.functional.kl_divergence(p, q, reduction='none')``: one divergence per row."""
    from torchmetrics.functional import kl_divergence

    return kl_divergence(p, q, log_prob=False, reduction="none")


def _torchmetrics_accepts(case: Case) -> str | None:
    p = case.inputs["p"]
    if p.ndim != 2 or case.params.get("dim", -1) not in (-1, 1):
        return "torchmetrics' kl_divergence takes (N, d) rows, the divergence over the last axis"
    return "torchmetrics validates shapes only" if case.raises is not None else None


def optax_kl(input: Any, target: Any, reduction: str = "mean", log_target: bool = False) -> Any:
    """``optax.losses.kl_divergence(input, target)`` (per row, over the last axis), reduced as
    PyTorch's ``kl_div``: sum, batchmean (÷ N rows) or mean (÷ elements)."""
    import optax

    if log_target or reduction == "none":
        raise NotImplementedError("optax's kl_divergence takes probability targets and reduces each row")
    rows = optax.losses.kl_divergence(input, target)
    total = rows.sum()
    return {"sum": total, "batchmean": total / max(input.shape[0], 1) if input.ndim else total,
            "mean": total / input.size}[reduction]


def _optax_kl_accepts(case: Case) -> str | None:
    if case.inputs["input"].ndim < 1:
        return "optax's kl_divergence reduces over the last axis: no 0-d input"
    if case.params.get("log_target") or case.params.get("reduction", "mean") == "none":
        return "optax's kl_divergence takes probability targets and reduces each row"
    return "optax validates no values (jax cannot raise on data inside jit)" if case.raises is not None else None


IMPLEMENTATIONS += [
    Implementation("kl_divergence", "torchmetrics.functional.kl_divergence", "torch", f"{_HERE}:torchmetrics_kl",
                   requires=("torchmetrics",), conventions={"normalize": True}, accepts=_torchmetrics_accepts,
                   note="normalizes both rows (convention normalize=True), then Σ p·log(p/q) of the rounded ratio"),
    Implementation("kl_div", "optax.losses.kl_divergence", "jax", f"{_HERE}:optax_kl", requires=("jax", "optax"),
                   accepts=_optax_kl_accepts,
                   note="Σ y·(log y − input) per row (0 where y = 0): log y − input cancels where they agree"),
]
