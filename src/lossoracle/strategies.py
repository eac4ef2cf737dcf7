"""Input generation: value grids, edge ladders, seeded random cases and hypothesis strategies.

Generated inputs are exact values of a *grid*, so one case serves every dtype whose values
contain the grid (``Case.dtypes()`` decides):

- ``"half"``: 8 significant bits and the float16 normal range — exact in float16 *and* bfloat16;
- ``"float32"``: float32 values; ``"float64"``: any double.
"""

from __future__ import annotations

import zlib
import numpy as np

__all__ = ["GRIDS", "to_grid", "rng_for", "logits", "probabilities", "class_indices", "LADDERS"]

GRIDS = ("half", "float32", "float64")
_HALF_MIN, _HALF_MAX = 2.0**-14, 65280.0  # smallest float16 normal; largest 8-bit value below 65504


def to_grid(x: np.ndarray, grid: str) -> np.ndarray:
    """Round a float64 array to the nearest grid values (ties to even)."""
    x = np.asarray(x, dtype=np.float64)
    if grid == "float64":
        return x.copy()
    if grid == "float32":
        return x.astype(np.float32).astype(np.float64)
    if grid != "half":
        raise ValueError(f"unknown grid {grid!r}; expected one of {GRIDS}")
    m, e = np.frexp(np.clip(x, -_HALF_MAX, _HALF_MAX))
    out = np.ldexp(np.round(m * 256.0) / 256.0, e)
    return np.where(np.abs(out) < _HALF_MIN, 0.0, out)


def rng_for(*key: object) -> np.random.Generator:
    """A generator seeded from a stable hash of ``key`` (so case ids map to fixed data)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def logits(rng: np.random.Generator, shape: tuple[int, ...], grid: str, scale: float = 4.0) -> np.ndarray:
    """Normal logits times ``scale``, with a heavy tail (a few entries ×100), on ``grid``."""
    x = rng.standard_normal(shape) * scale
    if x.size:
        tail = rng.random(shape) < 0.05
        x = np.where(tail, x * 100.0, x)
    return to_grid(x, grid)


def probabilities(rng: np.random.Generator, shape: tuple[int, ...], grid: str) -> np.ndarray:
    """Probabilities in [0, 1] (log-uniform near 0 and 1 too); rows not normalised."""
    u = rng.random(shape)
    tiny = np.exp(-rng.random(shape) * 30.0)
    p = np.where(rng.random(shape) < 0.2, tiny, u)
    p = np.where(rng.random(shape) < 0.1, 1.0 - p * 1e-3, p)
    return np.clip(to_grid(p, grid), 0.0, 1.0)


def class_indices(rng: np.random.Generator, shape: tuple[int, ...], n_classes: int) -> np.ndarray:
    return rng.integers(0, n_classes, size=shape).astype(np.int64)


LADDERS: dict[str, tuple[float, ...]] = {
    # logits: zero, tiny, moderate, float16 exp overflow (11.1), float32 exp overflow (88.8), huge
    "logits": (0.0, 2.0**-24, 0.5, 1.0, 11.125, 20.0, 88.75, 100.0, 1e4),
    # probabilities: exact 0 and 1, subnormal, tiny, near 1 in float64 and float32
    "probabilities": (0.0, 5e-324, 1e-300, 1e-8, 0.25, 0.5, 1.0 - 2.0**-24, 1.0 - 2.0**-53, 1.0),
}


# Domains of the argument kinds a Spec declares (closed intervals), for hypothesis inputs.
KIND_DOMAINS: dict[str, tuple[float, float]] = {
    "logits": (-1e4, 1e4),
    "log_probabilities": (-1e4, 0.0),
    "probabilities": (0.0, 1.0),
    "binary_target": (0.0, 1.0),
    "probability_target": (0.0, 1.0),
    "class_index_or_probability_target": (0.0, 1.0),
    "weight": (0.0, 1e3),
    "boxes": (-1e4, 1e4),  # (x1, y1, x2, y2) coordinates; corners put in order after drawing
}


def _in_order(kind: str, v: np.ndarray) -> np.ndarray:
    """Boxes with x1 ≤ x2 and y1 ≤ y2 (each corner pair sorted); other kinds unchanged."""
    if kind != "boxes" or not v.size:
        return v
    return np.concatenate([np.minimum(v[..., :2], v[..., 2:]), np.maximum(v[..., :2], v[..., 2:])], axis=-1)


def _domain(arg, params) -> tuple[float, float]:
    if arg.domain is not None:
        return arg.domain
    kind = arg.kind
    if kind == "probabilities_or_log_probabilities":  # kl_div's target: log p when log_target
        return KIND_DOMAINS["log_probabilities" if params.get("log_target") else "probabilities"]
    return KIND_DOMAINS[kind]


def spec_cases(spec, grid: str = "float32"):
    """Hypothesis strategy of cases for ``spec``: the shape, parameters and integer inputs of one of
    its (valid, small) catalogue cases, with every floating input redrawn from its kind's domain
    (subnormals, exact 0 and the bounds included) and rounded to ``grid``."""
    import hashlib

    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    from .spec import Case

    bases = [c for c in spec.cases() if c.raises is None and all(
        a is None or (0 < a.size <= 64 and np.all(np.isfinite(a))) for a in c.inputs.values())]

    def redraw(base):
        kinds = (*KIND_DOMAINS, "probabilities_or_log_probabilities")
        floating = {a.name: a for a in spec.args if base.inputs.get(a.name) is not None
                    and base.inputs[a.name].dtype.kind == "f" and (a.kind in kinds or a.domain is not None)}

        def build(values):
            inputs = dict(base.inputs)
            for name, v in values.items():
                lo, hi = _domain(floating[name], base.params)
                inputs[name] = _in_order(floating[name].kind, np.clip(to_grid(v, grid), lo, hi))
            digest = hashlib.sha1(b"".join(np.ascontiguousarray(v).tobytes() for v in inputs.values()
                                           if v is not None)).hexdigest()[:12]
            return Case(f"{base.id}~h{digest}", inputs, base.params, note=f"hypothesis redraw of {base.id}")

        arrays = {name: hnp.arrays(np.float64, base.inputs[name].shape,
                                   elements=st.floats(*_domain(arg, base.params), allow_subnormal=True))
                  for name, arg in floating.items()}
        return st.fixed_dictionaries(arrays).map(build)

    return st.sampled_from(bases).flatmap(redraw)
