"""What a case exercises, derived from its inputs, its parameters and the spec's argument kinds.

Every case of every spec gets tags without a word in ``reference/`` (``Case.tags`` adds to them
where a case exercises something its inputs cannot show). Some tags depend on the dtype the case
runs in (a subnormal of float16 is a normal float32; ``σ(x)`` saturates at ``|x| > 8.3`` in
float16, ``37.4`` in float64), so :func:`case_tags` takes it; with ``dtype=None`` a tag holds if
it holds in some dtype the case is valid in.

``ordinary`` marks a valid case with none of the :data:`EDGE` tags: a finding there is a finding
on the inputs users have every day, and reports list it apart from the edges' findings
(:func:`lossoracle.report.tag_findings`). A :class:`Selection` chooses the cases of a run by
their tags, and the quantities judged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .floats import FORMATS
from .spec import TARGET_KINDS, Case, Spec

__all__ = ["TAGS", "EDGE", "KINDS", "case_tags", "check_tags", "LARGE_REDUCTION", "Selection", "selection"]

TAGS: dict[str, str] = {
    "ordinary": "none of the edge tags: finite, normal, unsaturated inputs",
    "bad_input": "invalid input: a conforming implementation raises",
    "empty_input": "a tensor input with no elements",
    "nan_propagation": "a NaN input (NaN in, NaN out)",
    "infinite_input": "an infinite input",
    "subnormal": "a subnormal input in the dtype of the run",
    "saturated_logits": "a logit where the sigmoid rounds to 0 or 1 in the dtype of the run: |x| > (p + 1)·ln 2",
    "huge_values": "a finite input whose square overflows the dtype of the run",
    "probability_endpoints": "a predicted probability of exactly 0 or 1 (log 0, 0·log 0)",
    "all_ignored": "every class-index target equals ignore_index",
    "some_ignored": "some class-index targets equal ignore_index",
    "zero_weights": "an input of kind weight with a zero entry",
    "unnormalised_rows": "a probability row (over the normalised axis) whose sum is not 1",
    "kink": "the case sits on a tie of a piecewise loss (the gradient's convention)",
    "soft_targets": "targets strictly between 0 and 1, or label smoothing",
    "hard_labels": "class indices, or targets of exactly 0 and 1",
    "large_reduction": "some output element sums at least LARGE_REDUCTION terms",
}
EDGE = frozenset(TAGS) - {"ordinary", "soft_targets", "hard_labels", "large_reduction"}
KINDS = EDGE | {"ordinary"}  # the tags reports group findings by
LARGE_REDUCTION = 64

_LOGIT_KINDS = ("logits",)
_PREDICTED = ("probabilities",)
_INDEX_KINDS = ("class_index", "class_index_or_probability_target", "probability_target")


def check_tags(names: Iterable[str], what: str = "tag") -> tuple[str, ...]:
    """``names`` as a tuple, or ValueError naming the unknown one and the known tags."""
    names = tuple(names)
    for n in names:
        if n not in TAGS:
            raise ValueError(f"unknown {what} {n!r}; known tags: {', '.join(TAGS)}")
    return names


def case_tags(spec: Spec, case: Case, dtype: str | None = None) -> tuple[str, ...]:
    """The tags of ``case`` run in ``dtype`` (in :data:`TAGS` order), with ``case.tags`` added."""
    found = set(getattr(case, "tags", ()) or ())
    if case.raises is not None:
        found.add("bad_input")
    if case.note.startswith("at a kink: "):  # the catalogue's marking of ties (reference/box.py)
        found.add("kink")
    dtypes = [dtype] if dtype else list(case.dtypes()) or ["float64"]
    params = {**spec.params, **case.params}
    kinds = {a.name: a.kind for a in spec.args}
    activation = params.get("activation")
    for name, a in case.inputs.items():
        if a is None:
            continue
        a = np.asarray(a)
        if a.size == 0:
            found.add("empty_input")
            continue
        kind = kinds.get(name, "")
        if a.dtype.kind == "f":
            found |= _floating_tags(a, kind, dtypes, activation if name == "input" else None)
            if kind in TARGET_KINDS or kind == "class_index_or_probability_target":
                finite = a[np.isfinite(a)]
                found.add("soft_targets" if np.any((finite > 0) & (finite < 1)) else "hard_labels")
            if kind == "weight" and np.any(a == 0):
                found.add("zero_weights")
            if _unnormalised(spec, case, name, kind, a, dtypes):
                found.add("unnormalised_rows")
        elif a.dtype.kind in "iu" and kind in _INDEX_KINDS:
            found.add("hard_labels")
            ignored = a == params.get("ignore_index", None)
            if np.all(ignored):
                found.add("all_ignored")
            elif np.any(ignored):
                found.add("some_ignored")
    if params.get("label_smoothing"):
        found.discard("hard_labels")
        found.add("soft_targets")
    if case.raises is None and spec.reduced_terms is not None and not found & {"empty_input"}:
        try:
            if spec.reduced_terms(case.inputs, params) >= LARGE_REDUCTION:
                found.add("large_reduction")
        except Exception:  # a count the spec cannot make for this case is no tag
            pass
    if case.raises is None and not found & EDGE:
        found.add("ordinary")
    return tuple(t for t in TAGS if t in found) + tuple(sorted(found - set(TAGS)))


def _floating_tags(a: np.ndarray, kind: str, dtypes: list[str], activation) -> set[str]:
    out = set()
    if np.any(np.isnan(a)):
        out.add("nan_propagation")
    if np.any(np.isinf(a)):
        out.add("infinite_input")
    mag = np.abs(a[np.isfinite(a)])
    nonzero = mag[mag > 0]
    logits = kind in _LOGIT_KINDS or (kind in _PREDICTED and activation in ("sigmoid", "softmax"))
    for d in dtypes:
        fmt = FORMATS[d]
        if nonzero.size and nonzero.min() < fmt.tiny:
            out.add("subnormal")
        if mag.size and mag.max() > math.sqrt(fmt.max):
            out.add("huge_values")
        if logits and mag.size and mag.max() > (fmt.p + 1) * math.log(2):
            out.add("saturated_logits")
    if kind in _PREDICTED and not logits and np.any((a == 0) | (a == 1)):
        out.add("probability_endpoints")
    return out


def _unnormalised(spec: Spec, case: Case, name: str, kind: str, a: np.ndarray, dtypes: list[str]) -> bool:
    """A probability row off 1 by more than its rounding to the dtype could make it."""
    params = {**spec.params, **case.params}
    if kind == "class_index_or_probability_target":
        axis = 1 if a.ndim >= 2 else 0
    elif kind == "probabilities" and "dim" in params:
        axis = int(params["dim"])
    else:
        return False
    if a.ndim == 0 or not -a.ndim <= axis < a.ndim or not np.all(np.isfinite(a)):
        return False
    rows = np.moveaxis(a, axis, -1).reshape(-1, a.shape[axis])
    sums = np.array([math.fsum(r) for r in rows.tolist()])
    u = max(FORMATS[d].eps / 2 for d in dtypes)
    return bool(np.any(np.abs(sums - 1.0) > (a.shape[axis] + 1) * u))


@dataclass(frozen=True)
class Selection:
    """What a run judges: quantities (``value``, ``grad:<arg>``; None: all) and cases by tag (a case
    runs when it has one of ``only_tags`` (if given) and none of ``exclude_tags``)."""

    quantities: tuple[str, ...] | None = None
    only_tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()

    def wants(self, tags: tuple[str, ...]) -> bool:
        return (not self.only_tags or bool(set(tags) & set(self.only_tags))) and not set(tags) & set(self.exclude_tags)

    def judges(self, quantity: str) -> bool:
        return self.quantities is None or quantity in self.quantities

    def meta(self) -> dict[str, Any]:
        """The selection as the report's ``meta["selection"]`` (JSON)."""
        return {"quantities": list(self.quantities) if self.quantities is not None else None,
                "only_tags": list(self.only_tags), "exclude_tags": list(self.exclude_tags)}


def selection(spec: Spec, quantities: Iterable[str] | None = None, only_tags: Iterable[str] = (),
              exclude_tags: Iterable[str] = ()) -> Selection:
    """A checked :class:`Selection` for ``spec``: ValueError naming an unknown quantity or tag."""
    if quantities is not None:
        quantities = tuple(quantities)
        known = ("value", *(f"grad:{a}" for a in spec.differentiable))
        for q in quantities:
            if q not in known:
                raise ValueError(f"{spec.name} has no quantity {q!r}; its quantities: {', '.join(known)}")
    return Selection(quantities, check_tags(only_tags), check_tags(exclude_tags))
