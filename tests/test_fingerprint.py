"""Convention fingerprinting (lossoracle.fingerprint): implementations that follow another
documented convention are reported with it, honest ones are not, and a crash in the search is a
line in the report, not the end of the run."""

from __future__ import annotations

import functools
import os
import signal

import pytest

import lossoracle
from lossoracle import fingerprint
from lossoracle.implementations import torch_impl

from mutants import MUTANTS, PLANTED, Planted

BY_NAME = {m.name: m for m in PLANTED}


@functools.lru_cache(maxsize=None)
def _report(name: str):
    m = BY_NAME[name]
    return lossoracle.check(m.fn, m.loss, "torch", dtypes=m.dtypes, cases=m.case_ids(), devices=["cpu"])


@pytest.mark.parametrize("m", PLANTED, ids=lambda m: m.name)
def test_planted_convention_is_found(m: Planted):
    report = _report(m.name)
    cells = report.summary()
    assert {c["dtype"] for c in cells} == set(m.dtypes), report.to_text()
    for cell in cells:
        assert cell["verdict"] != "conforms", f"{m.name} {cell['dtype']}: the planted difference went unseen"
        found = cell["convention"]
        assert found is not None and found["status"] == "matches", f"{cell['dtype']}: {found}\n{report.to_text()}"
        best = found["settings"][0]
        assert best["shown"].startswith(m.convention), f"{cell['dtype']}: {found['text']}"
        assert best["verdict"] == m.verdict and best["failing_cases"] == 0, m.why
        assert found["text"].startswith(f"matches {m.convention}")
        assert f"convention: {found['text']}" in report.to_text()


def test_a_match_reproduces_with_param():
    """The setting found is the one --param pins: checked under it, the cell conforms."""
    m = BY_NAME["smoothing_eps_over_c_minus_1"]
    found = _report(m.name).summary()[0]["convention"]["settings"][0]
    again = lossoracle.check(m.fn, m.loss, "torch", dtypes=["float64"], cases=m.case_ids(), devices=["cpu"],
                             conventions=found["setting"])
    assert again.conforms, again.to_text()


def test_pinned_parameters_are_not_searched():
    m = BY_NAME["weighted_mean_over_n"]
    pinned = lossoracle.check(m.fn, m.loss, "torch", dtypes=["float64"], cases=m.case_ids(), devices=["cpu"],
                              conventions={"mean_over": "weights"})
    found = pinned.summary()[0]["convention"]
    assert found["status"] == "none", found
    assert all("mean_over" not in s["setting"] for s in found["settings"])


def test_no_fingerprint_turns_the_search_off():
    m = BY_NAME["weighted_mean_over_n"]
    report = lossoracle.check(m.fn, m.loss, "torch", dtypes=["float64"], cases=m.case_ids(), devices=["cpu"],
                              fingerprint=False)
    assert report.summary()[0]["verdict"] == "deviates"
    assert all(r.fingerprint is None and r.convention is None for r in report.results)


@pytest.mark.parametrize("m", [m for m in MUTANTS if m.honest], ids=lambda m: m.name)
def test_honest_implementations_are_not_flagged(m):
    report = lossoracle.check(m.fn, m.loss, m.framework, grad=m.grad, dtypes=m.dtypes, cases=m.case_ids(),
                              devices=None if m.framework == "numpy" else ["cpu"])
    for cell in report.summary():
        found = cell["convention"]
        assert found is None or found["status"] == "none", f"{m.name} {cell['dtype']}: {found['text']}"


def test_ours_are_not_searched():
    report = lossoracle.check(torch_impl.cross_entropy, "cross_entropy", "torch", devices=["cpu"],
                              cases=["basic_mean", "smoothing_0.1", "weight_and_ignore", "random_float64_0"])
    assert report.conforms, report.to_text()
    assert all(r.fingerprint is None for r in report.results)


def test_a_crash_during_the_search_is_survived(monkeypatch):
    def crash(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGSEGV)

    monkeypatch.setattr(fingerprint, "search", crash)
    m = BY_NAME["weighted_mean_over_n"]
    report = lossoracle.check(m.fn, m.loss, "torch", dtypes=["float32", "float64"], cases=m.case_ids(),
                              devices=["cpu"])
    cells = report.summary()
    assert [c["dtype"] for c in cells] == ["float32", "float64"]  # the run went on to the next cell
    for cell in cells:
        assert cell["verdict"] == "deviates"  # the verdicts stand
        assert cell["convention"]["status"] == "failed"
        assert cell["convention"]["text"] == "convention search crashed: SIGSEGV"


def test_an_error_during_the_search_is_reported(monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("oracle out of its depth")

    monkeypatch.setattr(fingerprint, "search", fail)
    m = BY_NAME["weighted_mean_over_n"]
    report = lossoracle.check(m.fn, m.loss, "torch", dtypes=["float64"], cases=m.case_ids(), devices=["cpu"])
    found = report.summary()[0]["convention"]
    assert found["status"] == "failed" and "RuntimeError: oracle out of its depth" in found["text"]


# The oracles' new conventions: analytic gradients against mpmath.diff, as test_oracles does for the defaults.
_CONVENTION_CASES = [
    ("cross_entropy", {"smoothing_form": "eps_over_c_minus_1"}, ("smoothing_0.1_weight_ignore", "random_half_0")),
    ("cross_entropy", {"mean_over": "targets"}, ("weight_and_ignore",)),
    ("cross_entropy", {"mean_over": "rows"}, ("ignore_some_mean",)),
    ("cross_entropy", {"mean_over": "elements"}, ("prob_soft_mean", "weight_and_ignore")),
    ("cross_entropy", {"empty_mean": "zero"}, ("ignore_all_mean",)),
    ("nll_loss", {"mean_over": "elements"}, ("weight_and_ignore",)),
    ("binary_cross_entropy", {"probability_clip": 1e-7, "clip_high": 1 - 1e-7}, ("endpoints_none", "basic_mean")),
    ("binary_cross_entropy", {"mean_over": "weights"}, ("weights_with_zeros_mean",)),
    ("binary_cross_entropy_with_logits", {"mean_over": "weights"}, ("basic_mean",)),
]


@pytest.mark.parametrize(("loss", "setting", "case_id"), [(loss, s, c) for loss, s, ids in _CONVENTION_CASES
                                                          for c in ids])
def test_convention_gradients_match_numerical_differentiation(loss, setting, case_id):
    from dataclasses import replace

    from lossoracle import specs
    from test_oracles import test_oracle_gradient_matches_numerical_differentiation as check_gradient

    spec = specs.get(loss)
    case = next(c for c in spec.cases() if c.id == case_id)
    check_gradient(spec, replace(case, params={**case.params, **setting}))
