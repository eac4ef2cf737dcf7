"""The native-kernel loader (``implementations/native.py``): what it refuses to build, and the stale lock."""

from __future__ import annotations

import os
import time

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


def test_a_stale_build_lock_is_removed_and_a_fresh_one_kept(monkeypatch, tmp_path):
    """torch waits forever on the lock of a build killed halfway: one older than STALE_LOCK_S goes."""
    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "_get_build_directory", lambda name, verbose: str(tmp_path))
    lock = tmp_path / "lock"
    lock.write_text("")
    native._clear_stale_lock("lossoracle_x")
    assert lock.exists()
    old = time.time() - native.STALE_LOCK_S - 5
    os.utime(lock, (old, old))
    with pytest.warns(RuntimeWarning, match="stale build lock"):
        native._clear_stale_lock("lossoracle_x")
    assert not lock.exists()
