"""NumPy soft Dice, Jaccard, Tversky and generalized Dice losses: values and explicit VJPs.

Kernels in :mod:`.dice_core`. float16/float32 are computed in float64 (products of two float32
values are exact there; the sums are far below a float32 ULP) and float64 in long double (64-bit
significand), each rounded once to the input's dtype. Definitions and parameters:
``lossoracle.reference.dice``.
"""

from __future__ import annotations

import numpy as np

from . import dice_core as core


class _Call:
    """A validated call: operands in the compute dtype, flattened to (N, C, S)."""

    def __init__(self, kind, input, target, weight, **params):
        input, target = np.asarray(input), np.asarray(target)
        weight = None if weight is None else np.asarray(weight)
        self.prm = prm = core.Params(kind, **params)
        self.soft = core.check(input, target, weight, prm)
        self.dtype, self.shape = input.dtype, input.shape
        ct = core.LONG_DOUBLE if input.dtype == np.float64 and core.LONG_DOUBLE is not None else np.float64
        N, C = input.shape[:2]
        self.N, self.C1 = N, C - (0 if prm.include_background else 1)
        x = input.astype(ct).reshape(N, C, -1)
        t = target.astype(ct).reshape(N, C, -1) if self.soft else target.reshape(N, -1)
        self.w = None if weight is None else weight.astype(ct)
        with np.errstate(all="ignore"):  # 0/0 and inf edges are intended
            self.pr = core.prepare(x, t, self.soft, prm)
            self.s = core.finish(core.stats(self.pr, prm), prm)
            self.r = core.ratios(self.s, prm)

    def value(self) -> np.ndarray:
        prm = self.prm
        with np.errstate(all="ignore"):
            v = core.reduce(core.elementwise(self.r, self.w, prm), prm, core.output_shape(prm, self.N, self.C1))
        return np.asarray(v).astype(self.dtype)

    def grads(self, grad_output) -> dict[str, np.ndarray]:
        prm = self.prm
        g = np.asarray(grad_output).astype(self.r.value.dtype)
        with np.errstate(all="ignore"):
            a = core.cotangent(g, self.r, self.w, prm)
            gx, gy = core.backward(self.pr, self.r, a, prm, self.soft and prm.kind != "generalized_dice")
        out = {"input": gx.reshape(self.shape).astype(self.dtype)}
        if gy is not None:
            out["target"] = gy.reshape(self.shape).astype(self.dtype)
        return out


def dice_loss(input, target, weight=None, *, activation="none", include_background=True, squared=False, batch=False,
              smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean") -> np.ndarray:
    """Soft Dice loss ``1 − (2Σp·y + s_nr)/(Σp^k + Σy^k + s_dr)`` per (sample, class), reduced."""
    return _Call("dice", input, target, weight, activation=activation, include_background=include_background,
                 squared=squared, batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr, ignore_index=ignore_index,
                 reduction=reduction).value()


def dice_loss_grad(grad_output, input, target, weight=None, *, activation="none", include_background=True,
                   squared=False, batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100,
                   reduction="mean") -> dict[str, np.ndarray]:
    """VJP of :func:`dice_loss` w.r.t. ``input`` (and floating ``target``)."""
    return _Call("dice", input, target, weight, activation=activation, include_background=include_background,
                 squared=squared, batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr, ignore_index=ignore_index,
                 reduction=reduction).grads(grad_output)


def jaccard_loss(input, target, weight=None, *, activation="none", include_background=True, squared=False,
                 batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean") -> np.ndarray:
    """Soft Jaccard loss ``1 − (Σp·y + s_nr)/(Σp^k + Σy^k − Σp·y + s_dr)``, reduced."""
    return _Call("jaccard", input, target, weight, activation=activation, include_background=include_background,
                 squared=squared, batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr, ignore_index=ignore_index,
                 reduction=reduction).value()


def jaccard_loss_grad(grad_output, input, target, weight=None, *, activation="none", include_background=True,
                      squared=False, batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100,
                      reduction="mean") -> dict[str, np.ndarray]:
    """VJP of :func:`jaccard_loss`."""
    return _Call("jaccard", input, target, weight, activation=activation, include_background=include_background,
                 squared=squared, batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr, ignore_index=ignore_index,
                 reduction=reduction).grads(grad_output)


def tversky_loss(input, target, weight=None, *, alpha=0.5, beta=0.5, activation="none", include_background=True,
                 batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100, reduction="mean") -> np.ndarray:
    """Tversky loss ``1 − (I + s_nr)/(I + α·FP + β·FN + s_dr)``, reduced."""
    return _Call("tversky", input, target, weight, alpha=alpha, beta=beta, activation=activation,
                 include_background=include_background, batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
                 ignore_index=ignore_index, reduction=reduction).value()


def tversky_loss_grad(grad_output, input, target, weight=None, *, alpha=0.5, beta=0.5, activation="none",
                      include_background=True, batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100,
                      reduction="mean") -> dict[str, np.ndarray]:
    """VJP of :func:`tversky_loss`."""
    return _Call("tversky", input, target, weight, alpha=alpha, beta=beta, activation=activation,
                 include_background=include_background, batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
                 ignore_index=ignore_index, reduction=reduction).grads(grad_output)


def generalized_dice_loss(input, target, *, w_type="square", activation="none", include_background=True,
                          batch=False, smooth_nr=1e-5, smooth_dr=1e-5, ignore_index=-100,
                          reduction="mean") -> np.ndarray:
    """Generalized Dice loss (Sudre) per sample, reduced."""
    return _Call("generalized_dice", input, target, None, w_type=w_type, activation=activation,
                 include_background=include_background, batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
                 ignore_index=ignore_index, reduction=reduction).value()


def generalized_dice_loss_grad(grad_output, input, target, *, w_type="square", activation="none",
                               include_background=True, batch=False, smooth_nr=1e-5, smooth_dr=1e-5,
                               ignore_index=-100, reduction="mean") -> dict[str, np.ndarray]:
    """VJP of :func:`generalized_dice_loss` w.r.t. ``input``."""
    return _Call("generalized_dice", input, target, None, w_type=w_type, activation=activation,
                 include_background=include_background, batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
                 ignore_index=ignore_index, reduction=reduction).grads(grad_output)
