"""asv: every loss's forward and forward + backward time and peak memory, ours (torch and NumPy)
and its baseline in the same suite, by workload (shape), dtype and device.

Generic over the registry: the workloads and baselines are ``benchmarks/baselines.py``'s, and a
loss it does not name gets a workload from its catalogue (``harness.workloads``) — a new loss is
benchmarked with no new code. Unsupported combinations (no baseline, NumPy in bfloat16 or on
CUDA, no CUDA device) raise ``NotImplementedError`` in ``setup`` (asv skips them). Launch asv
with one thread and the malloc thresholds high (README, "CI and benchmarks").
"""

try:
    import torch

    from . import harness

    WORKLOADS = [w.key for w in harness.workloads()]
except ImportError:  # an old commit, or no torch
    torch = harness = None
    WORKLOADS = []

DTYPES = ["float32", "float64", "float16", "bfloat16"]
IMPLS = ["ours", "baseline", "ours-numpy"]
DEVICES = ["cpu", "cuda"]


class Loss:
    params = (WORKLOADS, DTYPES, IMPLS, DEVICES)
    param_names = ["workload", "dtype", "impl", "device"]
    timeout = 600
    warmup_time = 0.1

    def setup(self, workload, dtype, impl, device):
        if harness is None or (device == "cuda" and not torch.cuda.is_available()):
            raise NotImplementedError
        torch.set_num_threads(1)
        self.v = harness.variant(harness.workload(workload), impl, dtype, device)
        try:
            self.v.forward_backward()  # warm-up (a one-off compile, if any)
        except (RuntimeError, TypeError, NotImplementedError) as e:
            if impl != "baseline":
                raise  # ours failing is a failed benchmark, never a skip
            raise NotImplementedError(f"the baseline refuses {workload} in {dtype}: {e}") from None

    def time_forward(self, workload, dtype, impl, device):
        out = self.v.forward()
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    def time_forward_backward(self, workload, dtype, impl, device):
        self.v.forward_backward()

    def peakmem_forward_backward(self, workload, dtype, impl, device):
        self.v.forward_backward()


class Floor:
    """The memory floors of each workload's inputs: one pass reading them, one ``exp`` pass."""

    params = (WORKLOADS, DTYPES, DEVICES)
    param_names = ["workload", "dtype", "device"]

    def setup(self, workload, dtype, device):
        if harness is None or (device == "cuda" and not torch.cuda.is_available()):
            raise NotImplementedError
        torch.set_num_threads(1)
        w = harness.workload(workload)
        self.inputs = [t.detach() for t in harness.make_inputs(w, dtype, device).values()]
        self.x = next(t for t in self.inputs if t.is_floating_point()).clamp(-10, 10)
        self.buf = torch.empty_like(self.x)

    def time_read_inputs(self, workload, dtype, device):
        for t in self.inputs:
            t.sum()
        if device == "cuda":
            torch.cuda.synchronize()

    def time_exp(self, workload, dtype, device):
        torch.exp(self.x, out=self.buf)
        if device == "cuda":
            torch.cuda.synchronize()
