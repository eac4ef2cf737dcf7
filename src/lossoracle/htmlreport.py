"""The HTML report (``lossoracle check --html PATH``, ``Report.to_html()``): one self-contained page.

The conformance table (one row per loss × implementation × device × dtype, as the terminal's),
filters by loss, implementation, dtype and verdict (a few lines of inline JavaScript; without it
the filters stay hidden and every cell is shown), and for every cell that does not conform a
section with its findings, the convention found (if any), its worst input, the reproducer command
and a plot of every element's error in ULP and in units of the conditioning bound u·c against
the input (:mod:`lossoracle.plots`), embedded as a base64 PNG. No external asset is loaded.
Plots need the per-element errors the engine keeps only when asked (``plot_points``); a report
without them says so in each section.
"""

from __future__ import annotations

import base64
import html
from collections import defaultdict
from typing import Any

from .report import VERDICTS, Report, Result, _shown_verdict, _xfail_line, worst_row

__all__ = ["render", "FILTERS", "PLOTTED"]

FILTERS = ("loss", "implementation", "dtype", "verdict")
PLOTTED = ("tail", "deviates", "error", "timeout", "crashed")  # the non-conforming verdicts that get a section
FINDING_CHARS = 110  # the table shows the start of a cell's first finding
COLUMNS = ("loss", "implementation", "device", "dtype", "verdict", "grade", "value_ulp", "value_uc", "grad_ulp",
           "grad_uc", "cases", "unsupported")

KNOWN = set(COLUMNS) | {"details", "detail", "convention", "findings", "xfail"}  # fields laid out by name

STYLE = """
body{font-family:system-ui,sans-serif;margin:1em 2em;color:#222}
table{border-collapse:collapse;font-size:13px}
td,th{padding:2px 6px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top;white-space:nowrap}
div.scroll{overflow-x:auto}
td.num{font-family:monospace;text-align:right}
th{position:sticky;top:0;background:#f4f4f4}
.v-conforms{background:#e4f5e4}.v-tail{background:#fff6d6}
.v-deviates,.v-error,.v-crashed,.v-timeout{background:#fde0e0}
.v-unsupported,.v-not_installed{background:#eee;color:#555}
section.cell{border:1px solid #ccc;border-radius:4px;margin:1.2em 0;padding:.3em 1em;background:#fff}
section.cell h3{margin:.4em 0}
code,pre{font-family:monospace;font-size:12px}
pre{white-space:pre-wrap;background:#f6f6f6;padding:.4em;border-radius:3px}
td.detail{min-width:36em;max-width:50em;font-size:12px;white-space:normal}
form#filters{margin:.5em 0}form#filters label{margin-right:1em}
img.plot{max-width:100%;height:auto}
"""

SCRIPT = """
(function () {
  var form = document.getElementById("filters");
  form.hidden = false;
  var selects = form.querySelectorAll("select");
  var preset = new URLSearchParams(window.location.search);  // r.html?verdict=deviates&dtype=float16
  selects.forEach(function (s) { if (preset.has(s.dataset.filter)) s.value = preset.get(s.dataset.filter); });
  function apply() {
    var shown = 0, total = 0;
    document.querySelectorAll("[data-cell]").forEach(function (el) {
      var ok = true;
      selects.forEach(function (s) {
        if (s.value && el.dataset[s.dataset.filter] !== s.value) ok = false;
      });
      el.hidden = !ok;
      if (el.tagName === "TR") { total++; if (ok) shown++; }
    });
    document.getElementById("shown").textContent = shown + " of " + total + " cells shown";
  }
  selects.forEach(function (s) { s.addEventListener("change", apply); });
  apply();
})();
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _key(r: Result) -> tuple:
    return r.loss, r.implementation, r.device or "host", r.dtype


def _text(v: Any) -> str:
    """A summary field as one line: mappings as ``key: value`` pairs, sequences joined."""
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_text(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(map(_text, v))
    return "" if v is None else str(v)


def _convention(summary: dict[str, Any], rows: list[Result]) -> str | None:
    """The convention found for a cell: the summary's field if the report gives one, else the rows'."""
    found = summary.get("convention")
    if found:  # lossoracle.fingerprint's result: its one line says it all
        return found["text"] if isinstance(found, dict) and "text" in found else _text(found)
    names = list(dict.fromkeys(r.convention for r in rows if r.convention))
    return "; ".join(names) if names else None


def _more(s: dict[str, Any]) -> str:
    """Summary fields this page does not lay out itself (the tags of the cell's cases, and whatever a
    later report adds), as a definition list."""
    items = [(k, v) for k, v in s.items() if k not in KNOWN and v not in (None, "", [], {}, ())]
    if not items:
        return ""
    body = []
    for k, v in items:
        if isinstance(v, dict):
            v = "".join(f"<li>{_e(a)}: <code>{_e(_text(b))}</code></li>" for a, b in v.items())
            body.append(f"<dt>{_e(k)}</dt><dd><ul>{v}</ul></dd>")
        else:
            body.append(f"<dt>{_e(k)}</dt><dd><code>{_e(_text(v))}</code></dd>")
    return f"<dl>{''.join(body)}</dl>"


def _flat(v: Any) -> bool:
    """A value for a table cell: a scalar, or a list of scalars."""
    scalar = (str, int, float, type(None))
    return isinstance(v, scalar) or (isinstance(v, (list, tuple)) and all(isinstance(x, scalar) for x in v))


def _findings(s: dict[str, Any]) -> str:
    """The cell's findings by the tags of their cases (ordinary inputs first), each with its reproducer."""
    found = s.get("findings")
    if not found:
        lines = s.get("details") or []
        return ("<p><b>Findings:</b></p><ul>" + "".join(f"<li><code>{_e(d)}</code></li>" for d in lines)
                + "</ul>") if lines else ""
    items = []
    for f in found:
        tags = ", ".join(f.get("tags") or ())
        line = f.get("detail", "")
        if f.get("slot") == "failed":
            line = f"{f.get('verdict')}: {line}"
        elif f.get("slot") == "raises":
            line = f"bad input {f.get('case')}: {line}"
        repro = f"<br>reproduce: <code>{_e(f['reproduce'])}</code>" if f.get("reproduce") else ""
        items.append(f"<li><b>[{_e(tags)}]</b> <code>{_e(line)}</code>{repro}</li>")
    return ("<p><b>Findings</b> by the tags of their cases (ordinary inputs first; in each, the value's worst, "
            "then each gradient's):</p><ul>" + "".join(items) + "</ul>")


def _cell_attrs(s: dict[str, Any]) -> str:
    return " ".join(f'data-{k}="{_e(s[k])}"' for k in FILTERS) + " data-cell"


def _table(summaries: list[dict[str, Any]], conventions: list[str | None], sections: dict[int, bool]) -> str:
    extra = [k for k in summaries[0] if k not in KNOWN and all(_flat(s.get(k)) for s in summaries)] if summaries else []
    cols = list(COLUMNS) + extra + ["convention", "finding"]
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = []
    for i, (s, conv) in enumerate(zip(summaries, conventions)):
        cells = []
        for c in cols:
            v = _text(conv if c == "convention" else s.get("detail") if c == "finding" else
                      _shown_verdict(s) if c == "verdict" else s.get(c))
            if c == "finding" and len(v) > FINDING_CHARS:  # the whole line is in the cell's section
                v = v[:FINDING_CHARS] + " …"
            text = _e(v)
            if c == "finding" and i in sections:
                text += f' <a href="#cell-{i}">plot and details</a>'
            cls = ' class="num"' if c in ("value_ulp", "value_uc", "grad_ulp", "grad_uc", "cases", "unsupported") else \
                ' class="detail"' if c == "finding" else ""
            cells.append(f"<td{cls}>{text}</td>")
        body.append(f'<tr id="row-{i}" class="v-{_e(s["verdict"])}" {_cell_attrs(s)}>{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table id="cells"><thead><tr>{head}</tr></thead><tbody>\n' + "\n".join(body)
            + "\n</tbody></table></div>")


def _filters(summaries: list[dict[str, Any]]) -> str:
    out = []
    for k in FILTERS:
        values = sorted({str(s[k]) for s in summaries}, key=lambda v: (VERDICTS.index(v) if k == "verdict"
                                                                      and v in VERDICTS else 99, v))
        opts = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values)
        out.append(f'<label>{k} <select data-filter="{k}" name="{k}"><option value="">all</option>{opts}'
                   "</select></label>")
    return (f'<form id="filters" hidden>{"".join(out)}<span id="shown"></span></form>'
            "<noscript><p>The filters need JavaScript; every cell is shown.</p></noscript>")


def _plot(s: dict[str, Any], rows: list[Result]) -> str:
    from .plots import cell_panels, figure_png

    panels = cell_panels(rows)
    if not panels:
        kept = any(r.points is not None for r in rows)
        why = ("no case produced a value to plot" if kept else
               "per-element errors were not kept for this report (lossoracle check --html, or "
               "check(..., plot_points=N))")
        return f'<p class="noplot">No plot: {_e(why)}.</p>'
    title = f"{s['loss']} — {s['implementation']} — {s['device']} — {s['dtype']}: {s['verdict']}"
    try:
        png = base64.b64encode(figure_png(panels, title)).decode("ascii")
    except Exception as err:  # a plot that cannot be drawn must not cost the page: say so in its place
        return f'<p class="noplot">No plot: drawing failed ({_e(type(err).__name__)}: {_e(str(err))}).</p>'
    alt = "; ".join(f"{p.quantity}: error in ULP and in units of u·c against {p.label}, {p.points['x'].size} "
                    f"elements, budget {p.budget[0]:.3g} ULP, k = {p.k[0]:.3g}" for p in panels)
    return f'<img class="plot" alt="{_e(alt)}" src="data:image/png;base64,{png}">'


def _section(i: int, s: dict[str, Any], rows: list[Result], conv: str | None) -> str:
    w = worst_row(rows)
    parts = [f'<section class="cell v-{_e(s["verdict"])}" id="cell-{i}" {_cell_attrs(s)}>',
             f"<h3>{_e(s['loss'])} · <code>{_e(s['implementation'])}</code> · {_e(s['device'])} · "
             f"{_e(s['dtype'])} — {_e(s['verdict'])} ({_e(s['grade'])})</h3>",
             f"<p><b>Convention found:</b> {_e(conv) if conv else 'none reported'}</p>"]
    if s.get("xfail"):
        parts.append(f"<p><b>Expected failure:</b> {_e(_xfail_line(s))}</p>")
    parts.append(_findings(s))
    parts.append(_more(s))
    if w is not None:
        parts.append(f"<p><b>Worst input</b> (case <code>{_e(w.case)}</code>, {_e(w.quantity)}):</p>"
                     f"<pre>{_e(w.detail)}</pre>")
        if w.reproduce:
            parts.append(f"<p><b>Reproduce:</b></p><pre><code>{_e(w.reproduce)}</code></pre>")
    parts.append(_plot(s, rows))
    parts.append(f'<p><a href="#row-{i}">back to the table</a></p></section>')
    return "\n".join(parts)


def render(report: Report) -> str:
    """The page for ``report`` (matplotlib is needed when some cell has points to plot)."""
    from . import __version__

    summaries = report.summary()
    groups: dict[tuple, list[Result]] = defaultdict(list)
    for r in report.results:
        groups[_key(r)].append(r)
    cell_rows = [groups[(s["loss"], s["implementation"], s["device"], s["dtype"])] for s in summaries]
    conventions = [_convention(s, rows) for s, rows in zip(summaries, cell_rows)]
    sections = {i: True for i, s in enumerate(summaries) if s["verdict"] in PLOTTED}
    env = report.meta.get("environment") or {}
    env_text = ", ".join(f"{k} {v}" for k, v in env.items())
    body = [f"<h1>lossoracle conformance report</h1><p>lossoracle {_e(__version__)}"
            + (f" · {_e(env_text)}" if env_text else "") + "</p>",
            f'<p class="paragraph">{_e(report.paragraph(summaries))}</p>',
            "<p>One row per loss × implementation × device × dtype. value_uc / grad_uc: the worst error in units "
            "of the conditioning bound u·c (stable ⟺ ≤ k = 8 + log2 n). Each cell that does not conform has a "
            "section below, with a plot of every element's error against the input.</p>",
            _filters(summaries), _table(summaries, conventions, sections)]
    if sections:
        body.append(f"<h2>Cells that do not conform ({len(sections)})</h2>")
        body.extend(_section(i, summaries[i], cell_rows[i], conventions[i]) for i in sections)
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>lossoracle report</title>"
            f"<meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head><body>\n"
            + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body></html>\n")
