"""Mutation tests of the grading: every deliberately wrong implementation in ``mutants.py`` is
caught, for the right reason, in the dtypes its defect reaches (and only there); the honest ones
are not flagged (or are exactly ``tail`` where the textbook formula legitimately loses relative
accuracy on tiny results)."""

from __future__ import annotations

import functools
from collections import defaultdict

import pytest

import lossoracle
from lossoracle import specs
from lossoracle.compare import FINDINGS

from mutants import MUTANTS, Mutant

FAILING = ("deviates", "error", "timeout", "crashed")
# Every finding the engine can give a row (compare.FINDINGS and the engine's own).
KNOWN_FINDINGS = set(FINDINGS) | {"dtype", "shape", "error", "unsupported", "no_raise", "wrong_exception",
                                  "not_credited", "crashed", "timeout"}
BY_NAME = {m.name: m for m in MUTANTS}


@functools.lru_cache(maxsize=None)
def _report(name: str):
    m = BY_NAME[name]
    devices = None if m.framework == "numpy" else ["cpu"]  # one device is enough for the grading
    return lossoracle.check(m.fn, m.loss, m.framework, grad=m.grad, dtypes=m.dtypes, cases=m.case_ids(),
                            devices=devices, fingerprint=False)  # the convention search: test_fingerprint.py


def _by_dtype(report):
    cells = {s["dtype"]: s["verdict"] for s in report.summary()}
    rows = defaultdict(list)
    for r in report.results:
        rows[r.dtype].append(r)
    return cells, rows


def _findings(rows) -> set[str]:
    return {r.finding for r in rows if r.finding}


def _explain(report) -> str:
    return report.to_text()


def test_the_mutant_list_is_well_formed():
    assert len(BY_NAME) == len(MUTANTS), "mutant names must be unique"
    for m in MUTANTS:
        assert m.loss in specs.names(), m.name
        assert m.honest or m.expect, f"{m.name}: a mutant needs the finding that must catch it"
        assert (m.expect | m.allow) <= KNOWN_FINDINGS, f"{m.name}: unknown finding in {m.expect | m.allow}"
        assert set(m.defective or ()) <= set(m.dtypes) and set(m.verdicts) <= set(m.dtypes), m.name
        ids = m.case_ids()
        assert ids is None or ids, f"{m.name}: the case selection is empty"
        if ids is not None:
            assert set(ids) <= {c.id for c in specs.get(m.loss).cases()}, f"{m.name}: unknown case"


@pytest.mark.parametrize("m", [m for m in MUTANTS if not m.honest], ids=lambda m: m.name)
def test_mutant_is_caught_for_the_right_reason(m: Mutant):
    report = _report(m.name)
    cells, rows = _by_dtype(report)
    text = f"{m.name} ({m.why}):\n{_explain(report)}"
    assert set(cells) == set(m.dtypes), text
    defective = m.defective or m.dtypes
    for dtype in m.dtypes:
        if dtype not in defective:  # the defect does not reach this dtype: the same code conforms
            assert cells[dtype] == "conforms", f"{dtype} should conform\n{text}"
            continue
        want = m.verdicts.get(dtype, "tail" if m.tail_only else None)
        if want is not None:
            assert cells[dtype] == want, f"{dtype}: {cells[dtype]}, want {want}\n{text}"
        else:
            assert cells[dtype] in FAILING, f"{dtype}: {cells[dtype]}\n{text}"
        bad = [r for r in rows[dtype] if r.verdict == cells[dtype]]
        assert bad, f"{dtype}: no row carries the cell's verdict\n{text}"
        found = _findings(r for r in rows[dtype] if r.verdict != "conforms")
        assert found & (m.expect | m.allow), f"{dtype}: findings {found}\n{text}"
    observed = _findings(report.results)
    assert observed & m.expect, f"none of {set(m.expect)} among the findings {observed}\n{text}"
    assert observed <= m.expect | m.allow, f"unexpected findings {observed - m.expect - m.allow}\n{text}"
    if m.tail_only:
        assert report.passes(require="tail") and not report.conforms, text
        assert observed == {"tail"}, text
    else:
        assert not report.passes(), text
    assert not report.conforms, text


@pytest.mark.parametrize("m", [m for m in MUTANTS if m.honest], ids=lambda m: m.name)
def test_honest_implementation_is_not_flagged(m: Mutant):
    report = _report(m.name)
    cells, rows = _by_dtype(report)
    text = f"{m.name} ({m.why}):\n{_explain(report)}"
    assert cells == {d: m.verdicts.get(d, "conforms") for d in m.dtypes}, text
    assert not any(r.verdict in FAILING for r in report.results), text
    observed = _findings(report.results)
    assert report.passes(require="tail"), text
    if any(v == "tail" for v in cells.values()):
        # tail only: relative accuracy lost on tiny results, never a deviation
        assert observed == {"tail"}, text
        assert not report.conforms, text
    else:
        assert not observed and report.conforms, text
