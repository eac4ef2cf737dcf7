"""Argument checks shared by the NumPy and torch implementations: clear errors naming the argument."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

REDUCTIONS = ("none", "mean", "sum")


def is_floating(x: Any) -> bool:
    if isinstance(x, np.ndarray):
        return x.dtype.kind == "f"
    return bool(getattr(x, "is_floating_point", lambda: False)())


def require_floating(name: str, x: Any) -> None:
    if not is_floating(x):
        raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}")


def require_reduction(reduction: str, allowed: tuple[str, ...] = REDUCTIONS) -> None:
    if reduction not in allowed:
        raise ValueError(f"reduction must be one of {allowed}, got {reduction!r}")


def require_range(name: str, x: Any, low: float, high: float) -> None:
    """Every (non-NaN) value of ``x`` lies in ``[low, high]``; NaN passes (it propagates)."""
    if x.shape and 0 in tuple(x.shape):
        return
    # fast reductions; NaN fails both, and goes on (a minimum that passed saw no NaN: no maximum is
    # needed against an infinite high)
    if bool(x.min() >= low) and (high == math.inf or bool(x.max() <= high)):
        return
    bad = (x < low) | (x > high)
    if bool(bad.any()):
        raise ValueError(f"{name} must lie in [{low}, {high}]; got a value {float(x[bad].reshape(-1)[0])!r}")


def _within(x: Any, low: int, high: int) -> bool:
    """Every entry of the integer array ``x`` lies in ``[low, high]`` (True when empty)."""
    if 0 in tuple(x.shape):
        return True
    lo, hi = (x.min(), x.max()) if isinstance(x, np.ndarray) else x.aminmax()
    return bool(lo >= low) and bool(hi <= high)


def require_same_shape(name: str, x: Any, ref_name: str, ref: Any) -> None:
    if tuple(x.shape) != tuple(ref.shape):
        raise ValueError(f"{name} shape {tuple(x.shape)} does not match {ref_name} shape {tuple(ref.shape)}")


def class_target_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Expected shape of class-index targets for logits of ``input_shape`` (class axis 1, or 0 if 1-D)."""
    if len(input_shape) == 0:
        raise ValueError("input must have at least one dimension (the classes)")
    return () if len(input_shape) == 1 else (input_shape[0], *input_shape[2:])


def check_class_targets(input: Any, target: Any, weight: Any, ignore_index: int,
                        label_smoothing: float = 0.0) -> bool:
    """Validate a cross-entropy call; returns True for probability targets."""
    return class_target_kind(input, target, weight, ignore_index, label_smoothing) == "probabilities"


def class_target_kind(input: Any, target: Any, weight: Any, ignore_index: int, label_smoothing: float = 0.0) -> str:
    """Validate a cross-entropy call; returns ``"probabilities"``, ``"classes"`` (class indices, none
    of them ``ignore_index``) or ``"indices"`` (class indices, some of which may be ``ignore_index``)."""
    require_floating("input", input)
    shape = tuple(input.shape)
    C = shape[1] if len(shape) > 1 else shape[0] if shape else 0
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing!r}")
    if weight is not None and tuple(weight.shape) != (C,):
        raise ValueError(f"weight must have shape ({C},) (one per class), got {tuple(weight.shape)}")
    if is_floating(target):
        if tuple(target.shape) != shape:
            raise ValueError(f"probability target shape {tuple(target.shape)} does not match input shape {shape}")
        return "probabilities"
    want = class_target_shape(shape)
    if tuple(target.shape) != want:
        raise ValueError(f"target shape {tuple(target.shape)} does not match the expected {want} for input {shape}")
    if _within(target, 0, C - 1):  # one pass (min and max) where every target is a class
        return "indices" if 0 <= ignore_index < C else "classes"
    if bool((((target < 0) | (target >= C)) & (target != ignore_index)).any()):
        raise ValueError(f"target class indices must lie in [0, {C - 1}] (or equal ignore_index={ignore_index})")
    return "indices"
