"""Softmax cross-entropy family: the cancellation-free form, bad input, the check API on a user callable
(the ecosystem's verdicts are data: ``tests/expected/softmax.toml``)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lossoracle import catalog, check
from lossoracle.implementations import numpy_impl, torch_impl
from lossoracle import reference


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


def test_jax_backend_compares_gradients():
    """optax's cross-entropy goes through the JAX backend: its ``jax.vjp`` gradients are scored (its
    verdicts are data, ``tests/expected/softmax.toml``)."""
    pytest.importorskip("optax")
    impl = next(i for i in catalog.implementations("cross_entropy") if i.framework == "jax")
    report = catalog.run(impl, dtypes=["float32"], cases=["basic_mean", "huge_1e4_none"])
    assert any(r.quantity == "grad:input" and r.scored for r in report.results)


@pytest.mark.slow  # a compilation per dtype and shape class: minutes
@pytest.mark.parametrize("loss", ["log_softmax", "softmax"])
def test_compiled_row_kernels_conform_on_every_case(monkeypatch, loss):
    """The compiled kernels (large CPU inputs where the native kernels cannot be built: the log-softmax
    rows, the softmax backward's row loop) run here on every catalogue case and dtype: the same verdicts
    as ours must reach (conforms; faithful where well conditioned, stable everywhere)."""
    from lossoracle.implementations import compiled, softmax_torch

    monkeypatch.setattr(softmax_torch, "_COMPILE_MIN_NUMEL", 1)
    monkeypatch.setitem(compiled.ENABLED, "on", True)
    monkeypatch.setattr(softmax_torch.native, "module", lambda name: None)  # as where no extension builds
    impl = next(i for i in catalog.implementations(loss) if i.ours and i.framework == "torch")
    dtypes = ["float16", "float32"] + (["float64"] if loss == "softmax" else [])  # bfloat16: float16's code
    report = catalog.run(impl, isolate=False, devices=["cpu"], dtypes=dtypes)
    assert compiled.ENABLED["on"], "torch.compile failed"
    kernels = [softmax_torch._ROWS[loss == "log_softmax"][0]]
    kernels += [softmax_torch._SM_GRAD_ROWS] if loss == "softmax" else []
    assert all(k.variants for k in kernels), "the compiled kernels did not run"
    bad = [r for r in report.results if r.verdict != "conforms"]
    assert not bad, "\n".join(f"{r.case} {r.dtype} {r.quantity}: {r.verdict} {r.detail}" for r in bad[:10])
    from test_conformance import _per_element_failures

    failures = _per_element_failures(report)
    assert not failures, "\n".join(failures[:10])
