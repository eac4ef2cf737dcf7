"""The validator's own cost: wall time, CPU time and peak memory of ``lossoracle check``, and the
oracles' throughput.

    python benchmarks/validator_time.py                  # bf89db2's catalogue, then each newer family
    python benchmarks/validator_time.py --cold           # also with empty caches: a fresh LOSSORACLE_CACHE (oracle
                                                         # outputs, condition numbers, XLA compilations) and a fresh
                                                         # TORCHINDUCTOR_CACHE_DIR (torch.compile's kernels)
    python benchmarks/validator_time.py --oracle         # oracle throughput per loss (gmpy2 and pure-Python mpmath)
    python benchmarks/validator_time.py --cold --repeat 2 --base-src /work/main/src --only bf89db2   # before/after

``check_cost(losses)`` runs ``lossoracle check --loss ...`` in a child process and returns its wall
time, the CPU time (user + sys) of the whole process tree (the check, its ``--jobs`` processes and
their forked workers: every descendant is reaped, so ``wait4`` accounts for it) and the largest
resident peak of any one process of that tree. On a shared machine the wall time depends on the
load; the CPU time much less: report both. ``oracle_throughput(loss)`` times the uncached oracle
(value and VJP, under the precision rule's 192/384-bit re-evaluation) on the spec's largest
catalogue case and returns input elements per second. Functions, so asv can wrap them.

Issue 9's reference points (commit bf89db2, this 2-core machine): full check 155–185 s, 4.5 GB;
oracles 5k cross-entropy logits/s and 1.25k focal elements/s on pure-Python mpmath.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

__all__ = ["BF89DB2_FAMILIES", "family_losses", "bf89db2_losses", "new_families", "check_cost",
           "oracle_throughput", "oracle_throughputs"]

# The families (and so the losses) of the catalogue of commit bf89db2; their implementations and
# libraries are those of today's catalogue for these losses (none was added since).
BF89DB2_FAMILIES = ("softmax", "binary", "information", "focal")


def family_losses(family: str) -> list[str]:
    """The losses of ``reference/<family>.py``."""
    import importlib

    return [s.name for s in importlib.import_module(f"lossoracle.reference.{family}").SPECS]


def bf89db2_losses() -> list[str]:
    return [name for family in BF89DB2_FAMILIES for name in family_losses(family)]


def new_families() -> list[str]:
    """The families added since bf89db2."""
    from lossoracle import reference

    return [m.__name__.rsplit(".", 1)[1] for m in reference.family_modules()
            if m.__name__.rsplit(".", 1)[1] not in BF89DB2_FAMILIES]


def check_cost(losses: list[str], jobs: int | None = None, cache: str | None = None,
               extra: tuple[str, ...] = (), src: str | None = None) -> dict[str, Any]:
    """Wall seconds, CPU seconds (user + sys, whole process tree) and the largest resident peak
    (MiB, any one process) of ``lossoracle check --loss L ...``; ``cache``: the ``LOSSORACLE_CACHE``
    folder (None: the user's), ``jobs``: ``--jobs`` (None: the default), ``src``: the ``src``
    folder of another checkout to run instead (its ``PYTHONPATH``; None: this environment's)."""
    cmd = [sys.executable, "-m", "lossoracle.cli", "check", *[a for n in losses for a in ("--loss", n)], *extra]
    if jobs is not None:
        cmd += ["--jobs", str(jobs)]
    env = dict(os.environ, **({"PYTHONPATH": src} if src else {}))
    if cache:  # cold: every cache the run may fill starts empty, torch.compile's included
        env.update(LOSSORACLE_CACHE=cache, TORCHINDUCTOR_CACHE_DIR=os.path.join(cache, "inductor"))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read()
    proc.stderr.close()
    if proc.returncode not in (0, 1):  # 1: some cell deviates, as the ecosystem's do
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err[-2000:]}")
    out = {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024}
    if cache:  # did the run compile torch kernels (its cold-compile time is then in the figures)?
        out["inductor_files"] = sum(len(f) for _, _, f in os.walk(os.path.join(cache, "inductor")))
    return out


def _largest_case(spec):
    cases = [c for c in spec.cases() if c.raises is None]
    return max(cases, key=lambda c: sum(a.size for a in c.inputs.values() if a is not None and a.dtype.kind == "f"))


def oracle_throughput(loss: str, min_time: float = 1.0) -> dict[str, Any]:
    """Input elements per CPU second of the uncached oracle (value + VJP with the checker's
    cotangent, evaluated as the checker does: 192 bits, re-evaluated at 384) on ``loss``'s
    largest catalogue case."""
    from lossoracle import specs
    from lossoracle.engine import exact_outputs

    spec = specs.get(loss)
    case = _largest_case(spec)
    n = sum(a.size for a in case.inputs.values() if a is not None and a.dtype.kind == "f")
    from lossoracle import mpfuncs

    clear = getattr(mpfuncs, "clear_caches", lambda: None)  # cold: the oracles' caches emptied each run
    runs, t0 = 0, time.process_time()  # CPU time: single-threaded work on a shared machine
    while True:
        clear()
        exact_outputs(spec, case)
        runs += 1
        elapsed = time.process_time() - t0
        if elapsed >= min_time:
            break
    import mpmath.libmp

    return {"loss": loss, "case": case.id, "elements": n, "elements_per_s": n * runs / elapsed,
            "backend": mpmath.libmp.BACKEND}


def oracle_throughputs(losses: list[str], pure_python: bool = False) -> list[dict[str, Any]]:
    """:func:`oracle_throughput` of each loss, in a child process (``pure_python``: mpmath without
    gmpy2, ``MPMATH_NOGMPY=1``, bf89db2's backend)."""
    import json

    code = ("import json, sys; sys.path.insert(0, %r); from validator_time import oracle_throughput; "
            "print(json.dumps([oracle_throughput(n) for n in %r]))" % (os.path.dirname(os.path.abspath(__file__)),
                                                                        losses))
    env = dict(os.environ, **({"MPMATH_NOGMPY": "1"} if pure_python else {}))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _line(label: str, r: dict[str, Any]) -> str:
    compiled = f"   torch.compile files {r['inductor_files']}" if "inductor_files" in r else ""
    return (f"{label:<40} wall {r['wall_s']:7.1f} s   cpu {r['cpu_s']:7.1f} s   peak {r['peak_rss_mib']:7.0f} MiB"
            f"{compiled}   (load {os.getloadavg()[0]:.1f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cold", action="store_true", help="also run with empty user caches")
    p.add_argument("--oracle", action="store_true", help="oracle throughput instead of the check's cost")
    p.add_argument("--jobs", type=int, help="lossoracle check --jobs (default: its own)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each measurement (the minimum is printed)")
    p.add_argument("--base-src", help="also run another checkout's code (its src folder, e.g. /work/main/src), "
                                      "interleaved with this one's: the before and after of a change")
    p.add_argument("--only", action="append", help="only these groups ('bf89db2', or a family name)")
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} on {os.cpu_count()} cores (the machine is shared: compare CPU times)")
    if args.oracle:
        losses = ["cross_entropy", "sigmoid_focal_loss", "softmax_focal_loss", "binary_cross_entropy_with_logits",
                  "kl_div", "dice_loss", "complete_box_iou_loss"]
        fast, slow = oracle_throughputs(losses), oracle_throughputs(losses, pure_python=True)
        for f, s in zip(fast, slow):
            print(f"{f['loss']:<34} {f['case']:<24} {f['elements']:6d} elements  {f['backend']}: "
                  f"{f['elements_per_s']:9.0f}/s   python: {s['elements_per_s']:9.0f}/s   "
                  f"({f['elements_per_s'] / s['elements_per_s']:.2f}×)")
        return 0
    groups = [("bf89db2 catalogue", bf89db2_losses())] + [(f"+ {f}", family_losses(f)) for f in new_families()]
    if args.only:
        groups = [g for g in groups if g[0].split()[-1] in args.only or g[0].startswith(tuple(args.only))]
    sides = [("", None)] + ([("base ", args.base_src)] if args.base_src else [])
    for label, losses in groups:
        if args.cold:
            for side, src in sides:  # interleaved: the load hits both alike
                with tempfile.TemporaryDirectory() as cache:
                    print(_line(f"{side}{label} (cold caches)", check_cost(losses, args.jobs, cache, src=src)),
                          flush=True)
        runs: dict[str, list] = {side: [] for side, _ in sides}
        for _ in range(args.repeat):
            for side, src in sides:
                runs[side].append(check_cost(losses, args.jobs, src=src))
        for side, _ in sides:
            best = {k: min(r[k] for r in runs[side]) for k in runs[side][0]}
            print(_line(f"{side}{label}", best), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
