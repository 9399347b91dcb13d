"""The containers tier: a Docker engine and the dependency image, and no skips.

A machine that cannot run the engine (or build the image) fails this tier with the reason; a skipped test
here is turned into a failure, so ``tox -e containers`` reports 0 skipped or fails.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from opsgate.config import DEPS_IMAGE
from opsgate.environments.docker_engine import DockerEngine, ensure_image


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.skipped and item.get_closest_marker("containers") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"the containers tier never skips: {reason}"
    return report


@pytest.fixture(scope="session", autouse=True)
def deps_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The default dependency image, built when missing (on an engine opsgate starts and stops if none runs)."""
    folder = tmp_path_factory.mktemp("engine")
    engine = DockerEngine(folder)
    engine.start()  # DockerEngineError: the tier fails with the reason
    try:
        ensure_image(DEPS_IMAGE, folder / "image-build.log")
    finally:
        engine.stop()
    return DEPS_IMAGE
