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


def test_one_family_name_in_every_layer():
    """reference/<family>.py, implementations/<family>_{numpy,torch}.py, ecosystem/<family>.py and
    tests/test_<family>.py: a reader who knows the family finds every layer by its name; every
    loss has our NumPy and torch implementations, found by discovery."""
    from lossoracle import catalog, reference, specs
    from lossoracle.implementations import _surface

    families = {m.__name__.rsplit(".", 1)[1] for m in reference.family_modules()}
    layers = {fw: {m.__name__.rsplit(".", 1)[1].removesuffix(f"_{fw}") for m in _surface.family_modules(fw)}
              for fw in ("numpy", "torch")}
    ecosystem = {m.__name__.rsplit(".", 1)[1] for m in catalog.ecosystem_modules()}
    assert layers["numpy"] == layers["torch"] == families and ecosystem <= families
    tests = pathlib.Path(__file__).parent
    assert all((tests / f"test_{f}.py").exists() for f in families)
    assert len(specs.names()) == len(set(specs.names())) >= 4
    ours = {(i.loss, i.framework) for i in catalog.ours()}
    assert ours == {(name, fw) for name in specs.names() for fw in ("numpy", "torch")}


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
