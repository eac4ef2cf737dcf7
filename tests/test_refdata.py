"""Frozen reference data: present for every loss, a sample of rows regenerates exactly (the very
binary values) from the stored inputs, and the checker uses the rows."""

import mpmath
import numpy as np
import pytest

from lossoracle import refdata, specs
from lossoracle.engine import exact_outputs, oracle_outputs

DATA = refdata.DATA_DIR
SAMPLE = 5


def test_every_loss_has_a_data_file_with_provenance():
    for name in specs.names():
        path = DATA / f"{name}.txt"
        assert path.exists(), f"run: python -m lossoracle.refdata --loss {name}"
        head = path.read_text().splitlines()[:5]
        assert any("mpmath" in h for h in head) and any("generator" in h for h in head)


def _sample():
    out = []
    for name in specs.names():
        path = DATA / f"{name}.txt"
        if path.exists():
            rows = refdata.read(path)
            step = max(1, len(rows) // SAMPLE)
            out += [pytest.param(name, r, id=f"{name}-{r['case']}") for r in rows[::step]]
    return out


@pytest.mark.parametrize(("loss", "row"), _sample())
def test_stored_rows_regenerate(loss, row):
    spec = specs.get(loss)
    value, grads = exact_outputs(spec, refdata.case_of(row))
    stored = {"value": row["value"], **{k: v for k, v in row.items() if k.startswith("grad:")}}
    fresh = {"value": value, **{f"grad:{k}": v for k, v in grads.items()}}
    assert stored.keys() == fresh.keys()
    for key, exact in stored.items():
        now = np.asarray(fresh[key], dtype=object).reshape(-1).tolist()
        assert [refdata.encode_mp(v) for v in now] == exact, key


def test_the_checker_reads_the_frozen_rows():
    """The rows are what the checker uses: a case the data holds comes back bit for bit from the
    file, and a case with other inputs under the same id is not taken from it."""
    spec = specs.get("cross_entropy")
    row = refdata.read(DATA / "cross_entropy.txt")[0]
    case = next(c for c in spec.cases() if c.id == row["case"])
    value, _ = refdata.frozen(spec, case)
    assert [refdata.encode_mp(v) for v in np.asarray(value, dtype=object).reshape(-1)] == row["value"]
    assert oracle_outputs(spec, case)[0] is not None
    altered = refdata.Case(case.id, {**case.inputs, "input": case.inputs["input"] + 1.0}, case.params)
    assert refdata.frozen(spec, altered) is None


def test_exact_binary_encoding_round_trips():
    with mpmath.mp.workprec(192):
        for v in (mpmath.mpf(1) / 3, -mpmath.exp(-800), mpmath.mpf(0), mpmath.inf, mpmath.mpf(2) ** -1074):
            assert refdata.decode_mp(refdata.encode_mp(v)) == v


def test_encoding_round_trips_exactly():
    a = np.array([5e-324, -0.0, 1 - 2.0**-53, np.inf, np.nan])
    b = refdata.decode_array(refdata.encode_array(a))
    assert np.array_equal(a.view(np.int64)[:4], b.view(np.int64)[:4]) and np.isnan(b[4])
