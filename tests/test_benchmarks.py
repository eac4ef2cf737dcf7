"""The benchmark machinery (``benchmarks/``): every loss is benchmarked with no code of its own,
every baseline in the registry runs on its workload's inputs, the memory measurement sees a step's
buffers even where they reuse freed memory, the ratio table lands between the README's markers,
and the gate's decision (minimum statistics, factor) fails exactly on a slowdown beyond it.
No timing is asserted here: speed lives in the benchmarks."""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import sys

import numpy as np
import pytest

from lossoracle import specs

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repository root: benchmarks/
from benchmarks import baselines, gate, harness, measure, ratios  # noqa: E402


def _small(w: baselines.Workload) -> baselines.Workload:
    """The workload at test size: axis 1 (the class axis) kept, every other axis at most 8."""
    shape = tuple(n if i == 1 else min(n, 8) for i, n in enumerate(w.shape))
    kinds = dict(w.kinds)
    if "*" in kinds:  # a tiled catalogue case: tile once
        tag, case, _ = kinds["*"].split(":")
        kinds["*"] = f"{tag}:{case}:1"
    return dataclasses.replace(w, shape=shape, kinds=kinds)


def test_every_loss_has_a_workload_and_every_baseline_a_loss():
    covered = {w.loss for w in harness.workloads()}
    assert covered == set(specs.names())
    assert set(baselines.BASELINES) <= set(specs.names())
    keys = [w.key for w in harness.workloads()]
    assert len(keys) == len(set(keys)), "asv keys on the workload key: each must be unique"


def test_a_loss_the_registry_does_not_name_gets_a_catalogue_workload(monkeypatch):
    monkeypatch.setattr(harness, "WORKLOADS", tuple(w for w in baselines.WORKLOADS if w.loss != "softmax"))
    w = next(w for w in harness.workloads() if w.loss == "softmax")
    assert w.label == "catalogue" and math.prod(w.shape) >= harness.FALLBACK_ELEMENTS // 2
    v = harness.variant(w, "ours", "float32")
    assert tuple(v.forward_backward().shape) == w.shape


@pytest.mark.parametrize("w", [_small(w) for w in harness.workloads()], ids=lambda w: w.key)
def test_ours_and_the_baseline_run_on_the_workload(w):
    """Each variant's forward + backward runs on the workload's (shrunk) inputs with its parameters;
    a missing baseline is a registry decision, never an error."""
    ran = []
    for name in ("ours", "baseline"):
        try:
            v = harness.variant(w, name, "float32")
        except NotImplementedError as e:
            assert name == "baseline" and (w.loss not in baselines.BASELINES or "not installed" in str(e))
            continue
        out = v.forward_backward()
        assert np.all(np.isfinite(out.numpy())), (name, out)
        for arg in harness.grad_args(w):
            assert v.inputs[arg].grad is not None, (name, arg)
        ran.append(name)
    assert "ours" in ran


def test_inputs_follow_their_kinds():
    w = next(w for w in baselines.WORKLOADS if w.key == "cross_entropy-1024x1000")
    a = harness.arrays(dataclasses.replace(w, shape=(16, 7)))
    assert a["input"].shape == (16, 7) and a["target"].shape == (16,)
    assert a["target"].dtype == np.int64 and a["target"].min() >= 0 and a["target"].max() < 7
    d = harness.arrays(dataclasses.replace(next(w for w in baselines.WORKLOADS if w.loss == "entropy"), shape=(4, 9)))
    assert np.allclose(d["p"].sum(-1), 1.0) and d["p"].min() >= 0
    b = harness.arrays(dataclasses.replace(next(w for w in baselines.WORKLOADS if w.loss == "box_iou"), shape=(32, 4)))
    for boxes in b.values():
        assert np.all(boxes[:, 2:] >= boxes[:, :2])


def test_peak_rise_sees_a_buffer_that_reuses_freed_memory(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", measure.HIGH)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", measure.HIGH)
    n = 2**23  # 64 MiB of float64

    def step():
        a = np.ones(n)
        a += 1

    step()  # warm: the freed buffer may stay in the heap
    assert measure.peak_rise(step) >= 0.9 * n * 8
    assert measure.peak_rise(lambda: None) < 0.1 * n * 8


def test_ratio_table_goes_between_the_readme_markers(tmp_path):
    row = {"loss": "softmax", "workload": "softmax-4x5", "label": "", "shape": [4, 5], "dtype": "float32",
           "device": "cpu", "baseline": "torch.nn.functional.softmax", "rounds": 3, "floor_read_s": 1e-6,
           "floor_exp_s": 2e-6, "ours_median_s": 3e-3, "ours_min_s": 2e-3, "baseline_median_s": 1e-3,
           "baseline_min_s": 1e-3, "ours_peak_bytes": 2**20, "baseline_peak_bytes": 0}
    text = ratios.table([row])
    assert "| softmax | f32 | 4×5 | 3 | torch.nn.functional.softmax | 1 | 3.00× | 2.00× |" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{ratios.BEGIN}\nold table\n{ratios.END}\nafter\n")
    ratios.write_readme(text, readme)
    out = readme.read_text()
    assert "old table" not in out and text in out and out.startswith("before\n") and out.endswith("after\n")


def _asv_result(tmp_path, name: str, samples: list[list[float] | None]) -> str:
    """An asv 0.6 result file with one parameterised ``time_`` benchmark (and a peakmem one)."""
    cols = ["result", "params", "version", "started_at", "duration", "stats_ci_99_a", "stats_ci_99_b",
            "stats_q_25", "stats_q_75", "stats_number", "stats_repeat", "samples", "profile"]
    params = [["'a'", "'b'", "'c'"]]
    results = [None if s is None else float(np.median(s)) for s in samples]
    d = {"result_columns": cols, "results": {
        "bench_losses.Loss.time_forward_backward": [results, params, "v", 0, 1, None, None, None, None, None, None,
                                                    samples],
        "bench_losses.Loss.peakmem_forward_backward": [[1e9, 1e9, 1e9], params, "v"]}}
    path = tmp_path / name
    path.write_text(json.dumps(d))
    return str(path)


def test_gate_fails_on_a_slowdown_beyond_the_factor_in_minimum_statistics(tmp_path):
    base = gate.minima(_asv_result(tmp_path, "base.json", [[1.0, 1.1, 3.0], [1.0, 1.0], None]))
    assert base == {"bench_losses.Loss.time_forward_backward('a')": 1.0,
                    "bench_losses.Loss.time_forward_backward('b')": 1.0}  # skipped / peakmem: not compared
    # 'a': a noisy median (2.9 vs 1.1) but the same minimum — not a slowdown; 'b': 1.6× slower
    head = gate.minima(_asv_result(tmp_path, "head.json", [[1.05, 2.9, 3.0], [1.6, 1.7], [1.0]]))
    rows, slower = gate.compare(base, head, 1.5)
    assert slower and [round(r[3], 2) for r in rows] == [1.05, 1.6]
    rows, slower = gate.compare(base, head, 1.7)
    assert not slower
