"""Expected failures kept in a file (``lossoracle check --xfails FILE``): a project's known deviations.

A TOML file of ``[[xfail]]`` tables, or JSON (a list of objects, or ``{"xfail": [...]}``)::

    [[xfail]]
    loss = "binary_cross_entropy"
    implementation = "torch.nn.functional.*"   # fnmatch patterns; default "*"
    dtype = "float16"                          # default "*"
    device = "*"                               # "cpu", "cuda", "host" (NumPy); default "*"
    verdict = "deviates"                       # the worst verdict expected; default "deviates"
    reason = "the 1e-12 floor underflows in float16"

A cell (loss × implementation × device × dtype) that fails ``--require`` and matches an entry
is an expected failure (``xfail``) when its verdict is no worse than the entry's (verdicts rank
conforms < tail < deviates < error < timeout < crashed): shown as such, not counted against
the exit status. A matched cell that now meets ``--require``, and an entry that matches no cell
of the run, are *stale*: a warning each. A cell worse than its entry fails as usual.
"""

from __future__ import annotations

import fnmatch
import json
import pathlib
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from .report import _RANK, Report, cell_key, cell_verdict, rows_pass

__all__ = ["Xfail", "load", "parse", "apply"]

_FIELDS = ("loss", "implementation", "dtype", "device", "verdict", "reason")


@dataclass(frozen=True)
class Xfail:
    """One entry: patterns for a cell's loss, implementation, dtype, device; the expected verdict."""

    loss: str
    reason: str
    implementation: str = "*"
    dtype: str = "*"
    device: str = "*"
    verdict: str = "deviates"

    def matches(self, key: tuple) -> bool:
        loss, impl, device, dtype = key
        return all(fnmatch.fnmatchcase(str(v), p) for v, p in
                   ((loss, self.loss), (impl, self.implementation), (device, self.device), (dtype, self.dtype)))

    def text(self) -> str:
        return f"{self.loss} {self.implementation} {self.device} {self.dtype} ({self.verdict}: {self.reason})"


def parse(data: Any, source: str = "xfails") -> list[Xfail]:
    """Entries from parsed TOML/JSON data; ValueError naming the entry and the problem."""
    items = data.get("xfail", None) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError(f"{source}: expected a list of entries or an 'xfail' table array")
    out = []
    for i, e in enumerate(items):
        where = f"{source}: entry {i + 1}"
        if not isinstance(e, dict):
            raise ValueError(f"{where} is not a table")
        unknown = set(e) - set(_FIELDS)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(_FIELDS)}")
        if not e.get("loss") or not e.get("reason"):
            raise ValueError(f"{where}: needs 'loss' and 'reason'")
        if e.get("verdict", "deviates") not in _RANK or e.get("verdict") == "conforms":
            raise ValueError(f"{where}: verdict {e.get('verdict')!r} is not one of "
                             f"{', '.join(v for v in _RANK if v != 'conforms')}")
        out.append(Xfail(**{k: str(v) for k, v in e.items()}))
    return out


def load(path: str | pathlib.Path) -> list[Xfail]:
    """Read a TOML (``.toml``) or JSON file of entries."""
    path = pathlib.Path(path)
    text = path.read_text()
    if path.suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: {e}") from None
    else:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    return parse(data, str(path))


def apply(report: Report, entries: list[Xfail], require: str = "tail") -> list[str]:
    """Mark the report's expected failures (``report.expected``) and return the stale warnings
    (also kept in ``report.meta["xfail_warnings"]``). The first matching entry decides a cell."""
    cells: dict[tuple, list] = defaultdict(list)
    for r in report.results:
        cells[cell_key(r)].append(r)
    used: set[int] = set()
    warnings = []
    for key, rows in cells.items():
        i, e = next(((i, e) for i, e in enumerate(entries) if e.matches(key)), (None, None))
        if e is None:
            continue
        used.add(i)
        verdict = cell_verdict(rows)
        if rows_pass(rows, require):
            warnings.append(f"stale xfail: {' '.join(key)} is listed ({e.verdict}: {e.reason}) but is {verdict}, "
                            f"meeting --require {require}: remove the entry")
            continue
        worse = _RANK.get(verdict, -1) > _RANK[e.verdict]
        report.expected[key] = {**asdict(e), "status": "worse" if worse else "xfail", "got": verdict}
    for i, e in enumerate(entries):
        if i not in used:
            warnings.append(f"stale xfail: {e.text()} matches no cell of this run")
    report.meta["xfail_warnings"] = warnings
    return warnings
