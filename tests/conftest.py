"""Fixtures for opsgate's own tests: one reference platform per session, cheap per-test resets."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import BACKUP_INTERVAL_S, LONG_DRILLS, TIME_SCALE, HealthyRun, NewTenant, admin_login, run_opsgate
from opsgate.environments.local import LocalEnvironment

CHAOS = Path(__file__).resolve().parents[1] / "chaos"


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEnvironment]:
    """The reference platform on local processes, started once for the whole test session."""
    log_dir = tmp_path_factory.mktemp("platform-logs")
    environment = LocalEnvironment(log_dir, time_scale=TIME_SCALE, backup_interval_s=BACKUP_INTERVAL_S, defects="")
    with environment:
        yield environment


@pytest.fixture
async def api(platform: LocalEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the api."""
    async with httpx.AsyncClient(base_url=platform.api_url, timeout=10.0) as client:
        yield client


@pytest.fixture
async def sandbox(platform: LocalEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the provider sandbox; its faults are cleared after each test."""
    async with httpx.AsyncClient(base_url=platform.provider_url, timeout=10.0) as client:
        yield client
        await client.delete("/control/faults")
        await client.put("/control/monitoring", json={"status": 202, "down": False})


@pytest.fixture(scope="session")
def admin_headers(platform: LocalEnvironment) -> dict[str, str]:
    """Authorization for the admin API: a service-account session token."""
    return admin_login(platform)


@pytest.fixture
def new_tenant(api: httpx.AsyncClient, admin_headers: dict[str, str]) -> NewTenant:
    """Create an isolated tenant; returns ``{id, api_token, sending_number, headers}``."""

    async def create(**settings: Any) -> dict[str, Any]:
        body = {"name": f"t-{uuid.uuid4().hex[:8]}", **settings}
        response = await api.post("/admin/tenants", json=body, headers=admin_headers)
        assert response.status_code == 201, response.text
        tenant: dict[str, Any] = response.json()
        tenant["headers"] = {"Authorization": f"Bearer {tenant['api_token']}"}
        return tenant

    return create


@pytest.fixture(scope="session")
def reports_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch reports directory, so tests never write into the repository's reports/."""
    return tmp_path_factory.mktemp("reports")


@pytest.fixture(scope="session")
def healthy_gate(tmp_path_factory: pytest.TempPathFactory) -> HealthyRun:
    """``opsgate gate`` on the embedded default, healthy: run once, judged by every test that asks (a full gate
    costs a minute; the CLI's end-to-end test and the alert-coverage tests read the same run)."""
    folder = tmp_path_factory.mktemp("healthy-gate")
    result = run_opsgate(["gate"], timeout_s=300, env={"OPSGATE_REPORTS_DIR": str(folder / "reports")})
    return HealthyRun(result, folder)


def drill_run(folder: Path, match: str | None) -> HealthyRun:
    """``opsgate drill`` with the drills of chaos/ and the declared ones (``match``: a selection), healthy."""
    args = ["drill", "--chaos", str(CHAOS), "--drill-logs", str(folder / "drills")]
    if match:
        args += ["--match", match]
    env = {"OPSGATE_DEFECTS": "", "OPSGATE_STATE_DIR": str(folder / "state"),
           "OPSGATE_REPORTS_DIR": str(folder / "reports")}  # fmt: skip
    return HealthyRun(run_opsgate(args, timeout_s=1200, env=env), folder)


@pytest.fixture(scope="session")
def healthy_drill(tmp_path_factory: pytest.TempPathFactory) -> HealthyRun:
    """``opsgate drill`` on a healthy platform, every drill and job-drill live alert check but ``LONG_DRILLS``: run
    once (about a minute), judged by every test that asks."""
    return drill_run(tmp_path_factory.mktemp("healthy-drill"), f"not ({' or '.join(LONG_DRILLS)})")


@pytest.fixture(scope="session")
def every_drill_healthy(tmp_path_factory: pytest.TempPathFactory) -> HealthyRun:
    """``opsgate drill`` with every drill and job-drill live alert check on a healthy platform (five minutes)."""
    return drill_run(tmp_path_factory.mktemp("every-drill-healthy"), None)
