"""The ecosystem's verdicts, as data: ``tests/expected/<family>.toml`` read by one generic test.

Every third-party implementation in the catalogue is run, and each cell (implementation × dtype)
must have the verdict its file states, with the reason's key phrase among the cell's findings. A
library upgrade that changes a verdict fails here with the difference; updating the file
(``python tests/expected/update.py REPORT.json``) is the whole fix.

``[[finding]]`` entries pin one case's row (a finding the README cites, say): ``implementation``,
``loss``, ``case`` and optionally ``dtype``, ``quantity``, then what must hold of every matching
row: ``verdict``, ``finding`` (the compare.FINDINGS key), ``grade``, ``phrase`` (a substring of the
detail), ``min_ulp``/``max_ulp`` (the worst error in ULP is at least / at most this). ``update.py``
keeps them.
"""

from __future__ import annotations

import pathlib

import pytest

from lossoracle import catalog

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

HERE = pathlib.Path(__file__).parent / "expected"
_CHECKED = ("verdict", "finding", "grade")


def _entries() -> dict[tuple[str, str, str], dict]:
    out = {}
    for path in sorted(HERE.glob("*.toml")):
        for e in tomllib.loads(path.read_text()).get("cell", []):
            key = (e["implementation"], e["loss"], e.get("dtype", "*"))
            assert key not in out, f"{path.name}: {key} listed twice"
            out[key] = {**e, "file": path.name}
    return out


def _findings() -> list[dict]:
    return [{**e, "file": path.name} for path in sorted(HERE.glob("*.toml"))
            for e in tomllib.loads(path.read_text()).get("finding", [])]


def _finding_problems(e: dict, results) -> list[str]:
    rows = [r for r in results if r.case == e["case"] and r.dtype == e.get("dtype", r.dtype)
            and r.quantity == e.get("quantity", r.quantity)]
    where = f"{e['file']}: case {e['case']!r} {e.get('dtype', '')} {e.get('quantity', '')}".rstrip()
    if not rows:
        return [f"{where}: no such row"]
    out = []
    for r in rows:
        got = {k: getattr(r, k) for k in _CHECKED if k in e and getattr(r, k) != e[k]}
        if got:
            out.append(f"{where}: expected {({k: e[k] for k in got})}, got {got}: {r.detail}")
        if "phrase" in e and e["phrase"] not in r.detail:
            out.append(f"{where}: {e['phrase']!r} not in {r.detail!r}")
        if "min_ulp" in e and not (r.max_ulp is not None and r.max_ulp >= e["min_ulp"]):
            out.append(f"{where}: worst error {r.max_ulp} ULP, expected at least {e['min_ulp']}")
        if "max_ulp" in e and not (r.max_ulp is not None and r.max_ulp <= e["max_ulp"]):
            out.append(f"{where}: worst error {r.max_ulp} ULP, expected at most {e['max_ulp']}")
    return out


ENTRIES = _entries()
FINDINGS = _findings()
THIRD_PARTY = [i for i in catalog.implementations() if not i.ours]


def _expected(impl, dtype: str) -> dict | None:
    return ENTRIES.get((impl.name, impl.loss, dtype)) or ENTRIES.get((impl.name, impl.loss, "*"))


@pytest.mark.thirdparty
@pytest.mark.parametrize("impl", THIRD_PARTY, ids=[f"{i.loss}-{i.name}" for i in THIRD_PARTY])
def test_third_party_verdicts_match_the_data(impl):
    problems = []
    report = catalog.run(impl)
    for e in FINDINGS:
        if (e["implementation"], e["loss"]) == (impl.name, impl.loss):
            problems += _finding_problems(e, report.results)
    for cell in report.summary():
        e = _expected(impl, cell["dtype"])
        found = "\n      ".join(cell["details"])
        if e is None:
            problems.append(f"{cell['dtype']}: no entry; add [[cell]] implementation = {impl.name!r} loss = "
                            f"{impl.loss!r} dtype = {cell['dtype']!r} verdict = {cell['verdict']!r}")
        elif cell["verdict"] != e["verdict"]:
            problems.append(f"{cell['dtype']}: {e['file']} expects {e['verdict']}, got {cell['verdict']}:"
                            f"\n      {found}")
        elif e.get("reason") and e["reason"] not in found:
            problems.append(f"{cell['dtype']}: {cell['verdict']} as expected, but not for the reason "
                            f"{e['reason']!r}:\n      {found}")
    assert not problems, f"{impl.name} ({impl.loss}):\n  " + "\n  ".join(problems)


def test_every_entry_names_a_catalogued_implementation():
    known = {(i.name, i.loss) for i in THIRD_PARTY}
    stale = sorted({(k[0], k[1], e["file"]) for k, e in ENTRIES.items() if (k[0], k[1]) not in known}
                   | {(e["implementation"], e["loss"], e["file"]) for e in FINDINGS
                      if (e["implementation"], e["loss"]) not in known})
    assert ENTRIES and not stale, f"stale entries (no such implementation): {stale}"


def test_a_finding_entry_bites():
    from lossoracle.report import Result

    row = Result("l", "i", "cpu", "float32", "c", "value", "mean", 2e6, 1.0, 0, "deviates", None, "got=nan",
                 finding="x")
    entry = {"file": "t.toml", "implementation": "i", "loss": "l", "case": "c", "dtype": "float32"}
    assert not _finding_problems({**entry, "verdict": "deviates", "phrase": "got=nan", "min_ulp": 1e6}, [row])
    for wrong in ({"verdict": "conforms"}, {"finding": "shape"}, {"phrase": "got=inf"}, {"min_ulp": 1e7},
                  {"max_ulp": 1e5}, {"case": "other"}, {"quantity": "grad:input"}):
        assert _finding_problems({**entry, **wrong}, [row]), wrong
