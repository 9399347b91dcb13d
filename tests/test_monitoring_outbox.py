"""The monitoring outbox (seed 000 "Logging / Monitoring Health Checks") on the session's running platform.

Events are stored with an event_id and posted at once; while the webhook answers 410 or is down they are held,
counted as failures and shown as pending, and sends go on; restored, the relay exports the backlog oldest first,
each event once. Its defects (events dropped, relay off, sends blocked) break exactly that, and the
``monitoring-backlog`` gate and the sink fault's undo are proved against the real sandbox.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from helpers import (
    NewTenant,
    defects_planted,
    deliveries,
    local_target_as_external,
    message_status,
    metric_value,
    poll,
    run_opsgate,
)
from opsgate.environments.local import LocalEnvironment
from opsgate.faults.actions import MonitoringSinkFault, injected
from opsgate.faults.journal import Journal, replay

pytestmark = pytest.mark.platform
HEALTHY_SINK = {"status": 202, "down": False}


async def rows(platform: LocalEnvironment, tenant_id: str) -> list[tuple[str, str, str, int]]:
    """``(event_id, type, status, attempts)`` of the tenant's outbox rows, in the order they were stored."""
    async with await psycopg.AsyncConnection.connect(platform.database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT event_id::text, event_type, status, attempts FROM monitoring_events"
            " WHERE body->>'tenant_id' = %s ORDER BY id",
            (tenant_id,),
        )
        return [(e, t, s, int(a)) for e, t, s, a in await cur.fetchall()]


async def recorded(sandbox: httpx.AsyncClient, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's events as the sink recorded them, in arrival order."""
    events = (await sandbox.get("/monitoring/events")).json()["events"]
    return [e for e in events if e.get("tenant_id") == tenant_id]


async def tenant_events(api: httpx.AsyncClient, admin: dict[str, str], tenant_id: str, pairs: int) -> None:
    """``pairs`` x (suspend, activate): two monitoring events each, emitted in this order."""
    for n in range(pairs):
        suspended = await api.patch(f"/tenants/{tenant_id}/suspend", json={"reason": f"drill {n}"}, headers=admin)
        assert suspended.status_code == 200, suspended.text
        assert (await api.patch(f"/tenants/{tenant_id}/activate", headers=admin)).status_code == 200


def platform_relay_interval_s(platform: LocalEnvironment) -> float:
    """The relay's interval on ``platform`` (10 s, scaled, floor 0.5 s) -- see PlatformSettings."""
    return max(0.5, 10.0 * platform.time_scale)


def api_metric(platform: LocalEnvironment, name: str) -> float:
    return metric_value(httpx.get(f"{platform.api_url}/metrics").text, name)


async def test_a_healthy_sink_gets_each_event_once_with_its_event_id(
    platform: LocalEnvironment, api: httpx.AsyncClient, sandbox: httpx.AsyncClient,
    new_tenant: NewTenant, admin_headers: dict[str, str],
) -> None:  # fmt: skip
    tenant = await new_tenant()
    await tenant_events(api, admin_headers, tenant["id"], 1)

    def both_sent(r: list[tuple[str, str, str, int]]) -> bool:
        return len(r) == 2 and {status for _, _, status, _ in r} == {"sent"}

    stored = await poll(lambda: rows(platform, tenant["id"]), both_sent, what="both events stored and sent")
    seen = await recorded(sandbox, tenant["id"])
    assert [e["event_id"] for e in seen] == [event_id for event_id, _, _, _ in stored]
    assert [e["type"] for e in seen] == ["tenant.suspended", "tenant.activated"]
    assert [attempts for *_, attempts in stored] == [1, 1]


async def test_a_failing_sink_holds_events_counts_failures_and_the_relay_exports_them_oldest_first(
    platform: LocalEnvironment, api: httpx.AsyncClient, sandbox: httpx.AsyncClient,
    new_tenant: NewTenant, admin_headers: dict[str, str],
) -> None:  # fmt: skip
    tenant = await new_tenant()
    failures_before = api_metric(platform, "monitoring_webhook_failures_total")
    await sandbox.put("/control/monitoring", json={"status": 410})
    await tenant_events(api, admin_headers, tenant["id"], 2)
    await sandbox.put("/control/monitoring", json={"down": True})
    await tenant_events(api, admin_headers, tenant["id"], 1)
    held = await poll(lambda: rows(platform, tenant["id"]), lambda r: len(r) == 6 and all(a >= 1 for *_, a in r),
                      what="6 events stored, each post tried")  # fmt: skip
    assert {status for _, _, status, _ in held} == {"pending"}
    assert await recorded(sandbox, tenant["id"]) == []
    assert api_metric(platform, "monitoring_webhook_failures_total") >= failures_before + 6
    assert api_metric(platform, "monitoring_events_pending") >= 6

    # Sends are not held up by the sink: accepted and delivered once (the provider's record).
    send = await api.post(f"/v1/tenants/{tenant['id']}/messages", headers=tenant["headers"],
                          json={"channel": "sms", "to": "+61412345678", "body": "during the sink outage"})  # fmt: skip
    assert send.status_code == 202, send.text
    message_id = send.json()["id"]
    await poll(lambda: message_status(api, tenant["headers"], message_id), lambda m: m["status"] == "delivered",
               what="the send delivered while the sink is down")  # fmt: skip
    assert await deliveries(sandbox, message_id) == 1

    await sandbox.delete("/control/monitoring")
    seen = await poll(lambda: recorded(sandbox, tenant["id"]), lambda e: len(e) >= 6, what="the backlog exported")
    assert [e["event_id"] for e in seen] == [event_id for event_id, _, _, _ in held]  # oldest first, each once
    await poll(lambda: rows(platform, tenant["id"]), lambda r: {s for _, _, s, _ in r} == {"sent"}, what="all sent")
    await poll(lambda: api_metric_async(platform, "monitoring_events_pending"), lambda v: v == 0, what="no backlog")


async def api_metric_async(platform: LocalEnvironment, name: str) -> float:
    async with httpx.AsyncClient() as client:
        return metric_value((await client.get(f"{platform.api_url}/metrics")).text, name)


async def sink_rejected(sandbox: httpx.AsyncClient) -> int:
    """Monitoring posts the sink has refused so far (a sink fault: 410, down)."""
    return int((await sandbox.get("/monitoring/requests")).json()["rejected"])


async def test_defect_monitoring_events_dropped_loses_what_the_sink_rejects(
    platform: LocalEnvironment, api: httpx.AsyncClient, sandbox: httpx.AsyncClient,
    new_tenant: NewTenant, admin_headers: dict[str, str],
) -> None:  # fmt: skip
    with defects_planted(platform, "monitoring-events-dropped"):
        tenant = await new_tenant()
        await sandbox.put("/control/monitoring", json={"status": 410})
        rejected = (await sandbox.get("/monitoring/requests")).json()["rejected"]
        await tenant_events(api, admin_headers, tenant["id"], 1)
        # the api posts in the background: the fault stays until the sink has refused both posts
        await poll(lambda: sink_rejected(sandbox), lambda n: n >= rejected + 2, what="both posts refused (410)")
        await sandbox.delete("/control/monitoring")
        await tenant_events(api, admin_headers, tenant["id"], 1)
        await poll(lambda: recorded(sandbox, tenant["id"]), lambda e: len(e) >= 2, what="the later events")
        assert await rows(platform, tenant["id"]) == []  # nothing stored
        await asyncio.sleep(3 * platform_relay_interval_s(platform))
        assert len(await recorded(sandbox, tenant["id"])) == 2  # the 2 the 410 rejected are lost


async def test_defect_monitoring_failure_blocks_sends_fails_sends_while_events_are_pending(
    platform: LocalEnvironment, api: httpx.AsyncClient, sandbox: httpx.AsyncClient,
    new_tenant: NewTenant, admin_headers: dict[str, str],
) -> None:  # fmt: skip
    with defects_planted(platform, "monitoring-failure-blocks-sends"):
        tenant = await new_tenant()
        await sandbox.put("/control/monitoring", json={"status": 410})
        await tenant_events(api, admin_headers, tenant["id"], 1)
        send = await api.post(f"/v1/tenants/{tenant['id']}/messages", headers=tenant["headers"],
                              json={"channel": "sms", "to": "+61412345678", "body": "blocked"})  # fmt: skip
        assert send.status_code == 202, send.text
        message = await poll(lambda: message_status(api, tenant["headers"], send.json()["id"]),
                             lambda m: m["status"] == "dead", what="the send to fail for good")  # fmt: skip
        assert "monitoring webhook failing" in message["failure_reason"]
        assert await deliveries(sandbox, send.json()["id"]) == 0
        await sandbox.delete("/control/monitoring")
        await poll(lambda: api_metric_async(platform, "monitoring_events_pending"), lambda v: v == 0,
                   what="the backlog exported")  # fmt: skip


# --- the monitoring-backlog gate ------------------------------------------------------------------


@pytest.fixture(scope="module")
def external_target(platform: LocalEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """targets/local.yaml, pointed at the session's already-running platform (nothing started)."""
    return local_target_as_external(tmp_path_factory.mktemp("target") / "standin.yaml")


def backlog_gate(platform: LocalEnvironment, target: Path, tmp_path: Path) -> dict[str, Any]:
    """Run ``opsgate gate --match monitoring-backlog``; returns its check record."""
    reports = tmp_path / f"reports-{uuid.uuid4().hex[:6]}"
    result = run_opsgate(
        ["gate", "--target", str(target), "--match", "monitoring-backlog"], timeout_s=120,
        env={**platform.environ(), "OPSGATE_REPORTS_DIR": str(reports)},
    )  # fmt: skip
    summary = json.loads(((reports / "latest").resolve() / "summary.json").read_text())
    assert result.returncode == (0 if summary["verdict"] == "pass" else 1), result.stdout[-2000:]
    checks = {c["id"]: c for c in summary["checks"]}
    assert set(checks) == {"gate[monitoring-backlog]"}, checks.keys()
    record: dict[str, Any] = checks["gate[monitoring-backlog]"]
    return record


async def test_backlog_gate_passes_once_the_relay_exported_what_a_410_held(
    platform: LocalEnvironment, api: httpx.AsyncClient, sandbox: httpx.AsyncClient, new_tenant: NewTenant,
    admin_headers: dict[str, str], external_target: Path, tmp_path: Path,
) -> None:  # fmt: skip
    tenant = await new_tenant()
    await sandbox.put("/control/monitoring", json={"status": 410})
    await tenant_events(api, admin_headers, tenant["id"], 6)
    await sandbox.delete("/control/monitoring")
    await poll(lambda: recorded(sandbox, tenant["id"]), lambda e: len(e) >= 12, what="the backlog exported")
    passed = backlog_gate(platform, external_target, tmp_path)
    assert passed["verdict"] == "pass" and passed["measured"] == 0, passed
    assert passed["claim"] == "seed-000.monitoring.backlog-exported"


async def test_defect_monitoring_relay_off_fails_the_backlog_gate(
    platform: LocalEnvironment, api: httpx.AsyncClient, sandbox: httpx.AsyncClient, new_tenant: NewTenant,
    admin_headers: dict[str, str], external_target: Path, tmp_path: Path,
) -> None:  # fmt: skip
    with defects_planted(platform, "monitoring-relay-off"):
        tenant = await new_tenant()
        await sandbox.put("/control/monitoring", json={"down": True})
        await tenant_events(api, admin_headers, tenant["id"], 6)
        await poll(lambda: rows(platform, tenant["id"]), lambda r: len(r) == 12 and all(a >= 1 for *_, a in r),
                   what="12 events stored, each first post failed")  # fmt: skip
        await sandbox.delete("/control/monitoring")
        failed = backlog_gate(platform, external_target, tmp_path)
        assert Counter(s for _, _, s, _ in await rows(platform, tenant["id"])) == {"pending": 12}  # never re-posted
    assert failed["verdict"] == "fail" and failed["measured"] >= 12, failed
    # Healthy again: the relay exports the backlog it left, each event once.
    seen = await poll(lambda: recorded(sandbox, tenant["id"]), lambda e: len(e) >= 12, what="the backlog exported")
    assert len({e["event_id"] for e in seen}) == len(seen) == 12


# --- the sink fault --------------------------------------------------------------------------------


def test_sink_faults_nest_and_each_undo_restores_the_prior_state(platform: LocalEnvironment, tmp_path: Path) -> None:
    control = f"{platform.provider_url}/control/monitoring"
    journal = Journal.create(tmp_path)
    with injected(journal, MonitoringSinkFault(control, {"status": 410})):
        assert httpx.get(control).json() == {"status": 410, "down": False}
        with injected(journal, MonitoringSinkFault(control, {"down": True})):
            assert httpx.get(control).json()["down"] is True
            assert httpx.post(f"{platform.provider_url}/monitoring/events", json={"type": "probe"}).status_code == 503
        assert httpx.get(control).json() == {"status": 410, "down": False}
    assert httpx.get(control).json() == HEALTHY_SINK
    assert replay(journal.path, stop_processes=False) == []


def test_a_dead_runs_sink_fault_is_undone_by_replaying_its_journal(platform: LocalEnvironment, tmp_path: Path) -> None:
    """As after a SIGKILL: the undos were journalled, the faults applied, no rollback ran."""
    control = f"{platform.provider_url}/control/monitoring"
    journal = Journal.create(tmp_path)
    try:
        for settings in ({"status": 410}, {"down": True}):
            fault = MonitoringSinkFault(control, settings)
            journal.record_undo(fault.describe(), fault.undo())
            fault.apply()
        assert httpx.get(control).json() == {"status": 202, "down": True}  # a PUT replaces the whole setting
        restored = replay(journal.path, stop_processes=False)
        assert [r.ok for r in restored] == [True, True], restored
        assert httpx.get(control).json() == HEALTHY_SINK
    finally:
        httpx.delete(control)
