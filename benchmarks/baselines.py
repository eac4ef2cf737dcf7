"""The benchmark registry, declarative and in one place: each loss's baseline (its torch built-in
or reference library) and the workloads (shapes, parameters, dtypes) the suites and
``ratios.py`` time it on.

A loss absent from ``WORKLOADS`` is still benchmarked (``harness.workloads()`` derives one from
its catalogue); a loss absent from ``BASELINES`` is timed alone. A baseline is either the dotted
path of a callable with the loss's canonical signature (a library function, or the adapter in
``lossoracle.ecosystem``) or one of the idioms below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Workload", "BASELINES", "WORKLOADS", "IDIOMS"]


def kl_divergence_idiom(p, q, dim=-1):
    """``F.kl_div(q.log(), p, reduction="none").sum(dim)``: KL(p‖q) as people write it."""
    import torch.nn.functional as F

    return F.kl_div(q.log(), p, reduction="none").sum(dim)


def uncertainty_weighted_idiom(losses, log_vars, task_types=None, form="kendall", reduction="sum"):
    """``(½·exp(−s)·L + ½·s).sum()`` (Kendall et al.'s regression form, as in torchjd)."""
    import torch

    return (0.5 * torch.exp(-log_vars) * losses + 0.5 * log_vars).sum()


def dynamic_task_priority_idiom(losses, kpis, gamma=1.0, reduction="sum", kpi_floor=None):
    """``(−(1 − κ)^γ·log κ · L).sum()`` with the weights detached."""
    import torch

    return ((-(1 - kpis) ** gamma * torch.log(kpis)).detach() * losses).sum()


IDIOMS = {f.__name__: f for f in (kl_divergence_idiom, uncertainty_weighted_idiom, dynamic_task_priority_idiom)}

# loss -> the callable ours is measured against ("module:attr", or an IDIOMS name)
BASELINES: dict[str, str] = {
    "cross_entropy": "torch.nn.functional:cross_entropy",
    "nll_loss": "torch.nn.functional:nll_loss",
    "log_softmax": "torch.nn.functional:log_softmax",
    "softmax": "torch.nn.functional:softmax",
    "binary_cross_entropy": "torch.nn.functional:binary_cross_entropy",
    "binary_cross_entropy_with_logits": "torch.nn.functional:binary_cross_entropy_with_logits",
    "kl_div": "torch.nn.functional:kl_div",
    "entropy": "lossoracle.ecosystem.information:torch_entr",  # torch.special.entr(p).sum(dim)
    "kl_divergence": "kl_divergence_idiom",
    "sigmoid_focal_loss": "torchvision.ops:sigmoid_focal_loss",
    "softmax_focal_loss": "lossoracle.ecosystem.focal:kornia_focal",
    "dice_loss": "lossoracle.ecosystem.dice:monai_dice",
    "jaccard_loss": "lossoracle.ecosystem.dice:monai_jaccard",
    "tversky_loss": "lossoracle.ecosystem.dice:monai_tversky",
    "generalized_dice_loss": "lossoracle.ecosystem.dice:monai_generalized_dice",
    "box_iou": "torchvision.ops:box_iou",
    "generalized_box_iou": "torchvision.ops:generalized_box_iou",
    "generalized_box_iou_loss": "torchvision.ops:generalized_box_iou_loss",
    "distance_box_iou_loss": "torchvision.ops:distance_box_iou_loss",
    "complete_box_iou_loss": "torchvision.ops:complete_box_iou_loss",
    "uncertainty_weighted_loss": "uncertainty_weighted_idiom",
    "dynamic_task_priority": "dynamic_task_priority_idiom",
}


@dataclass(frozen=True)
class Workload:
    """One benchmark input of one loss.

    ``shape`` is the first positional argument's; the other tensor arguments follow it (class
    indices drop axis 1, the class axis); values are drawn by each argument's kind, or by the
    kind named in ``kinds`` (``"distribution"``: rows that sum to 1 along the last axis;
    ``"class_index"``: integer targets). ``params`` override the spec's defaults; ``grad`` names
    the arguments that require gradients (default: the first differentiable one, as in
    training). ``label`` tells workloads of one loss and shape apart (asv keys on it: never
    rename one). ``ratio_dtypes``: the dtypes ``ratios.py`` prints.
    """

    loss: str
    shape: tuple[int, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    kinds: Mapping[str, str] = field(default_factory=dict)
    grad: tuple[str, ...] | None = None
    label: str = ""
    ratio_dtypes: tuple[str, ...] = ("float32", "float64")

    @property
    def key(self) -> str:
        return "-".join(p for p in (self.loss, "x".join(map(str, self.shape)), self.label) if p)


_DIST = {"p": "distribution", "q": "distribution"}
_BOX = {"reduction": "mean"}
_DICE = {"activation": "softmax"}
_DICE_T = {"target": "class_index"}

WORKLOADS: tuple[Workload, ...] = (
    Workload("cross_entropy", (4096, 10)),
    Workload("cross_entropy", (1024, 1000)),
    Workload("cross_entropy", (1024, 1000), {"label_smoothing": 0.1}, label="ls0.1", ratio_dtypes=("float32",)),
    Workload("nll_loss", (1024, 1000), ratio_dtypes=("float32",)),
    Workload("log_softmax", (1024, 1000)),
    Workload("softmax", (1024, 1000)),
    Workload("binary_cross_entropy_with_logits", (2**20,)),
    Workload("binary_cross_entropy", (2**20,)),
    Workload("entropy", (1024, 1024), kinds=_DIST),
    Workload("kl_div", (1024, 1024), kinds={"target": "distribution"}),
    Workload("kl_divergence", (1024, 1024), kinds=_DIST, ratio_dtypes=("float32",)),
    Workload("sigmoid_focal_loss", (2**22,), {"reduction": "mean"}, kinds={"targets": "binary_target"}),
    Workload("softmax_focal_loss", (1024, 1000), ratio_dtypes=("float32",)),
    Workload("dice_loss", (8, 4, 256, 256), _DICE, _DICE_T, ratio_dtypes=("float32",)),
    Workload("jaccard_loss", (8, 4, 256, 256), _DICE, _DICE_T, ratio_dtypes=("float32",)),
    Workload("tversky_loss", (8, 4, 256, 256), _DICE, _DICE_T, ratio_dtypes=("float32",)),
    Workload("generalized_dice_loss", (8, 4, 256, 256), _DICE, _DICE_T, ratio_dtypes=("float32",)),
    Workload("box_iou", (1024, 4), ratio_dtypes=("float32",)),
    Workload("generalized_box_iou", (1024, 4), ratio_dtypes=("float32",)),
    Workload("generalized_box_iou_loss", (2**20, 4), _BOX, grad=("boxes1", "boxes2"), ratio_dtypes=("float32",)),
    Workload("distance_box_iou_loss", (2**20, 4), _BOX, grad=("boxes1", "boxes2"), ratio_dtypes=("float32",)),
    Workload("complete_box_iou_loss", (2**20, 4), _BOX, grad=("boxes1", "boxes2"), ratio_dtypes=("float32",)),
    Workload("uncertainty_weighted_loss", (2**16,), grad=("losses", "log_vars"), ratio_dtypes=("float32",)),
    Workload("dynamic_task_priority", (2**16,), ratio_dtypes=("float32",)),
)
