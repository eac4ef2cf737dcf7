"""The ecosystem's binary cross-entropies: PyTorch's, and a SciPy composition.

PyTorch's ``binary_cross_entropy`` is listed twice: under the convention it documents and
implements (each log clamped at −100; backward ``w(p − y)/max(p(1 − p), 1e-12)`` and
``w·log((1 − p)/p)``, the derivatives of the *unclamped* loss), where it should conform, and
against the exact spec, where the clamp and the floored backward show as deviations.
"""

from __future__ import annotations

from typing import Any

from ..catalog import Implementation
from ..spec import Case

_BCE, _BCEL = "binary_cross_entropy", "binary_cross_entropy_with_logits"
# PyTorch's backward floors p(1 − p) at its EPSILON = 1e-12 taken as a float32 constant in every dtype
# (measured, torch 2.14.1 CPU float64: p = 1e-13, y = 1 gives −1.000000004e12, not −1e12).
TORCH_BCE_CONVENTIONS = {"log_floor": -100.0, "grad_floor": 9.999999960041972e-13}  # float32(1e-12)


def scipy_log_expit_bce_with_logits(input: Any, target: Any, weight: Any = None, reduction: str = "mean",
                                    pos_weight: Any = None) -> Any:
    """``−w·[pw·y·log_expit(x) + (1 − y)·log_expit(−x)]`` with ``scipy.special.log_expit``, reduced
    (mean = Σ / numel) — the composition a NumPy user writes; it checks no argument."""
    import numpy as np
    from scipy.special import log_expit

    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be one of ('none', 'mean', 'sum'), got {reduction!r}")
    pw = 1.0 if pos_weight is None else pos_weight
    with np.errstate(invalid="ignore", divide="ignore"):  # 0·(−inf) and the empty mean give NaN, silently
        loss = -(pw * target * log_expit(input) + (1 - target) * log_expit(-input))
        if weight is not None:
            loss = weight * loss
        if reduction == "none":
            return loss
        return np.sum(loss) / (loss.size if reduction == "mean" else 1)


def _torch_rejects_nan(case: Case) -> str | None:
    """PyTorch's range check on probabilities fails on NaN: it raises instead of propagating."""
    p = case.inputs.get("input")
    if case.raises is None and p is not None and p.dtype.kind == "f" and bool((p != p).any()):
        return "PyTorch rejects NaN probabilities (its [0, 1] range check fails on NaN)"
    return None


def _no_argument_checks(case: Case) -> str | None:
    return "an elementwise composition checks no argument" if case.raises is not None else None


IMPLEMENTATIONS = [
    Implementation(_BCE, f"torch.nn.functional.{_BCE}", "torch", f"torch.nn.functional:{_BCE}",
                   conventions=TORCH_BCE_CONVENTIONS, accepts=_torch_rejects_nan,
                   note="judged under PyTorch's own convention (log clamp −100, backward floored at 1e-12)"),
    Implementation(_BCE, f"torch.nn.functional.{_BCE} (exact spec)", "torch", f"torch.nn.functional:{_BCE}",
                   accepts=_torch_rejects_nan,
                   note="PyTorch clamps each log at −100 (loss ≤ 100 where the exact loss is larger or +inf) and "
                        "its backward is w(p − y)/max(p(1 − p), 1e-12) and w·log((1 − p)/p) (unclamped); NaN "
                        "probabilities raise"),
    Implementation(_BCEL, f"torch.nn.functional.{_BCEL}", "torch", f"torch.nn.functional:{_BCEL}",
                   note="PyTorch computes (1 − t)·x − (1 + (pw − 1)·t)·log σ(x) and "
                        "(1 + (pw − 1)·t)·σ(x) − pw·t: both cancel for confident correct predictions; "
                        "x = ±inf gives NaN; targets outside [0, 1] are accepted"),
    Implementation(_BCEL, "scipy.special.log_expit (BCE-with-logits composition)", "numpy",
                   "lossoracle.ecosystem.binary:scipy_log_expit_bce_with_logits", requires=("scipy",),
                   accepts=_no_argument_checks, upcast=True,
                   note="−w·[pw·y·log_expit(x) + (1 − y)·log_expit(−x)]: 0·log_expit(∓inf) is "
                        "0·(−inf) = NaN; float16 input: 1 − y rounds in float16, the rest is float64"),
]
