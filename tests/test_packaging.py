"""Packaging: one namespace, no bare top-level packages, every sub-package importable."""

import importlib
import importlib.util
import pathlib

import lossoracle


def test_no_bare_reference_or_implementations_package_is_installed():
    for bare in ("reference", "implementations"):
        spec = importlib.util.find_spec(bare)
        # from the repository root the folders are visible as namespace dirs; never as installed packages
        assert spec is None or spec.origin is None or "site-packages" not in str(spec.origin), spec


def test_mapped_packages_live_under_lossoracle():
    for name in ("lossoracle.reference", "lossoracle.implementations"):
        mod = importlib.import_module(name)
        assert mod.__name__ == name
    root = pathlib.Path(lossoracle.__file__).parent
    assert (root / "engine.py").exists()


def test_every_family_module_imports():
    from lossoracle import catalog, reference, specs

    for fam in reference.FAMILIES:
        importlib.import_module(f"lossoracle.reference.{fam}")
    for mod in catalog.FAMILY_MODULES:
        importlib.import_module(mod)
    assert len(specs.names()) == len(set(specs.names())) >= 4
    for name in ("numpy_impl", "torch_impl"):
        importlib.import_module(f"lossoracle.implementations.{name}")
