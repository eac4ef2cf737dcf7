"""The declarative spec of a loss: what it computes, on which inputs, to which accuracy.

A :class:`Spec` is the single place where a loss's knowledge lives for the generic layers
(checker, CLI, reports, tests, benchmarks). Each ``reference/<loss>.py`` module builds one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .compare import reduction_allowance
from .floats import FORMATS, FloatFormat, is_representable

__all__ = ["Arg", "Case", "Budget", "Convention", "InDtype", "Spec", "DTYPES", "DTYPE_EPS"]

DTYPES = ("float16", "bfloat16", "float32", "float64")
DTYPE_EPS = "eps"  # a Convention value standing for the machine epsilon of the dtype being checked


@dataclass(frozen=True)
class InDtype:
    """A Convention value rounded to the dtype being checked, as an implementation's constant
    (``1 − 1e-7`` is ``1 − 2^-23`` in float32 and 1 in float16)."""

    value: float
TARGET_KINDS = ("binary_target", "probability_target", "class_index_or_probability_target")


@dataclass(frozen=True)
class Arg:
    """A tensor argument.

    ``kind`` names its domain: ``logits``, ``probabilities``, ``log_probabilities``,
    ``class_index``, ``probability_target``, ``binary_target``, ``weight``, ``boxes``.
    ``positional`` arguments are passed by position, the others by keyword (and may be None).
    ``differentiable`` arguments get a ``grad:<name>`` quantity. ``domain`` ``(low, high)``
    bounds the values hypothesis draws for a kind of the spec's own (the common kinds' domains
    are in :data:`lossoracle.strategies.KIND_DOMAINS`).
    """

    name: str
    kind: str
    positional: bool = True
    differentiable: bool = False
    domain: tuple[float, float] | None = None


_DTYPES_OF: dict[bytes, tuple[str, ...]] = {}


def _content_key(inputs: Mapping[str, np.ndarray | None]) -> bytes:
    """A digest of the floating inputs' exact values (what :meth:`Case.dtypes` depends on)."""
    h = hashlib.blake2b(digest_size=16)
    for a in inputs.values():
        if a is not None and a.dtype.kind == "f":
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.digest()


@dataclass(frozen=True)
class Case:
    """One input set: exact tensor values (float64 or int64 arrays), parameters, expectation.

    ``raises`` names the exception a conforming implementation raises on this (bad) input;
    ``None`` means the oracle's value is the expectation. ``tags`` adds to the tags derived from
    the inputs (:mod:`lossoracle.tags`) what they cannot show.
    """

    id: str
    inputs: Mapping[str, np.ndarray | None]
    params: Mapping[str, Any] = field(default_factory=dict)
    raises: type[Exception] | tuple[type[Exception], ...] | None = None
    note: str = ""
    tags: tuple[str, ...] = ()

    def representable_in(self, fmt: FloatFormat) -> bool:
        """Every floating input is exactly a value of ``fmt`` (so the case is valid in that dtype)."""
        for a in self.inputs.values():
            if a is None or a.dtype.kind != "f":
                continue
            if not all(is_representable(v, fmt) for v in np.unique(a).tolist()):
                return False
        return True

    def dtypes(self) -> tuple[str, ...]:
        """The dtypes this case is valid in (remembered per content of the inputs: the checker asks
        for every case once per implementation and dtype)."""
        key = _content_key(self.inputs)
        if key not in _DTYPES_OF:
            _DTYPES_OF[key] = tuple(d for d in DTYPES if self.representable_in(FORMATS[d]))
        return _DTYPES_OF[key]

    def reduction(self) -> str:
        return str(self.params.get("reduction", "none"))


@dataclass(frozen=True)
class Budget:
    """The ULP budgets per dtype for values and gradients (the *faithful* grade).

    Beyond them, every loss is graded by the same rule from its conditioning
    (:mod:`lossoracle.compare`): no spec carries an error model of its own.
    """

    value_ulp: Mapping[str, float] = field(default_factory=lambda: {d: 4.0 for d in DTYPES} | {"float64": 2.0})
    grad_ulp: Mapping[str, float] = field(default_factory=lambda: {d: 8.0 for d in DTYPES} | {"float64": 4.0})

    def ulp_budget(self, quantity: str, dtype: str) -> float:
        table = self.value_ulp if quantity == "value" else self.grad_ulp
        return float(table[dtype])

    def faithful(self, quantity: str, dtype: str, n_terms: int = 1) -> float:
        """The *faithful* bound in ULP: the budget plus ``log2(n)`` for a reduction over ``n`` terms."""
        return self.ulp_budget(quantity, dtype) + reduction_allowance(n_terms)


@dataclass(frozen=True)
class Convention:
    """An oracle parameter beyond the canonical signature, which some library's behaviour needs.

    ``values``: the other settings real libraries use, which the convention search
    (:mod:`lossoracle.fingerprint`) tries on a non-conforming cell; :data:`DTYPE_EPS` stands for
    the machine epsilon of the cell's dtype, :class:`InDtype` a constant rounded to it, and a
    mapping sets several parameters together (this one and its companions, e.g. a clip bound and
    its complement).
    """

    name: str
    default: Any
    doc: str
    values: tuple[Any, ...] = ()


OracleFn = Callable[..., Any]
GradFn = Callable[..., dict[str, np.ndarray]]


@dataclass(frozen=True)
class Spec:
    """Everything the generic layers know about one loss.

    - ``oracle(**inputs, **params, **conventions)`` returns the exact value (mpf or object array);
    - ``gradient(grad_output, **inputs, **params, **conventions)`` returns ``{arg: object array}``,
      the vector-Jacobian product with ``grad_output`` (same shape as the value);
    - ``cases()`` yields the named edge catalogue, generated cases and bad-input cases;
    - ``reduced_terms(inputs, params)`` is the number of terms summed into one output element
      (the reduction's, times any inner sum such as over classes): it buys ``log2(n)`` ULP and
      ``log2(n)`` on the grading's ``k``;
    - ``tolerance(inputs, params)`` (optional) gives, for some floating inputs, the magnitude
      ``E_i`` by which the condition number perturbs each entry instead of ``|z_i|`` (Higham's
      componentwise condition for a tolerance vector ``E``): a loss of coordinate *differences*
      is perturbed relative to the boxes' sizes, not to their distance from an arbitrary origin;
    - ``unit_tail_scale``: the loss is invariant to the scale of its inputs (the IoU family), so
      the tail scale is 1 (times the largest |cotangent| for gradients), not the input magnitude.
    """

    name: str
    signature: str
    definition: str
    source: str
    args: tuple[Arg, ...]
    params: Mapping[str, Any]
    oracle: OracleFn
    gradient: GradFn | None
    cases: Callable[[], Iterable[Case]]
    budget: Budget = field(default_factory=Budget)
    conventions: tuple[Convention, ...] = ()
    reduced_terms: Callable[[Mapping[str, Any], Mapping[str, Any]], int] | None = None
    tolerance: Callable[[Mapping[str, Any], Mapping[str, Any]], Mapping[str, np.ndarray]] | None = None
    unit_tail_scale: bool = False
    edge_notes: tuple[str, ...] = ()

    def arg(self, name: str) -> Arg:
        return next(a for a in self.args if a.name == name)

    @property
    def differentiable(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.args if a.differentiable)

    @property
    def hard_label_args(self) -> tuple[str, ...]:
        """Target arguments whose entries equal to 1 are hard labels (exact, never perturbed by the
        conditioning)."""
        return tuple(a.name for a in self.args if a.kind in TARGET_KINDS)
