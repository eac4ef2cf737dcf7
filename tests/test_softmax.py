"""Softmax cross-entropy family: PyTorch's own functions judged by the spec, bad input, properties."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lossoracle import catalog, check
from lossoracle.implementations import numpy_impl, torch_impl
from lossoracle import reference


def _builtin(loss):
    return next(i for i in catalog.implementations(loss) if i.name == f"torch.nn.functional.{loss}")


@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss", "log_softmax"])
def test_torch_functional_conforms_to_the_spec(loss):
    """The spec's conventions are PyTorch's: its functions conform on every case, or lose only
    relative accuracy on tiny results (``tail``: x − logsumexp(x) returns 0 for a confident
    prediction; float16 evaluated in float16, not float32) — never a deviation."""
    report = catalog.run(_builtin(loss))
    bad = [r for r in report.results if r.verdict not in ("conforms", "tail") or r.finding not in (None, "tail")]
    assert not bad, "\n".join(f"{r.case} {r.dtype}: {r.detail}" for r in bad[:5])
    assert report.passes("tail") and any(r.scored for r in report.results)


def test_torch_cross_entropy_is_reported_as_tail_on_confident_predictions():
    report = catalog.run(_builtin("cross_entropy"))
    rows = [r for r in report.results if r.case == "tail_margin_20" and r.dtype == "float32" and r.quantity == "value"]
    assert rows and rows[0].grade == "tail" and rows[0].verdict == "tail"
    assert "accurate only to the tail bound" in rows[0].detail


def test_torch_softmax_backward_cancellation_is_reported():
    """F.softmax's backward p·(g − Σ g·p) loses everything when one probability dominates: the
    wrong sign or a gross error in float16/bfloat16, tail-only accuracy in float32/float64."""
    report = catalog.run(_builtin("softmax"))
    bad = [r for r in report.results if r.verdict == "deviates"]
    assert bad and all(r.quantity == "grad:input" for r in bad)
    assert {r.finding for r in bad} & {"sign", "gross"}
    assert {r.dtype for r in report.results if r.verdict == "tail"} >= {"float32", "float64"}


@pytest.mark.parametrize("impl", [numpy_impl, torch_impl])
def test_confident_prediction_keeps_relative_accuracy(impl):
    """log1p form: loss e^-1000-ish stays nonzero and faithful where x − LSE gives 0."""
    x = np.array([[60.0, 0.0, -1.0]])
    y = np.array([0])
    want = float(reference.cross_entropy(x, y, reduction="none")[0])
    if impl is torch_impl:
        got = impl.cross_entropy(torch.tensor(x), torch.tensor(y), reduction="none").item()
        assert F.cross_entropy(torch.tensor(x), torch.tensor(y), reduction="none").item() == 0.0
    else:
        got = float(impl.cross_entropy(x, y, reduction="none")[0])
    assert want > 0 and abs(got - want) <= 2 * np.spacing(want)


BAD_INPUT = [
    ("target", dict(target=np.array([0, 1, 2])), ValueError, "target shape"),
    ("class range", dict(target=np.array([0, 1, 7, 2])), ValueError, r"\[0, 4\]"),
    ("weight", dict(weight=np.ones(3)), ValueError, "weight must have shape"),
    ("label_smoothing", dict(label_smoothing=-0.5), ValueError, "label_smoothing"),
    ("probability target", dict(target=np.full((4, 3), 0.2)), ValueError, "probability target shape"),
    ("reduction", dict(reduction="batchmean"), ValueError, "reduction"),
    ("input dtype", dict(input=np.ones((4, 5), dtype=np.int64)), TypeError, "input must be a floating"),
]


@pytest.mark.parametrize(("what", "override", "exc", "match"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
@pytest.mark.parametrize("impl", [numpy_impl, torch_impl], ids=["numpy", "torch"])
def test_bad_input_names_the_argument(impl, what, override, exc, match):
    args = dict(input=np.zeros((4, 5)), target=np.array([0, 1, 2, 3]), weight=None)
    args.update(override)
    if impl is torch_impl:
        args = {k: (torch.as_tensor(v) if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    with pytest.raises(exc, match=match):
        impl.cross_entropy(**args)


def test_check_accepts_any_callable_and_reports_errors_per_dtype():
    """A user callable that only works in float64 gets error rows (never skips) elsewhere."""
    def f64_only(input, target, **kw):
        if input.dtype != torch.float64:
            raise RuntimeError("only float64")
        return F.cross_entropy(input, target, **kw)

    report = check(f64_only, "cross_entropy", "torch", cases=["basic_mean", "huge_1e4_none"])
    verdicts = {(r.dtype, r.verdict) for r in report.results}
    assert ("float64", "conforms") in verdicts and ("float32", "error") in verdicts
    assert not report.passes()
    assert any("RuntimeError: only float64" in r.detail for r in report.results if r.verdict == "error")


def test_optax_cross_entropy_through_the_jax_backend():
    pytest.importorskip("optax")
    impl = next(i for i in catalog.implementations("cross_entropy") if i.framework == "jax")
    report = catalog.run(impl, dtypes=["float32"])  # jax traces every shape × dtype: keep it to one dtype
    measured = [r for r in report.results if r.scored]
    assert measured and all(r.verdict in ("conforms", "tail") for r in measured), [
        r.detail for r in measured if r.verdict not in ("conforms", "tail")][:3]
    assert any(r.quantity == "grad:input" for r in measured)  # jax.vjp gradients were compared
