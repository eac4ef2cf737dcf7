"""NumPy IoU, GIoU (pairwise) and the GIoU/DIoU/CIoU losses (paired): values and explicit VJPs.

Kernels in :mod:`.box_core`. float16 and float32 boxes are computed in float64, float64 boxes in
long double (64-bit mantissa and a 15-bit exponent: no product of coordinates overflows or
underflows), each result rounded once to the input dtype. Semantics are torchvision's
(``lossoracle.reference.box``): ``eps`` exact as given, an empty mean 0, the mean of the one-sided
derivatives at a kink. Bad input raises a ``ValueError`` (``TypeError`` for a non-floating dtype)
naming the argument.
"""

from __future__ import annotations

import numpy as np

from . import box_core as core

_WIDE = np.longdouble if np.finfo(np.longdouble).nmant >= 63 else np.float64


def _compute_dtype(dtype: np.dtype):
    return _WIDE if dtype == np.float64 else np.float64


def _reduce(values: np.ndarray, reduction: str):
    if reduction == "none":
        return values
    total = values.sum()
    if reduction == "sum":
        return total
    return total / values.size if values.size else total * 0


def _paired(kind, boxes1, boxes2, reduction, eps, alpha="exact", iou_eps=None):
    b1, b2 = np.asarray(boxes1), np.asarray(boxes2)
    core.check_paired(b1, b2, reduction, eps)
    ct = _compute_dtype(b1.dtype)
    with np.errstate(all="ignore"):  # 0/0 is the documented NaN at eps = 0 and zero-area boxes
        value, _ = core.pair_kernel(np, b1.astype(ct), b2.astype(ct), kind, eps, alpha, iou_eps)
        return np.asarray(_reduce(value, reduction)).astype(b1.dtype)


def _paired_grad(kind, grad_output, boxes1, boxes2, reduction, eps, alpha="exact", iou_eps=None):
    b1, b2 = np.asarray(boxes1), np.asarray(boxes2)
    core.check_paired(b1, b2, reduction, eps)
    ct = _compute_dtype(b1.dtype)
    lead = b1.shape[:-1]
    g = np.asarray(grad_output).astype(ct)
    if reduction == "mean" and b1.size:
        g = g / (b1.size // 4)
    cot = np.broadcast_to(g, lead)
    with np.errstate(all="ignore"):
        _, (g1, g2) = core.pair_kernel(np, b1.astype(ct), b2.astype(ct), kind, eps, alpha, iou_eps, cot)
    return {"boxes1": g1.astype(b1.dtype), "boxes2": g2.astype(b2.dtype)}


def _pairwise(kind, boxes1, boxes2, eps=0.0, grad_output=None):
    b1, b2 = np.asarray(boxes1), np.asarray(boxes2)
    core.check_pairwise(b1, b2)
    core.check_eps(eps)
    ct = _compute_dtype(b1.dtype)
    p, q = b1.astype(ct)[:, None, :], b2.astype(ct)[None, :, :]
    with np.errstate(all="ignore"):
        if grad_output is None:
            value, _ = core.pair_kernel(np, p, q, kind, eps)
            return value.astype(b1.dtype)
        cot = np.broadcast_to(np.asarray(grad_output).astype(ct), (b1.shape[0], b2.shape[0]))
        _, (g1, g2) = core.pair_kernel(np, p, q, kind, eps, cot=cot)
    return {"boxes1": g1.sum(axis=1).astype(b1.dtype), "boxes2": g2.sum(axis=0).astype(b2.dtype)}


def box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise IoU ``I/U`` of (N, 4) and (M, 4) boxes: (N, M)."""
    return _pairwise("iou", boxes1, boxes2)


def box_iou_grad(grad_output: np.ndarray, boxes1: np.ndarray, boxes2: np.ndarray) -> dict[str, np.ndarray]:
    return _pairwise("iou", boxes1, boxes2, grad_output=grad_output)


def generalized_box_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise GIoU ``I/U − (C − U)/C``: (N, M)."""
    return _pairwise("giou", boxes1, boxes2)


def generalized_box_iou_grad(grad_output: np.ndarray, boxes1: np.ndarray,
                             boxes2: np.ndarray) -> dict[str, np.ndarray]:
    return _pairwise("giou", boxes1, boxes2, grad_output=grad_output)


def generalized_box_iou_loss(boxes1: np.ndarray, boxes2: np.ndarray, reduction: str = "none",
                             eps: float = 1e-7) -> np.ndarray:
    """``1 − IoU_ε + (C − U)/(C + ε)`` per pair of boxes, reduced."""
    return _paired("giou_loss", boxes1, boxes2, reduction, eps)


def generalized_box_iou_loss_grad(grad_output, boxes1, boxes2, reduction="none", eps=1e-7):
    return _paired_grad("giou_loss", grad_output, boxes1, boxes2, reduction, eps)


def distance_box_iou_loss(boxes1: np.ndarray, boxes2: np.ndarray, reduction: str = "none",
                          eps: float = 1e-7) -> np.ndarray:
    """``1 − IoU_ε + ρ²/(c² + ε)`` per pair of boxes, reduced."""
    return _paired("diou_loss", boxes1, boxes2, reduction, eps)


def distance_box_iou_loss_grad(grad_output, boxes1, boxes2, reduction="none", eps=1e-7):
    return _paired_grad("diou_loss", grad_output, boxes1, boxes2, reduction, eps)


def complete_box_iou_loss(boxes1: np.ndarray, boxes2: np.ndarray, reduction: str = "none",
                          eps: float = 1e-7) -> np.ndarray:
    """``distance_box_iou_loss + α·v`` per pair of boxes, reduced (α differentiated in the VJP)."""
    return _paired("ciou_loss", boxes1, boxes2, reduction, eps)


def complete_box_iou_loss_grad(grad_output, boxes1, boxes2, reduction="none", eps=1e-7):
    return _paired_grad("ciou_loss", grad_output, boxes1, boxes2, reduction, eps)
