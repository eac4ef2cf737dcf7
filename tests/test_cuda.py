"""CUDA: our torch implementations conform on the GPU too, and agree with the CPU.

Skipped cleanly without a CUDA device (CI has none); run on a lent GPU with
``python -m pytest -q tests/test_cuda.py``.
"""

import numpy as np
import pytest
import torch

from lossoracle import catalog

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

OURS_TORCH = [pytest.param(i, id=i.loss) for i in catalog.implementations() if i.ours and i.framework == "torch"]


@pytest.mark.parametrize("impl", OURS_TORCH)
def test_ours_conform_on_cuda(impl):
    report = catalog.run(impl, devices=["cuda"])
    bad = [r for r in report.results if r.verdict not in ("conforms", "skipped")]
    assert not bad, "\n".join(f"{r.case} {r.dtype} {r.quantity}: {r.detail}" for r in bad[:10])


@pytest.mark.parametrize("impl", OURS_TORCH)
def test_cuda_matches_cpu_closely(impl):
    """Consistency, not accuracy: both within 4 ULP-equivalents of each other (rtol and atol given)."""
    cpu = {(r.case, r.dtype, r.quantity): r for r in catalog.run(impl, devices=["cpu"]).results}
    cuda = {(r.case, r.dtype, r.quantity): r for r in catalog.run(impl, devices=["cuda"]).results}
    assert cpu.keys() == cuda.keys()
    for key, r in cuda.items():
        if r.max_ulp is not None and cpu[key].max_ulp is not None and np.isfinite(cpu[key].max_ulp):
            assert r.max_ulp <= max(2 * cpu[key].max_ulp, cpu[key].budget or 0) + 1, key
