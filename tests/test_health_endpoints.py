"""Seed 003's connectivity endpoints, ``/api/health/db`` and ``/api/health/redis``, and their checks.

On the session's platform: both health checks of targets/local.yaml pass while PostgreSQL and Redis answer, and
the one of each fails while that datastore is really stopped (restarted in ``finally``). A lying endpoint
(``health-*-always-connected``) answers connected through the outage; only a drill that asks it during one can tell,
so the postgres-outage and redis-outage drills do (rows of CAUGHT in tests/chaos/test_drills_catch_defects.py);
here each lie is shown for what it is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import defects_planted, local_target_as_external, run_opsgate
from opsgate.environments.local import LocalEnvironment

pytestmark = pytest.mark.platform
DB_CHECK = "health[api:/api/health/db]"
REDIS_CHECK = "health[api:/api/health/redis]"
MATCH = "health/db or health/redis"


@pytest.fixture(scope="module")
def external_target(platform: LocalEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """targets/local.yaml, pointed at the session's already-running platform (nothing started)."""
    return local_target_as_external(tmp_path_factory.mktemp("target") / "standin.yaml")


def gate(platform: LocalEnvironment, target: Path, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Run the two connectivity checks with ``opsgate gate --match``; returns their summary records by id."""
    reports = tmp_path / "reports"
    result = run_opsgate(
        ["gate", "--target", str(target), "--match", MATCH], timeout_s=120,
        env={**platform.environ(), "OPSGATE_REPORTS_DIR": str(reports)},
    )  # fmt: skip
    summary = json.loads(((reports / "latest").resolve() / "summary.json").read_text())
    assert result.returncode == (0 if summary["verdict"] == "pass" else 1), result.stdout[-2000:]
    checks = {c["id"]: c for c in summary["checks"]}
    assert set(checks) == {DB_CHECK, REDIS_CHECK}, checks.keys()
    return checks


@contextmanager
def outage(platform: LocalEnvironment, name: str) -> Iterator[None]:
    """PostgreSQL or Redis really stopped; started again, and the api ready, on the way out."""
    platform.stop_service(name)
    try:
        yield
    finally:
        platform.start_service(name)
        wait_ready(platform)


def wait_ready(platform: LocalEnvironment, timeout_s: float = 60.0) -> None:
    """Wait (bounded in time and attempts) until the api's /readyz answers 200 again."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    for _ in range(int(timeout_s / 0.2) + 1):
        try:
            last = httpx.get(platform.api_url + "/readyz", timeout=5).status_code
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        if last == 200 or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    assert last == 200, f"api /readyz not 200 within {timeout_s}s after the outage; last: {last}"


def test_both_connected_on_the_healthy_platform(
    platform: LocalEnvironment, external_target: Path, tmp_path: Path
) -> None:
    db = httpx.get(platform.api_url + "/api/health/db", timeout=5)
    redis = httpx.get(platform.api_url + "/api/health/redis", timeout=5)
    assert db.status_code == 200 and db.json()["postgres"] == "connected", db.text
    assert redis.status_code == 200 and redis.json()["redis"] == "connected", redis.text
    checks = gate(platform, external_target, tmp_path)
    assert {c["verdict"] for c in checks.values()} == {"pass"}, checks
    assert checks[DB_CHECK]["claim"] == "seed-003.health.database"
    assert checks[REDIS_CHECK]["claim"] == "seed-003.health.redis"


@pytest.mark.parametrize(
    ("datastore", "path", "failing", "passing"),
    [("postgres", "/api/health/db", DB_CHECK, REDIS_CHECK), ("redis", "/api/health/redis", REDIS_CHECK, DB_CHECK)],
)
def test_the_check_fails_while_its_datastore_is_down(
    platform: LocalEnvironment, external_target: Path, tmp_path: Path, datastore: str, path: str, failing: str,
    passing: str,
) -> None:  # fmt: skip
    with outage(platform, datastore):
        answer = httpx.get(platform.api_url + path, timeout=10)
        checks = gate(platform, external_target, tmp_path)
    assert answer.status_code == 503 and answer.json()[datastore] == "disconnected", answer.text
    assert checks[failing]["verdict"] == "fail", checks[failing]
    assert "expected status 200, got 503" in checks[failing]["message"], checks[failing]["message"]
    assert "disconnected" in checks[failing]["message"]
    assert checks[passing]["verdict"] == "pass", checks[passing]


@pytest.mark.parametrize(
    ("defect", "datastore", "path"),
    [
        ("health-db-always-connected", "postgres", "/api/health/db"),
        ("health-redis-always-connected", "redis", "/api/health/redis"),
    ],
)
def test_a_lying_endpoint_says_connected_through_the_outage(
    platform: LocalEnvironment, defect: str, datastore: str, path: str
) -> None:
    """What the outage drills catch: with the defect the endpoint answers connected while its datastore is down."""
    with defects_planted(platform, defect), outage(platform, datastore):  # planted first: the api starts on both
        answer = httpx.get(platform.api_url + path, timeout=10)
        ready = httpx.get(platform.api_url + "/readyz", timeout=10)
    assert answer.status_code == 200 and answer.json() == {datastore: "connected"}, answer.text
    assert ready.status_code == 503 and ready.json()["failing"] == [datastore], ready.text
