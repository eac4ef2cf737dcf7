"""pytest plugin (auto-loaded): version header, and conformance checks as parametrized tests.

Use in a downstream test suite, in the style of scikit-learn's ``parametrize_with_checks``::

    from lossoracle.pytest_plugin import parametrize_conformance

    @parametrize_conformance(my_focal, "sigmoid_focal_loss", framework="torch",
                             expected_failures={"float16": "computed in fp16 on purpose"})
    def test_my_focal(conformance):
        assert conformance().conforms   # raises AssertionError with the report lines on a deviation

Ids are ``loss[backend-device-dtype]``; an expected failure that passes is reported as a warning
(a stale entry), never silently kept.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable, Iterable, Mapping

import pytest

from .spec import DTYPES


def pytest_configure(config) -> None:
    """Autograd primed before the suite's own code runs (:func:`lossoracle.isolation.prime_torch_autograd`):
    a test that trains with ``torch.compile`` would otherwise leave every later check's forked
    worker unable to run backward."""
    from .isolation import prime_torch_autograd

    prime_torch_autograd()


def pytest_report_header(config) -> list[str]:
    import mpmath
    import numpy

    from . import __version__
    from .mpfuncs import ORACLE_PREC

    parts = [f"lossoracle {__version__}", f"mpmath {mpmath.__version__} ({ORACLE_PREC} bits)",
             f"numpy {numpy.__version__}"]
    if importlib.util.find_spec("torch"):
        import torch

        cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
        parts.append(f"torch {torch.__version__} ({cuda})")
    parts.append(f"hypothesis profile {os.environ.get('HYPOTHESIS_PROFILE', 'ci')}")
    return ["lossoracle: " + ", ".join(parts)]


def _devices(framework: str) -> list[str | None]:
    from .frameworks import backend

    return backend(framework).devices()


def parametrize_conformance(fn: Callable, loss: str, framework: str = "torch", *, grad: Callable | None = None,
                            conventions: Mapping | None = None, dtypes=DTYPES,
                            expected_failures: Mapping[str, str] | None = None,
                            quantities: Iterable[str] | None = None, only_tags: Iterable[str] = (),
                            exclude_tags: Iterable[str] = ()):
    """Decorator: one test per device × dtype, each running :func:`lossoracle.check` on that cell.

    ``expected_failures`` maps a dtype or an id (``loss[backend-device-dtype]``) to the reason;
    ``quantities`` (``"value"``, ``"grad:<arg>"``), ``only_tags`` and ``exclude_tags`` choose what
    is judged, as in :func:`lossoracle.check` (checked here, at collection).
    """
    from . import specs
    from .engine import check
    from .tags import selection

    select = selection(specs.get(loss), quantities, only_tags, exclude_tags)

    expected = dict(expected_failures or {})
    params = []
    for device in _devices(framework):
        for dtype in dtypes:
            test_id = f"{loss}[{framework}-{device or 'host'}-{dtype}]"
            reason = expected.get(test_id) or expected.get(dtype)

            def run(device=device, dtype=dtype, test_id=test_id, reason=reason):
                report = check(fn, loss, framework, grad=grad, conventions=conventions, dtypes=[dtype],
                               devices=[device], quantities=select.quantities, only_tags=select.only_tags,
                               exclude_tags=select.exclude_tags)
                if reason and report.conforms:
                    warnings.warn(f"{test_id} is listed as an expected failure ({reason}) but conforms: "
                                  "remove the stale entry", stacklevel=2)
                assert report.conforms, "\n".join(report.cell_lines() + [report.paragraph()])
                return report

            marks = [pytest.mark.xfail(reason=reason, strict=False)] if reason else []
            params.append(pytest.param(run, id=test_id, marks=marks))
    return pytest.mark.parametrize("conformance", params)
