"""The speed regression gate: ``asv continuous`` between a base commit and HEAD on a chosen subset
of the benchmarks, both commits built and timed in the same run (interleaved rounds); fails when
any ``time_`` benchmark of HEAD is slower than the base by more than ``--factor`` (default 1.5)
in *minimum* statistics (the fastest sample of each: machine noise only ever adds time).

    python benchmarks/gate.py [--base main] [--head HEAD] [-b REGEX ...] [--factor 1.5] [--quick]

Exit status: 0 — no slowdown beyond the factor; 1 — a slowdown (the table says which); 2 —
asv failed, or nothing comparable was measured. The default subset (``DEFAULT_BENCH``) is the
forward + backward of ours on the registry's first workloads in float32 on the CPU.

Environment set here for asv and every benchmark process: one thread (``OMP_NUM_THREADS=1``;
the suites also call ``torch.set_num_threads(1)``), ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` at 16 GiB, no ``PYTHONPATH`` (each commit's own wheel is what
imports), and ``LOSSORACLE_ASV_DEPS`` = this venv's site-packages (``benchmarks/asv_env.py``
links the asv virtualenvs to it, so torch and the libraries are not reinstalled per commit).
Run it from the repository root, in the dev venv (asv is in the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

try:
    from .measure import HIGH
except ImportError:
    from measure import HIGH

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BENCH = (r"Loss\.time_forward_backward\("
                 r"'(cross_entropy-1024x1000|softmax-1024x1000|binary_cross_entropy-1048576)', "
                 r"'float32', 'ours', 'cpu'\)")

__all__ = ["minima", "compare", "main"]


def _rev(rev: str) -> str:
    return subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               MALLOC_MMAP_THRESHOLD_=HIGH, MALLOC_TRIM_THRESHOLD_=HIGH)
    env.pop("PYTHONPATH", None)
    paths = sysconfig.get_paths()
    env["LOSSORACLE_ASV_DEPS"] = os.pathsep.join(dict.fromkeys((paths["purelib"], paths["platlib"])))
    return env


def minima(result_file: str) -> dict[str, float]:
    """``"benchmark(params)" -> fastest sample`` of every ``time_`` benchmark in an asv result file."""
    d = json.loads(Path(result_file).read_text())
    cols = d["result_columns"]
    out: dict[str, float] = {}
    for name, row in d["results"].items():
        if not name.split(".")[-1].startswith("time_"):
            continue
        rec = dict(zip(cols, row))
        results, samples = rec.get("result") or [], rec.get("samples") or []
        params = rec.get("params") or []
        combos = [()]
        for values in params:
            combos = [(*c, v) for c in combos for v in values]
        for i, combo in enumerate(combos):
            s = [x for x in (samples[i] if i < len(samples) and samples[i] else []) if x is not None]
            best = min(s) if s else (results[i] if i < len(results) else None)
            if best is not None and best == best:  # measured, not NaN (failed / skipped)
                out[f"{name}({', '.join(combo)})" if combo else name] = float(best)
    return out


def compare(base: dict[str, float], head: dict[str, float], factor: float) -> tuple[list[tuple], bool]:
    """Rows ``(benchmark, base s, head s, head/base)`` for every benchmark measured in both, and
    whether any ratio exceeds ``factor``."""
    rows = [(k, base[k], head[k], head[k] / base[k]) for k in sorted(base) if k in head and base[k] > 0]
    return rows, any(r[3] > factor for r in rows)


def _result_file(machine_dir: str, commit: str) -> str | None:
    files = sorted(glob.glob(os.path.join(machine_dir, f"{commit[:8]}-*.json")), key=os.path.getmtime)
    return files[-1] if files else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="main", help="base commit (default main)")
    ap.add_argument("--head", default="HEAD", help="the commit under test (default HEAD)")
    ap.add_argument("-b", "--bench", action="append", help=f"asv benchmark regex (default {DEFAULT_BENCH!r})")
    ap.add_argument("--factor", type=float, default=1.5, help="fail on head/base above this (default 1.5)")
    ap.add_argument("--quick", action="store_true", help="asv --quick: one sample each (a smoke run, not a gate)")
    args = ap.parse_args(argv)
    base, head = _rev(args.base), _rev(args.head)
    env = _env()
    subprocess.run(["asv", "machine", "--yes"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    cmd = ["asv", "continuous", "--factor", str(args.factor), "--interleave-rounds", "--show-stderr",
           *(["--quick"] if args.quick else [])]
    for b in args.bench or [DEFAULT_BENCH]:
        cmd += ["-b", b]
    cmd += [base, head]
    print("$", " ".join(cmd), flush=True)
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as p:
        for line in p.stdout:  # the parameter tables' rows of benchmarks not selected are dropped
            if not line.rstrip().endswith("n/a"):
                print(line, end="", flush=True)
    asv_rc = p.returncode
    conf = json.loads("\n".join(line for line in (ROOT / "asv.conf.json").read_text().splitlines()
                                if not line.lstrip().startswith("//")))
    machines = [d for d in glob.glob(str(ROOT / conf["results_dir"] / "*")) if os.path.isdir(d)]
    files = {}
    for c in (base, head):
        found = [f for f in (_result_file(m, c) for m in machines) if f]
        files[c] = max(found, key=os.path.getmtime) if found else None
    if not files[base] or not files[head]:
        print(f"gate: no asv results for {'base' if not files[base] else 'head'} (asv exit {asv_rc})")
        return 2
    rows, slower = compare(minima(files[base]), minima(files[head]), args.factor)
    if not rows:
        print(f"gate: nothing measured in both commits (asv exit {asv_rc})")
        return 2
    print(f"\ngate: minimum statistics, head {head[:8]} / base {base[:8]}, fail above {args.factor}×")
    for name, b, h, r in rows:
        flag = "  SLOWER" if r > args.factor else ""
        print(f"  {r:6.2f}×  {b * 1e3:10.3f} ms → {h * 1e3:10.3f} ms  {name}{flag}")
    print("gate: FAIL — slowdown beyond the factor" if slower else "gate: pass")
    return 1 if slower else 0


if __name__ == "__main__":
    sys.exit(main())
