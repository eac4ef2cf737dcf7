"""Convention fingerprinting: which documented convention a non-conforming cell follows instead.

When a cell (one implementation × device × dtype) is not ``conforms`` under the conventions it
claims, the search grades the *same results* — the implementation is never called again — against
the oracle under other settings, one parameter changed at a time:

- every value a spec's :class:`~lossoracle.spec.Convention` lists in ``values`` (the settings real
  libraries use; :data:`~lossoracle.spec.DTYPE_EPS` is the machine epsilon of the cell's dtype),
  except on a *pinned* parameter — one the caller's ``conventions`` set (``--param``, or the
  convention an adapter documents);
- ``compute_dtype='float32'`` on a float64 cell whose every value is a float32 number (the trace
  of float32 arithmetic cast back): the results graded as float32 results (float32's unit
  roundoff, budget and conditioning bound).

Pruning, so each case is graded at most once per setting: every setting is first graded on the
*probe* cases — the cell's smallest failing case and its worst one — with no condition number
computed for a quantity (value, a gradient) with an element non-finite against a finite exact
value or grossly wrong (relative error > 0.5 above every tail bound); a setting that fails as
many quantities of each probe as the claimed conventions do is dropped. The others are graded
on every case of the cell (stopping once a setting fails more cases than the best so far). A
setting *matches* when every scored case then conforms (or is at worst ``tail``, where the
claimed setting deviates); otherwise, on a cell that deviates, the closest setting is the one
leaving the fewest failing cases (the smallest worst error breaking ties), reported only when it
fails fewer cases than the claimed setting and never
``compute_dtype`` (a looser grading passes more cases of any implementation; it explains a cell
only as a whole). A ``tail`` cell is explained only by a match (its finding says the rest), and a
cell with no setting to try is not searched.

The search of a device's cells runs in a forked worker (:mod:`lossoracle.isolation`), like the
implementation's calls: a crash or a hang in it becomes the cell's explanation ("convention search
crashed: SIGSEGV"), never the end of the run.

The result, a cell's ``convention`` in :meth:`Report.summary` (every row of the cell carries it as
``fingerprint``, and its ``text`` as the row's ``convention``)::

    {"status": "matches" | "closest" | "none" | "failed",
     "text": "matches smoothing_form='eps_over_c_minus_1' (conforms, max 0.5 ULP)",
     "settings": [  # matches: every matching setting, best first; closest: the closest one; else []
        {"setting": {"smoothing_form": "eps_over_c_minus_1"}, "param": "--param smoothing_form=...",
         "verdict": "conforms", "grade": "faithful", "max_ulp": 0.5, "max_cond_err": 0.2,
         "failing_cases": 0, "cases": 8, "worst": "<case: the worst finding under the setting>"}],
     "worst": "<case: the worst finding under the claimed conventions>",
     "tried": 9, "graded": 2, "seconds": 0.4}
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import mpmath
import numpy as np
from mpmath import mpf

from .compare import K, reduction_allowance, unit_roundoff, worst_grade
from .conditioning import scale_bound
from .floats import FORMATS, format_of, round_exact
from .frameworks import Outcome, cotangent
from .isolation import Failure, worker
from .report import Result, cell_verdict, worst_row
from .spec import DTYPE_EPS, Case, InDtype, Spec

__all__ = ["COMPUTE_DTYPE", "Setting", "candidates", "search", "explain"]

COMPUTE_DTYPE = "compute_dtype"  # the pseudo-convention "evaluated in float32" (graded, never an oracle parameter)
_FAILING = ("tail", "deviates")


@dataclass(frozen=True)
class Setting:
    """One candidate: the convention ``name`` set to ``value`` (with its companions, ``params`` is
    what the oracle gets, DTYPE_EPS resolved)."""

    name: str
    value: Any
    params: Mapping[str, Any]
    shown: str

    @property
    def conventions(self) -> dict[str, Any]:
        return {} if self.name == COMPUTE_DTYPE else dict(self.params)


def _resolve(x: Any, dtype: str) -> Any:
    if isinstance(x, InDtype):
        return float(round_exact(mpf(x.value), FORMATS[dtype]))
    return FORMATS[dtype].eps if isinstance(x, str) and x == DTYPE_EPS else x


def _setting(name: str, v: Any, dtype: str) -> Setting:
    given = dict(v) if isinstance(v, Mapping) else {name: v}
    params = {k: _resolve(x, dtype) for k, x in given.items()}
    own, nominal = params[name], given[name]
    shown = (f"{name}=eps ({dtype}: {own:.9g})" if isinstance(nominal, str) and nominal == DTYPE_EPS else
             f"{name}={nominal.value!r}" if isinstance(nominal, InDtype) else f"{name}={own!r}")
    companions = [f"{k}={x!r}" for k, x in given.items() if k != name and not isinstance(x, InDtype)]
    return Setting(name, own, params, ", ".join([shown, *companions]))


def candidates(spec: Spec, pinned: Mapping[str, Any], dtype: str, outcomes: list[Outcome] = ()) -> list[Setting]:
    """The settings tried on a cell of ``spec`` in ``dtype``: each listed value of each unpinned
    convention that differs from its default, then float32-internal evaluation when every value
    of a float64 cell is a float32 number."""
    out = []
    for conv in spec.conventions:
        if conv.name in pinned:
            continue
        for v in conv.values:
            s = _setting(conv.name, v, dtype)
            if s.value != conv.default and not set(s.params) & set(pinned):
                out.append(s)
    if dtype == "float64" and COMPUTE_DTYPE not in pinned and outcomes and all(_float32_values(o) for o in outcomes):
        out.append(Setting(COMPUTE_DTYPE, "float32", {}, "compute_dtype='float32'"))
    return out


def _float32_values(out: Outcome) -> bool:
    """Every finite value came back float64 but is a float32 number: the trace of float32
    arithmetic cast back (a float64 computation hits a float32 number only by chance)."""
    v = np.asarray(out.value, dtype=np.float64)
    v = v[np.isfinite(v)]
    return out.value_dtype == "float64" and bool(np.all(v.astype(np.float32).astype(np.float64) == v))


def _as_float32(out: Outcome) -> Outcome:
    return Outcome(out.value, "float32", {k: (g, "float32") for k, (g, _) in out.grads.items()})


def _gross_or_nonfinite(got: np.ndarray, exact, fmt, k: float, s_max: float) -> bool:
    """Some element fails whatever its condition: non-finite against a finite exact value (or the
    other way round, or NaN against inf), or a relative error > 0.5 above the largest tail bound."""
    u = unit_roundoff(fmt)
    for g, e in zip(np.asarray(got, dtype=np.float64).reshape(-1).tolist(),
                    np.asarray(exact, dtype=object).reshape(-1).tolist()):
        r = round_exact(e if isinstance(e, mpf) else mpf(e), fmt)
        if (math.isnan(g) and mpmath.isnan(r)) or (not math.isnan(g) and mpf(g) == r):
            continue  # correctly rounded
        if not (math.isfinite(g) and mpmath.isfinite(r)):
            return True
        f = abs(float(e))
        if f > k * u * s_max and float(abs(mpf(g) - e)) > 0.5 * f:
            return True
    return False


class _Grader:
    """Grades stored results of one cell under a setting (in the worker: the engine's grading)."""

    def __init__(self, ctx, cases: list[Case], dtype: str):
        self.ctx, self.cases, self.dtype = ctx, cases, dtype

    def grade(self, index: int, out: Outcome, setting: Setting, quick: bool = True) -> list[Result | None]:
        """The case's rows (value, then each gradient) under ``setting``; with ``quick``, None for a
        quantity with an element that fails whatever its condition (no condition number computed)."""
        from . import engine

        case = self.cases[index]
        ctx = replace(self.ctx, conventions={**self.ctx.conventions, **setting.conventions})
        dtype = self.dtype
        if setting.name == COMPUTE_DTYPE:
            dtype, out = "float32", _as_float32(out)
        value, grads = engine.oracle_outputs(ctx.spec, case, ctx.conventions)
        params = engine._kwargs(ctx.spec, case, ctx.conventions)
        k = K + reduction_allowance(engine._terms(ctx.spec, case, ctx.conventions))
        parts = [("value", out.value, out.value_dtype, value, None)]
        parts += [(f"grad:{n}", g, gd, grads[n], cotangent(np.shape(value)))
                  for n, (g, gd) in out.grads.items() if n in grads]
        rows: list[Result | None] = []
        for quantity, got, gdtype, exact, cot in parts:
            if not ctx.select.judges(quantity):  # as the engine: a quantity left out has no row
                continue
            if quick and (np.shape(got) != np.shape(exact) or _gross_or_nonfinite(
                    got, exact, format_of(gdtype), k, scale_bound(case.inputs, params, cot, ctx.spec.unit_tail_scale))):
                rows.append(None)
            else:
                rows.append(engine._grade(ctx, case, dtype, quantity, got, gdtype, exact))
        return rows


def _misses(rows: list[Result | None], ok: tuple[str, ...]) -> int:
    """Rows outside ``ok`` (None: failed whatever its condition)."""
    return sum(r is None or r.verdict not in ok for r in rows)


def _passes(rows: list[Result | None], ok: tuple[str, ...]) -> bool:
    return not _misses(rows, ok)


def _summary(setting: Setting, graded: dict[int, list[Result | None]], ok: tuple[str, ...]) -> dict[str, Any]:
    """A setting's grading: ``failing_cases`` counts the cases with a row outside ``ok``."""
    rows = [r for rs in graded.values() for r in rs if r is not None]
    failing = sum(1 for rs in graded.values() if not _passes(rs, ok))
    worst = worst_row(rows)
    scored = [r for r in rows if r.scored]
    out = {"setting": {setting.name: setting.value} | dict(setting.params), "shown": setting.shown,
           "verdict": cell_verdict(rows) if rows else "deviates",
           "grade": worst_grade(r.grade for r in scored),
           "max_ulp": max((r.max_ulp for r in scored if r.max_ulp is not None), default=None),
           "max_cond_err": max((r.max_cond_err for r in scored if r.max_cond_err is not None), default=None),
           "failing_cases": failing, "cases": len(graded),
           "worst": f"{worst.case}: {worst.detail}" if worst is not None and worst.verdict in _FAILING else ""}
    if setting.name != COMPUTE_DTYPE:
        out["param"] = " ".join(f"--param {k}={v!r}" for k, v in setting.params.items())
    return out


def _finite(v: float | None) -> float:
    return v if v is not None and math.isfinite(v) else math.inf


def _num(v: float | None) -> str:
    return "-" if v is None else (f"{v:.3g}" if math.isfinite(v) else str(v))


def search(ctx, cases: list[Case], outcomes: Mapping[int, Outcome], rows: list[Result], dtype: str,
           pinned: Mapping[str, Any]) -> dict[str, Any]:
    """Explain one cell (its rows under the claimed conventions, its stored results by case index)."""
    start = time.perf_counter()
    by_case: dict[int, list[Result]] = {}
    index = {c.id: i for i, c in enumerate(cases)}
    for r in rows:
        if r.quantity != "raises" and r.case in index and index[r.case] in outcomes:
            by_case.setdefault(index[r.case], []).append(r)
    failing = [i for i, rs in by_case.items() if any(r.verdict in _FAILING for r in rs)]
    baseline_rows = [r for rs in by_case.values() for r in rs]
    base_verdict = cell_verdict(baseline_rows)
    ok = ("conforms",) if base_verdict == "tail" else ("conforms", "tail")
    worst = worst_row([r for r in baseline_rows if r.verdict in _FAILING])
    worst_text = f"{worst.case}: {worst.detail}" if worst is not None else ""

    def size(i: int) -> int:
        o = outcomes[i]
        return int(np.size(o.value)) + sum(int(np.size(g)) for g, _ in o.grads.values())

    probes = list(dict.fromkeys([min(failing, key=size), index[worst.case]])) if failing else []
    settings = candidates(ctx.spec, pinned, dtype, list(outcomes.values()))
    grader = _Grader(ctx, cases, dtype)
    graded_count = 0
    results = []
    best_failing = len(failing)  # a setting failing as many cases as the claimed one explains nothing
    base_misses = {i: _misses(by_case[i], ok) for i in probes}
    for s in settings:
        try:
            graded = {i: grader.grade(i, outcomes[i], s) for i in probes}
            # a setting goes on if it makes a probe pass, or fail fewer of its quantities
            if not any(_misses(rs, ok) < base_misses[i] for i, rs in graded.items()):
                continue
            graded_count += 1
            misses = sum(not _passes(rs, ok) for rs in graded.values())
            for i in by_case:  # each case once; stop once this setting can be neither a match nor the closest
                if i in graded:
                    continue
                if misses > best_failing:
                    break
                graded[i] = grader.grade(i, outcomes[i], s)
                misses += not _passes(graded[i], ok)
        except (ValueError, TypeError, ArithmeticError):  # a case outside this setting's domain
            continue
        if len(graded) < len(by_case):
            continue
        best_failing = min(best_failing, misses)
        results.append((s, graded, misses))
    summaries = []
    for s, graded, misses in results:
        summary = _summary(s, graded, ok)
        summary["misses"] = misses
        summaries.append((summary, s, graded))
    matches = sorted((r for r, _, _ in summaries if r["misses"] == 0),
                     key=lambda r: (r["verdict"] != "conforms", r["max_cond_err"] or 0.0, r["max_ulp"] or 0.0))
    tried = {"tried": len(settings), "graded": graded_count, "worst": worst_text}
    if matches:
        best = matches[0]
        names = " or ".join(r["shown"] for r in matches)
        text = f"matches {names} ({best['verdict']}, max {_num(best['max_ulp'])} ULP)"
        status, chosen = "matches", matches
    elif base_verdict == "deviates" and any(s.name != COMPUTE_DTYPE for _, s, _ in summaries):
        _, s, graded = min(((r, s, g) for r, s, g in summaries if s.name != COMPUTE_DTYPE),
                           key=lambda t: (t[0]["misses"], _finite(t[0]["max_cond_err"])))
        for i, rs in graded.items():  # how far: the quantities that failed whatever their condition, in full
            if None in rs:
                graded[i] = grader.grade(i, outcomes[i], s, quick=False)
        closest = _summary(s, graded, ok)
        text = (f"closest: {closest['shown']} — {closest['failing_cases']} of {closest['cases']} cases still "
                f"fail (max {_num(closest['max_ulp'])} ULP, {_num(closest['max_cond_err'])} u·c; worst "
                f"{closest['worst']})")
        status, chosen = "closest", [closest]
    else:
        text = f"matches no known convention ({len(settings)} settings tried); worst: {worst_text}"
        status, chosen = "none", []
    for r in chosen:
        r.pop("misses", None)
    return {"status": status, "text": text, "settings": chosen, **tried,
            "seconds": round(time.perf_counter() - start, 3)}


def explain(ctx, cases: list[Case], outcomes: Mapping[tuple[str, int], Outcome], rows: list[Result],
            pinned: Mapping[str, Any], timeout: float | None, isolate: bool = True) -> None:
    """Search every non-conforming cell of ``rows`` (one implementation and device) and set its
    rows' ``convention`` and ``fingerprint``. The search runs in a forked worker (``timeout``
    seconds per cell)."""
    cells: dict[str, list[Result]] = {}
    for r in rows:
        cells.setdefault(r.dtype, []).append(r)
    todo = [d for d, rs in cells.items() if any(r.scored and r.verdict in _FAILING for r in rs)
            and candidates(ctx.spec, pinned, d, [o for (dd, _), o in outcomes.items() if dd == d])]
    if not todo:
        return

    def task(dtype: str) -> dict[str, Any]:
        mine = {i: o for (d, i), o in outcomes.items() if d == dtype}
        return search(ctx, cases, mine, cells[dtype], dtype, pinned)

    with worker(task, timeout, isolate) as run:
        for dtype in todo:
            result = run.run(dtype)
            if isinstance(result, Failure):
                message = result.message if result.message.startswith(result.kind) else \
                    f"{result.kind}: {result.message}"
                result = {"status": "failed", "text": f"convention search {message}",
                          "settings": [], "worst": ""}
            if result["status"] == "none" and cell_verdict(cells[dtype]) == "tail":
                continue  # a tail cell is explained by its finding, unless a convention makes it conform
            for r in cells[dtype]:
                r.convention, r.fingerprint = result["text"], result
