"""The ecosystem's box IoU family (CONVENTIONS.md §8).

Each library is judged under what it documents. torchvision's five functions are the canonical
signatures themselves (float16/bfloat16 boxes are upcast to float32, ``_upcast``/
``_upcast_non_float``: declared); its ``complete_box_iou_loss`` evaluates α under ``no_grad`` and
calls its DIoU helper without ``eps`` (the IoU and distance terms always use 1e-7): the conventions
``alpha="constant"``, ``iou_eps=1e-7``. MONAI adds float32's machine epsilon 2^-23 to the union
and to the enclosing area and computes in float32 (``COMPUTE_DTYPE``), also for float64 boxes; the
adapters below map the canonical signatures onto MONAI's, kornia's and torchmetrics' and do
nothing else.
"""

from __future__ import annotations

import numpy as np

from ..catalog import Implementation
from ..spec import Case

__all__ = ["IMPLEMENTATIONS"]

_IOU, _GIOU = "box_iou", "generalized_box_iou"
_GL, _DL, _CL = "generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss"
MONAI_EPS = 2.0**-23  # torch.finfo(torch.float32).eps, added to unions and enclosing areas


# ----------------------------------------------------------------------------------------------
# adapters


def monai_box_iou(boxes1, boxes2):
    """``monai.data.box_utils.box_iou`` (N×M)."""
    from monai.data.box_utils import box_iou

    return box_iou(boxes1, boxes2)


def monai_box_giou(boxes1, boxes2):
    """``monai.data.box_utils.box_giou`` (N×M)."""
    from monai.data.box_utils import box_giou

    return box_giou(boxes1, boxes2)


def monai_box_pair_giou_loss(boxes1, boxes2, reduction="none", eps=1e-7):
    """``1 − monai.data.box_utils.box_pair_giou`` (MONAI's ε replaces ``eps``), reduced as torchvision."""
    from monai.data.box_utils import box_pair_giou

    loss = 1.0 - box_pair_giou(boxes1, boxes2)
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum() * 0.0
    if reduction != "none":
        raise ValueError(f"unknown reduction {reduction!r}")
    return loss


def monai_box_giou_loss(boxes1, boxes2, reduction="none", eps=1e-7):
    """``monai.losses.BoxGIoULoss(reduction)(boxes1, boxes2)`` (MONAI's ε replaces ``eps``)."""
    from monai.losses import BoxGIoULoss

    return BoxGIoULoss(reduction=reduction)(boxes1, boxes2)


def kornia_box_iou(boxes1, boxes2):
    """``kornia.metrics.mean_iou_bbox`` (the IoU of every pair, despite its name)."""
    from kornia.metrics import mean_iou_bbox

    return mean_iou_bbox(boxes1, boxes2)


def torchmetrics_iou(boxes1, boxes2):
    """``torchmetrics.functional.detection.intersection_over_union(…, aggregate=False)``."""
    from torchmetrics.functional.detection import intersection_over_union

    return intersection_over_union(boxes1, boxes2, aggregate=False)


def torchmetrics_giou(boxes1, boxes2):
    """``torchmetrics.functional.detection.generalized_intersection_over_union(…, aggregate=False)``."""
    from torchmetrics.functional.detection import generalized_intersection_over_union

    return generalized_intersection_over_union(boxes1, boxes2, aggregate=False)


# ----------------------------------------------------------------------------------------------
# documented interface limits


def _two_dimensional(case: Case) -> str | None:
    b = case.inputs.get("boxes1")
    if case.raises is None and b is not None and b.ndim != 2:
        return "MONAI's box functions take (N, 4) boxes only"
    return None


def _positive_sizes(case: Case) -> str | None:
    """kornia documents an AssertionError for a box with a non-positive width or height."""
    if case.raises is not None:
        return None
    for b in (case.inputs["boxes1"], case.inputs["boxes2"]):
        if b.size and (np.any(b[..., 2] <= b[..., 0]) or np.any(b[..., 3] <= b[..., 1])):
            return "kornia.metrics.mean_iou_bbox rejects boxes of zero width or height (documented)"
    return None


_TV_UPCAST = "float16/bfloat16 boxes are computed and returned in float32 (documented _upcast)"


def _tv(loss: str, note: str, **kw) -> Implementation:
    return Implementation(loss, f"torchvision.ops.{loss}", "torch", f"torchvision.ops:{loss}",
                          requires=("torchvision",), upcast=True, note=note, **kw)


IMPLEMENTATIONS = [
    _tv(_IOU, "I/U with (N, M) intersections in the input dtype (float16 upcast); no argument checks: an "
              "inverted box has a positive 'area'; " + _TV_UPCAST),
    Implementation(_IOU, "monai.data.box_utils.box_iou", "torch", "lossoracle.ecosystem.box:monai_box_iou",
                   requires=("monai",), conventions={"eps": MONAI_EPS}, accepts=_two_dimensional,
                   note="I/(U + 2^-23) computed in float32 (float64 boxes too) and returned in the input dtype; "
                        "raises ValueError on a NaN/inf IoU"),
    Implementation(_IOU, "kornia.metrics.mean_iou_bbox", "torch", "lossoracle.ecosystem.box:kornia_box_iou",
                   requires=("kornia",), accepts=_positive_sizes,
                   note="I/U in the input dtype; asserts positive widths and heights"),
    Implementation(_IOU, "torchmetrics.functional.detection.intersection_over_union", "torch",
                   "lossoracle.ecosystem.box:torchmetrics_iou", requires=("torchmetrics", "torchvision"),
                   upcast=True, note="torchvision's box_iou (aggregate=False); an empty input returns zeros of "
                                     "shape (M, M) or (N, N)"),
    _tv(_GIOU, "I/U − (C − U)/C in the input dtype (areas upcast); " + _TV_UPCAST),
    Implementation(_GIOU, "monai.data.box_utils.box_giou", "torch", "lossoracle.ecosystem.box:monai_box_giou",
                   requires=("monai",), conventions={"eps": MONAI_EPS}, accepts=_two_dimensional,
                   note="I/(U + 2^-23) − (C − U)/(C + 2^-23) computed in float32 (float64 boxes too); raises "
                        "ValueError on a NaN/inf result"),
    Implementation(_GIOU, "torchmetrics.functional.detection.generalized_intersection_over_union", "torch",
                   "lossoracle.ecosystem.box:torchmetrics_giou", requires=("torchmetrics", "torchvision"),
                   upcast=True, note="torchvision's generalized_box_iou (aggregate=False); an empty input returns "
                                     "zeros of shape (M, M) or (N, N)"),
    _tv(_GL, "1 − I/(U + ε) + (C − U)/(C + ε) evaluated as written: 1 − IoU cancels for (nearly) identical "
             "boxes; " + _TV_UPCAST),
    Implementation(_GL, "fvcore.nn.giou_loss", "torch", "fvcore.nn:giou_loss", requires=("fvcore",),
                   note="torchvision's formula (its origin) in the input dtype, float16 included; asserts "
                        "x2 ≥ x1, y2 ≥ y1 on boxes1 only"),
    Implementation(_GL, "monai.data.box_utils.box_pair_giou (1 − GIoU)", "torch",
                   "lossoracle.ecosystem.box:monai_box_pair_giou_loss", requires=("monai",),
                   conventions={"eps": MONAI_EPS}, accepts=_two_dimensional,
                   note="GIoU with ε = 2^-23 computed in float32 (float64 boxes too), 1 − GIoU by the adapter"),
    Implementation(_GL, "monai.losses.BoxGIoULoss", "torch", "lossoracle.ecosystem.box:monai_box_giou_loss",
                   requires=("monai",), conventions={"eps": MONAI_EPS}, accepts=_two_dimensional,
                   note="1 − GIoU with ε = 2^-23, computed in float32 (float64 boxes too); an empty mean is NaN"),
    _tv(_DL, "1 − I/(U + ε) + ρ²/(c² + ε) with centres (x1 + x2)/2 in the input dtype; " + _TV_UPCAST),
    _tv(_CL, "DIoU (its ε fixed at 1e-7) + α·v with α under no_grad and atan(w/h) differences; " + _TV_UPCAST,
        conventions={"alpha": "constant", "iou_eps": 1e-7}),
]
