"""``lossoracle`` command line: ``list``, ``describe NAME``, ``check``.

Exit status: 0 when every checked cell meets ``--require`` (default ``tail``) and something was
scored, 1 otherwise (a deviation, an error, a crash or a timeout), 2 on a usage error (one line on
stderr naming the problem). A closed pipe (``lossoracle describe X | head``) exits quietly.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import os
import sys
from collections.abc import Sequence

from . import __version__, catalog, parallel, specs, xfails
from .engine import check, credit_bad_input
from .frameworks import backend
from .report import Report, Result, environment
from .compare import K
from .spec import DTYPE_EPS, DTYPES, InDtype
from .tags import TAGS, case_tags, check_tags, selection
from .terminal import Progress, emit


class UsageError(Exception):
    pass


def _parse_param(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"--param takes KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def _cmd_list(args) -> int:
    for name in specs.names():
        spec = specs.get(name)
        print(f"{name}: {spec.signature}")
        for impl in catalog.implementations(name):
            status = impl.installed() or "installed"
            tag = "ours" if impl.ours else "third-party"
            print(f"    {impl.name} [{impl.framework}, {tag}] {status}")
    return 0


def _value_text(v) -> str:
    """A Convention value as ``describe`` lists it (DTYPE_EPS, InDtype: rounded to the dtype checked)."""
    if isinstance(v, InDtype):
        return f"{v.value!r} (in the dtype)"
    return "the dtype's eps" if v == DTYPE_EPS else repr(v)


def _cmd_describe(args) -> int:
    spec = _spec(args.name)
    print(f"{spec.name}\n  signature: {spec.signature}\n  definition: {spec.definition}\n  source: {spec.source}")
    if spec.conventions:
        print("  conventions (oracle parameters for library variants):")
        for c in spec.conventions:
            shown = [_value_text(v[c.name] if isinstance(v, dict) else v) for v in c.values]
            searched = f" [searched: {', '.join(shown)}]" if shown else ""
            print(f"    {c.name} = {c.default!r}: {c.doc}{searched}")
    b = spec.budget
    print("  accuracy budget (ULP, value / gradient): "
          + ", ".join(f"{d} {b.ulp_budget('value', d):g}/{b.ulp_budget('grad', d):g}" for d in DTYPES)
          + "; reductions + log2(n)")
    perturbed = ("the spec's tolerance — " + " ".join(spec.tolerance.__doc__.split(":")[0].split())
                 if spec.tolerance else "each input perturbed relative to itself")
    scale = "S = 1, the loss being scale-invariant" if spec.unit_tail_scale else (
        "S = the largest input feeding the element, >= 1")
    print(f"  stable: |err| <= k·(u_c·c + u·|f|) + η with the componentwise condition c of the exact function "
          f"({perturbed}), k = {K:g} + log2(n); tail: |err| <= k·u·S ({scale}; × the largest |cotangent| for "
          "gradients)")
    for note in spec.edge_notes:
        print(f"  edge: {note}")
    print("  cases:")
    for case in spec.cases():
        expect = f"raises {case.raises.__name__}" if isinstance(case.raises, type) else "oracle"
        params = ", ".join(f"{k}={v!r}" for k, v in case.params.items())
        tags = " ".join(case_tags(spec, case))
        print(f"    {case.id} ({expect}; {params}) [{tags}]{' — ' + case.note if case.note else ''}")
    return 0


def _spec(name: str):
    try:
        return specs.get(name)
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None


def _load_xfails(path: str) -> list:
    try:
        return xfails.load(path)
    except (OSError, ValueError) as e:
        raise UsageError(f"--xfails {path!r}: {e}") from None


class _Journaled:
    """Runs cells, skipping those a resumed journal holds, and journals each result as it comes."""

    def __init__(self, args, report: Report):
        from . import journal

        self.report, self.done, self.journal = report, set(), None
        path = args.resume or args.journal
        if args.resume:
            try:
                held = journal.load(args.resume)
            except (OSError, ValueError) as e:
                raise UsageError(f"--resume {args.resume!r}: {e}") from None
            self.done = journal.done_cells(held)
            report.results.extend(Result(**r) for r in journal.completed(held))
        if path:
            self.journal = journal.Journal(path, resume=bool(args.resume))

    def todo(self, loss: str, name: str, framework: str, dtypes) -> list[str]:
        devices = backend(framework).devices()
        return [d for d in dtypes if not all((loss, name, dev, d) in self.done for dev in devices)]

    def add(self, part: Report) -> None:
        self.report.extend(part)
        if self.journal is not None:
            from dataclasses import asdict

            from .journal import cell_key

            rows = [asdict(r) for r in part.results]
            self.journal.append(rows)
            for key in dict.fromkeys(cell_key(r) for r in rows):
                self.journal.end_cell(key)

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()


def _selection(args, losses: list[str]) -> dict[str, dict]:
    """Per loss, the check() keywords of --quantity/--only-tag/--exclude-tag; a loss none of whose
    quantities was asked for is left out (a usage error when that leaves nothing)."""
    try:
        only, exclude = check_tags(args.only_tag, "--only-tag tag"), check_tags(args.exclude_tag, "--exclude-tag tag")
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.quantity and len(losses) == 1:
        try:
            selection(specs.get(losses[0]), args.quantity)
        except ValueError as e:
            raise UsageError(f"--quantity: {e}") from None
    out = {}
    for loss in losses:
        spec = specs.get(loss)
        quantities = None
        if args.quantity:
            known = {"value", *(f"grad:{a}" for a in spec.differentiable)}
            quantities = [q for q in args.quantity if q in known]
            if not quantities:
                continue
        out[loss] = {"quantities": quantities, "only_tags": only, "exclude_tags": exclude}
    if not out:
        names = ", ".join(args.quantity)
        raise UsageError(f"--quantity {names}: no such quantity of {', '.join(losses)} (e.g. value, grad:input)")
    if len(out) < len(losses):
        print(f"lossoracle: note: --quantity {', '.join(args.quantity)}: not a quantity of "
              f"{', '.join(n for n in losses if n not in out)}, left out", file=sys.stderr)
    return out


# the relative time of one call by framework (JAX traces and lowers every case: ~10× a torch call)
_CALL_COST = {"jax": 10.0, "torch": 1.0, "numpy": 0.6}


def _cost(loss: str, framework: str, n_dtypes: int) -> float:
    """A task's estimated time, to start the long ones first (``--jobs``): calls × their cost."""
    return len(specs.get(loss).cases()) * n_dtypes * _CALL_COST.get(framework, 1.0)


def _cmd_check(args) -> int:
    if args.framework == "torch" or not args.impl:  # torch is imported for these anyway (not for list, describe)
        from .isolation import prime_torch_autograd

        prime_torch_autograd()  # before the --impl module, which may train with torch.compile on import
    options = {"timeout": args.timeout, "isolate": not args.no_isolation, "fingerprint": not args.no_fingerprint}
    if args.html:  # the plots need matplotlib and the per-element errors, kept only for them
        from .plots import PLOT_POINTS, require_matplotlib

        try:
            require_matplotlib()
        except ImportError as e:
            raise UsageError(f"--html: {e}") from None
        options["plot_points"] = PLOT_POINTS
    if args.case:
        options["cases"] = args.case
    dtypes = args.dtype or list(DTYPES)
    report = Report(meta={"command": "check", "environment": environment()})
    xfail_entries = _load_xfails(args.xfails) if args.xfails else None
    if args.impl:
        if not args.loss or len(args.loss) != 1:
            raise UsageError("--impl needs exactly one --loss NAME")
        spec = _spec(args.loss[0])
        if "" not in sys.path and os.getcwd() not in sys.path:  # as python -m does: the user's own module
            sys.path.insert(0, os.getcwd())
        try:
            fn = catalog.resolve(args.impl)
        except (ImportError, AttributeError, ValueError) as e:
            raise UsageError(f"--impl {args.impl!r} cannot be imported: {e}") from None
        conventions = dict(_parse_param(p) for p in args.param)
        select = _selection(args, [spec.name])
        plan = [(spec.name, args.impl, args.framework,
                 lambda todo, o: check(fn, spec.name, args.framework, name=args.impl, conventions=conventions,
                                       dtypes=todo, **o))]
        needs = [(args.framework,)]
    else:
        if args.param:
            raise UsageError("--param applies to --impl")
        losses = [_spec(n).name for n in args.loss] if args.loss else specs.names()
        select = _selection(args, losses)
        impls = [impl for loss in select for impl in catalog.implementations(loss)]
        plan = [(impl.loss, impl.name, impl.framework,
                 lambda todo, o, impl=impl: catalog.run(impl, dtypes=todo, **o)) for impl in impls]
        needs = [(*impl.requires, impl.framework) for impl in impls]  # imported by the task (catalog.run)
    if args.quantity or args.only_tag or args.exclude_tag:
        report.meta["selection"] = {"quantities": args.quantity or None, "only_tags": args.only_tag,
                                    "exclude_tags": args.exclude_tag}
    runs = _Journaled(args, report)
    todos = [runs.todo(loss, name, framework, dtypes) for loss, name, framework, _ in plan]
    sizes = [len(todo) * len(backend(framework).devices()) if todo else 0
             for todo, (_, _, framework, _) in zip(todos, plan)]
    try:
        jobs = 1 if args.no_isolation else args.jobs
        with Progress(sum(sizes)) as progress:
            work = [(entry, todo, n, need)
                    for entry, todo, n, need in zip(plan, todos, itertools.accumulate(sizes), needs) if todo]
            # side by side, a JAX implementation (the longest: one XLA compilation per case and dtype)
            # is checked one dtype per task, so that no one task is the run's critical path; its
            # bad-input credit, which looks at every dtype, is given once the parts are joined
            split = [jobs > 1 and framework == "jax" and len(todo) > 1 for (_, _, framework, _), todo, _, _ in work]

            def task(loss, run, todo, whole):  # side by side, a cell's progress is shown as its report comes
                return lambda: run(todo, {**options, **select[loss], "progress": progress if jobs <= 1 else None,
                                          **({} if whole else {"credit_bad_input": False})})

            flat = []  # (index in work, task, its estimated cost)
            for k, ((loss, _, framework, run), todo, _, _) in enumerate(work):
                for some in ([[d] for d in todo] if split[k] else [todo]):
                    flat.append((k, task(loss, run, some, not split[k]), _cost(loss, framework, len(some))))
            parts = parallel.run_all([t for _, t, _ in flat], jobs, cost=[c for _, _, c in flat],
                                     needs=[[m for m in work[k][3] if m not in sys.modules] for k, _, _ in flat])
            for k, group in itertools.groupby(zip((k for k, _, _ in flat), parts), key=lambda kp: kp[0]):
                (loss, name, _, _), _, n, _ = work[k]
                part = Report()
                for _, piece in group:
                    part.extend(piece)
                if split[k]:
                    credit_bad_input(part.results)
                runs.add(part)
                if jobs > 1:
                    progress(f"{loss} {name}")
                progress.advance_to(n)
    finally:
        runs.close()
    if xfail_entries is not None:
        for w in xfails.apply(report, xfail_entries, args.require):
            print(f"lossoracle: warning: {w}", file=sys.stderr)
    emit(report.to_text(verbose=args.verbose))
    if args.json:
        report.write_json(args.json)
    if args.html:
        report.write_html(args.html)
    return 0 if report.passes(args.require) else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lossoracle", description="Validate loss functions against mpmath oracles.")
    p.add_argument("--version", action="version", version=f"lossoracle {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every loss and every implementation found").set_defaults(fn=_cmd_list)
    d = sub.add_parser("describe", help="signature, conventions, edge cases, accuracy requirement")
    d.add_argument("name")
    d.set_defaults(fn=_cmd_describe)
    c = sub.add_parser("check", help="validate implementations; no arguments: everything found")
    c.add_argument("--loss", action="append", default=[], help="restrict to this loss (repeatable)")
    c.add_argument("--impl", help="MODULE:CALLABLE with the loss's canonical signature")
    c.add_argument("--framework", default="torch", choices=["torch", "numpy", "jax"])
    c.add_argument("--param", action="append", default=[], help="KEY=VALUE: oracle convention the --impl claims")
    c.add_argument("--dtype", action="append", choices=DTYPES, help="restrict dtypes (repeatable)")
    c.add_argument("--case", action="append", help="restrict to case ids (repeatable), e.g. to reproduce")
    c.add_argument("--timeout", type=float, default=60.0, help="seconds per call before a hang is a verdict "
                   "(default 60)")
    c.add_argument("--jobs", "-j", type=int, default=parallel.default_jobs(),
                   help="implementations checked side by side, each in its own process (default: the cores, at "
                        "most 4; 1 runs them one after the other)")
    c.add_argument("--no-isolation", action="store_true", help="call implementations in this process (no crash "
                   "or hang protection)")
    c.add_argument("--no-fingerprint", action="store_true", help="do not search a non-conforming cell for the "
                   "convention it follows (--param pins a convention: it is not searched)")
    c.add_argument("--journal", help="append each result to this JSON-lines file as it is measured")
    c.add_argument("--resume", help="skip the cells this journal already holds, and go on appending to it")
    c.add_argument("--quantity", action="append", default=[], metavar="value|grad:ARG",
                   help="judge only this quantity (repeatable); the others are not claimed in the verdict")
    c.add_argument("--only-tag", action="append", default=[], metavar="TAG",
                   help=f"run only cases with this tag (repeatable): {', '.join(TAGS)}")
    c.add_argument("--exclude-tag", action="append", default=[], metavar="TAG",
                   help="leave out cases with this tag (repeatable), e.g. bad_input for an implementation that "
                   "documents no input validation")
    c.add_argument("--xfails", metavar="FILE", help="TOML or JSON of expected failures (loss, implementation, dtype, "
                   "device patterns, verdict, reason): shown as xfail, not failing the exit status")
    c.add_argument("--json", help="write the JSON report here")
    c.add_argument("--html", help="write a self-contained HTML report here: the table with filters, and a plot of "
                   "every element's error for each cell that does not conform (needs matplotlib)")
    c.add_argument("--require", default="tail", choices=["faithful", "stable", "tail"],
                   help="the grade every cell must reach for exit status 0 (default: tail)")
    c.add_argument("-v", "--verbose", action="store_true", help="print every cell with its worst input")
    c.set_defaults(fn=_cmd_check)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except UsageError as e:
        print(f"lossoracle: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (| head): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
