"""Rewrite ``tests/expected/<family>.toml`` from a JSON report of the third-party implementations.

    lossoracle check --json report.json            # or any subset with --loss
    python tests/expected/update.py report.json    # rewrites the files of the families in the report

One ``[[cell]]`` per implementation × dtype (``dtype = "*"`` when every dtype agrees), with the
verdict and the key phrase of the cell's worst finding; ``tests/test_expected.py`` compares every
run with these files, so a library upgrade that changes a verdict fails with a clear diff and
updating the file is the whole fix. Our implementations are not listed: they must conform.
The file's hand-written ``[[finding]]`` entries (one case's row each) are kept as they are.
"""

from __future__ import annotations

import json
import pathlib
import sys
from collections import defaultdict

from lossoracle import reference
from lossoracle.report import Result, cell_verdict, worst_row

HERE = pathlib.Path(__file__).parent
OURS = "lossoracle.implementations."


def family_of() -> dict[str, str]:
    return {spec.name: m.__name__.rsplit(".", 1)[1] for m in reference.family_modules() for spec in m.SPECS}


def reason(rows: list[Result]) -> str:
    """The key phrase of a cell's worst finding: stable across runs, specific enough to read."""
    from lossoracle.compare import FINDINGS

    w = worst_row([r for r in rows if r.verdict not in ("conforms",)] or rows)
    if w is None or w.verdict == "conforms":
        return ""
    if w.finding in FINDINGS:
        return FINDINGS[w.finding].split(" (")[0]
    return {"dtype": "an undeclared change of dtype", "shape": "result shape", "no_raise": "instead of raising",
            "wrong_exception": "instead of", "not_installed": "not installed", "not_credited": "not credited",
            "unsupported": "", "crashed": "crashed", "timeout": "timeout"}.get(w.finding or "", w.detail.split(":")[0])


def cells(results: list[Result]) -> dict[tuple[str, str], dict[str, tuple[str, str]]]:
    groups: dict[tuple, list[Result]] = defaultdict(list)
    for r in results:
        if not r.implementation.startswith(OURS):
            groups[(r.implementation, r.loss, r.dtype)].append(r)
    out: dict[tuple[str, str], dict[str, tuple[str, str]]] = defaultdict(dict)
    for (impl, loss, dtype), rows in groups.items():
        out[(impl, loss)][dtype] = (cell_verdict(rows), reason(rows))
    return out


def render(entries: list[tuple[str, str, str, str, str]]) -> str:
    lines = ["# Expected verdicts of the ecosystem's implementations", "# (regenerate: python tests/expected/update.py "
             "REPORT.json; see tests/test_expected.py).", ""]
    for impl, loss, dtype, verdict, why in entries:
        lines += ["[[cell]]", f"implementation = {json.dumps(impl)}", f"loss = {json.dumps(loss)}",
                  f"dtype = {json.dumps(dtype)}", f"verdict = {json.dumps(verdict)}"]
        if why:
            lines.append(f"reason = {json.dumps(why)}")
        lines.append("")
    return "\n".join(lines)


def kept_findings(path: pathlib.Path) -> str:
    """The ``[[finding]]`` entries of an existing file, rendered again (key order kept)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    if not path.exists():
        return ""
    out = []
    for e in tomllib.loads(path.read_text()).get("finding", []):
        out += ["[[finding]]", *(f"{k} = {json.dumps(v)}" for k, v in e.items()), ""]
    return "\n".join(out)


def main(path: str) -> None:
    data = json.loads(pathlib.Path(path).read_text())
    results = [Result(**{k: float(v) if k.startswith("max_") and isinstance(v, str) else v  # "inf" in JSON
                         for k, v in r.items() if k in Result.__dataclass_fields__}) for r in data["results"]]
    fam = family_of()
    by_family: dict[str, list] = defaultdict(list)
    for (impl, loss), per_dtype in sorted(cells(results).items()):
        if len({v for v in per_dtype.values()}) == 1:
            (verdict, why), = set(per_dtype.values())
            by_family[fam[loss]].append((impl, loss, "*", verdict, why))
        else:
            for dtype, (verdict, why) in per_dtype.items():
                by_family[fam[loss]].append((impl, loss, dtype, verdict, why))
    for family, entries in by_family.items():
        file = HERE / f"{family}.toml"
        file.write_text(render(entries) + kept_findings(file))
        print(HERE / f"{family}.toml", len(entries), "entries")


if __name__ == "__main__":
    main(sys.argv[1])
