"""Ours against each loss's baseline, forward + backward, every registered workload: time,
peak extra memory, their ratios, and the memory floors — all measured in one run, one thread.

    python benchmarks/ratios.py [--loss NAME ...] [--dtype float32 ...] [--device cpu|cuda]
                                [--min-time 0.3] [--max-repeat 15] [--no-memory] [--json PATH]
                                [--write-readme]

Workloads and baselines come from ``benchmarks/baselines.py`` (a loss not named there gets a
workload from its catalogue and is timed alone). Per workload: warm-up calls (they include any
one-off ``torch.compile``), then rounds that time ours and the baseline once each, in turn,
until each has run ``--min-time`` seconds (at least 3, at most ``--max-repeat`` rounds); the
median and minimum are kept, ``ratio`` is median/median (a call of seconds is timed fewer
times: stop when the slowest has run ``6 × --min-time``). Floors, from the same inputs in the
same run: ``read`` — one pass reading every input (a sum of each), ``exp`` — one ``exp`` pass
over the first floating input into a preallocated buffer. Peak extra memory: the rise of the
resident peak (``VmHWM`` reset first) during one more forward + backward, with the mmap
threshold lowered at run time (``measure.low_mmap_threshold``: every buffer of 64 KiB or more is
its own mapping, freed memory released first) so that no buffer hides in memory already
resident (CUDA: ``torch.cuda.max_memory_allocated`` above the inputs).

On CPU the script re-executes itself with ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``
set to 16 GiB (freed memory is reused; page faults of fresh allocations otherwise dominate) and
runs on one thread. ``--write-readme`` replaces the table between the ``ratios`` markers in
README.md. ``--json`` writes every measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

try:  # run as a script, or imported (tests, asv)
    from . import harness
    from .measure import peak_rise, reexec_with_malloc_settings
except ImportError:
    import harness
    from measure import peak_rise, reexec_with_malloc_settings

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- ratios:begin -->", "<!-- ratios:end -->"
_DT = {"float16": "f16", "bfloat16": "bf16", "float32": "f32", "float64": "f64"}


def rows_wanted(losses: list[str] | None, dtypes: list[str] | None) -> list[tuple]:
    out = []
    for w in harness.workloads():
        if losses and w.loss not in losses:
            continue
        for d in (dtypes or w.ratio_dtypes):
            out.append((w, d))
    return out


def measure_row(w, dtype: str, device: str, min_time: float, max_repeat: int, memory: bool = True) -> dict:
    """Time ours and the baseline on one workload and dtype (interleaved rounds), then the floors,
    then each one's peak extra memory."""
    base = harness.arrays(w)
    steps = {}
    for name in ("ours", "baseline"):
        try:
            steps[name] = harness.variant(w, name, dtype, device, base)
        except NotImplementedError:
            pass
    for v in steps.values():  # warm-up: compilation, lazy initialisation, the allocator's first touch
        t0 = time.perf_counter()
        v.forward_backward()
        if time.perf_counter() - t0 < 0.5:
            v.forward_backward()
    times: dict[str, list[float]] = {n: [] for n in steps}
    rounds = 0
    while rounds < max_repeat:
        for n, v in steps.items():
            t0 = time.perf_counter()
            v.forward_backward()
            times[n].append(time.perf_counter() - t0)
        rounds += 1
        totals = [sum(t) for t in times.values()]
        if (rounds >= 3 and min(totals) >= min_time) or max(totals) >= 6 * min_time:
            break  # enough; a call of seconds is timed fewer times (its ratio is not in doubt)
    fl = harness.floors(steps["ours"].inputs)
    row = {"loss": w.loss, "workload": w.key, "label": w.label, "shape": list(w.shape), "dtype": dtype,
           "device": device, "baseline": harness.baseline_name(w.loss) if "baseline" in steps else "",
           "rounds": rounds, "floor_read_s": fl["read"], "floor_exp_s": fl["exp"]}
    for n, ts in times.items():
        row[f"{n}_median_s"], row[f"{n}_min_s"] = statistics.median(ts), min(ts)
        if memory:
            row[f"{n}_peak_bytes"] = peak_extra_bytes(steps[n], device)
    return row


def peak_extra_bytes(v: harness.Variant, device: str) -> int:
    """Peak memory of one (warm) forward + backward above what the inputs hold; it allocates its
    own gradients."""
    for t in v.inputs.values():
        if getattr(t, "requires_grad", False):
            t.grad = None
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        v.forward_backward()
        return torch.cuda.max_memory_allocated() - before
    return peak_rise(v.forward_backward)


def _ms(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s * 1e3:.3g}" if s * 1e3 < 100 else f"{s * 1e3:.0f}"


def _mib(b: int | None) -> str:
    return "–" if b is None else f"{max(b, 0) / 2**20:.1f}"


def table(rows: list[dict]) -> str:
    """The Markdown table (what the README holds between its markers)."""
    head = ("| loss | dtype | shape | ours ms | baseline | baseline ms | ratio (median) | ratio (min) "
            "| floor read / exp ms | ours / floor | peak extra MiB ours / baseline |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        ours, base = r.get("ours_median_s"), r.get("baseline_median_s")
        ratio = f"{ours / base:.2f}×" if ours and base else "–"
        ratio_min = f"{r['ours_min_s'] / r['baseline_min_s']:.2f}×" if ours and base else "–"
        shape = "×".join(map(str, r["shape"])) + (f" {r['label']}" if r["label"] else "")
        mem = f"{_mib(r.get('ours_peak_bytes'))} / {_mib(r.get('baseline_peak_bytes'))}"
        floor = max(r["floor_read_s"], 1e-9)
        lines.append(f"| {r['loss']} | {_DT[r['dtype']]} | {shape} | {_ms(ours)} | {r['baseline'] or '–'} | "
                     f"{_ms(base)} | {ratio} | {ratio_min} | {_ms(r['floor_read_s'])} / {_ms(r['floor_exp_s'])} | "
                     f"{(ours or 0) / floor:.0f}× | {mem} |")
    return "\n".join(lines)


def write_readme(text: str, path: Path = README) -> None:
    src = path.read_text()
    pat = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pat.search(src):
        sys.exit(f"{path}: no {BEGIN} … {END} markers")
    path.write_text(pat.sub(lambda _: f"{BEGIN}\n{text}\n{END}", src))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loss", action="append", help="only these losses (default: every workload)")
    ap.add_argument("--dtype", action="append", choices=tuple(_DT), help="default: each workload's ratio dtypes")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds of timed calls per variant (default 0.3)")
    ap.add_argument("--max-repeat", type=int, default=15)
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    ap.add_argument("--json", help="write every measurement here")
    ap.add_argument("--write-readme", action="store_true", help="replace the README's table between its markers")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    if args.device == "cpu":
        reexec_with_malloc_settings(__file__)
    elif not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device available")
    t_start = time.perf_counter()
    rows = []
    for w, dtype in rows_wanted(args.loss, args.dtype):
        rows.append(measure_row(w, dtype, args.device, args.min_time, args.max_repeat, not args.no_memory))
        print(f"  {w.key} {dtype}: {time.perf_counter() - t_start:.0f} s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - t_start
    cpu = time.process_time()
    header = (f"forward + backward, {args.device}, 1 thread, torch {torch.__version__}, {platform.machine()}, "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; {elapsed:.0f} s wall, {cpu:.0f} s CPU "
              f"(`python benchmarks/ratios.py`)")
    text = table(rows)
    print(header)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    if args.write_readme:
        write_readme(f"{header}\n\n{text}")


if __name__ == "__main__":
    main()
