"""The terminal: colour and a progress bar only where a person watches (a TTY, NO_COLOR unset);
plain, stable text everywhere else; the console script finds the user's own module."""

import io
import os
import pathlib
import shutil
import subprocess
import sys

import lossoracle
from lossoracle.cli import main
from lossoracle.terminal import Progress, emit


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


TEXT = "softmax  lib  cpu  float16  deviates  deviates\nsoftmax  lib  cpu  float32  conforms  faithful"


def test_plain_text_off_a_tty(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = io.StringIO()
    emit(TEXT, out)
    assert out.getvalue() == TEXT + "\n"


def test_colour_on_a_tty_and_no_color_respected(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = FakeTTY()
    emit(TEXT, out)
    assert "\x1b[" in out.getvalue() and "deviates" in out.getvalue()
    assert out.getvalue().count("\x1b[0m") == 3  # the three verdict words, each once
    monkeypatch.setenv("NO_COLOR", "1")
    out = FakeTTY()
    emit(TEXT, out)
    assert out.getvalue() == TEXT + "\n"


def test_progress_bar_only_on_a_tty_and_after_the_delay():
    quiet = io.StringIO()
    with Progress(3, stream=quiet, delay=0.0) as p:
        p("softmax lib cpu float16")
        p.advance_to(3)
    assert quiet.getvalue() == ""
    short = FakeTTY()
    with Progress(3, stream=short, delay=60.0) as p:  # a short run shows nothing
        p("softmax lib cpu float16")
    assert short.getvalue() == ""
    tty = FakeTTY()
    with Progress(3, stream=tty, delay=0.0) as p:
        p("softmax lib cpu float16")
        p("softmax lib cpu float32")
    assert "softmax lib cpu float32" in tty.getvalue() and "1/3" in tty.getvalue()


def test_check_output_off_a_tty_is_plain_with_a_summary_paragraph(capsys):
    rc = main(["check", "--impl", "torch.nn.functional:softmax", "--loss", "softmax", "--dtype", "float16"])
    captured = capsys.readouterr()
    assert rc == 1 and "\x1b[" not in captured.out + captured.err  # no colour, no progress bar
    last = captured.out.strip().splitlines()[-1]
    assert last.startswith("1 implementation × dtype combinations: 1 deviates.")
    assert "Worst: softmax torch.nn.functional:softmax float16 deviates [ordinary] grad:input" in last


def test_console_script_imports_the_users_module_from_the_working_directory(tmp_path):
    """As `python -m` does: `lossoracle check --impl mylosses:focal` in the folder holding mylosses.py."""
    script = shutil.which("lossoracle", path=str(pathlib.Path(sys.executable).parent))
    assert script, "the lossoracle console script is not installed next to this Python"
    (tmp_path / "mylosses.py").write_text(
        "from lossoracle.implementations.torch_impl import sigmoid_focal_loss as focal\n")
    src = str(pathlib.Path(lossoracle.__file__).parent.parent)  # this checkout, not another install
    env = {**os.environ, "PYTHONPATH": src}
    res = subprocess.run([script, "check", "--impl", "mylosses:focal", "--loss", "sigmoid_focal_loss",
                          "--dtype", "float64", "--case", "basic_none"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert "No module named" not in res.stderr, res.stderr
    assert res.returncode == 0 and "mylosses:focal" in res.stdout and "conforms" in res.stdout, res.stdout + res.stderr


def test_the_summary_names_a_failed_call_by_its_exception_not_by_an_error_size():
    from lossoracle.report import Report

    finding = {"tags": ["empty_input"], "slot": "failed", "quantity": "value", "case": "empty_mean",
               "verdict": "error", "grade": None, "finding": "error", "max_ulp": None, "max_cond_err": None,
               "count": 1, "detail": "ValueError: Found array with 0 sample(s) (validation.py:1113)", "reproduce": ""}
    cell = {"loss": "binary_cross_entropy", "implementation": "lib.bce", "dtype": "float32", "verdict": "error",
            "findings": [finding], "xfail": None}
    text = Report([]).paragraph([cell])
    assert "(case empty_mean, ValueError: Found array with 0 sample(s))" in text and "-1 ULP" not in text
