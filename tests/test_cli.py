"""The command line: list, describe, check (exit codes, JSON schema), usage errors."""

import json

import pytest

from lossoracle.cli import main


def test_list_shows_losses_and_implementations(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "cross_entropy:" in out and "torch.nn.functional.cross_entropy" in out


def test_describe_shows_signature_budget_and_cases(capsys):
    assert main(["describe", "cross_entropy"]) == 0
    out = capsys.readouterr().out
    assert "label_smoothing=0.0" in out and "ignore_all_mean" in out and "region soft_coefficients" in out


def test_check_writes_the_documented_json(tmp_path, capsys):
    path = tmp_path / "r.json"
    rc = main(["check", "--loss", "nll_loss", "--json", str(path), "--dtype", "float64"])
    assert rc == 0
    data = json.loads(path.read_text())
    assert data["schema"] == 1 and data["lossoracle"]
    row = data["results"][0]
    for key in ("loss", "implementation", "device", "dtype", "case", "quantity", "max_ulp", "max_rel_err",
                "nonfinite_mismatch", "verdict", "grade", "detail"):
        assert key in row
    assert {r["verdict"] for r in data["results"]} <= {"conforms", "skipped"}
    assert "conform" in capsys.readouterr().out


def test_check_impl_deviating_exits_1(capsys):
    rc = main(["check", "--impl", "torch.nn.functional:softmax", "--loss", "softmax", "--dtype", "float64"])
    assert rc == 1
    assert "deviates" in capsys.readouterr().out


def test_check_impl_with_convention_param(capsys, tmp_path):
    html = tmp_path / "r.html"
    rc = main(["check", "--impl", "lossoracle.implementations.numpy_impl:nll_loss", "--framework", "numpy",
               "--loss", "nll_loss", "--dtype", "float32", "--html", str(html)])
    assert rc == 0 and "<table>" in html.read_text()


@pytest.mark.parametrize("argv, message", [
    (["check", "--loss", "nope"], "unknown loss 'nope'"),
    (["check", "--impl", "no.such:thing", "--loss", "softmax"], "cannot be imported"),
    (["check", "--impl", "torch.nn.functional:softmax"], "needs exactly one --loss"),
    (["check", "--impl", "torch.nn.functional:softmax", "--loss", "softmax", "--param", "oops"], "KEY=VALUE"),
])
def test_usage_errors_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
