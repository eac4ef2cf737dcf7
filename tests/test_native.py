"""The native-kernel loader (``implementations/native.py``): what it refuses to build, and its build names."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from lossoracle.implementations import native  # noqa: E402


def test_a_worker_never_builds_but_uses_what_it_inherited(monkeypatch):
    """``LOSSORACLE_NATIVE_BUILD=0`` (the validator's forked workers): no build, None; a module the
    process already had is still used."""
    built = []
    monkeypatch.setattr(native, "_MODULES", {})
    monkeypatch.setattr(native, "_build", lambda name: built.append(name) or f"module {name}")
    monkeypatch.setenv("LOSSORACLE_NATIVE_BUILD", "0")
    assert native.module("softmax") is None and built == []
    monkeypatch.setenv("LOSSORACLE_NATIVE_BUILD", "1")
    assert native.module("softmax") == "module softmax" and built == ["softmax"]
    monkeypatch.setenv("LOSSORACLE_NATIVE_BUILD", "0")
    assert native.module("softmax") == "module softmax" and built == ["softmax"]


def test_the_build_name_carries_the_source_digest(monkeypatch, tmp_path):
    """Two checkouts sharing ``TORCH_EXTENSIONS_DIR`` must not load each other's build: the name changes
    with the source."""
    from torch.utils import cpp_extension

    names = []
    monkeypatch.setattr(native, "_SOURCES", tmp_path)
    monkeypatch.setattr(cpp_extension, "load", lambda name, *a, **k: names.append(name) or name)
    for text in ("int a;", "int b;", "int a;"):
        (tmp_path / "x.cpp").write_text(text)
        native._build("x")
    assert names[0] != names[1] and names[0] == names[2] and all(n.startswith("lossoracle_x_") for n in names)
