"""Every implementation of ours, on every case of its spec, in every dtype and device: it must
conform, raise the exact exception type on bad input, and reach the higher bar set for ours —
faithful (float64 ≤ 2 ULP value / 4 ULP gradient, narrower dtypes ≤ 4 / 8, plus log2(n) for
reductions) — except in the spec's documented regions, where the region's grade is required."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lossoracle import catalog, specs, strategies
from lossoracle.compare import GRADES


_REPORTS = {}


def _report(impl):
    key = (impl.loss, impl.name)
    if key not in _REPORTS:
        _REPORTS[key] = catalog.run(impl)
    return _REPORTS[key]


OURS = [pytest.param(i, id=f"{i.loss}-{i.framework}") for i in catalog.implementations() if i.ours]


@pytest.mark.parametrize("impl", OURS)
def test_ours_conform_on_every_case(impl):
    report = _report(impl)
    bad = [r for r in report.results if r.verdict not in ("conforms", "skipped")]
    assert not bad, "\n".join(f"{r.case} {r.dtype} {r.quantity}: {r.verdict} {r.detail}" for r in bad[:10])
    skipped = [r for r in report.results if r.verdict == "skipped"]
    assert not skipped, f"our implementation skipped {len(skipped)} rows: {skipped[0].detail}"


@pytest.mark.parametrize("impl", OURS)
def test_ours_are_faithful_outside_documented_regions(impl):
    spec = specs.get(impl.loss)
    cases = {c.id: c for c in spec.cases()}
    failures = []
    for r in _report(impl).results:
        if r.grade is None:
            continue
        required = spec.budget.required_grade(cases[r.case], r.quantity)
        if GRADES.index(r.grade) > GRADES.index(required):
            failures.append(f"{r.case} {r.dtype} {r.quantity}: {r.grade} (max {r.max_ulp:.3g} ulp, "
                            f"budget {r.budget}) but {required} required: {r.detail}")
    assert not failures, "\n".join(failures[:10])


@pytest.mark.parametrize("impl", OURS)
def test_ours_cover_every_dtype(impl):
    dtypes = {r.dtype for r in _report(impl).results}
    want = {"float16", "float32", "float64"} | ({"bfloat16"} if impl.framework == "torch" else set())
    assert want <= dtypes


def _examples() -> int:
    """A quarter of the profile's examples per implementation (ci: 15; thorough: 500)."""
    return max(5, settings.default.max_examples // 4)


@pytest.mark.parametrize("impl", OURS)
@settings(max_examples=_examples(), deadline=None)
@given(data=st.data())
def test_ours_are_faithful_on_hypothesis_inputs(impl, data):
    """Inputs drawn from each argument's domain (``strategies.spec_cases``), float32 and float64."""
    spec = specs.get(impl.loss)
    case = data.draw(strategies.spec_cases(spec, "float32"))
    report = catalog.run(impl, cases=[case], dtypes=["float32", "float64"])
    for r in report.results:
        assert r.verdict == "conforms", f"{case.inputs} {case.params}: {r.detail}"
        required = spec.budget.required_grade(case, r.quantity)
        assert GRADES.index(r.grade) <= GRADES.index(required), f"{r.dtype} {r.quantity}: {r.detail}"
