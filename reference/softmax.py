"""Softmax and log-softmax oracles.

Definition: ``softmax(x)_c = e^{x_c} / Σ_j e^{x_j}``, ``log_softmax(x)_c = x_c − log Σ_j e^{x_j}``
along ``dim`` (Bridle 1990; PyTorch ``torch.nn.functional.softmax`` / ``log_softmax``).

Hazards and remedies: ``e^{x}`` overflows for large logits — shift by the row maximum with
exact differences; ``x_c − LSE`` cancels for the dominant class — computed as
``−log1p(Σ_{j≠c} e^{x_j − x_c})`` (:class:`~lossoracle.mpfuncs.SoftmaxRow`).
Gradients (vector-Jacobian products with cotangent ``g``):
``∂⟨g, log_softmax⟩/∂x_j = g_j − p_j Σ_k g_k`` and ``∂⟨g, softmax⟩/∂x_j = p_j (g_j − Σ_k g_k p_k)``.
"""

from __future__ import annotations

import numpy as np

from lossoracle.mpfuncs import SoftmaxRow, mp_array, mp_sum, to_mp, workprec
from lossoracle.spec import Arg, Case, Spec
from lossoracle.strategies import GRIDS, logits, rng_for

from .common import class_last, rows


def _per_row(x, dim, fn):
    """Apply ``fn(SoftmaxRow, c)`` to every element, keeping the layout of ``x``."""
    r, lead = rows(x, dim)
    C = r.shape[-1]
    out = []
    for row in r:
        sr = SoftmaxRow(row)
        out.extend(fn(sr, c) for c in range(C))
    return np.moveaxis(mp_array(out, (*lead, C)), -1, dim)


def log_softmax(input, dim: int = -1) -> np.ndarray:
    """Exact ``log_softmax(input)`` along ``dim`` (object array of mpf)."""
    with workprec():
        return _per_row(input, dim, lambda sr, c: -sr.neg_log_p(c))


def softmax(input, dim: int = -1) -> np.ndarray:
    """Exact ``softmax(input)`` along ``dim``."""
    with workprec():
        return _per_row(input, dim, lambda sr, c: sr.p(c))


def _vjp(grad_output, input, dim, kind):
    """Cancellation-free VJPs (``Σ p = 1`` used exactly, ``1 − p`` from :class:`SoftmaxRow`):
    ``g_j − p_j Σ_k g_k = g_j (1 − p_j) − p_j Σ_{k≠j} g_k`` and, with ``m`` the arg-max,
    ``g_j − Σ_k g_k p_k = (g_j − g_m) + Σ_{k≠m} p_k (g_m − g_k)``."""
    g = class_last(to_mp(np.broadcast_to(np.asarray(grad_output, dtype=object), np.shape(input))), dim)
    g = g.reshape(-1, g.shape[-1])
    r, lead = rows(input, dim)
    out = []
    for row, gr in zip(r, g):
        sr = SoftmaxRow(row)
        C = len(gr)
        if kind == "log":
            out.extend(gr[j] * sr.one_minus_p(j) - sr.p(j) * mp_sum(gr[k] for k in range(C) if k != j)
                       for j in range(C))
        else:
            m = max(range(C), key=lambda k: sr.x[k])
            rest = mp_sum(sr.p(k) * (gr[m] - gr[k]) for k in range(C) if k != m)
            out.extend(sr.p(j) * ((gr[j] - gr[m]) + rest) for j in range(C))
    return {"input": np.moveaxis(mp_array(out, (*lead, r.shape[-1])), -1, dim)}


def log_softmax_grad(grad_output, input, dim: int = -1) -> dict[str, np.ndarray]:
    """VJP of :func:`log_softmax`: ``g_j − p_j Σ_k g_k``."""
    with workprec():
        return _vjp(grad_output, input, dim, "log")


def softmax_grad(grad_output, input, dim: int = -1) -> dict[str, np.ndarray]:
    """VJP of :func:`softmax`: ``p_j (g_j − Σ_k g_k p_k)``."""
    with workprec():
        return _vjp(grad_output, input, dim, "plain")


def _cases() -> list[Case]:
    def c(id_, x, dim=-1, **kw):
        return Case(id_, {"input": np.asarray(x, dtype=np.float64)}, {"dim": dim}, **kw)

    cases = [
        c("all_equal", np.zeros((3, 4))),
        c("huge_1e4", [[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]]),
        c("dominant_by_1e3", [[1000.0, 0.0, 0.0, -1.0], [0.0, 0.0, 1000.0, 3.0]]),
        c("single_class", [[3.0], [-1e4]]),
        c("empty_batch", np.zeros((0, 5))),
        c("dim0", [[1.0, 2.0], [3.0, -4.0], [0.5, 0.25]], dim=0),
        c("spatial_dim1", rng_for("softmax", "spatial").standard_normal((2, 3, 2, 2)).round(2), dim=1),
        c("fp16_overflow_11", [[11.125, -11.125, 0.0]]),
        c("fp32_overflow_88", [[88.75, -88.75, 0.0, 89.0]]),
        c("neg_inf_logit", [[-np.inf, 0.0, 1.0]]),
        Case("integer_input", {"input": np.array([[1, 2, 3]], dtype=np.int64)}, {"dim": -1}, raises=TypeError,
             note="non-floating logits"),
    ]
    for grid in GRIDS:
        for i, shape in enumerate([(4, 5), (2, 3, 3), (1, 17)]):
            cases.append(c(f"random_{grid}_{i}", logits(rng_for("softmax", grid, i), shape, grid), dim=1))
    return cases


def _spec(name, oracle, grad, definition) -> Spec:
    return Spec(
        name=name,
        signature=f"{name}(input, dim)",
        definition=definition,
        source="Bridle (1990); torch.nn.functional." + name,
        args=(Arg("input", "logits", differentiable=True),),
        params={"dim": -1},
        oracle=oracle,
        gradient=grad,
        cases=_cases,
    )


SPECS = (
    _spec("log_softmax", log_softmax, log_softmax_grad, "x_c − log Σ_j exp(x_j) along dim"),
    _spec("softmax", softmax, softmax_grad, "exp(x_c) / Σ_j exp(x_j) along dim"),
)
