"""Every implementation of ours, on every case of its spec, in every dtype and device: it must
conform, raise the exact exception type on bad input, and reach the higher bar set for ours,
element by element — *faithful* (float64 ≤ 2 ULP value / 4 ULP gradient, narrower dtypes ≤ 4 / 8,
plus log2(n) for reductions) wherever the element is well conditioned (c ≤ 4·|f|), and *stable*
(within k·u·c of the exact value) everywhere."""

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
    bad = [r for r in report.results if r.verdict != "conforms"]
    assert not bad, "\n".join(f"{r.case} {r.dtype} {r.quantity}: {r.verdict} {r.detail}" for r in bad[:10])
    assert report.conforms and report.passes("stable")


def _per_element_failures(report) -> list[str]:
    """Rows where some well-conditioned element is not faithful, or some element is not stable."""
    failures = []
    for r in report.results:
        if r.grade is None:
            continue
        if GRADES.index(r.grade) > GRADES.index("stable"):
            failures.append(f"{r.case} {r.dtype} {r.quantity}: {r.grade} — {r.detail}")
        elif r.well_conditioned_grade not in (None, "correctly_rounded", "faithful"):
            failures.append(f"{r.case} {r.dtype} {r.quantity}: {r.well_conditioned_grade} on a well-conditioned "
                            f"element (max {r.max_ulp:.3g} ulp, budget {r.budget}) — {r.detail}")
    return failures


@pytest.mark.parametrize("impl", OURS)
def test_ours_are_faithful_where_well_conditioned_and_stable_everywhere(impl):
    failures = _per_element_failures(_report(impl))
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
    """Inputs drawn from each argument's domain (``strategies.spec_cases``) on the ``half`` grid
    (8-bit significands in float16's normal range: valid in float16, bfloat16, float32 and
    float64) or the float32 grid, run in every dtype they are exact in: faithful where well
    conditioned, stable everywhere."""
    spec = specs.get(impl.loss)
    grid = data.draw(st.sampled_from(["half", "float32"]), label="grid")
    case = data.draw(strategies.spec_cases(spec, grid))
    report = catalog.run(impl, cases=[case])
    assert any(r.scored for r in report.results), f"nothing scored on {case.inputs} {case.params}"
    failures = _per_element_failures(report)
    assert not failures, f"{case.inputs} {case.params}: " + "\n".join(failures[:5])
