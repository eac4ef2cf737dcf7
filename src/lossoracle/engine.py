"""The comparison engine: run an implementation and the oracle on the same inputs, grade, report.

Outcomes of one call of the implementation on one case (README, "verdicts"):

- a value (and gradients): graded element by element (:mod:`lossoracle.compare`), the row's
  verdict ``conforms``, ``tail`` or ``deviates``; a result of another shape, or of another dtype
  than the input's (unless the upcast is declared), deviates;
- the call raised: ``error`` (never a skip); ``NotImplementedError``, or a case or dtype the
  adapter declares unsupported: ``unsupported``;
- the worker died or hung: ``crashed`` / ``timeout``, and the rest of that cell is not run.

Each implementation runs in a forked worker process (:mod:`lossoracle.isolation`, one per
implementation and device, reused while healthy, ``timeout`` seconds per call); only the call
runs there, the oracle and the grading stay in this process.

A bad-input case conforms only if the implementation raises on it *and* produced a value on
some valid case: raising on everything proves nothing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from . import specs
from .compare import FINDINGS, Comparison, compare
from .conditioning import gradient_conditioning, scale_bound, value_conditioning
from .floats import format_of
from .frameworks import Outcome, backend, cotangent
from .isolation import Failure, worker
from .mpfuncs import stable
from .report import Report, Result, fmt_float
from .spec import DTYPES, Case, Spec
from .tags import Selection, case_tags, selection

__all__ = ["check", "Options", "exact_outputs", "oracle_outputs", "case_conditioning", "credit_bad_input"]

_ORACLE_CACHE: dict[tuple, tuple[Any, dict[str, np.ndarray]]] = {}
_COND_CACHE: dict[tuple, Any] = {}
SCORED = ("conforms", "tail", "deviates")


@dataclass(frozen=True)
class Raised:
    """A bad-input case raised the exception the spec expects (decided in the worker)."""

    message: str


def _key(spec: Spec, case: Case, conventions: Mapping[str, Any]) -> tuple:
    return spec.name, case.id, tuple(sorted(conventions.items()))


def _kwargs(spec: Spec, case: Case, conventions: Mapping[str, Any]) -> dict[str, Any]:
    return {**spec.params, **case.params, **conventions}


def exact_outputs(spec: Spec, case: Case, conventions: Mapping[str, Any] | None = None):
    """Exact value and exact VJPs (with the fixed cotangent) of ``case``, from the oracle (uncached)."""
    kwargs = _kwargs(spec, case, dict(conventions or {}))
    inputs = dict(case.inputs)
    value = stable(lambda: spec.oracle(**inputs, **kwargs))
    grads = {}
    if spec.gradient is not None:
        g = cotangent(np.shape(value))
        grads = stable(lambda: spec.gradient(g, **inputs, **kwargs))
    return value, grads


def oracle_outputs(spec: Spec, case: Case, conventions: Mapping[str, Any] | None = None):
    """:func:`exact_outputs`, cached per process, and read from the frozen reference data when it
    holds the case (with the spec's own conventions), else from the user cache of earlier runs
    (:mod:`lossoracle.oraclecache`), instead of running mpmath."""
    conventions = dict(conventions or {})
    key = _key(spec, case, conventions)
    if key not in _ORACLE_CACHE:
        from . import oraclecache
        from .refdata import frozen

        hit = frozen(spec, case) if not conventions else None
        if hit is None:
            stored = oraclecache.key(spec, case, conventions)
            hit = oraclecache.get(spec.name, stored)
            if hit is None:
                hit = exact_outputs(spec, case, conventions)
                oraclecache.put(spec.name, stored, *hit)
        _ORACLE_CACHE[key] = hit
    return _ORACLE_CACHE[key]


def case_conditioning(spec: Spec, case: Case, conventions: Mapping[str, Any] | None = None,
                      part: str = "value"):
    """Per-element condition numbers and tail scales of the value (``part="value"``) or of every
    gradient (``part="grad"``) of ``case``: cached per process and across runs
    (:mod:`lossoracle.condcache`)."""
    from . import condcache

    conventions = dict(conventions or {})
    key = (*_key(spec, case, conventions), part)
    if key not in _COND_CACHE:
        value, grads = oracle_outputs(spec, case, conventions)
        cot = cotangent(np.shape(value))
        shapes = {"value": np.shape(value)} if part == "value" else {f"grad:{k}": np.shape(v) for k, v in grads.items()}
        stored_key = condcache.key(spec, case, conventions, part, cot)
        result = condcache.get(spec.name, stored_key, shapes)
        if result is None:
            params = _kwargs(spec, case, conventions)
            how = dict(hard=spec.hard_label_args, unit_scale=spec.unit_tail_scale,
                       tolerance=spec.tolerance(case.inputs, params) if spec.tolerance else None)
            result = (value_conditioning(spec.oracle, case.inputs, params, value, **how) if part == "value" else
                      gradient_conditioning(spec.gradient, case.inputs, params, grads, cot, **how))
            condcache.put(spec.name, stored_key, result)
        _COND_CACHE[key] = result
    return _COND_CACHE[key]


def _budget(spec: Spec, case: Case, quantity: str, dtype: str, conventions) -> float:
    """The spec's ULP budget plus the reduction allowance log2(n)."""
    return spec.budget.faithful("value" if quantity == "value" else "grad", dtype, _terms(spec, case, conventions))


def _terms(spec: Spec, case: Case, conventions) -> int:
    return spec.reduced_terms(case.inputs, _kwargs(spec, case, conventions)) if spec.reduced_terms else 1


def _worst_text(case: Case, cmp: Comparison, got: np.ndarray, exact) -> tuple[str, dict[str, Any]]:
    i = cmp.worst_index()
    if i is None:
        return "", {}
    exact_flat = np.asarray(exact, dtype=object).reshape(-1)
    g = float(np.asarray(got, dtype=np.float64).reshape(-1)[i])
    want = exact_flat[i]
    idx = np.unravel_index(i, np.shape(exact)) if np.ndim(exact) else ()
    inputs = "  ".join(_input_text(k, v) for k, v in case.inputs.items() if v is not None)
    params = "  ".join(f"{k}={v!r}" for k, v in case.params.items())
    ce = cmp.cond_err.reshape(-1)[i]
    text = (f"at {list(map(int, idx))}: got={fmt_float(g)}  want={_mp_text(want)}  "
            f"ulp={cmp.ulp.reshape(-1)[i]:.3g}  err/(u·c)={ce:.3g} (k={cmp.k:.3g})  "
            f"inputs: {inputs}  {params}").strip()
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


@dataclass
class _Ctx:
    """What every row of one ``check`` call shares."""

    spec: Spec
    impl_name: str
    device: str | None
    conventions: dict[str, Any]
    note: str
    upcast: bool
    select: Selection = field(default_factory=Selection)
    plot_points: int = 0

    def row(self, case: Case, dtype: str, quantity: str, verdict: str, detail: str, **kw) -> Result:
        return Result(loss=self.spec.name, implementation=self.impl_name, device=self.device, dtype=dtype,
                      case=case.id, quantity=quantity, reduction=case.reduction(), max_ulp=None, max_rel_err=None,
                      nonfinite_mismatch=0, verdict=verdict, grade=None, detail=detail, **kw)


def _grade(ctx: _Ctx, case: Case, dtype: str, quantity: str, got: np.ndarray, got_dtype: str, exact) -> Result:
    spec = ctx.spec
    if np.shape(got) != np.shape(exact):
        return ctx.row(case, dtype, quantity, "deviates",
                       f"{quantity}: result shape {np.shape(got)} differs from the spec's {np.shape(exact)}",
                       finding="shape")
    budget = _budget(spec, case, quantity, dtype, ctx.conventions)

    def cond():
        c = case_conditioning(spec, case, ctx.conventions, "value" if quantity == "value" else "grad")
        return c.cond[quantity], c.scale[quantity]

    params = _kwargs(spec, case, ctx.conventions)
    s_max = scale_bound(case.inputs, params, None if quantity == "value" else cotangent(np.shape(exact)),
                        spec.unit_tail_scale)
    cmp = compare(got, exact, format_of(got_dtype), budget, cond, dtype, _terms(spec, case, ctx.conventions), s_max)
    points = None
    if ctx.plot_points:  # the HTML report's plots: bounded, and only when asked for
        from .plots import keep_points

        points = keep_points(spec, case.inputs, params, quantity, cmp, exact, ctx.plot_points)
    grade = cmp.cell_grade
    findings = [f for f in ("nonfinite", "sign", "gross", "inaccurate", "tail") if cmp.count(f)]
    verdict = "deviates" if grade == "deviates" else ("tail" if grade == "tail" else "conforms")
    finding = findings[0] if findings else None
    worst, worst_info = _worst_text(case, cmp, got, exact)
    detail = ""
    if finding:
        counts = ", ".join(f"{cmp.count(f)} {FINDINGS[f].split(' (')[0]}" for f in findings)
        about = f" [{case.note}]" if case.note else ""
        detail = f"{quantity}: {FINDINGS[finding]} ({counts} of {cmp.n}){about} {worst}"
        if ctx.note and verdict == "deviates":
            detail = f"{ctx.note} — {detail}"
    if got_dtype != dtype and not ctx.upcast:
        verdict, finding = "deviates", "dtype"
        detail = f"{quantity}: returns {got_dtype} for {dtype} input (an undeclared change of dtype)" + (
            f"; also {detail}" if detail else "")
    finite = cmp.ulp[np.isfinite(cmp.ulp)]
    n = cmp.n
    with np.errstate(over="ignore"):  # errors beyond 1e154 ULP square to inf: the sum is then inf, as it should be
        sum_sq = float(np.sum(finite**2)) if finite.size == n else math.inf
    return Result(loss=spec.name, implementation=ctx.impl_name, device=ctx.device, dtype=dtype, case=case.id,
                  quantity=quantity, reduction=case.reduction(),
                  max_ulp=float(cmp.ulp.max()) if n else 0.0, max_rel_err=float(np.max(cmp.rel)) if n else 0.0,
                  nonfinite_mismatch=cmp.count("nonfinite"), verdict=verdict, grade=grade, detail=detail, n=n,
                  over=int(np.sum(cmp.ulp > budget)),
                  sum_sq_ulp=sum_sq, budget=budget,
                  worst=worst_info, max_cond_err=float(np.max(cmp.cond_err)) if n else 0.0, k=cmp.k,
                  finding=finding, well_conditioned_grade=cmp.well_conditioned_grade, points=points)


def _failure_row(ctx: _Ctx, case: Case, dtype: str, quantity: str, f: Failure) -> Result:
    return ctx.row(case, dtype, quantity, f.kind, f"{f.message} in case {case.id}", finding=f.kind)


def _score(ctx: _Ctx, case: Case, dtype: str, out: Outcome) -> list[Result]:
    value, grads = oracle_outputs(ctx.spec, case, ctx.conventions)
    rows = [_grade(ctx, case, dtype, "value", out.value, out.value_dtype, value)] if ctx.select.judges("value") else []
    for name, (g, gdtype) in out.grads.items():
        if name in grads and ctx.select.judges(f"grad:{name}"):
            rows.append(_grade(ctx, case, dtype, f"grad:{name}", g, gdtype, grads[name]))
    return rows


def _bad_input(ctx: _Ctx, case: Case, dtype: str, result, strict: bool) -> Result:
    if isinstance(result, Raised):
        return ctx.row(case, dtype, "raises", "conforms", result.message)
    if isinstance(result, Failure):
        if result.kind in ("crashed", "timeout"):
            return _failure_row(ctx, case, dtype, "raises", result)
        if not strict:
            return ctx.row(case, dtype, "raises", "conforms", result.message[:200])
        return ctx.row(case, dtype, "raises", "deviates", f"raised {result.message[:200]} instead of "
                       f"{_names(case.raises)}", finding="wrong_exception")
    return ctx.row(case, dtype, "raises", "deviates",
                   f"returned a value instead of raising {_names(case.raises)} ({case.note})", finding="no_raise")


def _call(bk, fn, grad_fn, spec: Spec, case: Case, dtype: str, device) -> Outcome | Raised:
    """One call of the implementation (in the worker). A bad-input case that raises the expected
    exception returns :class:`Raised` (``isinstance`` is decided here, where the class lives);
    any other exception propagates and becomes a :class:`~lossoracle.isolation.Failure`."""
    with warnings.catch_warnings():  # libraries warn about the very edge cases we feed them
        warnings.simplefilter("ignore")
        try:
            return bk.run(fn, grad_fn, spec, case, dtype, device)
        except Exception as e:
            if case.raises is not None and isinstance(e, case.raises):
                return Raised(f"{type(e).__name__}: {' '.join(str(e).splitlines())}"[:200])
            raise


def _reproducer(target: str, framework: str, loss: str, conventions: Mapping[str, Any]) -> str:
    params = "".join(f" --param {k}={v!r}" for k, v in conventions.items())
    return f"lossoracle check --impl {target} --framework {framework} --loss {loss}{params} -v"


def _names(exc) -> str:
    excs = exc if isinstance(exc, tuple) else (exc,)
    return " or ".join(e.__name__ for e in excs)


@dataclass(frozen=True)
class Options:
    """The rarely needed settings of :func:`check` (adapters set most of them).

    ``name``: what reports call the implementation (default: its module and name); ``target``:
    the importable path printed in reproducer commands; ``devices``: restrict devices;
    ``accepts(case)``: a reason why the implementation's documented interface does not cover a
    case, and ``unsupported_dtypes``: dtype → reason — both make ``unsupported`` rows, never
    scored; ``upcast``: results may come back in a wider dtype than the input's; ``note``: one
    line explaining a library's convention, shown beside its deviations; ``strict_errors``:
    require the exact exception type on bad-input cases (any exception otherwise);
    ``isolate``/``timeout``: run the implementation in a forked worker, ``timeout`` seconds per
    call, so a crash or a hang becomes a verdict (``isolate=False`` calls it in this process);
    ``progress(text)``: called as each cell (device × dtype) starts, with the cell's name;
    ``plot_points``: keep up to this many per-element errors per row for the HTML report's plots
    (:mod:`lossoracle.plots`; 0 keeps none);
    ``fingerprint``: search a non-conforming cell for the convention it follows
    (:mod:`lossoracle.fingerprint`; the ``conventions`` passed to :func:`check` are pinned);
    ``credit_bad_input``: apply the bad-input credit rule to this call's rows (False: the caller
    applies :func:`credit_bad_input` to the rows of all the implementation's dtypes, as
    ``lossoracle check --jobs`` does when it checks them in separate processes).
    """

    name: str | None = None
    target: str | None = None
    devices: tuple[str | None, ...] | None = None
    accepts: Callable[[Case], str | None] | None = None
    unsupported_dtypes: Mapping[str, str] = field(default_factory=dict)
    upcast: bool = False
    note: str = ""
    strict_errors: bool = False
    timeout: float | None = 60.0
    isolate: bool = True
    progress: Callable[[str], None] | None = None
    plot_points: int = 0
    fingerprint: bool = True
    credit_bad_input: bool = True


def check(fn: Callable, loss: str, framework: str = "torch", *, grad: Callable | None = None,
          conventions: Mapping[str, Any] | None = None, dtypes: Iterable[str] | None = None,
          cases: Iterable[str | Case] | None = None, quantities: Iterable[str] | None = None,
          only_tags: Iterable[str] = (), exclude_tags: Iterable[str] = (), options: Options | None = None,
          **more: Any) -> Report:
    """Validate ``fn`` (canonical signature of ``loss``) against the oracle.

    Values and gradients (torch/jax autograd; ``grad`` — an explicit VJP
    ``grad(grad_output, *args, **kwargs) -> {arg: array}`` — for NumPy) over the spec's edge
    catalogue and generated cases, in every dtype the case is exact in, on every available device.
    ``conventions`` selects the oracle variant the implementation claims (e.g. PyTorch's BCE
    log clamp); ``dtypes`` restricts the dtypes; ``cases`` restricts the run to these case ids,
    or supplies Case objects (e.g. hypothesis draws) to run instead of the catalogue;
    ``quantities`` (``"value"``, ``"grad:<arg>"``) restricts what is judged — a quantity not judged
    has no row, so the verdict claims nothing about it; ``only_tags`` / ``exclude_tags`` select
    cases by what they exercise (:data:`lossoracle.tags.TAGS`). Everything else is in ``options``
    (:class:`Options`); keyword arguments named like its fields override it.
    """
    opts = replace(options or Options(), **more)
    name, target, note, upcast = opts.name, opts.target, opts.note, opts.upcast
    devices, accepts, strict_errors = opts.devices, opts.accepts, opts.strict_errors
    unsupported_dtypes, timeout, isolate = opts.unsupported_dtypes, opts.timeout, opts.isolate
    spec = specs.get(loss)
    select = selection(spec, quantities, only_tags, exclude_tags)
    bk = backend(framework)
    conventions = dict(conventions or {})
    impl_name = name or f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    dtypes = tuple(d for d in (dtypes or DTYPES) if d in bk.dtypes)
    devices = list(devices) if devices is not None else bk.devices()
    given = [c for c in (cases or ()) if isinstance(c, Case)]
    wanted = None if cases is None or given else set(cases)
    selected = [c for c in (given or spec.cases()) if wanted is None or c.id in wanted]
    unsupported_dtypes = dict(unsupported_dtypes or {})
    report = Report(meta={"selection": select.meta()} if select != Selection() else {})
    repro = _reproducer(target or impl_name, framework, spec.name, conventions)
    for device in devices:
        ctx = _Ctx(spec, impl_name, device, conventions, note, upcast, select, opts.plot_points)
        rows: list[Result] = []
        outcomes: dict[tuple[str, int], Outcome] = {}
        # the worker inherits ``selected`` at fork time: a task is the case's index, not the pickled case
        with worker(lambda i, dtype, dev: _call(bk, fn, grad, spec, selected[i], dtype, dev), timeout, isolate) as run:
            for dtype in dtypes:
                if opts.progress is not None:
                    opts.progress(f"{spec.name} {impl_name} {device or 'host'} {dtype}")
                rows += _check_cell(ctx, run, selected, dtype, unsupported_dtypes.get(dtype), accepts,
                                    strict_errors, outcomes)
        if opts.credit_bad_input:
            _credit_bad_input(rows)
        if opts.fingerprint:
            from .fingerprint import explain

            explain(ctx, selected, outcomes, rows, conventions, None if timeout is None else 10 * timeout, isolate)
        for r in rows:  # deferred credit: a bad-input row keeps its command until credit_bad_input decides
            if r.verdict not in ("conforms", "unsupported") or (
                    not opts.credit_bad_input and r.quantity == "raises" and r.verdict == "conforms"):
                r.reproduce = f"{repro} --case {r.case} --dtype {r.dtype}"
        report.results.extend(rows)
    return report


def _check_cell(ctx: _Ctx, run, cases: list[Case], dtype: str, unsupported: str | None, accepts,
                strict: bool, outcomes: dict[tuple[str, int], Outcome]) -> list[Result]:
    """Every case valid in ``dtype`` (the results kept in ``outcomes`` by dtype and case index);
    a crash or a timeout ends the cell."""
    rows: list[Result] = []
    for index, case in enumerate(cases):
        case_dtypes = case.dtypes()
        if dtype not in case_dtypes or (case.raises is not None and dtype != case_dtypes[-1]):
            continue  # one dtype suffices for a bad-input case
        tags = case_tags(ctx.spec, case, dtype)
        if not ctx.select.wants(tags):
            continue
        first = len(rows)
        quantity = "raises" if case.raises is not None else "value"
        reason = unsupported or (accepts(case) if accepts else None)
        if reason:
            rows.append(ctx.row(case, dtype, quantity, "unsupported", reason, finding="unsupported", tags=list(tags)))
            continue
        result = run.run(index, dtype, ctx.device)
        if case.raises is not None:
            rows.append(_bad_input(ctx, case, dtype, result, strict))
        elif isinstance(result, Failure):
            rows.append(_failure_row(ctx, case, dtype, "value", result))
        else:
            outcomes[dtype, index] = result
            rows += _score(ctx, case, dtype, result)
        for r in rows[first:]:
            r.tags = list(tags)
        if rows and rows[-1].verdict in ("crashed", "timeout"):
            break
    return rows


def credit_bad_input(rows: list[Result]) -> None:
    """The bad-input credit rule of :func:`check` applied to the rows of checks made with
    ``credit_bad_input=False`` (one implementation, any dtypes, in any order): per device, as
    :func:`check` applies it; a bad-input row still conforming then drops its reproducer."""
    devices: dict[str | None, list[Result]] = {}
    for r in rows:
        devices.setdefault(r.device, []).append(r)
    for part in devices.values():
        _credit_bad_input(part)
    for r in rows:
        if r.quantity == "raises" and r.verdict == "conforms":
            r.reproduce = ""


def _credit_bad_input(rows: list[Result]) -> None:
    """Raising on bad input counts only for an implementation that works on valid input."""
    if any(r.quantity != "raises" and r.verdict in SCORED for r in rows):
        return
    for r in rows:
        if r.quantity == "raises" and r.verdict == "conforms":
            r.verdict, r.finding = "error", "not_credited"
            r.detail = f"raised on bad input ({r.detail}), but no valid case produced a value: not credited"
