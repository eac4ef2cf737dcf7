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


def test_no_module_imports_the_bare_folder_names():
    """``import reference`` from the repository root would load a second copy of every module
    (a second registry): only ``lossoracle.*`` and relative imports are allowed."""
    import ast

    root = pathlib.Path(__file__).resolve().parents[1]
    offenders = []
    for folder in ("src", "reference", "implementations", "tests", "benchmarks"):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
                offenders += [f"{path.relative_to(root)}: {n}" for n in names
                              if n.split(".")[0] in ("reference", "implementations")]
    assert not offenders, offenders
