"""Condition numbers kept across runs: a shipped store in ``reference/data/conditioning/`` and a
user cache (``$LOSSORACLE_CACHE``, default ``~/.cache/lossoracle``).

Differencing the oracle (:mod:`lossoracle.conditioning`) costs O(n²) mpmath work per case, and
the grading asks for it only where an element is beyond its ULP budget — which third-party
implementations are, case after case. The result depends only on the spec's mathematics, so it
is stored under a key that hashes everything it depends on: the spec's name, the case's exact
inputs and parameters, the conventions, the part (value or gradients), the cotangent, the
source of the module that defines the oracle and of the conditioning code. Change any of them
and the key changes: a stale entry is never read, only left behind.

Entries are JSON lines ``{"key": ..., "cond": {quantity: [...]}, "scale": {...}}`` appended as they
are computed; ``python -m lossoracle.condcache`` copies the user cache's entries for the current
code into the shipped store, so a fresh checkout (CI) grades without recomputing.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import pathlib
import re
from functools import lru_cache
from typing import Any

import numpy as np

from . import conditioning as _conditioning
from .conditioning import Conditioning

__all__ = ["key", "get", "put", "shipped_dir", "user_dir", "ship", "read_rows", "read_new_rows", "parse_row",
           "append_row"]


def shipped_dir() -> pathlib.Path:
    """``reference/data/conditioning`` (package data in a wheel)."""
    from . import reference

    return pathlib.Path(reference.__file__).resolve().parent / "data" / "conditioning"


def user_dir() -> pathlib.Path | None:
    """The user cache folder (None when ``LOSSORACLE_CACHE=off``)."""
    root = os.environ.get("LOSSORACLE_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "lossoracle"))
    return None if root == "off" else pathlib.Path(root) / "conditioning"


@lru_cache(maxsize=None)
def _source_hash(path: str) -> str:
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()[:16]


def _digest(h, value: Any) -> None:
    if isinstance(value, np.ndarray):
        h.update(f"{value.dtype.str}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, dict):
        for k in sorted(value):
            h.update(repr(k).encode())
            _digest(h, value[k])
    else:
        h.update(repr(value).encode())


def key(spec, case, conventions: dict, part: str, cotangent: np.ndarray) -> str:
    """The content key of one conditioning result (see the module docstring)."""
    h = hashlib.sha256()
    code = (_source_hash(inspect.getsourcefile(spec.oracle)), _source_hash(inspect.getsourcefile(_conditioning)))
    _digest(h, {"spec": spec.name, "case": case.id, "inputs": dict(case.inputs), "params": dict(case.params),
                "conventions": dict(conventions), "part": part, "cotangent": np.asarray(cotangent), "code": code})
    return h.hexdigest()[:32]


_LOADED: dict[str, dict[str, bytes]] = {}


def _folders() -> list[pathlib.Path]:
    return [shipped_dir()] + ([d] if (d := user_dir()) is not None else [])


_OFFSETS: dict[pathlib.Path, int] = {}  # how far each JSON-lines file has been read in this process


def read_rows(path: pathlib.Path) -> dict[str, bytes]:
    """The rows of a JSON-lines store by key, unparsed (a later row wins; none if the file is missing)."""
    _OFFSETS.pop(path, None)
    return read_new_rows(path)


# every row is written as ``json.dumps({"key": ..., ...})``: its key is read without parsing the row
_KEY = re.compile(rb'\{"key": "([0-9A-Za-z_]*)"[,}]')


def read_new_rows(path: pathlib.Path) -> dict[str, bytes]:
    """The rows appended to ``path`` since this process last read it (by :func:`read_rows` or
    here), by key, each its JSON line unparsed: a store holds many more rows (other versions of
    the code, other cases) than a run asks for, so only a row asked for is parsed
    (:func:`parse_row`). Other processes of the run (``--jobs``, forked workers) append what they
    compute, and a row is then read instead of computed again. Only complete lines are taken; a
    line another process is still writing is read next time."""
    out: dict[str, bytes] = {}
    start = _OFFSETS.get(path, 0)
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
    except OSError:  # missing: nothing yet
        return out
    end = data.rfind(b"\n") + 1
    _OFFSETS[path] = start + end
    for line in data[:end].splitlines():
        found = _KEY.match(line)
        if found:
            out[found.group(1).decode()] = line
            continue
        row = parse_row(line)  # written otherwise (by hand?): parsed for its key
        if isinstance(row, dict) and isinstance(row.get("key"), str):
            out[row["key"]] = line
    return out


def parse_row(line: bytes) -> dict | None:
    """A row read by :func:`read_rows`, parsed; None for a line cut short by an interrupted run
    (the entry is then computed again, never guessed)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


def append_row(folder: pathlib.Path | None, spec_name: str, row: dict) -> None:
    """Append ``row`` to ``folder/<spec_name>.jsonl`` in one write (best effort: a cache never
    fails a run; one ``O_APPEND`` write keeps rows of processes writing side by side whole)."""
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / f"{spec_name}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(row) + "\n").encode())
        finally:
            os.close(fd)
    except OSError:
        pass


def _entries(spec_name: str) -> dict[str, bytes]:
    if spec_name not in _LOADED:
        rows: dict[str, bytes] = {}
        for folder in _folders():  # the user cache after the shipped store: its rows win
            rows.update(read_rows(folder / f"{spec_name}.jsonl"))
        _LOADED[spec_name] = rows
    return _LOADED[spec_name]


def get(spec_name: str, k: str, shapes: dict[str, tuple]) -> Conditioning | None:
    rows = _entries(spec_name)
    if k not in rows and (d := user_dir()) is not None:  # computed meanwhile by another process?
        rows.update(read_new_rows(d / f"{spec_name}.jsonl"))
    row = parse_row(rows[k]) if k in rows else None
    if row is None or set(row.get("cond", ())) != set(shapes):
        return None
    return Conditioning({q: np.array(v, dtype=np.float64).reshape(shapes[q]) for q, v in row["cond"].items()},
                        {q: np.array(v, dtype=np.float64).reshape(shapes[q]) for q, v in row["scale"].items()})


def put(spec_name: str, k: str, result: Conditioning) -> None:
    """Remember ``result`` in this process and append it to the user cache (best effort)."""
    row = {"key": k, "cond": {q: np.asarray(v).reshape(-1).tolist() for q, v in result.cond.items()},
           "scale": {q: np.asarray(v).reshape(-1).tolist() for q, v in result.scale.items()}}
    _entries(spec_name)[k] = json.dumps(row).encode()
    append_row(user_dir(), spec_name, row)


def catalogue_keys() -> dict[str, set[str]]:
    """The keys every catalogued implementation can ask for (the cases it accepts under its
    conventions × value and gradients), by spec — and under each setting the convention search
    (:mod:`lossoracle.fingerprint`) grades its results against, in any dtype."""
    from . import catalog, specs
    from .engine import oracle_outputs
    from .fingerprint import candidates
    from .frameworks import cotangent
    from .spec import DTYPES

    out: dict[str, set[str]] = {name: set() for name in specs.names()}
    for impl in catalog.implementations():
        spec, conv = specs.get(impl.loss), dict(impl.conventions)
        settings = {repr(sorted(c.items())): c for c in [conv] + [
            {**conv, **s.conventions} for d in DTYPES for s in candidates(spec, conv, d)]}
        for case in spec.cases():
            if case.raises is not None or (impl.accepts and impl.accepts(case)):
                continue
            try:
                value, _ = oracle_outputs(spec, case, conv)
            except (ValueError, TypeError, ArithmeticError):  # a case outside this convention's domain
                continue
            cot = cotangent(np.shape(value))  # a setting's value has this shape, or its key is never asked for
            for setting in settings.values():
                for part in ("value", "grad"):
                    out[spec.name].add(key(spec, case, setting, part, cot))
    return out


def ship() -> None:
    """Write into the shipped store every entry of the user cache that the catalogue (its checks
    and their convention searches) can ask for with the current code (stale and hypothesis-drawn
    entries stay behind): run after a full ``lossoracle check`` filled the user cache."""
    target = shipped_dir()
    target.mkdir(parents=True, exist_ok=True)
    for name, keys in catalogue_keys().items():
        rows = {k: row for k, row in _entries(name).items() if k in keys}
        if rows:
            (target / f"{name}.jsonl").write_bytes(b"".join(rows[k] + b"\n" for k in sorted(rows)))
            print(target / f"{name}.jsonl", len(rows), "entries")


if __name__ == "__main__":
    ship()
