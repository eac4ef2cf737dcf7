"""What the convention search (lossoracle.fingerprint) found and what it cost, from JSON reports.

    lossoracle check --loss cross_entropy --json after.json
    lossoracle check --loss cross_entropy --no-fingerprint --json before.json
    python benchmarks/fingerprint_report.py after.json [before.json]

Prints every third-party cell the search explained (status and line), the number of searched
cells and the search's own wall time (the sum of each cell's ``seconds``, measured in the worker),
and, given a report of the same run without the search, every third-party cell whose explanation
(verdict or detail lines) differs between the two.
"""

from __future__ import annotations

import collections
import json
import sys

from lossoracle.report import Report, Result

OURS = "lossoracle.implementations"


def cells(path: str) -> dict[tuple, dict]:
    """The report's cells (Report.summary()) by (loss, implementation, device, dtype)."""
    rows = json.load(open(path))["results"]
    fields = Result.__dataclass_fields__
    for r in rows:
        for k in ("max_ulp", "max_rel_err", "max_cond_err"):
            if isinstance(r.get(k), str):
                r[k] = float(r[k])  # JSON keeps inf and nan as strings
    report = Report([Result(**{k: v for k, v in r.items() if k in fields}) for r in rows])
    return {(c["loss"], c["implementation"], c["device"], c["dtype"]): c for c in report.summary()}


def main(after: str, before: str | None = None) -> None:
    a = cells(after)
    b = cells(before) if before else {}
    status = collections.Counter()
    seconds = 0.0
    for key, cell in sorted(a.items()):
        found = cell.get("convention")
        if key[1].startswith(OURS):
            assert found is None, f"one of ours was searched: {key}"
            continue
        if found:
            status[found["status"]] += 1
            seconds += found.get("seconds", 0.0)
        changed = key in b and (b[key]["details"] != cell["details"] or b[key]["verdict"] != cell["verdict"])
        if found or changed:
            print("\t".join([*map(str, key), cell["verdict"], "changed" if changed else "",
                             found["text"] if found else "(no convention line)"]))
    print(f"\nsearched cells: {sum(status.values())} ({dict(status)}); search time {seconds:.1f} s")


if __name__ == "__main__":
    main(*sys.argv[1:3])
