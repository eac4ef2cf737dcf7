"""The native row kernels of the softmax family (``implementations/native/softmax.cpp``): against the
oracle on every catalogue case and on hypothesis draws (every dtype they serve), against the eager
fallback on large inputs with ties, confident rows and non-finite rows, and two mutants of the C++
source the oracle must catch. Skipped where no extension can be built (the eager kernels then run:
``LOSSORACLE_COMPILE=0`` is the same path, covered by the other tests)."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lossoracle import catalog, specs, strategies
from lossoracle.spec import Case
from lossoracle.implementations import compiled, native, softmax_torch

from test_conformance import _per_element_failures

DTYPES = ["float16", "bfloat16", "float32"]
LOSSES = ["log_softmax", "softmax"]


@pytest.fixture(scope="module")
def ext():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(compiled.ENABLED, "on", True)
        mod = native.module("softmax")
    if mod is None:
        pytest.skip("the native softmax kernels cannot be built here")
    return mod


class _Counting:
    """The extension's functions, counting their calls (the tests must show the native kernels ran)."""

    def __init__(self, mod) -> None:
        self.mod, self.calls = mod, collections.Counter()

    def __getattr__(self, name):
        fn = getattr(self.mod, name)

        def call(*args):
            self.calls[name] += 1
            return fn(*args)

        return call


def _route(monkeypatch, mod) -> _Counting:
    """Every CPU input of ours through ``mod`` (a size threshold of one element)."""
    counting = _Counting(mod)
    monkeypatch.setitem(compiled.ENABLED, "on", True)
    monkeypatch.setattr(softmax_torch, "_COMPILE_MIN_NUMEL", 1)
    monkeypatch.setattr(softmax_torch.native, "module",
                        lambda name: counting if name == "softmax" and compiled.ENABLED["on"] else None)
    return counting


def _ours(loss: str):
    return next(i for i in catalog.implementations(loss) if i.ours and i.framework == "torch")


def _failures(report) -> list[str]:
    bad = [f"{r.case} {r.dtype} {r.quantity}: {r.verdict} {r.detail}" for r in report.results
           if r.verdict != "conforms"]
    return bad + _per_element_failures(report)


@pytest.mark.slow  # the extension's first build: ~30 s
@pytest.mark.parametrize("loss", LOSSES)
def test_native_kernels_conform_on_every_case(monkeypatch, ext, loss):
    """Every catalogue case and dtype the kernels serve: conforms, faithful where well conditioned,
    stable everywhere (the bar of ours)."""
    counting = _route(monkeypatch, ext)
    report = catalog.run(_ours(loss), isolate=False, devices=["cpu"], dtypes=DTYPES)
    assert counting.calls["forward"] and counting.calls[f"{loss}_backward"], "the native kernels did not run"
    failures = _failures(report)
    assert not failures, "\n".join(failures[:10])


@pytest.mark.parametrize("loss", LOSSES)
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_native_kernels_are_faithful_on_hypothesis_inputs(ext, loss, data):
    spec = specs.get(loss)
    grid = data.draw(st.sampled_from(["half", "float32"]), label="grid")
    case = data.draw(strategies.spec_cases(spec, grid))
    with pytest.MonkeyPatch.context() as mp:
        counting = _route(mp, ext)
        report = catalog.run(_ours(loss), cases=[case], isolate=False, devices=["cpu"], dtypes=DTYPES)
    assert counting.calls["forward"], "the native kernels did not run"
    assert any(r.scored for r in report.results), f"nothing scored on {case.inputs} {case.params}"
    failures = _failures(report)
    assert not failures, f"{case.inputs} {case.params}: " + "\n".join(failures[:5])


def _logits(dtype: torch.dtype) -> torch.Tensor:
    """Large rows (C = 1003: a partial last vector) with the hard ones: a confident row (r ~ e^-40),
    tied maxima, a NaN, a +inf, a row of −inf, a −inf entry, a row of equal logits."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(256, 1003, generator=g, dtype=torch.float64) * 3
    x[0, 5] = 40.0
    x[1, :3] = 7.0
    x[1, 3:] = -1.0
    x[2, 7] = float("nan")
    x[3, 9] = float("inf")
    x[4] = -float("inf")
    x[5, 2] = -float("inf")
    x[6] = 0.25
    x[8:40] *= 8  # many rows with p > 1/2
    return x.to(dtype)


def _reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 ``log p`` and ``p`` of float32-exact rows without rounding ``1 + r`` (``torch.log_softmax`` in
    float64 would: a relative error 2^-53/r at the arg-max of a confident row)."""
    m = x.amax(-1, keepdim=True)
    d = x - m  # exact: float32 inputs in float64
    e = torch.exp(d)
    r = torch.where(d == 0, 0.0, e).sum(-1, keepdim=True) + ((d == 0).sum(-1, keepdim=True) - 1)
    return d - torch.log1p(r), e / (1 + r)


def _within(got: torch.Tensor, want: torch.Tensor, scale: torch.Tensor, u: float, tiny: float) -> bool:
    """``got`` equals ``want`` where that is not finite, else ``|got − want| ≤ 16u·scale + tiny``."""
    fin = want.isfinite()
    if not torch.equal(got[~fin].nan_to_num(0.0, 1.0, -1.0), want[~fin].nan_to_num(0.0, 1.0, -1.0)):
        return False
    return bool(((got - want).abs()[fin] <= 16 * u * scale[fin] + tiny).all())


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_native_matches_the_eager_fallback(monkeypatch, ext, loss, dtype):
    """Value and gradient against the eager kernels (``LOSSORACLE_COMPILE=0``), and both against float64
    within the same componentwise bound: ``16u·(|f| + c)`` for the value (``c`` its condition: the
    rounding of ``x − m``), ``16u·(|g| + q Σ|g|)`` for the log-softmax VJP and ``16u·q (|g| + Σ|g|q)``
    for softmax's (``q = p (1 + c)``: ``p`` and its perturbation; u of float32, the compute format, plus
    one rounding to the input's dtype; a few of its subnormal spacings absolute), NaN where the eager
    result is NaN."""
    dt = getattr(torch, dtype)
    x = _logits(dt)
    gen = torch.Generator().manual_seed(3)
    g = (torch.randn(x.shape, generator=gen) * torch.rand(x.shape[0], 1, generator=gen) * 4).to(dt)
    fn = getattr(softmax_torch, loss)

    def run():
        xr = x.clone().requires_grad_()
        y = fn(xr, -1)
        y.backward(g)
        return y.detach().double(), xr.grad.double()

    counting = _route(monkeypatch, ext)
    y_nat, g_nat = run()
    assert counting.calls["forward"] == 1 and counting.calls[f"{loss}_backward"] == 1
    monkeypatch.setitem(compiled.ENABLED, "on", False)
    y_eager, g_eager = run()
    assert counting.calls["forward"] == 1, "the eager run went native"

    xd, gd = x.double(), g.double()
    lsm, p = _reference(xd)
    # p's componentwise condition (the rounding of x − m): p_j (|x_j| + Σ p|x|); log p_j's is the bracket
    c = xd.abs().nan_to_num(0.0, 0.0, 0.0)
    c = c + (p * c).sum(-1, keepdim=True)
    q, ga = p + p * c, gd.abs()  # a bound on |p| and its perturbation, per u
    if loss == "log_softmax":
        want_y, want_g = lsm, gd - p * gd.sum(-1, keepdim=True)
        scale_y, scale_g = lsm.abs() + c, ga + q * ga.sum(-1, keepdim=True)
    else:
        want_y, want_g = p, p * (gd - (gd * p).sum(-1, keepdim=True))
        scale_y, scale_g = q, q * (ga + (ga * q).sum(-1, keepdim=True))
    info = torch.finfo(dt)
    u, tiny = 2.0**-24 + info.eps / 2, 64 * info.smallest_normal * info.eps
    nan = y_eager.isnan()
    assert torch.equal(y_nat.isnan(), nan) and torch.equal(g_nat.isnan(), g_eager.isnan())
    rows = ~nan.any(-1)  # the rows with no NaN: a NaN row is NaN in both
    for got_y, got_g in ((y_nat, g_nat), (y_eager, g_eager)):
        assert _within(got_y[rows], want_y[rows], scale_y[rows], u, tiny), f"value ({loss} {dtype})"
        assert _within(got_g[rows], want_g[rows], scale_g[rows], u, tiny), f"gradient ({loss} {dtype})"
    if loss == "log_softmax" and dtype != "float16":  # the confident row's arg-max: −log1p(r) ≈ −4e-13
        assert float(y_nat[0, 5]) != 0.0 and float(y_nat[0, 5]) == pytest.approx(float(want_y[0, 5]), rel=8 * u)


def _mutant(tmp_path_factory, name: str, edits: list[tuple[str, str]]):
    """``native/softmax.cpp`` with ``edits`` (each site found exactly once), built as its own extension."""
    from torch.utils.cpp_extension import load

    src = (Path(native.__file__).with_name("native") / "softmax.cpp").read_text()
    for old, new in edits:
        assert src.count(old) == 1, f"the mutation site of {name} is gone: {old}"
        src = src.replace(old, new)
    path = tmp_path_factory.mktemp("native") / f"softmax_{name}.cpp"
    path.write_text(src)
    capability = torch.backends.cpu.get_cpu_capability()
    flags = native._CAPABILITY_FLAGS.get(capability, ["-DCPU_CAPABILITY=DEFAULT"])
    return load(f"lossoracle_mutant_softmax_{name}_{capability.lower()}", [str(path)],
                extra_cflags=["-O3", "-fno-math-errno", *flags])


# Confident rows with r = Σ_{j≠k} e^{x_j − m} between 2^-126 and 2^-24 (the catalogue's dominant_by_1e3 has
# r = e^-1000, zero in every format, where 1 + r and log1p r agree)
CONFIDENT = Case("confident_rows", {"input": np.array([[30.0, 0.0, -1.0, 3.0], [2.0, 60.0, 1.0, 0.5]])},
                 {"dim": -1})

MUTANTS = {
    # log p = d − log(fl32(1 + r)): the rounding the kernel exists to avoid (confident rows)
    "one_plus_r": [("return static_cast<float>(std::log1p(r));",
                    "return static_cast<float>(std::log(static_cast<double>(1.0f + static_cast<float>(r))));")],
    # the masked sum, taken everywhere, without the count of the other tied maxima
    "no_ties": [("return s.total() + static_cast<double>(ties - 1);",
                 "return s.total() + 0.0 * static_cast<double>(ties);"),
                ("if (!EXP0_IS_ONE) return row_r_masked(x, m, C, e);", "return row_r_masked(x, m, C, e);")],
}


@pytest.mark.slow  # one build per mutant: ~30 s each
@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutated_native_kernels_are_caught(monkeypatch, tmp_path_factory, ext, name):
    counting = _route(monkeypatch, _mutant(tmp_path_factory, name, MUTANTS[name]))
    cases = [*specs.get("log_softmax").cases(), CONFIDENT]
    report = catalog.run(_ours("log_softmax"), cases=cases, isolate=False, devices=["cpu"], dtypes=["float32"])
    assert counting.calls["forward"]
    assert _failures(report), f"the {name} mutant of the native kernel was not caught"
