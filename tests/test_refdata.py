"""Frozen reference data: present for every loss, and a sample of rows regenerates exactly
(to the 40 stored digits) from the stored inputs."""

import mpmath
import numpy as np
import pytest

from lossoracle import refdata, specs
from lossoracle.engine import oracle_outputs

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
    value, grads = oracle_outputs(spec, refdata.case_of(row))
    stored = {"value": row["value"], **{k: v for k, v in row.items() if k.startswith("grad:")}}
    fresh = {"value": value, **{f"grad:{k}": v for k, v in grads.items()}}
    assert stored.keys() == fresh.keys()
    for key, digits in stored.items():
        now = np.asarray(fresh[key], dtype=object).reshape(-1).tolist()
        assert len(now) == len(digits)
        for s, v in zip(digits, now):
            with mpmath.mp.workdps(refdata.DIGITS + 10):  # parse all 40 stored digits
                want = mpmath.mpf(s)
            if not mpmath.isfinite(want):
                assert str(want) == str(v) or (mpmath.isnan(want) and mpmath.isnan(v))
            else:
                with mpmath.mp.workdps(refdata.DIGITS + 10):
                    assert abs(v - want) <= abs(want) * mpmath.mpf(10) ** (1 - refdata.DIGITS), (key, s, v)


def test_encoding_round_trips_exactly():
    a = np.array([5e-324, -0.0, 1 - 2.0**-53, np.inf, np.nan])
    b = refdata.decode_array(refdata.encode_array(a))
    assert np.array_equal(a.view(np.int64)[:4], b.view(np.int64)[:4]) and np.isnan(b[4])
