"""Results, their aggregation into cells, and the one formatter behind text, JSON, HTML and pytest.

A *row* is one case × quantity × dtype × device of one implementation (the JSON schema of
API.md). A *cell* aggregates rows over cases: loss × implementation × device × dtype ×
reduction × quantity, with max / RMS ULP, count, count over budget, worst input, grade.
"""

from __future__ import annotations

import html
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from .compare import worst_grade

__all__ = ["Result", "Cell", "Report", "SCHEMA"]

SCHEMA = 1
VERDICT_ORDER = ("skipped", "conforms", "deviates", "error")  # a cell is as bad as its worst row


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

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("sum_sq_ulp")
        for k in ("max_ulp", "max_rel_err"):
            if d[k] is not None and not math.isfinite(d[k]):
                d[k] = str(d[k])
        return d


@dataclass
class Cell:
    key: tuple
    rows: list[Result]

    @property
    def verdict(self) -> str:
        return max((r.verdict for r in self.rows), key=VERDICT_ORDER.index)

    @property
    def grade(self) -> str | None:
        return worst_grade(r.grade for r in self.rows if r.verdict in ("conforms", "deviates"))

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
        bad = [r for r in self.rows if r.verdict in ("deviates", "error")]
        pool = bad or self._measured()
        return max(pool, key=lambda r: (r.max_ulp if r.max_ulp is not None else math.inf)) if pool else None

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
        parts.append({"conforms": "PASS", "deviates": "FAIL", "error": "ERROR", "skipped": "SKIP"}[self.verdict])
        if self.grade:
            parts.append(f"({self.grade})")
        return "  ".join(parts)


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    if not math.isfinite(v):
        return str(v)
    return f"{v:.3g}"


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def extend(self, other: Report) -> None:
        self.results.extend(other.results)

    @property
    def conforms(self) -> bool:
        return all(r.verdict in ("conforms", "skipped") for r in self.results)

    def cells(self) -> list[Cell]:
        groups: dict[tuple, list[Result]] = defaultdict(list)
        for r in self.results:
            groups[(r.loss, r.implementation, r.device, r.dtype, r.reduction, r.quantity)].append(r)
        return [Cell(k, v) for k, v in groups.items()]

    def summary(self) -> list[dict[str, Any]]:
        """One line per loss × implementation × device × dtype: worst verdict and grade, max ULPs."""
        groups: dict[tuple, list[Result]] = defaultdict(list)
        for r in self.results:
            groups[(r.loss, r.implementation, r.device, r.dtype)].append(r)
        out = []
        for (loss, impl, device, dtype), rows in groups.items():
            cell = Cell((loss, impl, device, dtype, "*", "*"), rows)
            vals = [r.max_ulp for r in rows if r.quantity == "value" and r.max_ulp is not None]
            grads = [r.max_ulp for r in rows if r.quantity.startswith("grad") and r.max_ulp is not None]
            worst = cell.worst if cell.verdict in ("deviates", "error") else None
            out.append({"loss": loss, "implementation": impl, "device": device or "host", "dtype": dtype,
                        "verdict": cell.verdict, "grade": cell.grade or "-",
                        "value_ulp": _num(max(vals)) if vals else "-", "grad_ulp": _num(max(grads)) if grads else "-",
                        "cases": len({r.case for r in rows}),
                        "detail": worst.detail if worst else _skip_detail(rows)})
        return out

    def to_text(self, verbose: bool = False) -> str:
        rows = self.summary()
        cols = ["loss", "implementation", "device", "dtype", "verdict", "grade", "value_ulp", "grad_ulp", "cases"]
        widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in cols}
        lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
        lines.append("  ".join("-" * widths[c] for c in cols))
        for r in rows:
            lines.append("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
            if r["detail"] and (verbose or r["verdict"] != "conforms"):
                lines.append(f"    {r['detail']}")
        if verbose:
            lines.append("")
            lines.extend(self.cell_lines())
        ok = sum(r["verdict"] == "conforms" for r in rows)
        lines.append(f"\n{ok} of {len(rows)} implementation × dtype combinations conform")
        return "\n".join(lines)

    def cell_lines(self) -> list[str]:
        """The DESIGN.md grammar: one line per cell, and the worst input below failures."""
        out = []
        for cell in self.cells():
            out.append(cell.line())
            w = cell.worst
            if w is not None and (cell.verdict in ("deviates", "error")):
                out.append(f"  worst: case={w.case}  {w.detail}")
                if w.reproduce:
                    out.append(f"  reproduce: {w.reproduce}")
        return out

    def to_json(self) -> dict[str, Any]:
        from . import __version__

        return {"schema": SCHEMA, "lossoracle": __version__, **self.meta,
                "results": [r.to_json() for r in self.results]}

    def write_json(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_json(), f, indent=1)

    def to_html(self) -> str:
        rows = self.summary()
        cols = list(rows[0]) if rows else []
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join(
            f'<tr class="{html.escape(r["verdict"])}">' + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in cols)
            + "</tr>" for r in rows)
        style = (".deviates,.error{background:#fdd}.conforms{background:#dfd}.skipped{background:#eee}"
                 "td,th{padding:2px 6px;font-family:monospace}")
        return (f"<!doctype html><meta charset='utf-8'><title>lossoracle report</title><style>{style}</style>"
                f"<table><tr>{head}</tr>{body}</table><pre>{html.escape(chr(10).join(self.cell_lines()))}</pre>")


def _skip_detail(rows: list[Result]) -> str:
    skipped = [r for r in rows if r.verdict == "skipped"]
    if skipped and len(skipped) == len(rows):
        return skipped[0].detail
    notes = [r.detail for r in rows if r.grade == "scale_accurate" and r.detail]
    return notes[0] if notes else ""
