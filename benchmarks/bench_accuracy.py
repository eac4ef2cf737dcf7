"""asv: accuracy tracked next to speed — the max ULP error of our implementations over every
registered loss's cases, value and gradient, in float32 (the same engine as ``lossoracle check``).
Generic over the registry: a new loss is tracked without touching this file."""

try:
    from lossoracle import catalog, specs

    LOSSES = specs.names()
except ImportError:  # an old commit
    catalog, LOSSES = None, []

FRAMEWORKS = ["torch", "numpy"]


class Accuracy:
    params = (LOSSES, FRAMEWORKS)
    param_names = ["loss", "framework"]
    timeout = 600

    def setup(self, loss, framework):
        entries = [] if catalog is None else [
            i for i in catalog.implementations(loss) if i.ours and i.framework == framework]
        if not entries:
            raise NotImplementedError
        self.results = catalog.run(entries[0], dtypes=["float32"]).results

    def _max(self, gradient: bool) -> float:
        return max((r.max_ulp for r in self.results if r.max_ulp is not None
                    and r.quantity.startswith("grad") == gradient), default=0.0)

    def track_max_ulp_value_float32(self, loss, framework):
        return self._max(False)

    def track_max_ulp_gradient_float32(self, loss, framework):
        return self._max(True)

    track_max_ulp_value_float32.unit = "ULP"
    track_max_ulp_gradient_float32.unit = "ULP"
