"""asv: accuracy tracked next to speed — the max ULP error of every catalogued implementation
(ours and the libraries'), value and gradient, against the oracle on one fixed small input per
loss in float32 (the same engine as ``lossoracle check``, in this process). Generic over the
registry: a new loss or library is tracked without touching this file."""

try:
    from lossoracle import catalog, specs

    from .fixed import fixed_case

    IMPLEMENTATIONS = [i.name for i in catalog.implementations()]
except ImportError:  # an old commit
    catalog = specs = None
    IMPLEMENTATIONS = []


class Accuracy:
    params = (IMPLEMENTATIONS, ["value", "gradient"])
    param_names = ["implementation", "quantity"]
    timeout = 600

    def setup(self, implementation, quantity):
        impl = next((i for i in ([] if catalog is None else catalog.implementations()) if i.name == implementation),
                    None)
        if impl is None or impl.installed() is not None:
            raise NotImplementedError
        case = fixed_case(impl.loss, impl.accepts)
        self.results = [r for r in catalog.run(impl, dtypes=["float32"], cases=[case.id], isolate=False).results
                        if r.max_ulp is not None and r.quantity.startswith("grad") == (quantity == "gradient")]
        if not self.results:
            raise NotImplementedError

    def track_max_ulp_float32(self, implementation, quantity):
        return max(r.max_ulp for r in self.results)

    track_max_ulp_float32.unit = "ULP"
