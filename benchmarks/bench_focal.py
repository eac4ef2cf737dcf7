"""asv: sigmoid focal loss forward + backward — ours (fused) against the torchvision-style
composition, reusing the cases of ``benchmarks/focal_ratio.py`` (accuracy: ``bench_accuracy``)."""

try:
    import torch

    from .focal_ratio import available_variants, make_inputs
except ImportError:  # an old commit without the module, or no torch
    torch = None

SIZES = [2**16, 2**22]


class SigmoidFocal:
    params = (["ours", "composition", "torchvision"], SIZES, ["cpu", "cuda"])
    param_names = ["variant", "n", "device"]
    timeout = 300

    def setup(self, variant, n, device):
        if torch is None or (device == "cuda" and not torch.cuda.is_available()):
            raise NotImplementedError
        variants = available_variants()
        if variant not in variants:
            raise NotImplementedError
        torch.set_num_threads(1)
        self.step = variants[variant]
        self.x, self.y = make_inputs(n, device)
        self.step(self.x, self.y)  # warm-up (includes a one-off compile, if any)

    def time_forward_backward(self, variant, n, device):
        self.step(self.x, self.y)

    def peakmem_forward_backward(self, variant, n, device):
        self.step(self.x, self.y)
