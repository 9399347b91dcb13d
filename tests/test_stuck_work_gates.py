"""The stuck-work gates of targets/local.yaml (seed 002 billing events, seed 001 sends stuck in "queued").

Each scenario makes real work on the session's platform, waits past the gate's age (10m x time_scale = 12 s)
and runs ``opsgate gate --match not-stuck`` on it. Healthy work, and a paused tenant's held sends, are not
stuck; a worker that never saves a processed event's status, and held sends set aside on resume, are -- even
with the outbox sweeper re-enqueueing overdue work all along. The two healthy cases share one wait, and so do the
two defects (planted together: each gate's count is exactly its own defect's rows).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from helpers import (
    BACKUP_INTERVAL_S,
    TIME_SCALE,
    NewTenant,
    admin_login,
    defects_planted,
    local_target_as_external,
    metric_value,
    poll,
    run_opsgate,
)
from opsgate.environments.local import LocalEnvironment
from opsgate.reference.signing import sign

pytestmark = pytest.mark.platform

STUCK_AFTER_S = 600 * TIME_SCALE  # the gates' sql_durations: {stuck_after_s: 10m}, scaled
PAST_THE_AGE_S = STUCK_AFTER_S + 1.5


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEnvironment]:
    """A platform of this module's own: the gates count every stuck row, so no other test's work may be there."""
    log_dir = tmp_path_factory.mktemp("stuck-platform-logs")
    environment = LocalEnvironment(log_dir, time_scale=TIME_SCALE, backup_interval_s=BACKUP_INTERVAL_S, defects="")
    with environment:
        yield environment


@pytest.fixture(scope="module")
def admin_headers(platform: LocalEnvironment) -> dict[str, str]:
    return admin_login(platform)


@pytest.fixture(scope="module")
def external_target(platform: LocalEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """targets/local.yaml, pointed at the session's already-running platform (nothing started)."""
    return local_target_as_external(tmp_path_factory.mktemp("target") / "standin.yaml")


def stuck_gates(platform: LocalEnvironment, target: Path, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Run the two stuck-work gates; returns their summary records by id."""
    reports = tmp_path / f"reports-{uuid.uuid4().hex[:6]}"
    result = run_opsgate(
        ["gate", "--target", str(target), "--match", "not-stuck"], timeout_s=120,
        env={**platform.environ(), "OPSGATE_REPORTS_DIR": str(reports)},
    )  # fmt: skip
    summary = json.loads(((reports / "latest").resolve() / "summary.json").read_text())
    assert result.returncode == (0 if summary["verdict"] == "pass" else 1), result.stdout[-2000:]
    checks = {c["id"]: c for c in summary["checks"]}
    assert set(checks) == {"gate[billing-events-not-stuck]", "gate[sends-not-stuck]"}, checks.keys()
    return checks


async def scalar(platform: LocalEnvironment, sql: str, params: tuple[Any, ...]) -> Any:
    async with await psycopg.AsyncConnection.connect(platform.database_url, autocommit=True) as conn:
        row = await (await conn.execute(sql, params)).fetchone()
        return row[0] if row else None


async def post_webhooks(platform: LocalEnvironment, count: int) -> list[str]:
    """Post ``count`` signed invoice.paid webhooks (each accepted: 202); returns their event ids."""
    secret = platform.credentials.billing_webhook_secret
    ids = [f"evt_stuck_{uuid.uuid4().hex}" for _ in range(count)]
    async with httpx.AsyncClient(base_url=platform.api_url) as api:
        for event_id in ids:
            body = json.dumps({"id": event_id, "type": "invoice.paid", "data": {"tenantId": platform.tenant_id}})
            response = await api.post("/billing/webhooks/sandbox", content=body.encode(),
                                      headers={"x-sandbox-signature": sign(secret, body.encode())})  # fmt: skip
            assert response.status_code == 202, response.text
    return ids


async def held_sends(platform: LocalEnvironment, api: httpx.AsyncClient, tenant: dict[str, Any],
                     admin_headers: dict[str, str]) -> list[str]:  # fmt: skip
    """Three sends accepted while no worker runs, the tenant paused, then the worker back: it holds them."""
    platform.stop_service("worker-1")
    try:
        ids = []
        for n in range(3):
            response = await api.post(f"/v1/tenants/{tenant['id']}/messages", headers=tenant["headers"],
                                      json={"channel": "sms", "to": f"+6141300000{n}", "body": "held"})  # fmt: skip
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        assert (await api.post(f"/tenants/{tenant['id']}/pause", headers=admin_headers)).status_code == 200
    finally:
        platform.start_service("worker-1")
    return ids


async def test_processed_billing_events_and_a_paused_tenants_held_sends_are_not_stuck(
    platform: LocalEnvironment,
    api: httpx.AsyncClient,
    new_tenant: NewTenant,
    admin_headers: dict[str, str],
    external_target: Path,
    tmp_path: Path,
) -> None:
    """Both healthy cases share one wait past the age: held sends go out on resume, and were never stuck."""
    ids = await post_webhooks(platform, 5)
    processed = "SELECT count(*) FROM billing_webhook_events WHERE event_id = ANY(%s) AND status = 'processed'"
    await poll(lambda: scalar(platform, processed, (ids,)), lambda n: n == 5, what="5 webhooks processed")
    tenant = await new_tenant()
    held = await held_sends(platform, api, tenant, admin_headers)
    await asyncio.sleep(PAST_THE_AGE_S)
    queued = "SELECT count(*) FROM messages WHERE id::text = ANY(%s) AND status = 'queued'"
    assert await scalar(platform, queued, (held,)) == 3  # "Queued jobs remain queued but will not process."
    checks = stuck_gates(platform, external_target, tmp_path)
    assert checks["gate[billing-events-not-stuck]"]["verdict"] == "pass", checks
    assert checks["gate[billing-events-not-stuck]"]["measured"] == 0
    assert "bound stuck_after_s=12s" in checks["gate[billing-events-not-stuck]"]["samples"][0]["note"]
    assert checks["gate[sends-not-stuck]"]["verdict"] == "pass", checks
    assert (await api.post(f"/tenants/{tenant['id']}/resume", headers=admin_headers)).status_code == 200
    delivered = "SELECT count(*) FROM messages WHERE id::text = ANY(%s) AND status = 'delivered'"
    await poll(lambda: scalar(platform, delivered, (held,)), lambda n: n == 3, what="held sends delivered on resume")
    assert stuck_gates(platform, external_target, tmp_path)["gate[sends-not-stuck]"]["verdict"] == "pass"


async def test_events_left_pending_and_held_sends_set_aside_fail_their_gates_though_the_sweeper_runs(
    platform: LocalEnvironment,
    api: httpx.AsyncClient,
    new_tenant: NewTenant,
    admin_headers: dict[str, str],
    external_target: Path,
    tmp_path: Path,
) -> None:
    """webhook-status-not-saved: events applied (audited) but left pending; the sweeper re-enqueues them and nothing
    finishes. held-sends-set-aside: held sends parked where the sweeper cannot see them, left queued after resume.
    Both planted, one wait past the age: each gate counts exactly its own defect's rows."""
    with defects_planted(platform, "webhook-status-not-saved,held-sends-set-aside"):
        ids = await post_webhooks(platform, 5)
        tenant = await new_tenant()
        held = await held_sends(platform, api, tenant, admin_headers)
        try:
            audited = "SELECT count(DISTINCT entity_id) FROM audit_events WHERE entity_id = ANY(%s)"
            await poll(lambda: scalar(platform, audited, (ids,)), lambda n: n == 5, what="5 webhooks applied")
            parked = "SELECT count(*) FROM messages WHERE id::text = ANY(%s) AND next_attempt_at = 'infinity'"
            await poll(lambda: scalar(platform, parked, (held,)), lambda n: n == 3, what="the worker to set them aside")
            assert (await api.post(f"/tenants/{tenant['id']}/resume", headers=admin_headers)).status_code == 200
            await asyncio.sleep(PAST_THE_AGE_S)
            pending = "SELECT count(*) FROM billing_webhook_events WHERE event_id = ANY(%s) AND status = 'pending'"
            assert await scalar(platform, pending, (ids,)) == 5
            queued = "SELECT count(*) FROM messages WHERE id::text = ANY(%s) AND status = 'queued'"
            assert await scalar(platform, queued, (held,)) == 3  # the sweeper cannot see them
            # The sweeper did its part: the events were re-enqueued (and re-applied) after each deadline.
            metrics = httpx.get(f"{platform.api_url}/metrics").text
            assert metric_value(metrics, "outbox_requeued_total", {"kind": "billing_webhook"}) >= 5
            checks = stuck_gates(platform, external_target, tmp_path)
        finally:
            async with await psycopg.AsyncConnection.connect(platform.database_url, autocommit=True) as conn:
                await conn.execute("DELETE FROM billing_webhook_events WHERE event_id = ANY(%s)", (ids,))
                await conn.execute("DELETE FROM messages WHERE id::text = ANY(%s)", (held,))
    events = checks["gate[billing-events-not-stuck]"]
    assert events["verdict"] == "fail" and events["measured"] == 5, events
    assert "expected == 0 events" in events["message"]
    sends = checks["gate[sends-not-stuck]"]
    assert sends["verdict"] == "fail" and sends["measured"] == 3, sends


def audit_gate(platform: LocalEnvironment, target: Path, tmp_path: Path) -> dict[str, Any]:
    """Run ``gate[billing-audit-trail]`` alone; returns its summary record."""
    reports = tmp_path / f"reports-{uuid.uuid4().hex[:6]}"
    run_opsgate(["gate", "--target", str(target), "--match", "billing-audit-trail"], timeout_s=120,
                env={**platform.environ(), "OPSGATE_REPORTS_DIR": str(reports)})  # fmt: skip
    summary = json.loads(((reports / "latest").resolve() / "summary.json").read_text())
    (record,) = [c for c in summary["checks"] if c["id"] == "gate[billing-audit-trail]"]
    return dict(record)


async def test_the_billing_audit_trail_is_filed_under_billing_and_misfiled_entries_fail_the_gate(
    platform: LocalEnvironment, external_target: Path, tmp_path: Path
) -> None:
    """seed 002: processed events write module='billing' entries with actions billing.<event type>."""
    processed = "SELECT count(*) FROM billing_webhook_events WHERE event_id = ANY(%s) AND status = 'processed'"
    ids = await post_webhooks(platform, 3)
    await poll(lambda: scalar(platform, processed, (ids,)), lambda n: n == 3, what="3 webhooks processed")
    healthy = audit_gate(platform, external_target, tmp_path)
    assert healthy["verdict"] == "pass" and healthy["measured"] == 0, healthy
    with defects_planted(platform, "billing-audit-misfiled"):
        misfiled = await post_webhooks(platform, 3)
        try:
            await poll(lambda: scalar(platform, processed, (misfiled,)), lambda n: n == 3, what="3 more processed")
            failed = audit_gate(platform, external_target, tmp_path)
        finally:
            async with await psycopg.AsyncConnection.connect(platform.database_url, autocommit=True) as conn:
                await conn.execute("DELETE FROM billing_webhook_events WHERE event_id = ANY(%s)", (misfiled,))
    assert failed["verdict"] == "fail" and failed["measured"] == 3, failed
