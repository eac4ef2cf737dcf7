"""The ecosystem's multi-task weightings: torchjd's and LibMTL's uncertainty weighting,
and :func:`identify_form`, which tells which named form an implementation computes.

Searched (PyPI package list, names and summaries: "multi-task", "multitask", "uncertainty weight",
"libmtl", "torchjd", "mtl", "task priorit", "loss balanc"): uncertainty weighting is exported by
``torchjd`` (``torchjd.scalarization.UW``, the regression form for every task, summed) and
``LibMTL`` (``LibMTL.weighting.UW``, the same form inside a training ``backward``); ``torchmtl``
has fixed loss weights only, ``uncertainty-loss`` evidential losses. No installable library
implements Dynamic Task Prioritization.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..catalog import Implementation
from ..spec import Case

__all__ = ["IMPLEMENTATIONS", "CANDIDATE_FORMS", "FormMatch", "identify_form", "torchjd_uw", "libmtl_uw"]

UW, DTP = "uncertainty_weighted_loss", "dynamic_task_priority"


def _regression_sum_only(case: Case) -> str | None:
    """The interface of a library that computes ``Σ ½e^{−s}L + ½s`` and nothing else."""
    p = case.params
    if case.raises is not None:
        return None if case.id == "bad_shape_mismatch" else "the library checks only that the shapes match"
    if p.get("form", "kendall") != "kendall" or any(t != "regression" for t in (p.get("task_types") or ())):
        return "implements the regression form ½e^{−s}L + ½s for every task only"
    if p.get("reduction", "sum") != "sum":
        return "returns the sum over the tasks only"
    return None


def torchjd_uw(losses: Any, log_vars: Any, task_types=None, form: str = "kendall", reduction: str = "sum") -> Any:
    """``torchjd.scalarization.UW`` with its log-variance parameter replaced by ``log_vars``
    (``torch.func.functional_call``, so the gradient reaches the caller's tensor)."""
    import torch
    from torchjd.scalarization import UW as TorchjdUW

    module = TorchjdUW(tuple(log_vars.shape)).to(device=log_vars.device, dtype=log_vars.dtype)
    return torch.func.functional_call(module, {"log_var": log_vars}, (losses,))


def libmtl_uw(losses: Any, log_vars: Any, task_types=None, form: str = "kendall", reduction: str = "sum") -> Any:
    """``LibMTL.weighting.UW.backward`` builds ``Σ L/(2e^{s}) + s/2`` from its ``loss_scale`` and calls
    ``.backward()`` on it itself; the adapter sets ``loss_scale = log_vars`` and takes the loss where
    that call would back-propagate it (``Tensor.backward`` swapped for the duration of the call)."""
    import torch
    from LibMTL.weighting.UW import UW as LibmtlUW

    weighting = LibmtlUW()
    weighting.loss_scale = log_vars  # init_param() not called: a plain tensor attribute
    captured: dict[str, Any] = {}
    original = torch.Tensor.backward
    torch.Tensor.backward = lambda self, *a, **k: captured.setdefault("loss", self)
    try:
        weighting.backward(losses)
    except TypeError:  # its return value, .numpy() of the weights, fails for bfloat16 after the loss is built
        if "loss" not in captured:
            raise
    finally:
        torch.Tensor.backward = original
    return captured["loss"]


IMPLEMENTATIONS = [
    Implementation(UW, "torchjd.scalarization.UW", "torch", "lossoracle.ecosystem.multitask:torchjd_uw",
                   requires=("torchjd",), accepts=_regression_sum_only,
                   note="torchjd computes (0.5·exp(−s)·L + 0.5·s).sum() in the input dtype: exp(−s) overflows "
                        "before the product (inf·L = inf where e^{−s}·L is finite; inf·0 = NaN at L = 0)"),
    Implementation(UW, "LibMTL.weighting.UW", "torch", "lossoracle.ecosystem.multitask:libmtl_uw",
                   requires=("LibMTL",), accepts=_regression_sum_only,
                   note="LibMTL computes (L/(2·exp(s)) + s/2).sum(); LibMTL 1.1.5 does not import with "
                        "torchvision ≥ 0.13 (LibMTL/model/resnet.py imports torchvision.models.utils)"),
]


# ----------------------------------------------------------------------------------------------
# Which form does an implementation compute?

_K = 4
#: the candidate forms, as oracle parameters (kendall with every task a classification task is the
#: common ``exp(−s)·L + ½s``)
CANDIDATE_FORMS: dict[str, dict[str, Any]] = {
    "kendall": {"form": "kendall", "task_types": None},
    "kendall_classification": {"form": "kendall", "task_types": ("classification",) * _K},
    "simplified": {"form": "simplified", "task_types": None},
    "liebel": {"form": "liebel", "task_types": None},
}


def _identifying_cases(claimed: str) -> list[Case]:
    """Small, well-conditioned inputs on which every pair of forms differs grossly, in value and in
    both gradients (with the parameters the implementation claims)."""
    params = dict(CANDIDATE_FORMS[claimed])
    if params["task_types"] is None:
        del params["task_types"]
    L, s = np.array([0.25, 1.0, 3.0, 0.0]), np.array([-1.0, 0.0, 0.5, 2.0])
    return [Case(f"identify_{red}", {"losses": L, "log_vars": s}, {**params, "reduction": red})
            for red in ("sum", "none")]


@dataclass
class FormMatch:
    """The verdict of an implementation against each candidate form (``matches``: those it conforms
    to). ``claimed`` is the form it was called with."""

    claimed: str
    matches: tuple[str, ...]
    verdicts: dict[str, str] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.matches == (self.claimed,):
            return f"computes the form it claims ({self.claimed})"
        if not self.matches:
            return f"claims {self.claimed}; matches none of {', '.join(CANDIDATE_FORMS)}"
        return f"claims {self.claimed}; matches {', '.join(self.matches)}"


def identify_form(fn: Callable, framework: str = "torch", claimed: str = "kendall", grad: Callable | None = None,
                  dtype: str = "float64") -> FormMatch:
    """Judge ``fn`` (canonical signature of ``uncertainty_weighted_loss``, called with the form it
    ``claimed``) against every form in :data:`CANDIDATE_FORMS`, values and gradients, and report the
    forms it conforms to."""
    from ..engine import check

    if claimed not in CANDIDATE_FORMS:
        raise ValueError(f"claimed must be one of {tuple(CANDIDATE_FORMS)}, got {claimed!r}")
    cases = _identifying_cases(claimed)
    devices = [None] if framework == "numpy" else ["cpu"]
    verdicts, details = {}, {}
    for name, conventions in CANDIDATE_FORMS.items():
        report = check(fn, UW, framework, grad=grad, conventions=conventions, cases=cases, dtypes=[dtype],
                       devices=devices, name=f"{getattr(fn, '__name__', fn)} as {name}")
        bad = [r for r in report.results if r.verdict != "conforms"]
        verdicts[name] = bad[0].verdict if bad else "conforms"
        details[name] = bad[0].detail if bad else ""
    return FormMatch(claimed, tuple(n for n, v in verdicts.items() if v == "conforms"), verdicts, details)
