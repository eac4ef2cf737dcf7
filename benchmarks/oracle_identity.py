"""Oracle bit-identity across a change: the exact value and VJPs (``engine.exact_outputs``, caches
emptied before each) of every valid catalogue case, under the spec's own conventions and every
setting the convention search tries in float16/32/64, encoded exactly (``refdata.encode_mp``) and
hashed per case and setting.

    python benchmarks/oracle_identity.py --out before.json          # on the base checkout
    python benchmarks/oracle_identity.py --out after.json --against before.json [--loss NAME]

With ``--against``, exits 1 when any entry differs or is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib

import numpy as np


def identities(losses: list[str]) -> tuple[dict[str, str], int]:
    from lossoracle import mpfuncs, refdata, specs
    from lossoracle.engine import exact_outputs
    from lossoracle.fingerprint import candidates

    out, n = {}, 0
    for name in losses:
        spec = specs.get(name)
        for case in spec.cases():
            if case.raises is not None:
                continue
            settings = [{}]
            for dtype in ("float16", "float32", "float64"):
                settings += [s.conventions for s in candidates(spec, {}, dtype)
                             if s.conventions and s.conventions not in settings]
            for conv in settings:
                key = f"{name}|{case.id}|{sorted(conv.items())}"
                mpfuncs.clear_caches()
                try:
                    value, grads = exact_outputs(spec, case, conv)
                except (ValueError, TypeError) as e:  # a setting some cases reject: the error must persist
                    out[key] = f"raises {type(e).__name__}: {e}"
                    continue
                enc = [refdata.encode_mp(v) for v in np.asarray(value, dtype=object).reshape(-1).tolist()]
                for k in sorted(grads):
                    enc += [k] + [refdata.encode_mp(v) for v in np.asarray(grads[k], dtype=object).reshape(-1).tolist()]
                n += len(enc)
                out[key] = hashlib.sha256(repr(enc).encode()).hexdigest()
    return out, n


def main(argv: list[str] | None = None) -> int:
    from lossoracle import specs

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=pathlib.Path, required=True)
    p.add_argument("--against", type=pathlib.Path, help="an earlier --out to compare with")
    p.add_argument("--loss", action="append", help="only these losses")
    args = p.parse_args(argv)
    got, n = identities(args.loss or list(specs.names()))
    args.out.write_text(json.dumps(got, indent=0, sort_keys=True))
    print(f"{len(got)} case × setting entries, {n} exact values")
    if args.against:
        ref = json.loads(args.against.read_text())
        bad = [k for k in got if ref.get(k) != got[k]]
        print(f"{len(bad)} differ or are missing from {args.against}" + "".join(f"\n  {k}" for k in bad[:20]))
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
