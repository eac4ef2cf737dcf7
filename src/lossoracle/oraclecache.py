"""Exact oracle outputs kept across runs, for the cases the frozen reference data does not hold
(cases above :data:`lossoracle.refdata.MAX_ELEMENTS` elements, and library conventions other than
the spec's own): a user cache ``$LOSSORACLE_CACHE/oracle/<loss>.jsonl`` (default
``~/.cache/lossoracle``; ``LOSSORACLE_CACHE=off`` disables it).

The oracle's result depends only on the mathematics, so it is stored, as the exact binary mpf
values (:func:`lossoracle.refdata.encode_mp`, never re-rounded), under a key that hashes
everything it depends on: the spec's name, the case's exact inputs and parameters, the
conventions, the mpmath version and the source of the oracle's module and of the shared mpmath
code (``mpfuncs``, ``reference/common.py``, ``floats``). Change any of them and the key changes:
a stale entry is never read.
"""

from __future__ import annotations

import hashlib
import inspect
import pathlib
from typing import Any

import mpmath
import numpy as np

from . import floats, mpfuncs
from .condcache import _digest, _source_hash, append_row, parse_row, read_new_rows, read_rows, user_dir

__all__ = ["key", "get", "put"]

_LOADED: dict[str, dict[str, bytes]] = {}
_WRITTEN: set[str] = set()  # keys this process stored (it keeps their values itself)


def _folder() -> pathlib.Path | None:
    conditioning = user_dir()
    return None if conditioning is None else conditioning.parent / "oracle"


def key(spec, case, conventions: dict) -> str:
    """The content key of one case's exact outputs (see the module docstring)."""
    oracle = pathlib.Path(inspect.getsourcefile(spec.oracle))
    files = [oracle, oracle.parent / "common.py", pathlib.Path(mpfuncs.__file__), pathlib.Path(floats.__file__)]
    code = tuple(_source_hash(str(f)) for f in files if f.exists())
    h = hashlib.sha256()
    _digest(h, {"spec": spec.name, "case": case.id, "inputs": dict(case.inputs), "params": dict(case.params),
                "conventions": dict(conventions), "mpmath": mpmath.__version__, "code": code})
    return h.hexdigest()[:32]


def _entries(spec_name: str) -> dict[str, bytes]:
    if spec_name not in _LOADED:
        folder = _folder()
        _LOADED[spec_name] = {} if folder is None else read_rows(folder / f"{spec_name}.jsonl")
    return _LOADED[spec_name]


def get(spec_name: str, k: str) -> tuple[Any, dict[str, Any]] | None:
    """The stored exact value and VJPs (as :func:`lossoracle.engine.exact_outputs` returns them), or None."""
    from .refdata import _mp_array

    entries = _entries(spec_name)
    if k not in entries and (folder := _folder()) is not None:  # computed meanwhile by another process?
        entries.update((n, row) for n, row in read_new_rows(folder / f"{spec_name}.jsonl").items()
                       if n not in _WRITTEN)
    line = entries.pop(k, None)  # read once per process: the engine keeps what it reads
    row = None if line is None else parse_row(line)
    if row is None:
        return None
    value = _mp_array(row["value"], tuple(row["shape"]))
    grads = {name: _mp_array(v, tuple(row["grad_shapes"][name])) for name, v in row["grads"].items()}
    return value, grads


def put(spec_name: str, k: str, value, grads: dict[str, Any]) -> None:
    """Append the exact outputs to the user cache (best effort)."""
    from .refdata import _exact

    row = {"key": k, "shape": list(np.shape(value)), "value": _exact(value),
           "grads": {name: _exact(v) for name, v in grads.items()},
           "grad_shapes": {name: list(np.shape(v)) for name, v in grads.items()}}
    _WRITTEN.add(k)
    append_row(_folder(), spec_name, row)
