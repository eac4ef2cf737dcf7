"""How the checker runs: implementations side by side (``--jobs``), exact oracle outputs kept
across runs, JAX calls jitted with an eager fallback — none of which may change a result."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lossoracle import catalog, oraclecache, parallel, specs
from lossoracle.engine import _ORACLE_CACHE, exact_outputs, oracle_outputs
from lossoracle.refdata import encode_mp


def _rows(report):
    return [repr(dataclasses.asdict(r)) for r in report.results]  # repr: NaN equals NaN


def test_jobs_give_the_sequential_report_in_the_sequential_order():
    impls = [i for i in catalog.implementations("entropy") if i.framework != "jax"][:3]
    impls += [i for i in catalog.implementations("kl_divergence") if not i.ours][:1]
    tasks = [lambda impl=impl: catalog.run(impl, dtypes=["float32", "float64"]) for impl in impls]
    sequential = [_rows(r) for r in parallel.run_all(tasks, 1)]
    side_by_side = [_rows(r) for r in parallel.run_all(tasks, 2)]
    assert [f"'implementation': {i.name!r}" in rows[0] for rows, i in zip(side_by_side, impls)] == [True] * 4
    assert side_by_side == sequential
    assert sum(len(rows) for rows in sequential) > 20


def test_jobs_is_an_option_of_check(capsys):
    from lossoracle.cli import main

    assert main(["check", "--loss", "entropy", "--dtype", "float64", "--jobs", "2"]) in (0, 1)
    two = capsys.readouterr().out
    assert main(["check", "--loss", "entropy", "--dtype", "float64", "--jobs", "1"]) in (0, 1)
    assert capsys.readouterr().out == two and "torch.special.entr" in two


def _first_case(loss):
    spec = specs.get(loss)
    return spec, next(c for c in spec.cases() if c.raises is None)


def test_oracle_outputs_are_kept_exactly_and_keyed_by_what_they_depend_on(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSORACLE_CACHE", str(tmp_path))
    monkeypatch.setattr(oraclecache, "_LOADED", {})
    spec, case = _first_case("sigmoid_focal_loss")
    conventions = {"p_t": "per_term"}  # a library's convention: not in the frozen reference data
    memo = (spec.name, case.id, (("p_t", "per_term"),))
    _ORACLE_CACHE.pop(memo, None)
    first = oracle_outputs(spec, case, conventions)
    stored = tmp_path / "oracle" / f"{spec.name}.jsonl"
    k = oraclecache.key(spec, case, conventions)
    assert stored.exists() and k in stored.read_text()
    oraclecache._LOADED.clear()
    again = oraclecache.get(spec.name, k)
    assert again is not None
    flat = lambda v: [encode_mp(x) for x in np.asarray(v, dtype=object).reshape(-1)]  # noqa: E731
    assert flat(again[0]) == flat(first[0]) == flat(exact_outputs(spec, case, conventions)[0])  # the same bits
    assert {n: flat(g) for n, g in again[1].items()} == {n: flat(g) for n, g in first[1].items()}
    assert oraclecache.get(spec.name, k) is None  # read once: the engine keeps it
    other = dataclasses.replace(case, params={**case.params, "reduction": "sum"})
    assert oraclecache.key(spec, other, conventions) != k
    assert oraclecache.key(spec, case, {"p_t": "sign"}) != k
    monkeypatch.setattr(oraclecache, "_source_hash", lambda path: "edited")  # an oracle edited since
    assert oraclecache.key(spec, case, conventions) != k
    _ORACLE_CACHE.pop(memo, None)


def test_the_oracle_cache_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSORACLE_CACHE", "off")
    monkeypatch.setattr(oraclecache, "_LOADED", {})
    spec, case = _first_case("entropy")
    oraclecache.put(spec.name, "k", *exact_outputs(spec, case))
    assert oraclecache.get(spec.name, "k") is None


def _value_dependent(input, dim=-1):
    """Python control flow on a value (as a library validating its input does): not traceable by
    jax.jit, fine eagerly."""
    import jax
    import jax.numpy as jnp

    if bool(jnp.isnan(input).any()):
        raise ValueError("input has NaN")
    return jax.nn.log_softmax(input, axis=dim)


def test_a_jax_callable_that_cannot_be_traced_runs_eagerly():
    pytest.importorskip("jax")
    from lossoracle import check

    report = check(_value_dependent, "log_softmax", "jax", dtypes=["float64"], cases=["random_float64_0"])
    rows = [r for r in report.results if r.quantity in ("value", "grad:input")]
    assert {r.quantity for r in rows} == {"value", "grad:input"}
    assert all(r.verdict in ("conforms", "tail") for r in rows), [r.detail for r in rows]


def _raises_always(input, target, *args, **kwargs):
    raise ValueError("never computes")


@pytest.mark.parametrize("fn", [None, _raises_always], ids=["ours", "raises_always"])
def test_dtypes_checked_apart_give_the_whole_check_with_the_same_bad_input_credit(fn):
    """``lossoracle check --jobs`` checks a JAX implementation one dtype per task and gives the
    bad-input credit (which looks at every dtype) once the parts are joined: the rows must be those
    of one check of every dtype — and an implementation raising on everything is still not credited."""
    from lossoracle.engine import check, credit_bad_input

    impl = next(i for i in catalog.implementations("binary_cross_entropy") if i.ours and i.framework == "torch")
    dtypes = ["float32", "float64"]
    if fn is None:
        whole = catalog.run(impl, dtypes=dtypes)
        parts = [catalog.run(impl, dtypes=[d], credit_bad_input=False) for d in dtypes]
    else:
        whole = check(fn, "binary_cross_entropy", "torch", dtypes=dtypes, fingerprint=False)
        parts = [check(fn, "binary_cross_entropy", "torch", dtypes=[d], fingerprint=False, credit_bad_input=False)
                 for d in dtypes]
    joined = [r for p in parts for r in p.results]
    credit_bad_input(joined)
    assert [repr(dataclasses.asdict(r)) for r in joined] == _rows(whole)
    raises = [r for r in joined if r.quantity == "raises"]
    assert raises
    if fn is None:
        assert all(r.verdict == "conforms" and not r.reproduce for r in raises)
    else:
        assert all(r.finding == "not_credited" and r.reproduce for r in raises if r.verdict == "error")
        assert any(r.finding == "not_credited" for r in raises)


def test_a_cache_row_appended_by_another_process_is_read_instead_of_recomputed(tmp_path):
    from lossoracle import condcache

    path = tmp_path / "loss.jsonl"
    condcache.append_row(tmp_path, "loss", {"key": "a", "x": 1})
    assert set(condcache.read_rows(path)) == {"a"}
    assert condcache.read_new_rows(path) == {}
    condcache.append_row(tmp_path, "loss", {"key": "b", "x": 2})
    with open(path, "a") as f:
        f.write('{"key": "c", "x"')  # another process still writing this line
    assert {k: condcache.parse_row(v) for k, v in condcache.read_new_rows(path).items()} == {"b": {"key": "b", "x": 2}}
    with open(path, "a") as f:
        f.write(': 3}\n')
    assert {k: condcache.parse_row(v) for k, v in condcache.read_new_rows(path).items()} == {"c": {"key": "c", "x": 3}}
    assert set(condcache.read_rows(path)) == {"a", "b", "c"}


def test_a_cache_row_is_parsed_only_when_asked_for_and_a_broken_one_is_recomputed(tmp_path):
    from lossoracle import condcache

    path = tmp_path / "loss.jsonl"
    condcache.append_row(tmp_path, "loss", {"key": "a", "x": 1})
    with open(path, "a") as f:  # an interrupted run's cut line, then a later run's row on the same line
        f.write('{"key": "b", "x": [1, ' + '{"key": "c", "x": 3}\n')
        f.write('{"x": 4, "key": "d"}\n')  # not written by append_row: its key is found by parsing it
    rows = condcache.read_rows(path)
    assert set(rows) == {"a", "b", "d"}
    assert all(isinstance(v, bytes) for v in rows.values())
    assert condcache.parse_row(rows["a"]) == {"key": "a", "x": 1}
    assert condcache.parse_row(rows["b"]) is None  # not guessed: the caller computes it afresh
    assert condcache.parse_row(rows["d"]) == {"x": 4, "key": "d"}


def test_oracle_outputs_stored_by_another_process_are_found(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSORACLE_CACHE", str(tmp_path))
    monkeypatch.setattr(oraclecache, "_LOADED", {})
    monkeypatch.setattr(oraclecache, "_WRITTEN", set())
    spec, case = _first_case("sigmoid_focal_loss")
    conventions = {"p_t": "per_term"}
    k = oraclecache.key(spec, case, conventions)
    assert oraclecache.get(spec.name, k) is None  # loaded: nothing stored yet
    exact = exact_outputs(spec, case, conventions)
    import multiprocessing as mp

    child = mp.get_context("fork").Process(target=oraclecache.put, args=(spec.name, k, *exact))
    child.start()
    child.join()
    assert child.exitcode == 0
    again = oraclecache.get(spec.name, k)
    flat = lambda v: [encode_mp(x) for x in np.asarray(v, dtype=object).reshape(-1)]  # noqa: E731
    assert again is not None and flat(again[0]) == flat(exact[0])


def _jax_kept_vs_traced() -> dict:
    """(In a forked worker: the test process must not initialise a JAX backend.) optax's sigmoid
    focal loss on catalogue cases, three ways: traced with this cache off (XLA compiles as before),
    traced and stored, loaded from the store; then with every stored entry corrupted."""
    import os

    import jax.numpy as jnp

    from lossoracle import jaxcache
    from lossoracle.frameworks import JaxBackend

    impl = next(i for i in catalog.implementations("sigmoid_focal_loss") if i.framework == "jax")
    fn, spec = catalog.resolve(impl.target), specs.get("sigmoid_focal_loss")
    loaded = []
    real_load = jaxcache.load
    jaxcache.load = lambda k: loaded.append(real_load(k) is not None) or real_load(k)

    def outcomes(tag: str) -> list:
        if tag == "off":
            os.environ["LOSSORACLE_JAX_CACHE"] = "0"
        try:
            return [JaxBackend.run(fn, None, spec, c, d, "cpu") for d in ("float16", "float64")
                    for c in spec.cases()[:12] if c.raises is None and d in c.dtypes()]
        finally:
            os.environ.pop("LOSSORACLE_JAX_CACHE", None)

    runs = {"off": outcomes("off"), "stored": outcomes("stored")}
    n_stored = len(list(jaxcache.folder().glob("*.pkl")))
    loaded.clear()
    runs["loaded"] = outcomes("loaded")
    n_loaded = sum(loaded)
    for f in jaxcache.folder().glob("*.pkl"):
        f.write_bytes(b"not an executable")
    runs["corrupted"] = outcomes("corrupted")
    arrays = {tag: [[o.value, *(g for g, _ in o.grads.values())] for o in outs] for tag, outs in runs.items()}
    dtypes = {tag: [[o.value_dtype, *(d for _, d in o.grads.values())] for o in outs] for tag, outs in runs.items()}
    case = next(c for c in spec.cases() if c.raises is None and "float64" in c.dtypes())
    arrays_in = {k: jnp.asarray(v) for k, v in case.inputs.items() if v is not None}
    keys = [jaxcache.key(fn, spec.name, "float64", arrays_in, p, "layout") for p in
            ({"alpha": 0.25}, {"alpha": 0.5}, {"alpha": 1}, {"alpha": 1.0}, {"alpha": True})]
    keys += [jaxcache.key(fn, spec.name, "float32", arrays_in, {"alpha": 0.25}, "layout"),
             jaxcache.key(fn, spec.name, "float64", {k: v[..., :1] for k, v in arrays_in.items()}, {"alpha": 0.25},
                          "layout"),
             jaxcache.key(fn, spec.name, "float64", arrays_in, {"alpha": 0.25}, "layout")]
    lam = jaxcache.key(lambda x: x, spec.name, "float64", arrays_in, {}, "layout")
    import jax  # a setting changed within the process changes the key (the compiler's part is read at every call)

    precision = jax.config.jax_default_matmul_precision
    jax.config.update("jax_default_matmul_precision", "highest")
    changed = jaxcache.key(fn, spec.name, "float64", arrays_in, {"alpha": 0.25}, "layout")
    jax.config.update("jax_default_matmul_precision", precision)
    keys.insert(-1, changed)
    return {"arrays": arrays, "dtypes": dtypes, "stored": n_stored, "loaded": n_loaded, "keys": keys, "lambda": lam}


def test_a_kept_jax_executable_gives_the_traced_results_bit_for_bit(tmp_path, monkeypatch):
    """lossoracle.jaxcache: loaded executables give exactly what tracing and compiling give (values,
    gradients, dtypes; NaN where NaN, the sign of zero), a corrupted entry is ignored, and the key
    separates parameters (0.25, 0.5, 1, 1.0, True), dtypes, shapes and a ``jax.config`` setting changed
    in the process, and leaves lambdas out."""
    pytest.importorskip("optax")
    from lossoracle import isolation

    monkeypatch.setenv("LOSSORACLE_CACHE", str(tmp_path))
    got = isolation.Worker(_jax_kept_vs_traced, timeout=600).run()
    assert isinstance(got, dict), got
    n = len(got["arrays"]["off"])
    assert n >= 10 and got["stored"] == n and got["loaded"] == n
    for tag in ("stored", "loaded", "corrupted"):
        assert got["dtypes"][tag] == got["dtypes"]["off"]
        for want, have in zip(got["arrays"]["off"], got["arrays"][tag]):
            for a, b in zip(want, have):
                assert a.shape == b.shape and np.array_equal(a, b, equal_nan=True), tag
                assert np.array_equal(np.signbit(a), np.signbit(b)), tag
    keys = got["keys"]
    assert None not in keys and len(set(keys[:-1])) == len(keys) - 1 and keys[-1] == keys[0]
    assert got["lambda"] is None
