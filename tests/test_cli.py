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
    assert "label_smoothing=0.0" in out and "ignore_all_mean" in out and "componentwise condition" in out
    assert "[saturated_logits huge_values all_ignored hard_labels]" in out  # each case's tags (any dtype)


def test_check_writes_the_documented_json(tmp_path, capsys):
    path = tmp_path / "r.json"
    rc = main(["check", "--loss", "nll_loss", "--json", str(path), "--dtype", "float64"])
    assert rc == 0
    data = json.loads(path.read_text())
    assert data["schema"] == 2 and data["lossoracle"] and data["environment"]["torch"].startswith("2.")
    row = data["results"][0]
    for key in ("loss", "implementation", "device", "dtype", "case", "tags", "quantity", "max_ulp", "max_cond_err",
                "max_rel_err", "nonfinite_mismatch", "verdict", "grade", "convention", "detail"):
        assert key in row
    assert {r["verdict"] for r in data["results"]} <= {"conforms", "tail", "not_installed"}
    assert "conform" in capsys.readouterr().out


def test_check_impl_deviating_exits_1(capsys):
    """F.softmax's float16 backward has the wrong sign where one probability dominates."""
    rc = main(["check", "--impl", "torch.nn.functional:softmax", "--loss", "softmax", "--dtype", "float16"])
    assert rc == 1
    assert "deviates" in capsys.readouterr().out


@pytest.mark.parametrize("require, rc", [("tail", 0), ("stable", 1), ("faithful", 1)])
def test_require_chooses_what_exits_0(require, rc, capsys):
    """F.softmax float64: its backward is accurate only to the tail bound (0 for −1.2e-153)."""
    argv = ["check", "--impl", "torch.nn.functional:softmax", "--loss", "softmax", "--dtype", "float64"]
    assert main([*argv, "--require", require]) == rc
    assert "tail" in capsys.readouterr().out


def test_an_implementation_that_always_raises_fails(tmp_path, monkeypatch, capsys):
    (tmp_path / "lo_probe.py").write_text("def broken(*args, **kwargs):\n    raise RuntimeError('always fails')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rc = main(["check", "--impl", "lo_probe:broken", "--loss", "cross_entropy", "--dtype", "float32"])
    out = capsys.readouterr().out
    assert rc == 1 and "error" in out and "RuntimeError: always fails" in out and "conforms" not in out.split("\n")[2]


def test_describe_survives_a_closed_pipe(tmp_path):
    import subprocess
    import sys

    cmd = f"{sys.executable} -m lossoracle.cli describe cross_entropy | head -1"
    res = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=120)
    assert res.stdout.startswith("cross_entropy") and "Traceback" not in res.stderr and "Broken" not in res.stderr


def test_check_impl_with_convention_param(capsys, tmp_path):
    html = tmp_path / "r.html"
    rc = main(["check", "--impl", "lossoracle.implementations.numpy_impl:nll_loss", "--framework", "numpy",
               "--loss", "nll_loss", "--dtype", "float32", "--html", str(html)])
    assert rc == 0 and "<table id=\"cells\">" in html.read_text()


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
