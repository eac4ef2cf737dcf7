"""The ecosystem's verdicts, as data: ``tests/expected/<family>.toml`` read by one generic test.

Every third-party implementation in the catalogue is run, and each cell (implementation × dtype)
must have the verdict its file states, with the reason's key phrase among the cell's findings. A
library upgrade that changes a verdict fails here with the difference; updating the file
(``python tests/expected/update.py REPORT.json``) is the whole fix.
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


def _entries() -> dict[tuple[str, str, str], dict]:
    out = {}
    for path in sorted(HERE.glob("*.toml")):
        for e in tomllib.loads(path.read_text()).get("cell", []):
            key = (e["implementation"], e["loss"], e.get("dtype", "*"))
            assert key not in out, f"{path.name}: {key} listed twice"
            out[key] = {**e, "file": path.name}
    return out


ENTRIES = _entries()
THIRD_PARTY = [i for i in catalog.implementations() if not i.ours]


def _expected(impl, dtype: str) -> dict | None:
    return ENTRIES.get((impl.name, impl.loss, dtype)) or ENTRIES.get((impl.name, impl.loss, "*"))


@pytest.mark.thirdparty
@pytest.mark.parametrize("impl", THIRD_PARTY, ids=[f"{i.loss}-{i.name}" for i in THIRD_PARTY])
def test_third_party_verdicts_match_the_data(impl):
    problems = []
    for cell in catalog.run(impl).summary():
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
    stale = sorted({(k[0], k[1], e["file"]) for k, e in ENTRIES.items() if (k[0], k[1]) not in known})
    assert ENTRIES and not stale, f"stale entries (no such implementation): {stale}"
