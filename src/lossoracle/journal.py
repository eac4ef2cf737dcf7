"""An append-only JSON-lines journal of result rows, so that an interrupted run can resume.

A run writes each cell (loss, implementation, device, dtype) as its result rows followed by an
end-of-cell marker ``{"cell_done": [loss, implementation, device, dtype]}``, each write flushed
and fsync'ed. A cell is complete exactly when its marker is in the file: a run killed half-way
through a cell leaves rows without a marker, which :func:`completed` drops and ``--resume``
runs again. Opening a journal with ``resume=True`` first rewrites the file to its complete
cells (atomically), so a truncated last line or a half-written cell never precedes new rows.
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["Journal", "load", "done_cells", "completed", "cell_key"]

MARKER = "cell_done"


def cell_key(row: dict[str, Any]) -> tuple:
    """The cell a result row belongs to: (loss, implementation, device, dtype)."""
    return row["loss"], row["implementation"], row["device"], row["dtype"]


class Journal:
    """Appends rows to ``path`` (truncating it, or keeping its complete cells when ``resume``)."""

    def __init__(self, path: str, resume: bool = False):
        self.path = path
        if resume and os.path.exists(path):
            tmp = f"{path}.tmp"
            with open(tmp, "w") as f:
                _write(f, completed(load(path), markers=True))
            os.replace(tmp, path)
        self._file = open(path, "a" if resume else "w")

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Write result rows (JSON-serialisable dicts; NaN and infinities are kept) and sync them to disk."""
        _write(self._file, rows)

    def end_cell(self, key: tuple) -> None:
        """Mark the cell ``key`` = (loss, implementation, device, dtype) complete; call it after its last rows."""
        _write(self._file, [{MARKER: list(key)}])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write(f, rows: list[dict[str, Any]]) -> None:
    f.write("".join(json.dumps(r) + "\n" for r in rows))
    f.flush()
    os.fsync(f.fileno())


def load(path: str) -> list[dict[str, Any]]:
    """The rows and markers of a journal, in order; a truncated last line (a run killed mid-write) is skipped."""
    with open(path) as f:
        lines = f.read().split("\n")
    rows = []
    for i, line in enumerate(lines):
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # no newline after it: the write was cut short
                break
            raise ValueError(f"{path}:{i + 1}: corrupt journal line") from None
    return rows


def done_cells(rows: list[dict[str, Any]]) -> set[tuple]:
    """The keys (loss, implementation, device, dtype) of the cells the journal holds completely."""
    return {tuple(r[MARKER]) for r in rows if MARKER in r}


def completed(rows: list[dict[str, Any]], markers: bool = False) -> list[dict[str, Any]]:
    """The result rows of the complete cells (the last complete run of a cell written twice), markers too if asked."""
    pending: dict[tuple, list[dict[str, Any]]] = {}
    done: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if MARKER in r:
            key = tuple(r[MARKER])
            done.pop(key, None)  # re-inserted last: a rerun cell moves to the end
            done[key] = pending.pop(key, []) + ([r] if markers else [])
        else:
            pending.setdefault(cell_key(r), []).append(r)
    return [r for cell in done.values() for r in cell]
