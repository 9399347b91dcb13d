"""Each gate of targets/local.yaml fails when the system breaks what it claims, on the running platform."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import local_target_as_external, poll, run_opsgate
from opsgate.environments.local import LocalEnvironment
from opsgate.reference.signing import sign


@pytest.fixture(scope="module")
def external_target(platform: LocalEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """targets/local.yaml, pointed at the session's already-running platform (nothing started)."""
    return local_target_as_external(tmp_path_factory.mktemp("target") / "standin.yaml")


def gate(platform: LocalEnvironment, target: Path, tmp_path: Path, match: str) -> dict[str, dict[str, Any]]:
    """Run ``opsgate gate --match`` on the stand-in; returns the checks of its summary by id."""
    result = run_opsgate(
        ["gate", "--target", str(target), "--match", match], timeout_s=180,
        env={**platform.environ(), "OPSGATE_REPORTS_DIR": str(tmp_path)},
    )  # fmt: skip
    summary = json.loads(((tmp_path / "latest").resolve() / "summary.json").read_text())
    assert result.returncode == (0 if summary["verdict"] == "pass" else 1), result.stdout[-2000:]
    return {c["id"]: c for c in summary["checks"]}


def test_stand_in_passes_healthy(platform: LocalEnvironment, external_target: Path, tmp_path: Path) -> None:
    checks = gate(platform, external_target, tmp_path, "queue or provider or datastore or api-error-ratio")
    assert {c["verdict"] for c in checks.values()} == {"pass"}, checks


@pytest.fixture
def worker_stopped(platform: LocalEnvironment) -> Iterator[None]:
    platform.stop_service("worker-1")
    try:
        yield
    finally:
        platform.start_service("worker-1")


async def test_queue_that_never_drains(
    platform: LocalEnvironment, external_target: Path, tmp_path: Path, worker_stopped: None
) -> None:
    secret = platform.credentials.billing_webhook_secret
    async with httpx.AsyncClient(base_url=platform.api_url) as api:
        for _ in range(55):
            body = json.dumps({"id": f"evt_{uuid.uuid4().hex}", "type": "invoice.paid",
                               "data": {"tenantId": platform.tenant_id}}).encode()  # fmt: skip
            response = await api.post("/billing/webhooks/sandbox", content=body,
                                       headers={"x-sandbox-signature": sign(secret, body)})  # fmt: skip
            assert response.status_code == 202
    checks = gate(platform, external_target, tmp_path, "queue")
    failed = checks["queue[billing-webhooks]"]
    assert failed["verdict"] == "fail" and failed["measured"] >= 55 and failed["threshold"] == 50
    assert checks["queue[send-messages]"]["verdict"] == "pass"


async def test_provider_quota_over_80_percent(
    platform: LocalEnvironment, external_target: Path, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=platform.provider_url) as sandbox:
        await sandbox.put("/control/quota", json={"used": 85_000, "limit": 100_000})
        try:
            checks = gate(platform, external_target, tmp_path, "provider")
        finally:
            await sandbox.put("/control/quota", json={"used": 0, "limit": 100_000})
    assert checks["gate[provider-quota]"]["verdict"] == "fail"
    assert checks["gate[provider-quota]"]["measured"] == pytest.approx(0.85)


def test_redis_outage_fails_ping_and_the_error_ratio(
    platform: LocalEnvironment, external_target: Path, tmp_path: Path
) -> None:
    platform.stop_service("redis")
    try:
        checks = gate(platform, external_target, tmp_path, "datastore or api-error-ratio or readyz")
    finally:
        platform.start_service("redis")
    assert checks["datastore[redis]"]["verdict"] == "fail"
    assert "does not answer PING" in checks["datastore[redis]"]["message"]
    assert checks["datastore[postgres]"]["verdict"] == "pass"
    assert checks["gate[api-error-ratio]"]["verdict"] == "fail" and checks["gate[api-error-ratio]"]["measured"] > 0.5
    assert checks["health[api:/readyz]"]["verdict"] == "fail"
    assert "expected status 200, got 503" in checks["health[api:/readyz]"]["message"]


async def test_stale_backup_fails_freshness(platform: LocalEnvironment, external_target: Path, tmp_path: Path) -> None:
    strict = external_target.with_name("strict.yaml")
    strict.write_text(external_target.read_text().replace("max_age: 24h", "max_age: 1ms"))
    checks = gate(platform, strict, tmp_path, "freshness")
    assert checks["freshness[backup-age]"]["verdict"] == "fail"
    assert checks["freshness[backup-age]"]["measured"] > 0.001


async def test_the_platform_recovers(platform: LocalEnvironment) -> None:
    async with httpx.AsyncClient(base_url=platform.api_url) as api:
        await poll(lambda: api.get("/readyz"), lambda r: r.status_code == 200, what="readiness after the outage")
