"""The HTML report: every cell in the table, filters, a decodable plot for every cell that does not
conform (a planted wrong implementation gives one, placed where its defect is), the abscissa rules
of :mod:`lossoracle.plots`, bounded and opt-in kept points, and the page in a real headless browser
when one is installed."""

from __future__ import annotations

import base64
import functools
import json
import re
import shutil
import struct
import subprocess
import sys
import zlib
from html.parser import HTMLParser

import numpy as np
import pytest

import lossoracle
from lossoracle import plots, specs
from lossoracle.cli import main
from lossoracle.compare import GRADES
from lossoracle.engine import oracle_outputs
from lossoracle.htmlreport import FILTERS, PLOTTED
from lossoracle.implementations import torch_impl

from mutants import clipped_bce

pytest.importorskip("matplotlib")

CLIP = float(np.log(1 - 1e-7) - np.log(1e-7))  # |logit(p)| beyond which clipping p to [1e-7, 1 − 1e-7] acts
BCE_CASES = ["basic_none", "endpoints_none", "subnormal_float64", "near_one_float64", "basic_mean", "near_one_float32",
             "random_float32_0", "random_float64_0"]


class Page(HTMLParser):
    """The parts of the page the tests look at."""

    def __init__(self):
        super().__init__()
        self.rows, self.sections, self.selects, self.images, self.external = [], {}, {}, [], []
        self._section, self._select, self._stack = None, None, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            v = a.get(key)
            if v and not (v.startswith("data:") or v.startswith("#")):
                self.external.append(v)
        if tag == "link" or (tag == "script" and "src" in a):
            self.external.append(tag)
        if tag == "tr" and "data-cell" in a:
            self.rows.append(a)
        if tag == "section" and "data-cell" in a:
            self._section = a["id"]
            self.sections[a["id"]] = {"attrs": a, "images": []}
        if tag == "select":
            self._select = a["data-filter"]
            self.selects[self._select] = []
        if tag == "option" and self._select:
            self.selects[self._select].append(a["value"])
        if tag == "img":
            self.images.append(a)
            if self._section:
                self.sections[self._section]["images"].append(a)

    def handle_endtag(self, tag):
        if tag == "section":
            self._section = None
        if tag == "select":
            self._select = None


def parse(text: str) -> Page:
    p = Page()
    p.feed(text)
    p.close()
    return p


def png_ok(data: bytes) -> tuple[int, int]:
    """(width, height) of a valid PNG: signature, IHDR with its CRC, the IDAT stream inflating to the
    size the header implies; decoded by PIL too when it is installed."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature"
    pos, chunks = 8, {}
    idat = b""
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body, crc = data[pos + 8:pos + 8 + length], data[pos + 8 + length:pos + 12 + length]
        assert zlib.crc32(kind + body) == struct.unpack(">I", crc)[0], f"CRC of {kind!r}"
        chunks.setdefault(kind, body)
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    assert b"IHDR" in chunks and b"IEND" in chunks
    w, h, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    assert len(zlib.decompress(idat)) == h * (1 + (w * channels * depth + 7) // 8)
    try:
        from PIL import Image
    except ImportError:
        return w, h
    import io

    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.size == (w, h)
    return w, h


@functools.lru_cache(maxsize=None)
def _report():
    """A planted wrong implementation (p clipped to [1e-7, 1 − 1e-7]) beside ours, float32 and float64."""
    common = dict(dtypes=["float32", "float64"], cases=BCE_CASES, devices=["cpu"], plot_points=plots.PLOT_POINTS)
    report = lossoracle.check(clipped_bce, "binary_cross_entropy", name="mutants.clipped_bce", **common)
    report.extend(lossoracle.check(torch_impl.binary_cross_entropy, "binary_cross_entropy", **common))
    return report


@functools.lru_cache(maxsize=None)
def _page() -> tuple[str, Page]:
    text = _report().to_html()
    return text, parse(text)


def test_every_cell_is_in_the_table_with_its_filters():
    report = _report()
    text, page = _page()
    want = {tuple(str(s[k]) for k in FILTERS) for s in report.summary()}
    got = {tuple(r[f"data-{k}"] for k in FILTERS) for r in page.rows}
    assert got == want and len(page.rows) == len(report.summary())
    assert set(page.selects) == set(FILTERS)
    for k in FILTERS:  # "all" first, then every value the table holds
        assert page.selects[k][0] == "" and set(page.selects[k][1:]) == {r[f"data-{k}"] for r in page.rows}
    assert "<script>" in text and 'id="filters" hidden' in text and "<noscript>" in text
    assert not page.external, f"the page must be self-contained: {page.external}"


def test_every_non_conforming_cell_has_a_section_and_a_plot_that_decodes():
    report = _report()
    _, page = _page()
    bad = [s for s in report.summary() if s["verdict"] in PLOTTED]
    assert bad and any(s["implementation"] == "mutants.clipped_bce" for s in bad)
    assert len(page.sections) == len(bad)
    assert all(r["data-verdict"] == "conforms" for r in page.rows if r["data-implementation"].startswith(
        "lossoracle.implementations"))  # ours conform: no section
    for sec in page.sections.values():
        assert sec["attrs"]["data-verdict"] in PLOTTED
        assert len(sec["images"]) == 1, sec["attrs"]
    assert page.images
    for img in page.images:
        head, _, b64 = img["src"].partition(",")
        assert head == "data:image/png;base64"
        w, h = png_ok(base64.b64decode(b64))
        assert w > 300 and h > 150
        assert "error in ULP and in units of u·c against logit(p)" in img["alt"]


def test_the_plot_places_the_planted_defect_where_it_is():
    """Clipping p to [1e-7, 1 − 1e-7] changes nothing for |logit(p)| below the clip: every deviating
    element the plot shows lies beyond it (or at ±inf), and some conforming ones inside."""
    report = _report()
    rows = [r for r in report.results if r.implementation == "mutants.clipped_bce" and r.dtype == "float64"]
    panels = plots.cell_panels(rows)
    assert [p.quantity for p in panels][0] == "value" and {p.label for p in panels} == {plots.LOGIT_P}
    value = panels[0].points
    dev = value["grade"] == GRADES.index("deviates")
    assert np.isfinite(value["x"][dev]).any() and np.all(np.abs(value["x"][dev]) >= CLIP * 0.99)
    assert np.any((np.abs(value["x"]) < CLIP) & (value["grade"] <= GRADES.index("stable")))
    assert panels[0].budget[0] == 2.0 and panels[0].k[0] == 8.0


def test_points_are_kept_only_when_asked_and_stay_out_of_the_json():
    plain = lossoracle.check(torch_impl.binary_cross_entropy, "binary_cross_entropy", dtypes=["float32"],
                             cases=["basic_none"], devices=["cpu"])
    assert plain.results and all(r.points is None for r in plain.results)
    kept = lossoracle.check(torch_impl.binary_cross_entropy, "binary_cross_entropy", dtypes=["float32"],
                            cases=["random_float32_0"], devices=["cpu"], plot_points=5)
    assert all(r.points is not None and len(r.points["x"]) == min(5, r.n) for r in kept.results)
    rows = json.loads(json.dumps(kept.to_json()))["results"]
    assert all("points" not in r for r in rows)
    page = parse(plain.to_html())  # ours conform: a table, no section, no image
    assert page.rows and not page.sections and not page.images


def test_subsample_is_deterministic_bounded_and_keeps_the_worst():
    rng = np.random.default_rng(0)
    n, limit = 10_000, 400
    grade = rng.integers(0, 3, n)
    uc, ulp = rng.random(n), rng.random(n) * 10
    grade[[17, 5000]] = GRADES.index("deviates")
    uc[4242] = np.inf
    ulp[[17]] = np.inf
    i = plots.subsample(grade, uc, ulp, limit)
    assert len(i) <= limit and np.all(np.diff(i) > 0)
    assert np.array_equal(i, plots.subsample(grade, uc, ulp, limit))
    assert {17, 5000, 4242} <= set(i.tolist())
    worst = np.lexsort((ulp, np.nan_to_num(uc, posinf=1e308), grade))[-limit // 4:]
    assert set(worst.tolist()) <= set(i.tolist())
    assert np.array_equal(plots.subsample(grade[:50], uc[:50], ulp[:50], limit), np.arange(50))


def test_every_spec_has_an_abscissa_rule():
    missing = [n for n in specs.names() if plots.rule_for(specs.get(n)) is None]
    assert not missing, f"{missing}: add a rule to lossoracle.plots.RULES (or a kind to KIND_RULES)"


def test_the_abscissa_fits_every_element_of_every_catalogue_case():
    for name in specs.names():
        spec = specs.get(name)
        rule = plots.rule_for(spec)
        for case in spec.cases():
            if case.raises is not None:
                continue
            value, grads = oracle_outputs(spec, case)
            params = {**spec.params, **case.params}
            for quantity, exact in [("value", value)] + [(f"grad:{k}", v) for k, v in grads.items()]:
                x, label = plots.abscissa(spec, case.inputs, params, quantity, exact)
                assert x.shape == (np.size(exact),), (name, case.id, quantity)
                by_exact = quantity == "value" and rule.value == "exact"
                assert (label == plots.EXACT_LABEL) == by_exact, (name, case.id, quantity, label)


def test_abscissa_rules_by_family():
    bce = specs.get("binary_cross_entropy_with_logits")
    x = np.array([-40.0, 0.5, 3.0])
    t = np.array([1.0, 0.0, 1.0])
    got, label = plots.abscissa(bce, {"input": x, "target": t}, {"reduction": "none"}, "value", [1, 2, 3])
    assert label == plots.LOGIT and np.array_equal(got, x)
    got, _ = plots.abscissa(bce, {"input": x, "target": t}, {"reduction": "mean"}, "value", 1.0)
    assert np.array_equal(got, [-40.0])  # a mean is placed at its most extreme input
    p = np.array([1e-300, 0.5, 1 - 2.0**-53, 0.0])
    got, label = plots.abscissa(specs.get("binary_cross_entropy"), {"input": p, "target": p}, {}, "grad:input", p)
    assert label == plots.LOGIT_P
    assert np.allclose(got[:3], [np.log(1e-300), 0.0, 53 * np.log(2)]) and got[3] == -np.inf
    ce, iou = specs.get("cross_entropy"), specs.get("box_iou")
    logits = np.array([[2.0, 7.0, -1.0], [0.0, 0.0, 5.0]])
    target = np.array([1, 0])  # margins at the target: 7 − 2, 0 − 5
    got, _ = plots.abscissa(ce, {"input": logits, "target": target}, {"reduction": "none"}, "value",
                            [0, 0])
    assert np.array_equal(got, [5.0, -5.0])
    got, _ = plots.abscissa(ce, {"input": logits, "target": np.array([1, -100])},
                            {"reduction": "none"}, "value", [0, 0])
    assert got[0] == 5.0 and np.isnan(got[1])  # an ignored row is not placed
    got, _ = plots.abscissa(ce, {"input": logits, "target": target}, {}, "grad:input", logits)
    assert np.array_equal(got.reshape(2, 3), [[-5.0, 5.0, -8.0], [-5.0, -5.0, 5.0]])
    b1 = np.array([[0.0, 0.0, 1.0, 1.0], [1e6, 1e6, 1e6 + 2, 1e6 + 3]])
    b2 = np.array([[0.0, 0.0, 2.0, 5.0], [0.0, 0.0, 1.0, 1.0]])
    got, _ = plots.abscissa(specs.get("complete_box_iou_loss"), {"boxes1": b1, "boxes2": b2}, {}, "value", [0, 0])
    assert np.array_equal(got, [5.0, 1e6 + 3])
    got, _ = plots.abscissa(iou, {"boxes1": b1, "boxes2": b2[:1]}, {}, "value", np.zeros((2, 1)))
    assert np.array_equal(got, [5.0, 1e6 + 3])
    got, _ = plots.abscissa(iou, {"boxes1": b1, "boxes2": b2}, {}, "grad:boxes2", b2)
    assert np.array_equal(got.reshape(2, 4)[:, 0], [5.0, 1.0])


def test_check_html_cli_writes_the_page_and_a_journal_keeps_its_points(tmp_path, capsys):
    out, journal, again = tmp_path / "r.html", tmp_path / "run.jsonl", tmp_path / "again.html"
    argv = ["check", "--impl", "mutants:clipped_bce", "--loss", "binary_cross_entropy", "--dtype", "float64",
            *[a for c in BCE_CASES[:3] for a in ("--case", c)]]
    assert main([*argv, "--html", str(out), "--journal", str(journal)]) == 1
    text = out.read_text(encoding="utf-8")
    page = parse(text)
    assert len(page.rows) == 1 and len(page.sections) == 1 and len(page.images) == 1
    assert "lossoracle check --impl mutants:clipped_bce" in text
    assert main([*argv, "--html", str(again), "--resume", str(journal)]) == 1  # nothing rerun: points from the journal
    assert len(parse(again.read_text(encoding="utf-8")).images) == 1


def test_check_html_without_matplotlib_is_a_usage_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    rc = main(["check", "--loss", "softmax", "--html", str(tmp_path / "r.html")])
    assert rc == 2 and "pip install 'lossoracle[report]'" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "headless_shell")


def _browser() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium installed (apt-get install "
                    "chromium-headless-shell)")
def test_the_page_in_a_headless_browser(tmp_path):
    """The browser runs the filters: shown, counting every cell; a filter preset from the URL hides the rest."""
    text, page = _page()
    path = tmp_path / "r.html"
    path.write_text(text, encoding="utf-8")

    def dom(query: str = "") -> Page:
        res = subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                              f"{path.as_uri()}{query}"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        assert 'id="filters" hidden' not in res.stdout  # the script ran
        parsed = parse(res.stdout)
        parsed.text = res.stdout
        return parsed

    n = len(page.rows)
    full = dom()
    assert f"{n} of {n} cells shown" in full.text and len(full.rows) == n
    deviating = [r for r in page.rows if r["data-verdict"] == "deviates"]
    filtered = dom("?verdict=deviates")
    assert f"{len(deviating)} of {n} cells shown" in filtered.text
    assert {r["id"] for r in filtered.rows if "hidden" not in r} == {r["id"] for r in deviating}


def test_convention_and_fields_the_page_does_not_know_are_shown(monkeypatch):
    """The convention a fingerprint finds (the summary's field, else the rows'), and any further summary
    field (e.g. findings per tag) reach the cell's section."""
    report = _report()
    summary = report.summary

    def more():
        out = summary()
        for s in out:
            if s["implementation"] == "mutants.clipped_bce":
                s["convention"] = "clip_eps=1e-07 (conforms, max 0.5 ULP)"
                s["findings_by_tag"] = {"saturated": "value: non-finite mismatch", "subnormals": "grad: gross"}
        return out

    monkeypatch.setattr(report, "summary", more)
    text = report.to_html()
    section = text[text.index('<section class="cell'):]
    assert "<b>Convention found:</b> clip_eps=1e-07 (conforms, max 0.5 ULP)" in section
    assert "<dt>findings_by_tag</dt>" in section and "saturated: <code>value: non-finite mismatch</code>" in section
    monkeypatch.setattr(report, "summary", summary)  # the real search (lossoracle.fingerprint) found the clip
    assert "<b>Convention found:</b> matches probability_clip=1e-07" in report.to_html()

    def without():  # a summary without the field: the rows' convention is shown
        return [{**s, "convention": None} for s in summary()]

    monkeypatch.setattr(report, "summary", without)
    rows = [r for r in report.results if r.implementation == "mutants.clipped_bce"]
    for r in rows:
        monkeypatch.setattr(r, "convention", "log_floor=-100")
    assert "<b>Convention found:</b> log_floor=-100" in report.to_html()


def test_findings_by_tag_and_an_expected_failure_are_shown():
    from lossoracle.report import Report

    report = _report()
    key = next(s for s in report.summary() if s["implementation"] == "mutants.clipped_bce")
    key = (key["loss"], key["implementation"], key["device"], key["dtype"])
    entry = {"status": "xfail", "verdict": "deviates", "reason": "clipped on purpose"}
    text = Report(report.results, report.meta, {key: entry}).to_html()
    section = text[text.index(f'data-dtype="{key[3]}" data-verdict="deviates" data-cell>\n<h3>'):]
    section = section[:section.index("</section>")]
    assert "<b>Expected failure:</b> xfail (expected deviates): clipped on purpose" in section
    assert re.search(r"<li><b>\[[a-z_, ]+\]</b> <code>(value|grad:)", section)  # findings grouped by tag
    assert "reproduce: <code>lossoracle check --impl " in section
    assert ">xfail:deviates<" in text  # the table shows the verdict as the terminal does


def test_a_figure_with_errors_and_inputs_near_the_float64_limit_draws():
    """The full catalogue has errors of 1e308 ULP at inputs of ±1e308: the axis ends must stay finite."""
    pytest.importorskip("matplotlib")
    import numpy as np

    from lossoracle import plots

    pts = {"x": np.array([1e308, -1e308, np.inf, 0.5, 3.0]), "ulp": np.array([1e308, 2.0, np.inf, 0.1, 1e300]),
           "uc": np.array([1e306, 0.5, np.inf, 0.01, 1e299]), "grade": np.array([4, 0, 4, 0, 3]),
           "row": np.zeros(5, int)}
    png = plots.figure_png([plots.Panel("value", "x", pts, (2.0, 4.0), (8.0, 8.0), ("c",))], "t")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
