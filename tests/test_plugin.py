"""The pytest helper for downstream suites: one test per backend × device × dtype."""

import torch.nn.functional as F

from lossoracle.pytest_plugin import parametrize_conformance, pytest_report_header


@parametrize_conformance(F.nll_loss, "nll_loss", "torch", dtypes=["float32", "float64"])
def test_torch_nll_loss_conforms(conformance):
    report = conformance()
    assert report.conforms and len({r.dtype for r in report.results}) == 1  # one cell per test


def _softmax_cells():
    return parametrize_conformance(F.softmax, "softmax", "torch", dtypes=["float64"],
                                   expected_failures={"float64": "backward cancels at saturation"})


@_softmax_cells()
def test_expected_failures_are_marked_xfail(conformance):
    assert conformance().conforms


def test_ids_and_marks():
    mark = _softmax_cells()
    params = mark.args[1]
    assert [p.id for p in params][0] == "softmax[torch-cpu-float64]"
    assert params[0].marks and params[0].marks[0].name == "xfail"


def test_report_header_names_versions():
    header = pytest_report_header(None)[0]
    assert "mpmath" in header and "torch" in header and "hypothesis profile" in header
