"""The componentwise condition of a loss, from the exact function itself: one rule for every loss.

For an output element ``f_j`` of the exact function and its floating inputs ``z`` (every entry
of every floating tensor argument, and every floating parameter: γ, α, ε, smoothing, …)::

    c_j = |f_j| + Σ_i |∂f_j/∂z_i|·|z_i|

(Higham, *Accuracy and Stability of Numerical Algorithms*, §1.5 and §3.3: a componentwise
backward-stable evaluation has ``|err_j| ≲ u·c_j``). For a gradient quantity the function is the
vector-Jacobian product ``v(z, g)`` and the cotangent entries ``g_k`` count as inputs too.

The derivatives come from the oracle by one-sided relative differences at a step of
``2^-100`` in the oracle's own precision (192 bits): ``D_i^± = ±(f(z_i(1 ± h)) − f(z))/h``
≈ ``z_i·∂f/∂z_i``; the term taken is ``max(|D⁺|, |D⁻|)`` over the sides on which ``f`` stays
finite and real (a side that leaves the domain, ``p > 1`` say, is not admissible), so a kink
counts its larger one-sided slope. Non-finite and zero inputs contribute 0
(``0·∞ = 0``: they are not perturbed by a relative perturbation), and so do hard labels (target
entries equal to 1: exact by construction, they carry no rounding error to be amplified — else a
tiny loss at y = 1 would look ill-conditioned and excuse any implementation that returns 0).
Two correct digits are all the grading needs; the differences give far more.

The same pass gives the *tail scale* ``S_j`` of the grading: the largest ``|z_i|`` among the
inputs that feed ``f_j`` (a non-zero ``D_i``), at least 1, times the largest ``|g_k|`` that
feeds it for gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np
from mpmath import mpf

from .mpfuncs import to_mp, workprec

__all__ = ["Conditioning", "value_conditioning", "gradient_conditioning", "scale_bound", "STEP_BITS"]

STEP_BITS = 100  # relative step 2^-100: far below any float64 spacing, far above 192-bit rounding


@dataclass
class Conditioning:
    """Per-element condition ``cond`` and tail scale ``scale`` (float64 arrays shaped like the
    quantity) for the value and for each ``grad:<arg>``."""

    cond: dict[str, np.ndarray]
    scale: dict[str, np.ndarray]


def _floating_slots(inputs: Mapping[str, Any], params: Mapping[str, Any], hard: Collection[str] = (),
                    tolerance: Mapping[str, np.ndarray] | None = None) -> Iterator[tuple[str, Any, float]]:
    """``(where, index, E)`` of every floating input entry and parameter to perturb, ``E`` the
    magnitude of its perturbation: ``|z|`` (finite, non-zero), or the spec's ``tolerance`` for
    that input; in the ``hard`` arguments (targets) an entry equal to 1 is a hard label, exact by
    construction, and not perturbed either."""
    tolerance = tolerance or {}
    for name, a in inputs.items():
        if a is None or np.asarray(a).dtype.kind != "f":
            continue
        flat = np.asarray(a, dtype=np.float64).reshape(-1)
        mags = np.abs(flat) if name not in tolerance else np.asarray(tolerance[name], dtype=np.float64).reshape(-1)
        keep = np.isfinite(flat) & np.isfinite(mags) & (mags != 0) & ~((flat == 1) if name in hard else False)
        for i in np.flatnonzero(keep):
            yield name, int(i), float(mags[i])
    for name, v in params.items():
        if isinstance(v, float) and not isinstance(v, bool) and np.isfinite(v) and v != 0:
            yield name, None, abs(v)


def _perturbed(inputs, params, name, index, delta):
    """The inputs and parameters with one entry moved by ``delta`` (exactly: in the working
    precision, which holds the 53 + 100 bits of the sum)."""
    with workprec():
        if index is None:
            return inputs, {**params, name: mpf(params[name]) + delta}
        a = to_mp(inputs[name])
        flat = a.reshape(-1)
        flat[index] = flat[index] + delta
        return {**inputs, name: a}, params


def _slope(new, old, h) -> float:
    """``|new − old|/h`` where both are finite reals, else 0 (that side is not admissible)."""
    if not (isinstance(new, mpf) and isinstance(old, mpf) and mpmath.isfinite(new) and mpmath.isfinite(old)):
        return 0.0
    with workprec():
        return abs(float((new - old) / h))


def _accumulate(fn: Callable[[Mapping, Mapping], dict[str, list]], base: dict[str, list], inputs, params,
                slots, cond: dict[str, np.ndarray], feed: dict[str, np.ndarray] | None) -> None:
    h = mpf(2) ** -STEP_BITS
    for name, index, mag in slots:
        best = {k: np.zeros(len(v)) for k, v in base.items()}
        for sign in (1, -1):
            with workprec():
                delta = sign * h * mpf(mag)
            try:
                out = fn(*_perturbed(inputs, params, name, index, delta))
            except (ArithmeticError, TypeError, ValueError):  # outside the domain (p > 1, say): no side
                continue
            for k, vals in out.items():
                for j, (new, old) in enumerate(zip(vals, base[k])):
                    best[k][j] = max(best[k][j], _slope(new, old, h))
        for k in base:
            cond[k] += best[k]
            if feed is not None:  # None: a unit tail scale
                touched = best[k] > 0
                feed[k][touched] = np.maximum(feed[k][touched], mag)


def _start(exact: dict[str, Any]) -> tuple[dict[str, list], dict[str, np.ndarray], dict[str, np.ndarray]]:
    base = {k: np.asarray(v, dtype=object).reshape(-1).tolist() for k, v in exact.items()}
    cond = {k: np.array([abs(float(v)) if mpmath.isfinite(v) else np.inf for v in vals], dtype=np.float64)
            for k, vals in base.items()}
    return base, cond, {k: np.ones_like(v) for k, v in cond.items()}


def _shaped(exact: dict[str, Any], cond, feed) -> Conditioning:
    return Conditioning({k: v.reshape(np.shape(exact[k])) for k, v in cond.items()},
                        {k: v.reshape(np.shape(exact[k])) for k, v in feed.items()})


def value_conditioning(oracle: Callable[..., Any], inputs: Mapping[str, Any], params: Mapping[str, Any],
                       value, hard: Collection[str] = (), tolerance: Mapping[str, np.ndarray] | None = None,
                       unit_scale: bool = False) -> Conditioning:
    """Condition and tail scale of the value: ``oracle(**inputs, **params)`` is the spec's oracle
    with every parameter (canonical, case and convention) in ``params``; ``hard`` names the
    target arguments whose 0/1 entries are exact labels; ``tolerance`` the perturbation
    magnitudes of some inputs (default ``|z|``); ``unit_scale`` a tail scale of 1."""
    base, cond, feed = _start({"value": value})
    _accumulate(lambda i, p: {"value": np.asarray(oracle(**i, **p), dtype=object).reshape(-1).tolist()},
                base, dict(inputs), params, list(_floating_slots(inputs, params, hard, tolerance)), cond,
                None if unit_scale else feed)
    return _shaped({"value": value}, cond, feed)


def gradient_conditioning(gradient: Callable[..., Any], inputs: Mapping[str, Any], params: Mapping[str, Any],
                          grads: Mapping[str, Any], cotangent: np.ndarray, hard: Collection[str] = (),
                          tolerance: Mapping[str, np.ndarray] | None = None, unit_scale: bool = False) -> Conditioning:
    """Condition and tail scale of every ``grad:<arg>``: the VJP ``gradient(g, **inputs, **params)``
    as a function of the inputs, the parameters and the cotangent ``g``."""
    names = list(grads)
    exact = {f"grad:{k}": grads[k] for k in names}
    base, cond, feed = _start(exact)

    def vjp(i, p, g=cotangent):
        out = gradient(g, **i, **p)
        return {f"grad:{k}": np.asarray(out[k], dtype=object).reshape(-1).tolist() for k in names}

    _accumulate(vjp, base, dict(inputs), params, list(_floating_slots(inputs, params, hard, tolerance)), cond,
                None if unit_scale else feed)
    # the cotangent's entries are inputs of the VJP too; it is linear in them, so the term of g_k
    # is exactly the VJP with the one-hot cotangent g_k·e_k
    feed_cot = {k: np.zeros_like(v) for k, v in feed.items()}
    flat_cot = np.asarray(cotangent, dtype=np.float64).reshape(-1)
    for idx in np.flatnonzero(flat_cot):
        one_hot = np.zeros_like(flat_cot)
        one_hot[idx] = flat_cot[idx]
        for k, vals in vjp(dict(inputs), params, one_hot.reshape(np.shape(cotangent))).items():
            d = np.array([abs(float(v)) if isinstance(v, mpf) and mpmath.isfinite(v) else 0.0 for v in vals])
            cond[k] += d
            feed_cot[k][d > 0] = np.maximum(feed_cot[k][d > 0], abs(flat_cot[idx]))
    return _shaped(exact, cond, {k: feed[k] * np.maximum(feed_cot[k], 1.0) for k in feed})


def scale_bound(inputs: Mapping[str, Any], params: Mapping[str, Any], cotangent: np.ndarray | None = None,
                unit_scale: bool = False) -> float:
    """An upper bound of every element's tail scale: the largest finite input magnitude (at least
    1; exactly 1 for a ``unit_scale``), times the largest |cotangent| for gradients — cheap, with
    no differencing."""
    mags = [] if unit_scale else [mag for _, _, mag in _floating_slots(inputs, params)]
    s = max([1.0, *mags])
    if cotangent is not None and np.size(cotangent):
        s *= max(1.0, float(np.max(np.abs(cotangent))))
    return s
