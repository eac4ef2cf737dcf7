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

__all__ = ["Result", "Cell", "Report", "SCHEMA", "environment"]

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
    convention: str | None = None

    @property
    def scored(self) -> bool:
        """A valid case whose result was measured (bad-input rows are not)."""
        return self.quantity != "raises" and self.verdict in ("conforms", "tail", "deviates")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("sum_sq_ulp")
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


def _severity(r: Result) -> tuple:
    ce = r.max_cond_err if r.max_cond_err is not None and math.isfinite(r.max_cond_err) else math.inf
    return _RANK.get(r.verdict, -1), ce if r.max_cond_err is not None else -1.0


def worst_row(rows: list[Result]) -> Result | None:
    """The most severe row: worst verdict, then the largest error against its conditioning bound."""
    pool = [r for r in rows if r.verdict in _RANK]
    return max(pool, key=_severity) if pool else (rows[0] if rows else None)


def findings(rows: list[Result]) -> list[str]:
    """Detail lines of a group of rows, the worst thing first: the value's worst row, then each
    gradient's, then calls that failed, then bad-input cases."""
    lines = []
    quantities = ["value"] + sorted({r.quantity for r in rows if r.quantity.startswith("grad:")})
    for q in quantities:
        bad = [r for r in rows if r.quantity == q and r.verdict in ("tail", "deviates") and r.detail]
        if bad:
            lines.append(worst_row(bad).detail)
    failed = [r for r in rows if r.quantity != "raises" and r.verdict in ("error", "timeout", "crashed")]
    if failed:
        w = worst_row(failed)
        more = f" (and {len(failed) - 1} more cases)" if len(failed) > 1 else ""
        lines.append(f"{w.verdict}: {w.detail}{more}")
    raises = [r for r in rows if r.quantity == "raises" and r.verdict != "conforms"]
    if raises:
        w = worst_row(raises)
        lines.append(f"bad input {w.case}: {w.detail}")
    return lines


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def extend(self, other: Report) -> None:
        self.results.extend(other.results)

    def passes(self, require: str = "tail") -> bool:
        """Every cell meets ``require`` (faithful, stable or tail) and something was scored."""
        allowed = REQUIRE[require]
        if not any(r.scored for r in self.results):
            return False
        for r in self.results:
            if r.verdict in FAILING:
                return False
            if r.scored and r.grade not in allowed:
                return False
        return True

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
            groups[(r.loss, r.implementation, r.device, r.dtype)].append(r)
        out = []
        for (loss, impl, device, dtype), rows in groups.items():
            verdict = cell_verdict(rows)
            scored = [r for r in rows if r.scored]

            def worst(prefix: str, field_: str):
                vals = [getattr(r, field_) for r in scored if r.quantity.startswith(prefix)
                        and getattr(r, field_) is not None]
                return _num(max(vals)) if vals else "-"

            lines = findings(rows)
            if not lines and verdict in ("unsupported", "not_installed"):
                lines = [rows[0].detail]
            out.append({"loss": loss, "implementation": impl, "device": device or "host", "dtype": dtype,
                        "verdict": verdict, "grade": worst_grade(r.grade for r in scored) or "-",
                        "value_ulp": worst("value", "max_ulp"), "value_uc": worst("value", "max_cond_err"),
                        "grad_ulp": worst("grad", "max_ulp"), "grad_uc": worst("grad", "max_cond_err"),
                        "cases": len({r.case for r in scored}),
                        "unsupported": len({r.case for r in rows if r.verdict == "unsupported"}),
                        "details": lines, "detail": lines[0] if lines else ""})
        return out

    def to_text(self, verbose: bool = False) -> str:
        rows = self.summary()
        cols = ["loss", "implementation", "device", "dtype", "verdict", "grade", "value_ulp", "value_uc",
                "grad_ulp", "grad_uc", "cases", "unsupported"]
        widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in cols}
        lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
        lines.append("  ".join("-" * widths[c] for c in cols))
        for r in rows:
            lines.append("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
            if verbose or r["verdict"] != "conforms":
                lines.extend(f"    {d}" for d in r["details"])
        if verbose:
            lines.append("")
            lines.extend(self.cell_lines())
        counts = defaultdict(int)
        for r in rows:
            counts[r["verdict"]] += 1
        tally = ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v])
        lines.append(f"\n{len(rows)} implementation × dtype combinations: {tally}"
                     f"  (value_uc/grad_uc: worst error in units of u·c, stable ⟺ ≤ k = 8 + log2(terms))")
        return "\n".join(lines)

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
                "results": [r.to_json() for r in self.results]}

    def write_json(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_json(), f, indent=1)

    def to_html(self) -> str:
        rows = [{k: v for k, v in r.items() if k != "details"} for r in self.summary()]
        cols = list(rows[0]) if rows else []
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join(
            f'<tr class="{html.escape(r["verdict"])}">' + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in cols)
            + "</tr>" for r in rows)
        style = (".deviates,.error,.crashed,.timeout{background:#fdd}.conforms{background:#dfd}.tail{background:#ffd}"
                 ".unsupported,.not_installed{background:#eee}td,th{padding:2px 6px;font-family:monospace}")
        return (f"<!doctype html><meta charset='utf-8'><title>lossoracle report</title><style>{style}</style>"
                f"<table><tr>{head}</tr>{body}</table><pre>{html.escape(chr(10).join(self.cell_lines()))}</pre>")
