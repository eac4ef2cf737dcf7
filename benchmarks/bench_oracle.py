"""asv: oracle throughput — the mpmath value and vector-Jacobian product of every loss on its fixed
small input (``fixed.fixed_case``; uncached — the oracles' caches emptied before each timing — as
the validator runs a case it has not seen), as time and as floating input elements per second."""

import time

import numpy as np

try:
    from lossoracle import mpfuncs, specs
    from lossoracle.engine import exact_outputs

    from .fixed import fixed_case

    LOSSES = specs.names()
    # every timing cold: the oracles keep per-element work (value and VJP share it) in caches
    _clear = getattr(mpfuncs, "clear_caches", lambda: None)
except ImportError:  # an old commit
    LOSSES = []


class Oracle:
    params = (LOSSES,)
    param_names = ["loss"]
    timeout = 300

    def setup(self, loss):
        self.spec = specs.get(loss)
        self.case = fixed_case(loss)
        self.kwargs = {**self.spec.params, **self.case.params}
        self.inputs = dict(self.case.inputs)
        self.value = self.spec.oracle(**self.inputs, **self.kwargs)
        self.cot = np.ones(np.shape(self.value))

    def time_value(self, loss):
        _clear()
        self.spec.oracle(**self.inputs, **self.kwargs)

    def time_gradient(self, loss):
        if self.spec.gradient is None:
            raise NotImplementedError
        _clear()
        self.spec.gradient(self.cot, **self.inputs, **self.kwargs)

    def track_value_and_gradient_elements_per_second(self, loss):
        n = sum(a.size for a in self.inputs.values() if a is not None and a.dtype.kind == "f")
        best = float("inf")
        for _ in range(3):
            _clear()
            t0 = time.perf_counter()
            exact_outputs(self.spec, self.case)
            best = min(best, time.perf_counter() - t0)
        return n / best

    track_value_and_gradient_elements_per_second.unit = "elements/s"
