"""Compare two ``lossoracle check --json`` reports cell by cell and row by row.

    python benchmarks/verdict_diff.py before.json after.json

Prints every cell (loss × implementation × device × dtype) whose verdict or worst grade changed,
every row (case × quantity) whose verdict, grade or worst error changed, and the cells only one
report holds; exits 1 when anything changed.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

from lossoracle.compare import worst_grade
from lossoracle.report import Result, cell_verdict

__all__ = ["cells", "row_changes", "cell_changes", "main"]


def _rows(path: str) -> list[Result]:
    with open(path) as f:
        data = json.load(f)
    fields = Result.__dataclass_fields__
    return [Result(**{k: v for k, v in r.items() if k in fields}) for r in data["results"]]


def cells(rows: list[Result]) -> dict[tuple, tuple[str, str | None]]:
    """(loss, implementation, device, dtype) → (cell verdict, worst grade of its scored rows)."""
    groups: dict[tuple, list[Result]] = defaultdict(list)
    for r in rows:
        groups[(r.loss, r.implementation, r.device, r.dtype)].append(r)
    return {k: (cell_verdict(rs), worst_grade(r.grade for r in rs if r.scored)) for k, rs in groups.items()}


def _row_key(r: Result) -> tuple:
    return r.loss, r.implementation, r.device, r.dtype, r.case, r.quantity


def _row_sig(r: Result) -> tuple:
    return r.verdict, r.grade, r.finding, str(r.max_ulp), str(r.max_cond_err)


def cell_changes(old: list[Result], new: list[Result]) -> list[str]:
    a, b = cells(old), cells(new)
    out = []
    for k in sorted(set(a) | set(b), key=str):
        if a.get(k) != b.get(k):
            out.append(f"cell {' | '.join(map(str, k))}: {a.get(k)} -> {b.get(k)}")
    return out


def row_changes(old: list[Result], new: list[Result]) -> list[str]:
    a = {_row_key(r): _row_sig(r) for r in old}
    b = {_row_key(r): _row_sig(r) for r in new}
    return [f"row {' | '.join(map(str, k))}: {a.get(k)} -> {b.get(k)}"
            for k in sorted(set(a) | set(b), key=str) if a.get(k) != b.get(k)]


def main(argv: list[str] | None = None) -> int:
    old_path, new_path = (argv or sys.argv[1:])[:2]
    old, new = _rows(old_path), _rows(new_path)
    cc, rc = cell_changes(old, new), row_changes(old, new)
    print("\n".join(cc + rc))
    print(f"{len(cells(new))} cells: {len(cc)} cell changes, {len(rc)} row changes of {len(new)} rows",
          file=sys.stderr)
    return 1 if cc or rc else 0


if __name__ == "__main__":
    raise SystemExit(main())
