"""Frozen reference data: every spec's cases with the oracle's exact values, as text in git.

One deterministic command writes ``reference/data/<loss>.txt``::

    python -m lossoracle.refdata            # every loss
    python -m lossoracle.refdata --loss kl_div

Each file starts with ``#`` provenance lines (oracle module, mpmath version, working precision,
git revision of the generator) followed by one JSON object per case: the inputs as ``float.hex``
strings (exact, so one row serves every dtype the case is exact in), the parameters, and the value
and each gradient (VJP with the checker's fixed cotangent) as the oracle's exact binary result
(``"0x<mantissa>p<exponent>"``, :func:`encode_mp`: the 192+-bit mpf itself, never re-rounded).
The checker reads these rows instead of running mpmath (:func:`frozen`) for every case they hold
with the spec's own conventions; a test regenerates a sample of rows from the stored inputs and
requires them identical, which proves the files current.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import mpmath
import numpy as np

from . import reference, specs
from .engine import exact_outputs
from .mpfuncs import ORACLE_PREC
from .spec import Case, Spec

MAX_ELEMENTS = 256  # keep the files small: larger generated cases are covered by the generator
DATA_DIR = pathlib.Path(reference.__file__).resolve().parent / "data"  # package data in a wheel


def encode_array(a: np.ndarray | None) -> dict[str, Any] | None:
    if a is None:
        return None
    values = [float(v).hex() for v in a.reshape(-1).tolist()] if a.dtype.kind == "f" else a.reshape(-1).tolist()
    return {"dtype": a.dtype.name, "shape": list(a.shape), "values": values}


def decode_array(d: dict[str, Any] | None) -> np.ndarray | None:
    if d is None:
        return None
    dtype = np.dtype(d["dtype"])
    values = [float.fromhex(v) for v in d["values"]] if dtype.kind == "f" else d["values"]
    return np.array(values, dtype=dtype).reshape(d["shape"])


def encode_mp(v) -> str:
    """The exact binary value of an mpf: ``"-0x1fp-3"`` (man·2^exp), or ``inf``/``-inf``/``nan``."""
    v = mpmath.mpf(v) if not isinstance(v, mpmath.mpf) else v
    if not mpmath.isfinite(v):
        return str(v)
    sign, man, exp, _ = v._mpf_
    return f"{'-' if sign else ''}0x{int(man):x}p{exp}"


def decode_mp(s: str) -> mpmath.mpf:
    """The mpf :func:`encode_mp` wrote, exactly."""
    if "p" not in s:
        return mpmath.mpf(s)
    head, exp = s.split("p")
    man = int(head, 16)
    with mpmath.mp.workprec(max(man.bit_length(), 53)):
        return mpmath.ldexp(mpmath.mpf(man), int(exp))


def _exact(values) -> list[str]:
    return [encode_mp(v) for v in np.asarray(values, dtype=object).reshape(-1).tolist()]


def _mp_array(strings: list[str], shape) -> np.ndarray:
    out = np.empty(len(strings), dtype=object)
    out[:] = [decode_mp(s) for s in strings]
    return out.reshape(shape) if shape else out[0]


def rows(spec: Spec) -> Iterator[dict[str, Any]]:
    """The data rows of ``spec``: its non-raising cases of at most :data:`MAX_ELEMENTS` elements."""
    for case in spec.cases():
        if case.raises is not None or any(a is not None and a.size > MAX_ELEMENTS for a in case.inputs.values()):
            continue
        value, grads = exact_outputs(spec, case)
        row = {"case": case.id, "inputs": {k: encode_array(v) for k, v in case.inputs.items()},
               "params": dict(case.params), "shape": list(np.shape(value)), "value": _exact(value)}
        row.update({f"grad:{k}": _exact(v) for k, v in sorted(grads.items())})
        yield row


def case_of(row: dict[str, Any]) -> Case:
    """The case a data row was generated from."""
    return Case(row["case"], {k: decode_array(v) for k, v in row["inputs"].items()}, row["params"])


def _revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=DATA_DIR.parent, check=False)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def write(spec: Spec, directory: pathlib.Path = DATA_DIR) -> pathlib.Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{spec.name}.txt"
    header = [f"# lossoracle reference data for {spec.name}",
              f"# oracle: {spec.oracle.__module__}.{spec.oracle.__qualname__}; gradient: VJP with the fixed cotangent",
              f"# mpmath {mpmath.__version__}, {ORACLE_PREC}-bit working precision, doubled until float64 "
              "rounding is stable",
              f"# generator: python -m lossoracle.refdata --loss {spec.name} (git {_revision()})",
              "# values as exact binary mpf (0x<mantissa>p<exponent>); inputs as float.hex"]
    lines = header + [json.dumps(r, sort_keys=True) for r in rows(spec)]
    path.write_text("\n".join(lines) + "\n")
    return path


def read(path: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line and not line.startswith("#")]


_FROZEN: dict[str, dict[str, dict[str, Any]]] = {}


def frozen(spec: Spec, case: Case) -> tuple[Any, dict[str, np.ndarray]] | None:
    """The stored exact value and VJPs of ``case`` (the spec's own conventions), or None when the
    data does not hold this case with these very inputs and parameters."""
    if spec.name not in _FROZEN:
        path = DATA_DIR / f"{spec.name}.txt"
        _FROZEN[spec.name] = {r["case"]: r for r in read(path)} if path.exists() else {}
    row = _FROZEN[spec.name].get(case.id)
    if row is None or row["params"] != json.loads(json.dumps(dict(case.params))):
        return None
    if row["inputs"] != {k: encode_array(v) for k, v in case.inputs.items()}:
        return None
    value = _mp_array(row["value"], tuple(row["shape"]))
    grads = {k.split(":", 1)[1]: _mp_array(v, np.shape(case.inputs[k.split(":", 1)[1]]))
             for k, v in row.items() if k.startswith("grad:")}
    return value, grads


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lossoracle.refdata", description=__doc__.splitlines()[0])
    p.add_argument("--loss", action="append", help="only this loss (repeatable)")
    p.add_argument("--out", type=pathlib.Path, default=DATA_DIR)
    args = p.parse_args(argv)
    for name in args.loss or specs.names():
        print(write(specs.get(name), args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
