"""Findings grouped by tag, and choosing what is judged (quantities, tags) in the API, the CLI and
the pytest helper: the verdict claims exactly what was judged."""

import json

import pytest
import torch.nn.functional as F

import lossoracle
from lossoracle.cli import main
from lossoracle.pytest_plugin import parametrize_conformance
from lossoracle.report import worst_row

from mutants import doubled_bce_with_logits

BCEL = "binary_cross_entropy_with_logits"


@pytest.fixture(scope="module")
def doubled():
    """2× PyTorch's BCE-with-logits: gross on ordinary inputs, NaN at x = ±inf."""
    return lossoracle.check(doubled_bce_with_logits, BCEL, dtypes=["float64"], devices=["cpu"],
                            cases=["infinite_logits", "tiny_logits", "scalar_none"])


def test_a_gross_error_on_ordinary_inputs_is_listed_beside_the_nan_at_infinity(doubled):
    value_rows = [r for r in doubled.results if r.quantity == "value"]
    assert worst_row(value_rows).case == "infinite_logits"  # the single worst finding is the NaN ...
    (cell,) = doubled.summary()
    assert cell["verdict"] == "deviates"
    by_tag = {(tuple(f["tags"]), f["quantity"]): f for f in cell["findings"]}
    ordinary = by_tag[("ordinary",), "value"]  # ... yet the gross error on ordinary inputs is listed, first
    assert ordinary["finding"] == "gross" and ordinary["case"] in ("tiny_logits", "scalar_none")
    assert by_tag[("infinite_input",), "value"]["finding"] == "nonfinite"
    assert by_tag[("ordinary",), "grad:input"]["finding"] == "gross"
    assert cell["details"][0].startswith("[ordinary] value: gross error")
    text = doubled.to_text()
    assert "[ordinary] value: gross error" in text and "[infinite_input] value: non-finite mismatch" in text
    # within a tag: the value first, then each gradient
    ordinary_lines = [f["quantity"] for f in cell["findings"] if f["tags"] == ["ordinary"]]
    assert ordinary_lines[0] == "value" and set(ordinary_lines[1:]) <= {"grad:input", "grad:target"}


def test_rows_and_cells_carry_tags_in_the_json(doubled, tmp_path):
    path = tmp_path / "r.json"
    doubled.write_json(str(path))
    data = json.loads(path.read_text())
    rows = {r["case"]: r for r in data["results"] if r["quantity"] == "value"}
    assert "infinite_input" in rows["infinite_logits"]["tags"] and "ordinary" in rows["tiny_logits"]["tags"]
    (cell,) = data["cells"]
    assert cell["tags"]["infinite_input"] == 1 and cell["tags"]["ordinary"] == 2
    assert cell["quantities"] == ["value", "grad:input", "grad:target"]
    assert {"tags", "quantity", "case", "verdict", "finding", "max_ulp", "max_cond_err", "detail"} <= set(
        cell["findings"][0])


def test_a_conforming_cell_has_no_findings():
    from lossoracle.implementations import torch_impl

    report = lossoracle.check(torch_impl.binary_cross_entropy_with_logits, BCEL, dtypes=["float64"],
                              devices=["cpu"], cases=["infinite_logits", "tiny_logits"])
    (cell,) = report.summary()
    assert cell["verdict"] == "conforms" and cell["findings"] == [] and cell["details"] == []


@pytest.mark.parametrize("quantities, verdict, judged", [
    (None, "deviates", {"value", "grad:input"}),
    (["value"], "conforms", {"value"}),          # the forward conforms ...
    (["grad:input"], "deviates", {"grad:input"}),  # ... its backward has the wrong sign in float16
])
def test_quantities_change_the_verdict_and_only_judged_ones_are_claimed(quantities, verdict, judged):
    report = lossoracle.check(F.softmax, "softmax", dtypes=["float16"], devices=["cpu"], quantities=quantities)
    (cell,) = report.summary()
    assert cell["verdict"] == verdict and set(cell["quantities"]) == judged
    assert {r.quantity for r in report.results} == judged
    if quantities:
        assert report.meta["selection"]["quantities"] == quantities
        assert "Judged: quantities " + ", ".join(quantities) + " only" in report.to_text()


def test_tags_change_the_verdict():
    """F.binary_cross_entropy_with_logits deviates on ±inf (NaN), NaN targets, zero pos_weight at
    inf and accepted bad targets; on the rest it only loses relative accuracy in the tails."""
    run = lambda **kw: lossoracle.check(F.binary_cross_entropy_with_logits, BCEL, dtypes=["float64"],  # noqa: E731
                                        devices=["cpu"], **kw)
    assert run().summary()[0]["verdict"] == "deviates"
    edges = ["infinite_input", "nan_propagation", "zero_weights", "bad_input"]
    assert run(exclude_tags=edges).summary()[0]["verdict"] == "tail"
    assert run(exclude_tags=edges[:3]).summary()[0]["verdict"] == "deviates"  # bad targets accepted
    ordinary = run(only_tags=["ordinary"])
    assert ordinary.summary()[0]["verdict"] == "tail"
    assert all("ordinary" in r.tags for r in ordinary.results)


def test_unknown_quantities_and_tags_are_named():
    with pytest.raises(ValueError, match="'grad:target'.*value, grad:input"):
        lossoracle.check(F.softmax, "softmax", quantities=["grad:target"])
    with pytest.raises(ValueError, match="'infinite'"):
        lossoracle.check(F.softmax, "softmax", exclude_tags=["infinite"])


def test_cli_quantity_and_tag_options(capsys):
    argv = ["check", "--impl", "torch.nn.functional:softmax", "--loss", "softmax", "--dtype", "float16"]
    assert main(argv) == 1
    assert main([*argv, "--quantity", "value"]) == 0
    out = capsys.readouterr().out
    assert "Judged: quantities value only" in out
    assert main([*argv, "--quantity", "grad:input", "--exclude-tag", "ordinary"]) == 0  # sign error: ordinary
    assert main([*argv, "--quantity", "grad:nope"]) == 2
    assert "grad:nope" in capsys.readouterr().err
    assert main([*argv, "--only-tag", "nope"]) == 2
    assert "'nope'" in capsys.readouterr().err


def test_cli_quantity_over_several_losses_skips_losses_without_it(capsys):
    rc = main(["check", "--loss", "softmax", "--loss", "nll_loss", "--quantity", "grad:target", "--dtype", "float64"])
    assert rc == 2 and "grad:target" in capsys.readouterr().err  # neither has a target gradient
    rc = main(["check", "--loss", "softmax", "--loss", "binary_cross_entropy_with_logits", "--quantity",
               "grad:target", "--dtype", "float64", "--case", "tiny_logits"])
    captured = capsys.readouterr()
    assert "not a quantity of softmax, left out" in captured.err and "softmax " not in captured.out
    assert "grad:target only" in captured.out


def _call(mark):
    return [p.values[0] for p in mark.args[1]]


def test_pytest_helper_takes_quantities_and_tags():
    (value_only,) = _call(parametrize_conformance(F.softmax, "softmax", dtypes=["float16"], quantities=["value"]))
    assert value_only().conforms
    (grad_only,) = _call(parametrize_conformance(F.softmax, "softmax", dtypes=["float16"],
                                                 quantities=["grad:input"]))
    with pytest.raises(AssertionError, match="Judged: quantities grad:input only"):
        grad_only()
    with pytest.raises(ValueError, match="grad:target"):
        parametrize_conformance(F.softmax, "softmax", quantities=["grad:target"])
