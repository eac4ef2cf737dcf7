"""Results, their aggregation into cells, and the one formatter behind text, JSON, HTML and pytest.

A *row* is one case × quantity × dtype × device of one implementation (the JSON schema of
API.md), with the tags of its case (:mod:`lossoracle.tags`). A *cell* aggregates rows over cases:
loss × implementation × device × dtype × reduction × quantity, with max / RMS ULP, count, count
over budget, worst input, grade. :meth:`Report.summary` gives one entry per loss ×
implementation × device × dtype with its findings grouped by tag (:func:`tag_findings`).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from .compare import worst_grade

__all__ = ["Result", "Cell", "Report", "SCHEMA", "environment", "tag_findings", "VERDICTS"]

SCHEMA = 2
# A cell is as bad as its worst row; unsupported and not_installed rows are never scored.
VERDICTS = ("conforms", "tail", "deviates", "error", "timeout", "crashed", "unsupported", "not_installed")
FAILING = ("deviates", "error", "timeout", "crashed")
_RANK = {v: i for i, v in enumerate(VERDICTS[:6])}
REQUIRE = {"faithful": ("correctly_rounded", "faithful"), "stable": ("correctly_rounded", "faithful", "stable"),
           "tail": ("correctly_rounded", "faithful", "stable", "tail")}


def environment() -> dict[str, Any]:
    """Versions and devices behind a report (the JSON's ``environment``)."""
    import importlib.metadata
    import platform
    import sys

    import mpmath

    from .mpfuncs import ORACLE_PREC

    env: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(),
                           "mpmath": f"{mpmath.__version__} ({mpmath.libmp.BACKEND} backend)",
                           "oracle_precision_bits": ORACLE_PREC}
    for dist in ("numpy", "scipy", "torch", "jax", "optax", "torchvision", "kornia", "monai", "keras"):
        try:
            env[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    if "torch" in sys.modules:
        import torch

        env["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return env


def fmt_float(v: float) -> str:
    """``float.hex`` with the decimal beside it, as every report prints inputs and results."""
    if isinstance(v, float) and math.isfinite(v):
        return f"{v.hex()} ({v!r})"
    return repr(v)


@dataclass
class Result:
    loss: str
    implementation: str
    device: str | None
    dtype: str
    case: str
    quantity: str
    reduction: str
    max_ulp: float | None
    max_rel_err: float | None
    nonfinite_mismatch: int
    verdict: str
    grade: str | None
    detail: str
    n: int = 0
    over: int = 0
    sum_sq_ulp: float = 0.0
    budget: float | None = None
    worst: dict[str, Any] = field(default_factory=dict)
    reproduce: str = ""
    max_cond_err: float | None = None  # worst |err| / (u_c·c + u_T·|f| + η/k); stable ⟺ ≤ k
    k: float | None = None
    finding: str | None = None  # compare.FINDINGS key, or error/crashed/timeout/unsupported/shape/dtype/…
    well_conditioned_grade: str | None = None  # worst grade where c ≤ 4·|f|
    tags: list[str] = field(default_factory=list)
    convention: str | None = None  # the convention search's one line (lossoracle.fingerprint)
    fingerprint: dict[str, Any] | None = None  # its whole result, the cell's "convention" in summary()
    points: dict[str, Any] | None = field(default=None, repr=False)  # kept for the HTML plots (lossoracle.plots)

    @property
    def scored(self) -> bool:
        """A valid case whose result was measured (bad-input rows are not)."""
        return self.quantity != "raises" and self.verdict in ("conforms", "tail", "deviates")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("sum_sq_ulp")
        d.pop("points")
        for k in ("max_ulp", "max_rel_err", "max_cond_err"):
            if d[k] is not None and not math.isfinite(d[k]):
                d[k] = str(d[k])
        return d


@dataclass
class Cell:
    key: tuple
    rows: list[Result]

    @property
    def verdict(self) -> str:
        return cell_verdict(self.rows)

    @property
    def grade(self) -> str | None:
        return worst_grade(r.grade for r in self.rows if r.scored)

    def _measured(self) -> list[Result]:
        return [r for r in self.rows if r.max_ulp is not None]

    @property
    def max_ulp(self) -> float | None:
        m = self._measured()
        return max(r.max_ulp for r in m) if m else None

    @property
    def rms_ulp(self) -> float | None:
        m = [r for r in self._measured() if math.isfinite(r.sum_sq_ulp)]
        n = sum(r.n for r in m)
        return math.sqrt(sum(r.sum_sq_ulp for r in m) / n) if n else None

    @property
    def worst(self) -> Result | None:
        return worst_row(self.rows)

    def line(self) -> str:
        loss, impl, device, dtype, reduction, quantity = self.key
        q = "" if quantity == "value" else f"-{quantity}"
        head = f"{loss}[{impl}-{device or 'host'}-{dtype}-{reduction}{q}]"
        n = sum(r.n for r in self.rows)
        over = sum(r.over for r in self.rows)
        budget = max((r.budget for r in self.rows if r.budget is not None), default=None)
        parts = [head]
        if self.max_ulp is not None:
            parts += [f"max={_num(self.max_ulp)} ulp", f"rms={_num(self.rms_ulp)} ulp", f"n={n}", f"over={over}",
                      f"budget={_num(budget)} ulp"]
        parts.append({"conforms": "PASS", "tail": "TAIL", "unsupported": "UNSUPPORTED", "not_installed": "SKIP"}.get(
            self.verdict, "FAIL" if self.verdict == "deviates" else self.verdict.upper()))
        if self.grade:
            parts.append(f"({self.grade})")
        return "  ".join(parts)


def _num_of(v) -> float:
    """A float from a JSON-safe number (``"inf"`` strings included); None counts as -1."""
    return -1.0 if v is None else float(v)


def _shown_verdict(cell: dict[str, Any]) -> str:
    x = cell.get("xfail") or {}
    if x.get("status") == "xfail":
        return f"xfail:{cell['verdict']}"
    if x.get("status") == "worse":
        return f"{cell['verdict']}!"
    return cell["verdict"]


def _xfail_line(cell: dict[str, Any]) -> str:
    x = cell["xfail"]
    if x["status"] == "worse":
        return f"WORSE than the xfail entry ({x['verdict']}: {x['reason']}): fails"
    return f"xfail (expected {x['verdict']}): {x['reason']}"


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    if not math.isfinite(v):
        return str(v)
    return f"{v:.3g}"


def cell_verdict(rows: list[Result]) -> str:
    """The verdict of a group of rows: the worst row; never ``conforms`` without a scored valid
    case (then the worst failure, else ``unsupported`` / ``not_installed``)."""
    counted = [r.verdict for r in rows if r.verdict in _RANK]
    if any(r.scored for r in rows):
        return max(counted, key=_RANK.__getitem__)
    failing = [v for v in counted if v in FAILING]
    if failing:
        return max(failing, key=_RANK.__getitem__)
    return "not_installed" if any(r.verdict == "not_installed" for r in rows) else "unsupported"


def cell_key(r: Result) -> tuple:
    """The key of a row's cell in :meth:`Report.summary`: loss, implementation, device, dtype."""
    return r.loss, r.implementation, r.device or "host", r.dtype


def rows_pass(rows: list[Result], require: str = "tail") -> bool:
    """No row failed and every scored row reaches ``require`` (faithful, stable or tail)."""
    allowed = REQUIRE[require]
    return not any(r.verdict in FAILING or (r.scored and r.grade not in allowed) for r in rows)


def _severity(r: Result) -> tuple:
    ce = r.max_cond_err if r.max_cond_err is not None and math.isfinite(r.max_cond_err) else math.inf
    return _RANK.get(r.verdict, -1), ce if r.max_cond_err is not None else -1.0


def worst_row(rows: list[Result]) -> Result | None:
    """The most severe row: worst verdict, then the largest error against its conditioning bound."""
    pool = [r for r in rows if r.verdict in _RANK]
    return max(pool, key=_severity) if pool else (rows[0] if rows else None)


def _slot(r: Result) -> str | None:
    """Where a row's finding is listed: its quantity, ``failed`` (a call that did not return) or
    ``raises`` (a bad-input case); None for a row with nothing to report."""
    if r.quantity == "raises":
        return "raises" if r.verdict != "conforms" else None
    if r.verdict in ("error", "timeout", "crashed"):
        return "failed"
    return r.quantity if r.verdict in ("tail", "deviates") and r.detail else None


def tag_findings(rows: list[Result]) -> list[dict[str, Any]]:
    """The findings of a group of rows (one cell), by the tags of their cases.

    For every kind tag (``ordinary`` and the edges, :data:`lossoracle.tags.EDGE`; the descriptive
    tags ``soft_targets``, ``hard_labels``, ``large_reduction`` stay on the rows only), the worst
    row of each slot — the value, then each gradient, then calls that failed, then bad-input
    cases; tags whose worst rows are the same rows share one group (rows without tags, from an
    older journal, are ``untagged``). Groups
    come ``ordinary`` first (a finding on everyday inputs is never listed after an edge's), then
    by their worst finding. Each entry: ``tags`` (of the group), ``quantity``, ``slot``, ``case``,
    ``verdict``, ``grade``, ``finding``, ``max_ulp``, ``max_cond_err``, ``count`` (rows of the
    group's tags in that slot with a finding), ``detail`` (the row's line), ``reproduce``.
    """
    from .tags import KINDS

    def kinds(r: Result) -> list[str]:
        return [t for t in r.tags if t in KINDS] or ["untagged"]

    bad = [(s, r) for r in rows if (s := _slot(r))]
    if not bad:
        return []
    slots = ["value", *sorted({s for s, _ in bad if s.startswith("grad:")}), "failed", "raises"]
    tags = list(dict.fromkeys(t for _, r in bad for t in kinds(r)))
    per_tag: dict[str, tuple] = {}
    counts: dict[tuple[str, str], int] = {}
    for t in tags:
        worst = []
        for sl in slots:
            pool = [r for s, r in bad if s == sl and t in kinds(r)]
            counts[t, sl] = len(pool)
            worst.append(worst_row(pool) if pool else None)
        if any(worst):
            per_tag[t] = tuple(worst)
    groups: dict[tuple, list[str]] = defaultdict(list)
    for t, worst in per_tag.items():
        groups[tuple(id(w) for w in worst)].append(t)

    def order(item):
        ts = item[1]
        worst = [w for w in per_tag[ts[0]] if w is not None]
        return ("ordinary" not in ts, tuple(-x for x in max(_severity(w) for w in worst)))

    out = []
    for _, ts in sorted(groups.items(), key=order):
        for sl, w in zip(slots, per_tag[ts[0]]):
            if w is None:
                continue
            n = max(counts[t, sl] for t in ts)
            out.append({"tags": ts, "slot": sl, "quantity": w.quantity, "case": w.case, "verdict": w.verdict,
                        "grade": w.grade, "finding": w.finding, "max_ulp": _finite(w.max_ulp),
                        "max_cond_err": _finite(w.max_cond_err), "count": n, "detail": w.detail,
                        "reproduce": w.reproduce})
    return out


def _finite(v: float | None):
    return str(v) if v is not None and not math.isfinite(v) else v


def _finding_line(f: dict[str, Any]) -> str:
    head = f"[{', '.join(f['tags'])}]"
    if f["slot"] == "failed":
        more = f" (and {f['count'] - 1} more cases)" if f["count"] > 1 else ""
        return f"{head} {f['verdict']}: {f['detail']}{more}"
    if f["slot"] == "raises":
        return f"{head} bad input {f['case']}: {f['detail']}"
    return f"{head} {f['detail']}"


def findings(rows: list[Result]) -> list[str]:
    """Detail lines of a group of rows (:func:`tag_findings`, one line each)."""
    return [_finding_line(f) for f in tag_findings(rows)]


@dataclass
class Report:
    """Rows, and what the run was: ``meta`` (command, environment, ``selection``, ``xfail_warnings``);
    ``expected`` maps a cell key (loss, implementation, device or "host", dtype) to the xfail
    entry it matched (:mod:`lossoracle.xfails`): an expected failure no worse than listed, which
    :meth:`passes` does not count."""

    results: list[Result] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    expected: dict[tuple, dict[str, Any]] = field(default_factory=dict)

    def extend(self, other: Report) -> None:
        self.results.extend(other.results)
        for k, v in other.meta.items():
            self.meta.setdefault(k, v)

    def passes(self, require: str = "tail") -> bool:
        """Every cell meets ``require`` (faithful, stable or tail), or is an expected failure no
        worse than listed, and something was scored."""
        if not any(r.scored for r in self.results):
            return False
        xfailed = {k for k, e in self.expected.items() if e.get("status") == "xfail"}
        return rows_pass([r for r in self.results if cell_key(r) not in xfailed], require)

    @property
    def conforms(self) -> bool:
        """Every scored element at least *stable* (no tail, no deviation, no failure)."""
        return self.passes("stable")

    def cells(self) -> list[Cell]:
        groups: dict[tuple, list[Result]] = defaultdict(list)
        for r in self.results:
            groups[(r.loss, r.implementation, r.device, r.dtype, r.reduction, r.quantity)].append(r)
        return [Cell(k, v) for k, v in groups.items()]

    def summary(self) -> list[dict[str, Any]]:
        """One line per loss × implementation × device × dtype: verdict, grade, worst errors."""
        groups: dict[tuple, list[Result]] = defaultdict(list)
        for r in self.results:
            groups[cell_key(r)].append(r)
        out = []
        for (loss, impl, device, dtype), rows in groups.items():
            verdict = cell_verdict(rows)
            scored = [r for r in rows if r.scored]

            def worst(prefix: str, field_: str):
                vals = [getattr(r, field_) for r in scored if r.quantity.startswith(prefix)
                        and getattr(r, field_) is not None]
                return _num(max(vals)) if vals else "-"

            found = tag_findings(rows)
            lines = [_finding_line(f) for f in found]
            if not lines and verdict in ("unsupported", "not_installed"):
                lines = [rows[0].detail]
            fp = next((r.fingerprint for r in rows if r.fingerprint), None)
            if fp:
                lines.append(f"convention: {fp['text']}")
            tags: dict[str, set] = defaultdict(set)
            for r in rows:
                for t in r.tags:
                    tags[t].add(r.case)
            out.append({"loss": loss, "implementation": impl, "device": device, "dtype": dtype,
                        "verdict": verdict, "grade": worst_grade(r.grade for r in scored) or "-",
                        "value_ulp": worst("value", "max_ulp"), "value_uc": worst("value", "max_cond_err"),
                        "grad_ulp": worst("grad", "max_ulp"), "grad_uc": worst("grad", "max_cond_err"),
                        "cases": len({r.case for r in scored}),
                        "unsupported": len({r.case for r in rows if r.verdict == "unsupported"}),
                        "details": lines, "detail": lines[0] if lines else "",
                        "quantities": sorted({r.quantity for r in scored}, key=lambda q: (q != "value", q)),
                        "tags": {t: len(c) for t, c in sorted(tags.items())}, "findings": found,
                        "xfail": self.expected.get((loss, impl, device, dtype)), "convention": fp})
        return out

    def to_text(self, verbose: bool = False) -> str:
        rows = self.summary()
        cols = ["loss", "implementation", "device", "dtype", "verdict", "grade", "value_ulp", "value_uc",
                "grad_ulp", "grad_uc", "cases", "unsupported"]
        shown = [dict(r, verdict=_shown_verdict(r)) for r in rows]
        widths = {c: max([len(c)] + [len(str(r[c])) for r in shown]) for c in cols}
        lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
        lines.append("  ".join("-" * widths[c] for c in cols))
        for r, row in zip(rows, shown):
            lines.append("  ".join(str(row[c]).ljust(widths[c]) for c in cols))
            if r["xfail"]:
                lines.append(f"    {_xfail_line(r)}")
            if verbose or r["verdict"] != "conforms":
                lines.extend(f"    {d}" for d in r["details"])
        if verbose:
            lines.append("")
            lines.extend(self.cell_lines())
        lines.append("")
        lines.append(self.paragraph(rows))
        return "\n".join(lines)

    def paragraph(self, rows: list[dict[str, Any]] | None = None) -> str:
        """The run in one paragraph: cells per verdict, expected failures, what was judged, and
        the worst findings (of cells not expected to fail)."""
        rows = self.summary() if rows is None else rows
        counts: dict[str, int] = defaultdict(int)
        for r in rows:
            counts[r["verdict"]] += 1
        tally = ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v])
        text = [f"{len(rows)} implementation × dtype combinations: {tally}."]
        xfail = sum(1 for r in rows if (r["xfail"] or {}).get("status") == "xfail")
        if xfail:
            text.append(f"{xfail} of them expected to fail (xfail), not counted against the exit status.")
        sel = self.meta.get("selection")
        if sel:
            parts = []
            if sel.get("quantities") is not None:
                parts.append("quantities " + ", ".join(sel["quantities"]) + " only")
            if sel.get("only_tags"):
                parts.append("cases tagged " + " or ".join(sel["only_tags"]))
            if sel.get("exclude_tags"):
                parts.append("no case tagged " + " or ".join(sel["exclude_tags"]))
            text.append("Judged: " + "; ".join(parts) + " (the verdicts claim nothing else).")
        def severity(f: dict[str, Any]) -> tuple:
            return _RANK.get(f["verdict"], -1), _num_of(f["max_cond_err"])

        worst = sorted(((max(r["findings"], key=severity), r) for r in rows if r["findings"]
                        and (r["xfail"] or {}).get("status") != "xfail" and r["verdict"] in FAILING + ("tail",)),
                       key=lambda fr: tuple(-x for x in severity(fr[0])))
        def measure(f: dict[str, Any]) -> str:  # a failed call has no error to measure: its exception instead
            if f["max_ulp"] is None:
                return f["detail"].split(" (")[0][:80]
            return f"{_num(_num_of(f['max_ulp']))} ULP"

        if worst:
            text.append("Worst: " + "; ".join(
                f"{r['loss']} {r['implementation']} {r['dtype']} {r['verdict']} [{', '.join(f['tags'])}] "
                f"{f['quantity']} (case {f['case']}, {measure(f)})" for f, r in worst[:3]) + ".")
        text.append("(value_uc/grad_uc: the worst |err| in units of u·c, stable ⟺ ≤ k = 8 + log2(terms).)")
        return " ".join(text)

    def cell_lines(self) -> list[str]:
        """The DESIGN.md grammar: one line per cell, and the worst input below failures."""
        out = []
        for cell in self.cells():
            out.append(cell.line())
            w = cell.worst
            if w is not None and cell.verdict not in ("conforms", "unsupported", "not_installed"):
                out.append(f"  worst: case={w.case}  {w.detail}")
                if w.reproduce:
                    out.append(f"  reproduce: {w.reproduce}")
        return out

    def to_json(self) -> dict[str, Any]:
        from . import __version__

        return {"schema": SCHEMA, "lossoracle": __version__, **self.meta,
                "cells": [{k: v for k, v in c.items() if k != "details"} for c in self.summary()],
                "results": [r.to_json() for r in self.results]}

    def write_json(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_json(), f, indent=1)

    def to_html(self) -> str:
        """The self-contained HTML page (:mod:`lossoracle.htmlreport`): the table with filters, and a plot of
        every element's error for each cell that does not conform (needs matplotlib, the ``report`` extra)."""
        from .htmlreport import render

        return render(self)

    def write_html(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_html())
