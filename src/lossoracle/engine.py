"""The comparison engine: run an implementation and the oracle on the same inputs, grade, report."""

from __future__ import annotations

import math
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from . import specs
from .compare import Comparison, compare
from .floats import format_of
from .frameworks import Outcome, backend, cotangent
from .mpfuncs import stable
from .report import Report, Result, fmt_float
from .spec import DTYPES, Case, Spec

__all__ = ["check", "oracle_outputs"]

_ORACLE_CACHE: dict[tuple, tuple[Any, dict[str, np.ndarray]]] = {}


def oracle_outputs(spec: Spec, case: Case, conventions: Mapping[str, Any] | None = None):
    """Exact value and exact VJPs (with the fixed cotangent) of ``case``, cached per process."""
    conventions = dict(conventions or {})
    key = (spec.name, case.id, tuple(sorted(conventions.items())))
    if key not in _ORACLE_CACHE:
        kwargs = {**spec.params, **case.params, **conventions}
        inputs = dict(case.inputs)
        value = stable(lambda: spec.oracle(**inputs, **kwargs))
        grads = {}
        if spec.gradient is not None:
            g = cotangent(np.shape(value))
            grads = stable(lambda: spec.gradient(g, **inputs, **kwargs))
        _ORACLE_CACHE[key] = (value, grads)
    return _ORACLE_CACHE[key]


def _budget(spec: Spec, case: Case, quantity: str, dtype: str) -> float:
    b = spec.budget.ulp_budget("value" if quantity == "value" else "grad", dtype)
    if spec.reduced_terms is not None:
        b += spec.budget.reduction_allowance(spec.reduced_terms(case.inputs, {**spec.params, **case.params}))
    return b


def _worst_text(spec: Spec, case: Case, cmp: Comparison, got: np.ndarray, exact) -> tuple[str, dict[str, Any]]:
    i = cmp.worst_index()
    if i is None:
        return "", {}
    exact_flat = np.asarray(exact, dtype=object).reshape(-1)
    g = float(np.asarray(got, dtype=np.float64).reshape(-1)[i])
    want = exact_flat[i]
    idx = np.unravel_index(i, np.shape(exact)) if np.ndim(exact) else ()
    inputs = "  ".join(_input_text(k, v) for k, v in case.inputs.items() if v is not None)
    params = "  ".join(f"{k}={v!r}" for k, v in case.params.items())
    text = (f"at {list(map(int, idx))}: got={fmt_float(g)}  want={_mp_text(want)}  "
            f"ulp={cmp.ulp.reshape(-1)[i]:.3g}  inputs: {inputs}  {params}").strip()
    return text, {"index": [int(j) for j in idx], "got": g, "want": _mp_text(want)}


def _mp_text(v) -> str:
    import mpmath

    return mpmath.nstr(v, 20) if mpmath.isfinite(v) else str(v)


def _input_text(name: str, a: np.ndarray) -> str:
    if a.size > 12:
        return f"{name}=<{a.dtype} array {a.shape}, see case>"
    if a.dtype.kind == "f":
        vals = ", ".join(fmt_float(float(v)) for v in a.reshape(-1))
        return f"{name}=[{vals}] shape={a.shape}"
    return f"{name}={a.tolist()!r}"


def _grade_quantity(spec, case, quantity, got, got_dtype, exact, dtype, conventions, cot):
    fmt = format_of(got_dtype)
    budget = _budget(spec, case, quantity, dtype)
    scale = None
    if spec.scale is not None:
        scale = spec.scale(quantity, case.inputs, {**spec.params, **case.params, **conventions}, exact, cot)
    if np.shape(got) != np.shape(exact):
        return None, f"{quantity}: result shape {np.shape(got)} differs from the spec's {np.shape(exact)}"
    return compare(got, exact, fmt, budget, scale, spec.budget.scale_k), budget


def _row(spec, impl_name, device, dtype, case, quantity, cmp_or_none, budget_or_msg, got, exact, note):
    base = dict(loss=spec.name, implementation=impl_name, device=device, dtype=dtype, case=case.id,
                quantity=quantity, reduction=case.reduction())
    if cmp_or_none is None:
        return Result(**base, max_ulp=None, max_rel_err=None, nonfinite_mismatch=0, verdict="error", grade=None,
                      detail=budget_or_msg)
    cmp, budget = cmp_or_none, budget_or_msg
    grade = cmp.cell_grade
    finite = cmp.ulp[np.isfinite(cmp.ulp)]
    max_ulp = float(cmp.ulp.max()) if cmp.n else 0.0
    max_rel = float(np.max(cmp.rel)) if cmp.n else 0.0
    verdict = "conforms" if grade != "deviates" and cmp.nonfinite_mismatch == 0 else "deviates"
    worst, worst_info = _worst_text(spec, case, cmp, got, exact)
    if verdict == "deviates":
        kind = "non-finite mismatch" if cmp.nonfinite_mismatch else ("gross error" if cmp.gross else "over budget")
        about = f" [{case.note}]" if case.note else ""
        detail = f"{quantity} {kind} ({cmp.nonfinite_mismatch} non-finite, {cmp.gross} gross){about} {worst}"
        if note:
            detail = f"{note} — {detail}"
    elif grade == "scale_accurate":
        detail = f"{quantity} scale-accurate only (tiny results lose relative accuracy) {worst}"
    else:
        detail = ""
    return Result(**base, max_ulp=max_ulp, max_rel_err=max_rel, nonfinite_mismatch=cmp.nonfinite_mismatch,
                  verdict=verdict, grade=grade, detail=detail, n=cmp.n, over=int(np.sum(cmp.ulp > budget)),
                  sum_sq_ulp=float(np.sum(finite**2)) if finite.size == cmp.n else math.inf, budget=budget,
                  worst=worst_info)


def _run_case(spec, bk, fn, grad_fn, impl_name, case, dtype, device, conventions, note, strict_errors):
    with warnings.catch_warnings():  # libraries warn about the very edge cases we feed them
        warnings.simplefilter("ignore")
        return _run_case_quietly(spec, bk, fn, grad_fn, impl_name, case, dtype, device, conventions, note,
                                 strict_errors)


def _run_case_quietly(spec, bk, fn, grad_fn, impl_name, case, dtype, device, conventions, note, strict_errors):
    base = dict(loss=spec.name, implementation=impl_name, device=device, dtype=dtype, case=case.id,
                reduction=case.reduction(), max_ulp=None, max_rel_err=None, nonfinite_mismatch=0, grade=None)
    if case.raises is not None:
        expected = case.raises if strict_errors else Exception
        try:
            bk.run(fn, grad_fn, spec, case, dtype, device)
        except expected as e:  # noqa: B030 - a class or tuple of classes
            return [Result(**base, quantity="raises", verdict="conforms", detail=f"{type(e).__name__}: {e}"[:200])]
        except Exception as e:
            return [Result(**base, quantity="raises", verdict="deviates",
                           detail=f"raised {type(e).__name__} ({e}) instead of {_names(case.raises)}"[:300])]
        return [Result(**base, quantity="raises", verdict="deviates",
                       detail=f"returned a value instead of raising {_names(case.raises)} ({case.note})")]
    try:
        out: Outcome = bk.run(fn, grad_fn, spec, case, dtype, device)
    except Exception as e:
        where = traceback.extract_tb(e.__traceback__)[-1]
        return [Result(**base, quantity="value", verdict="error",
                       detail=f"{type(e).__name__}: {str(e)[:200]} ({where.filename.split('/')[-1]}:{where.lineno})")]
    value, grads = oracle_outputs(spec, case, conventions)
    cot = cotangent(np.shape(value))
    rows = []
    cmp, b = _grade_quantity(spec, case, "value", out.value, out.value_dtype, value, dtype, conventions, cot)
    rows.append(_row(spec, impl_name, device, dtype, case, "value", cmp, b, out.value, value, note))
    for name, (g, gdtype) in out.grads.items():
        if name not in grads:
            continue
        cmp, b = _grade_quantity(spec, case, f"grad:{name}", g, gdtype, grads[name], dtype, conventions, cot)
        rows.append(_row(spec, impl_name, device, dtype, case, f"grad:{name}", cmp, b, g, grads[name], note))
    return rows


def _reproducer(target: str, framework: str, loss: str, conventions: Mapping[str, Any]) -> str:
    params = "".join(f" --param {k}={v!r}" for k, v in conventions.items())
    return f"lossoracle check --impl {target} --framework {framework} --loss {loss}{params} -v"


def _names(exc) -> str:
    excs = exc if isinstance(exc, tuple) else (exc,)
    return " or ".join(e.__name__ for e in excs)


def check(fn: Callable, loss: str, framework: str = "torch", *, grad: Callable | None = None,
          name: str | None = None, conventions: Mapping[str, Any] | None = None,
          dtypes: Iterable[str] | None = None, devices: Iterable[str | None] | None = None,
          cases: Iterable[str | Case] | None = None, accepts: Callable[[Case], str | None] | None = None,
          note: str = "", strict_errors: bool = False, target: str | None = None) -> Report:
    """Validate ``fn`` (canonical signature of ``loss``) against the oracle.

    Values and gradients (torch/jax autograd; ``grad`` — an explicit VJP
    ``grad(grad_output, *args, **kwargs) -> {arg: array}`` — for NumPy) over the spec's edge
    catalogue and generated cases, in every dtype the case is exact in and the callable accepts
    (a dtype on which every case raises is reported as skipped), on every available device.

    ``cases`` restricts the run to these case ids, or supplies Case objects (e.g. hypothesis
    draws) to run instead of the catalogue. ``conventions`` selects the oracle variant the
    implementation claims (e.g. PyTorch's BCE log clamp). ``accepts(case)`` returns a reason to
    skip a case the implementation's documented interface does not cover. ``strict_errors``
    requires the exact exception type on bad-input cases (any exception otherwise). ``target``
    is the importable path printed in the reproducer command of a deviation (default: the
    callable's own module and name).
    """
    spec = specs.get(loss)
    bk = backend(framework)
    conventions = dict(conventions or {})
    impl_name = name or f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    dtypes = tuple(d for d in (dtypes or DTYPES) if d in bk.dtypes)
    devices = list(devices) if devices is not None else bk.devices()
    given = [c for c in (cases or ()) if isinstance(c, Case)]
    wanted = None if cases is None or given else set(cases)
    report = Report()
    for device in devices:
        by_dtype: dict[str, list[Result]] = {d: [] for d in dtypes}
        for case in given or spec.cases():
            if wanted is not None and case.id not in wanted:
                continue
            case_dtypes = [d for d in case.dtypes() if d in dtypes]
            if case.raises is not None:
                case_dtypes = case_dtypes[-1:]  # one dtype suffices for a bad-input case
            reason = accepts(case) if accepts else None
            for dtype in case_dtypes:
                if reason:
                    by_dtype[dtype].append(Result(spec.name, impl_name, device, dtype, case.id, "value",
                                                  case.reduction(), None, None, 0, "skipped", None, reason))
                    continue
                by_dtype[dtype] += _run_case(spec, bk, fn, grad, impl_name, case, dtype, device, conventions, note,
                                             strict_errors)
        repro = _reproducer(target or impl_name, framework, spec.name, conventions)
        for dtype, rows in by_dtype.items():
            for r in rows:
                if r.verdict in ("deviates", "error"):
                    r.reproduce = f"{repro} --case {r.case} --dtype {dtype}"
            value_rows = [r for r in rows if r.quantity != "raises" and r.verdict != "skipped"]
            if value_rows and all(r.verdict == "error" for r in value_rows):
                for r in value_rows:
                    r.verdict, r.detail = "skipped", f"does not accept {dtype}: {value_rows[0].detail}"
            report.results.extend(rows)
    return report
