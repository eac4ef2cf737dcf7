"""Hypothesis profiles: ``ci`` (default, fast) and ``thorough`` (HYPOTHESIS_PROFILE=thorough).

Draws are seeded, not derandomized: the seed is the UTC date (``YYYYMMDD``), so every run on one
day draws the same examples and each day explores new ones; ``HYPOTHESIS_SEED=N`` (or pytest's
``--hypothesis-seed=N``, which wins) replays a run. The seed is printed in the report header.
"""

from __future__ import annotations

import datetime
import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=False, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def hypothesis_seed() -> tuple[int, str]:
    """The seed of this run and where it came from: HYPOTHESIS_SEED, else today's UTC date."""
    env = os.environ.get("HYPOTHESIS_SEED", "").strip()
    if env:
        return int(env), "HYPOTHESIS_SEED"
    today = datetime.datetime.now(datetime.timezone.utc).date()
    return int(today.strftime("%Y%m%d")), f"UTC date {today.isoformat()}"


@pytest.hookimpl(tryfirst=True)  # before hypothesis' own pytest_configure reads the option
def pytest_configure(config):
    given = getattr(config.option, "hypothesis_seed", None)
    if given is None:
        config.option.hypothesis_seed, config._lossoracle_seed_source = hypothesis_seed()
    else:
        config._lossoracle_seed_source = "--hypothesis-seed"


def pytest_report_header(config):
    seed = getattr(config.option, "hypothesis_seed", None)
    source = getattr(config, "_lossoracle_seed_source", "?")
    return [f"hypothesis seed: {seed} (from {source}; rerun with HYPOTHESIS_SEED={seed} or --hypothesis-seed={seed})"]


@pytest.fixture(scope="session", autouse=True)
def _native_kernels_built():
    """Build every native kernel (``implementations/native/*.cpp``) once, in this process, before any test
    forks a validator worker: the workers never build one (a cold build, 30–90 s here, would run under their
    60 s call timeout), so without this the tests' workers would take the eager kernels."""
    from pathlib import Path

    from lossoracle.implementations import native

    for source in sorted(Path(native.__file__).with_name("native").glob("*.cpp")):
        native.module(source.stem)
