"""Oracle throughput against a base commit, in one run: the uncached mpmath value and VJP of each
loss (as the checker evaluates them: ``mpfuncs.stable`` at 192 bits, re-evaluated at 384, the
checker's cotangent) on the same inputs, in floating input elements per CPU second.

    git worktree add --detach /tmp/bf89 bf89db2          # the base (issue 9's "today")
    python benchmarks/oracle_ratio.py --base /tmp/bf89 [--rounds 3] [--case fixed|largest] [--json out.json]

Each side runs in a child process importing its own ``lossoracle`` (the base's ``src`` with its
``reference`` package linked in), on inputs pickled by this process from HEAD's catalogue
(``fixed.fixed_case``, as ``bench_oracle`` uses; ``--case largest``: the largest valid case, as
``validator_time --oracle`` uses). Children alternate base/HEAD for ``--rounds`` rounds; the best
throughput of each side is kept (CPU time: the machine is shared). ``--python-base`` also times the
base on pure-Python mpmath (``MPMATH_NOGMPY=1``: the backend bf89db2 ran on). A loss the base does
not have is timed on HEAD alone.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import pickle
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent

_CHILD = r"""
import json, pickle, sys, time
import numpy as np
import mpmath.libmp
from lossoracle import specs
from lossoracle.frameworks import cotangent
from lossoracle import mpfuncs
from lossoracle.mpfuncs import stable

clear = getattr(mpfuncs, "clear_caches", lambda: None)  # every run cold, as for a case not seen before

cases = pickle.load(open(sys.argv[1], "rb"))
min_time = float(sys.argv[2])
names = set(specs.names())
out = {}
for loss, inputs, params in cases:
    if loss not in names:
        continue
    spec = specs.get(loss)
    kwargs = {**spec.params, **params}

    def once():
        clear()
        value = stable(lambda: spec.oracle(**inputs, **kwargs))
        if spec.gradient is not None:
            g = cotangent(np.shape(value))
            stable(lambda: spec.gradient(g, **inputs, **kwargs))

    n = sum(a.size for a in inputs.values() if a is not None and a.dtype.kind == "f")
    once()  # warm (imports, first-call caches)
    runs, t0 = 0, time.process_time()
    while True:
        once()
        runs += 1
        elapsed = time.process_time() - t0
        if elapsed >= min_time:
            break
    out[loss] = {"elements": n, "elements_per_s": n * runs / elapsed, "s_per_eval": elapsed / runs}
print(json.dumps({"backend": mpmath.libmp.BACKEND, "losses": out}))
"""


def _link_reference(base: pathlib.Path) -> None:
    """The base's ``lossoracle.reference``/``implementations`` resolve to its top-level packages
    (an installed build maps them; a checkout needs the links)."""
    for name in ("reference", "implementations"):
        link = base / "src" / "lossoracle" / name
        if not link.exists() and (base / name).is_dir():
            link.symlink_to(pathlib.Path("..", "..", name))


def _cases(which: str) -> list:
    from lossoracle import specs

    sys.path.insert(0, str(HERE))
    from fixed import fixed_case

    out = []
    for loss in specs.names():
        spec = specs.get(loss)
        if which == "fixed":
            case = fixed_case(loss)
        else:
            valid = [c for c in spec.cases() if c.raises is None]
            case = max(valid, key=lambda c: sum(a.size for a in c.inputs.values()
                                                if a is not None and a.dtype.kind == "f"))
        out.append((loss, dict(case.inputs), dict(case.params)))
    return out


def _run(src: pathlib.Path, path: str, min_time: float, pure_python: bool = False) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1")
    env.pop("MPMATH_NOGMPY", None)
    if pure_python:
        env["MPMATH_NOGMPY"] = "1"
    proc = subprocess.run([sys.executable, "-c", _CHILD, path, str(min_time)], env=env, capture_output=True,
                          text=True, cwd=tempfile.gettempdir())
    if proc.returncode:
        raise RuntimeError(f"{src}: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", type=pathlib.Path, required=True, help="a checkout of the base commit")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--min-time", type=float, default=0.5, help="CPU seconds per loss and run")
    p.add_argument("--case", choices=("fixed", "largest"), default="fixed")
    p.add_argument("--python-base", action="store_true", help="also the base on pure-Python mpmath")
    p.add_argument("--loss", action="append", help="only these losses")
    p.add_argument("--json", type=pathlib.Path)
    args = p.parse_args(argv)
    base = args.base.resolve()
    _link_reference(base)
    cases = [c for c in _cases(args.case) if not args.loss or c[0] in args.loss]
    best: dict[str, dict[str, float]] = {"base": {}, "head": {}, "base_python": {}}
    backends = {}
    with tempfile.NamedTemporaryFile(suffix=".pkl") as f:
        pickle.dump(cases, f)
        f.flush()
        sides = [("base", base / "src", False), ("head", ROOT / "src", False)]
        if args.python_base:
            sides.append(("base_python", base / "src", True))
        for _ in range(args.rounds):
            for side, src, pure in sides:
                res = _run(src, f.name, args.min_time, pure)
                backends[side] = res["backend"]
                for loss, r in res["losses"].items():
                    best[side][loss] = max(best[side].get(loss, 0.0), r["elements_per_s"])
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} on {os.cpu_count()} cores; CPU-time throughput, best of "
          f"{args.rounds} interleaved rounds; case: {args.case}; backends {backends}")
    cols = "base/s     head/s   head/base" + ("   base_python/s  head/base_python" if args.python_base else "")
    print(f"{'loss':<34} {'elements':>8} {cols}")
    rows = []
    for loss, inputs, _ in cases:
        n = sum(a.size for a in inputs.values() if a is not None and a.dtype.kind == "f")
        b, h, bp = (best[s].get(loss) for s in ("base", "head", "base_python"))
        row = {"loss": loss, "elements": n, "base": b, "head": h, "ratio": h / b if b and h else None}
        line = f"{loss:<34} {n:8d} " + (f"{b:8.0f}" if b else f"{'-':>8}") + f" {h:10.0f}   " + (
            f"{h / b:8.2f}x" if b else f"{'-':>9}")
        if args.python_base:
            row |= {"base_python": bp, "ratio_python": h / bp if bp else None}
            line += (f"   {bp:13.0f}  {h / bp:15.2f}x" if bp else "")
        rows.append(row)
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"backends": backends, "case": args.case, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
