"""The fixed small input of each loss that the accuracy and oracle suites use: its first
generated case valid in float32 (else its first valid case), from the catalogue — for an
implementation, the first such case inside its documented interface (``accepts``)."""

from __future__ import annotations

from collections.abc import Callable


def fixed_case(loss: str, accepts: Callable | None = None):
    from lossoracle import specs

    valid = [c for c in specs.get(loss).cases() if c.raises is None and "float32" in c.dtypes()
             and (accepts is None or accepts(c) is None)]
    if not valid:
        raise NotImplementedError(f"{loss}: no float32 case inside the interface")
    return next((c for c in valid if c.id.startswith("random")), valid[0])
