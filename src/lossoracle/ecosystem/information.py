"""The ecosystem's information-theory family: PyTorch's and SciPy's.

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
