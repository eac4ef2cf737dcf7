"""asv: softmax cross-entropy speed (forward + backward) and memory over commits (accuracy:
``bench_accuracy``).

Data is built in ``setup`` from a fixed seed (append-only: never change an existing dataset).
Imports are guarded so older commits without a module still load; unsupported combinations
raise ``NotImplementedError`` in ``setup``; CUDA timings synchronize.
"""

import numpy as np

try:
    import torch
    import torch.nn.functional as F

    from lossoracle.implementations import numpy_impl, torch_impl
except ImportError:  # an old commit, or no torch
    torch = None

SHAPES = ["4096x10", "256x1000"]
IMPLS = ["ours-torch", "torch.nn.functional", "ours-numpy"]
DEVICES = ["cpu", "cuda"]


def _data(shape: str):
    n, c = map(int, shape.split("x"))
    rng = np.random.default_rng(20261125)
    return rng.standard_normal((n, c)).astype(np.float32) * 3, rng.integers(0, c, n)


class CrossEntropy:
    params = (IMPLS, SHAPES, DEVICES)
    param_names = ["impl", "shape", "device"]
    timeout = 120

    def setup(self, impl, shape, device):
        if torch is None or (device == "cuda" and not torch.cuda.is_available()):
            raise NotImplementedError
        if impl == "ours-numpy" and device == "cuda":
            raise NotImplementedError
        torch.set_num_threads(1)
        x, y = _data(shape)
        if impl == "ours-numpy":
            self.x, self.y = x, y
            self.run = self._numpy
            return
        self.x = torch.tensor(x, device=device, requires_grad=True)
        self.y = torch.tensor(y, device=device)
        self.fn = torch_impl.cross_entropy if impl == "ours-torch" else F.cross_entropy
        self.device = device
        self.run = self._torch

    def _numpy(self):
        numpy_impl.cross_entropy(self.x, self.y)
        numpy_impl.cross_entropy_grad(np.float32(1), self.x, self.y)

    def _torch(self):
        self.x.grad = None
        self.fn(self.x, self.y).backward()
        if self.device == "cuda":
            torch.cuda.synchronize()

    def time_forward_backward(self, impl, shape, device):
        self.run()

    def peakmem_forward_backward(self, impl, shape, device):
        self.run()
