"""The reference platform's behaviours, each through HTTP against the real stack."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import psycopg
import pytest
import redis.asyncio as aioredis

from helpers import NewTenant, backup_tables, deliveries, fixed_offset_zone, message_status, metric_value, poll
from opsgate.environments.local import LocalEnvironment
from opsgate.reference.signing import sign

pytestmark = pytest.mark.platform


def sms(to: str = "+61412345678", **extra: object) -> dict[str, object]:
    return {"channel": "sms", "to": to, "body": "hello", **extra}


async def send(api: httpx.AsyncClient, tenant: dict[str, object], body: dict[str, object]) -> httpx.Response:
    return await api.post(f"/v1/tenants/{tenant['id']}/messages", json=body, headers=tenant["headers"])  # type: ignore[arg-type]


# --- health and metrics -------------------------------------------------------------------------


def _ready_after(url: str, limit_s: float) -> float | None:
    """Seconds until ``url`` answers 200 (polled every 0.1 s, at most ``limit_s``), or None."""
    started = time.monotonic()
    with httpx.Client(timeout=5.0) as client:
        for _ in range(int(limit_s / 0.1) + 1):
            if client.get(url).status_code == 200:
                return time.monotonic() - started
            if time.monotonic() - started > limit_s:
                break
            time.sleep(0.1)
    return None


def test_readiness_recovers_at_once_after_a_long_postgres_outage(platform: LocalEnvironment) -> None:
    """8 s down, asked all along: the pools' background retries back off (1, 2, 4 s...) but give up after 1 s, and
    the next request connects, so readiness is back within the postgres-outage drill's 1.2 s (1m scaled)."""
    urls = [f"{platform.api_url}/readyz", *(f"{url}/readyz" for url in platform.worker_urls)]
    platform.stop_service("postgres")
    try:
        deadline = time.monotonic() + 8.0
        with httpx.Client(timeout=5.0) as client:
            for _ in range(32):  # 8 s, at most 32 rounds 0.25 s apart (each answer may wait 1 s for the pool)
                if time.monotonic() >= deadline:
                    break
                assert all(client.get(url).status_code == 503 for url in urls)
                time.sleep(0.25)
    finally:
        platform.start_service("postgres")  # returns once it accepts connections
    recovered = {url: _ready_after(url, 10.0) for url in urls}
    assert all(s is not None and s <= 1.2 for s in recovered.values()), recovered


async def test_health_liveness_and_readiness(api: httpx.AsyncClient) -> None:
    assert (await api.get("/health")).json() == {"status": "ok"}
    assert (await api.get("/healthz")).status_code == 200
    ready = await api.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True
    assert body["checks"]["postgres"]["ok"] and body["checks"]["redis"]["ok"]
    assert body["checks"]["worker"]["required"] is False
    assert body["checks"]["worker"]["heartbeat_age_s"] is not None


async def test_metrics_expose_the_runbook_names(api: httpx.AsyncClient, platform: LocalEnvironment) -> None:
    await api.get("/health")
    text = (await api.get("/metrics")).text
    for name in (
        "http_request_duration_seconds_bucket",
        "http_requests_total",
        "bull_queue_jobs_waiting",
        "bull_queue_jobs_active",
        "bull_queue_jobs_failed",
        "bull_queue_jobs_delayed",
        "db_connections_active",
        "db_connections_max",
        "worker_heartbeat_age_seconds",
        "backup_last_success_timestamp",
    ):
        assert f"\n{name}" in text, f"{name} missing from api /metrics"
    for family in (
        "billing_webhook_total",
        "messages_total",
        "notification_failures_total",
        "optouts_total",
        "db_connection_failures_total",
        "billing_webhook_lag_seconds",
    ):
        assert f"# TYPE {family.removesuffix('_total')}" in text or f"# TYPE {family}" in text
    assert 'route="/health"' in text
    worker_metrics = httpx.get(f"{platform.worker_urls[0]}/metrics").text
    assert "messages_total" in worker_metrics or "# TYPE messages counter" in worker_metrics


# --- auth ---------------------------------------------------------------------------------------


async def test_auth_tokens_sessions_and_admin_page(
    api: httpx.AsyncClient, platform: LocalEnvironment, new_tenant: NewTenant
) -> None:
    tenant, other = await new_tenant(), await new_tenant()
    no_token = await api.post(f"/v1/tenants/{tenant['id']}/messages", json=sms())
    assert no_token.status_code == 401 and no_token.json()["error"] == "UNAUTHORIZED"
    wrong_tenant = await send(api, {**tenant, "headers": other["headers"]}, sms())
    assert wrong_tenant.status_code == 403
    bad_login = await api.post("/auth/login", json={"username": "ops-bot", "password": "nope"})
    assert bad_login.status_code == 401
    assert (await api.post(f"/tenants/{tenant['id']}/pause")).status_code == 401
    page = await api.get("/admin", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/admin/login"

    c = platform.credentials
    login = await api.post("/admin/login", data={"username": c.service_user, "password": c.service_password})
    assert login.status_code == 303
    cookie = login.cookies.get("session_id")
    assert cookie
    async with httpx.AsyncClient(base_url=platform.api_url, cookies={"session_id": cookie}) as browser:
        page = await browser.get("/admin")
    assert page.status_code == 200 and f"sending-state-{tenant['id']}" in page.text


# --- send gates ---------------------------------------------------------------------------------


async def test_kill_switch_blocks_sends_and_holds_queued_jobs(
    api: httpx.AsyncClient,
    sandbox: httpx.AsyncClient,
    platform: LocalEnvironment,
    new_tenant: NewTenant,
    admin_headers: dict[str, str],
) -> None:
    tenant = await new_tenant()
    platform.stop_service("worker-1")
    try:
        queued = await send(api, tenant, sms())
        assert queued.status_code == 202
        paused = await api.post(f"/tenants/{tenant['id']}/pause", headers=admin_headers)
        assert paused.json()["paused"] is True
        refused = await send(api, tenant, sms())
        assert refused.status_code == 409 and refused.json()["error"] == "SENDING_PAUSED"
    finally:
        platform.start_service("worker-1")
    message_id = queued.json()["id"]
    await asyncio.sleep(1.0)  # several worker polls and tenant-cache lifetimes at time scale 0.02
    assert (await message_status(api, tenant["headers"], message_id))["status"] == "queued"
    assert await deliveries(sandbox, message_id) == 0

    await api.post(f"/tenants/{tenant['id']}/resume", headers=admin_headers)
    await poll(
        lambda: message_status(api, tenant["headers"], message_id),
        lambda m: m["status"] == "delivered",
        what="the held message to be delivered after resume",
    )
    assert await deliveries(sandbox, message_id) == 1


async def test_global_kill_switch_stops_every_tenant_and_is_audited(
    api: httpx.AsyncClient, platform: LocalEnvironment, new_tenant: NewTenant, admin_headers: dict[str, str]
) -> None:
    tenants = [await new_tenant(), await new_tenant()]
    assert (await api.get("/admin/kill-switch", headers=admin_headers)).json() == {"enabled": False}
    assert (await api.put("/admin/kill-switch", json={"enabled": True}, headers=admin_headers)).status_code == 200
    try:
        assert (await api.get("/admin/kill-switch", headers=admin_headers)).json() == {"enabled": True}
        for tenant in tenants:
            refused = await send(api, tenant, sms())
            assert refused.status_code == 409 and refused.json()["error"] == "SENDING_PAUSED"
    finally:
        await api.put("/admin/kill-switch", json={"enabled": False}, headers=admin_headers)
    assert all([(await send(api, tenant, sms())).status_code == 202 for tenant in tenants])
    async with await psycopg.AsyncConnection.connect(platform.database_url) as conn:
        cur = await conn.execute(
            "SELECT action FROM audit_events WHERE module = 'security' AND action LIKE 'kill_switch.%'"
            " ORDER BY id DESC LIMIT 2"
        )
        assert [r[0] for r in await cur.fetchall()] == ["kill_switch.disabled", "kill_switch.enabled"]
    assert (await api.put("/admin/kill-switch", json={"enabled": True})).status_code == 401


@pytest.mark.parametrize("formatted", ["0412 345 678", "+61 412 345 678", "0011 61 412 345 678", "(04) 1234-5678"])
async def test_do_not_contact_matches_any_format(api: httpx.AsyncClient, new_tenant: NewTenant, formatted: str) -> None:
    tenant = await new_tenant(region="AU")
    added = await api.post(
        f"/v1/tenants/{tenant['id']}/do-not-contact", json={"phone": "+61412345678"}, headers=tenant["headers"]
    )
    assert added.status_code == 201 and added.json()["phone_e164"] == "+61412345678"
    refused = await send(api, tenant, sms(formatted))
    assert refused.status_code == 422 and refused.json()["error"] == "DO_NOT_CONTACT", refused.text
    assert (await send(api, tenant, sms("0412 999 888"))).status_code == 202
    invalid = await send(api, tenant, sms("0061412345678"))  # "00" is not Australia's international prefix
    assert invalid.status_code == 422 and invalid.json()["error"] == "INVALID_RECIPIENT"


async def test_inbound_stop_opts_the_sender_out(
    api: httpx.AsyncClient, sandbox: httpx.AsyncClient, new_tenant: NewTenant
) -> None:
    number = f"+61412{uuid.uuid4().int % 10**6:06d}"  # 0412 xxx xxx: always a valid AU mobile
    tenant = await new_tenant(region="AU", sending_number=number)
    before = metric_value((await api.get("/metrics")).text, "optouts_total", {"tenant": tenant["id"]})
    relayed = await sandbox.post("/control/inbound", json={"from": "0412 000 111", "to": number, "body": " stop "})
    assert relayed.json()["delivered_status"] == 200
    refused = await send(api, tenant, sms("+61412000111"))
    assert refused.status_code == 422 and refused.json()["error"] == "DO_NOT_CONTACT"
    after = metric_value((await api.get("/metrics")).text, "optouts_total", {"tenant": tenant["id"]})
    assert after == before + 1


async def test_inbound_reply_needs_a_valid_signature(api: httpx.AsyncClient) -> None:
    body = json.dumps({"from": "+61412000111", "to": "+61400000001", "body": "STOP"}).encode()
    response = await api.post(
        "/webhooks/provider/inbound", content=body, headers={"x-provider-signature": sign("wrong-secret", body)}
    )
    assert response.status_code == 401


async def test_daily_budget_is_enforced(api: httpx.AsyncClient, new_tenant: NewTenant) -> None:
    tenant = await new_tenant(daily_budget_cents=10, sms_cost_cents=5)
    assert (await send(api, tenant, sms())).status_code == 202
    assert (await send(api, tenant, sms())).status_code == 202
    over = await send(api, tenant, sms())
    assert over.status_code == 402 and over.json()["error"] == "BUDGET_EXCEEDED"


async def test_quiet_hours_follow_the_contacts_time_zone(api: httpx.AsyncClient, new_tenant: NewTenant) -> None:
    tenant = await new_tenant(quiet_hours_start=21, quiet_hours_end=9, timezone="UTC")
    night = await send(api, tenant, sms(timezone=fixed_offset_zone(23)))
    assert night.status_code == 422 and night.json()["error"] == "QUIET_HOURS", night.text
    afternoon = await send(api, tenant, sms(timezone=fixed_offset_zone(15)))
    assert afternoon.status_code == 202, afternoon.text
    unknown = await send(api, tenant, sms(timezone="Mars/Olympus"))
    assert unknown.status_code == 422 and unknown.json()["error"] == "INVALID_TIMEZONE"


async def test_suspended_tenant_cannot_send_and_is_audited(
    api: httpx.AsyncClient,
    sandbox: httpx.AsyncClient,
    platform: LocalEnvironment,
    new_tenant: NewTenant,
    admin_headers: dict[str, str],
) -> None:
    tenant = await new_tenant()
    suspended = await api.patch(
        f"/tenants/{tenant['id']}/suspend", json={"reason": "audit anomaly"}, headers=admin_headers
    )
    assert suspended.json()["status"] == "suspended"
    refused = await send(api, tenant, sms())
    assert refused.status_code == 403 and refused.json()["error"] == "TENANT_SUSPENDED"
    events = (await sandbox.get("/monitoring/events", params={"type": "tenant.suspended"})).json()["events"]
    assert any(e["tenant_id"] == tenant["id"] for e in events)
    async with await psycopg.AsyncConnection.connect(platform.database_url) as conn:
        cur = await conn.execute("SELECT action FROM audit_events WHERE entity_id = %s ORDER BY id", (tenant["id"],))
        assert [row[0] for row in await cur.fetchall()] == ["tenant.created", "tenant.suspended"]
    await api.patch(f"/tenants/{tenant['id']}/activate", headers=admin_headers)
    assert (await send(api, tenant, sms())).status_code == 202


async def test_maintenance_mode_rejects_writes_and_serves_reads(
    api: httpx.AsyncClient, new_tenant: NewTenant, admin_headers: dict[str, str]
) -> None:
    tenant = await new_tenant()
    accepted = await send(api, tenant, sms())
    assert accepted.status_code == 202
    assert (await api.put("/admin/maintenance", json={"enabled": True}, headers=admin_headers)).status_code == 200
    try:
        refused = await send(api, tenant, sms())
        assert refused.status_code == 503 and refused.json()["error"] == "MAINTENANCE"
        read = await api.get(f"/v1/messages/{accepted.json()['id']}", headers=tenant["headers"])
        assert read.status_code == 200
    finally:
        await api.put("/admin/maintenance", json={"enabled": False}, headers=admin_headers)
    assert (await send(api, tenant, sms())).status_code == 202


# --- billing webhooks ---------------------------------------------------------------------------


async def test_billing_webhook_signature_and_idempotency(
    api: httpx.AsyncClient, platform: LocalEnvironment, new_tenant: NewTenant
) -> None:
    tenant = await new_tenant()
    event_id = f"evt_{uuid.uuid4().hex}"
    body = json.dumps(
        {"id": event_id, "type": "subscription.plan_changed", "data": {"tenantId": tenant["id"], "plan": "pro"}}
    ).encode()
    secret = platform.credentials.billing_webhook_secret
    forged = await api.post(
        "/billing/webhooks/sandbox", content=body, headers={"x-sandbox-signature": sign("not-the-secret", body)}
    )
    assert forged.status_code == 401
    async with await psycopg.AsyncConnection.connect(platform.database_url) as conn:
        cur = await conn.execute("SELECT count(*) FROM billing_webhook_events WHERE event_id = %s", (event_id,))
        assert await cur.fetchone() == (0,)

    headers = {"x-sandbox-signature": sign(secret, body)}
    first = await api.post("/billing/webhooks/sandbox", content=body, headers=headers)
    assert first.status_code == 202
    again = await api.post("/billing/webhooks/sandbox", content=body, headers=headers)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"

    async def audit_rows() -> list[tuple[str, str]]:
        async with await psycopg.AsyncConnection.connect(platform.database_url) as conn:
            cur = await conn.execute(
                "SELECT a.action, t.plan FROM audit_events a JOIN tenants t ON t.id = a.tenant_id"
                " WHERE a.module = 'billing' AND a.entity_id = %s",
                (event_id,),
            )
            return [(row[0], row[1]) for row in await cur.fetchall()]

    rows = await poll(audit_rows, lambda r: len(r) > 0, what="the billing event to be processed")
    await asyncio.sleep(0.5)  # a duplicate would be processed within this time
    assert await audit_rows() == rows == [("billing.subscription.plan_changed", "pro")]


# --- retries, dead letters, outbox --------------------------------------------------------------


async def test_provider_errors_are_retried_then_dead_lettered(
    api: httpx.AsyncClient, sandbox: httpx.AsyncClient, new_tenant: NewTenant
) -> None:
    tenant = await new_tenant()
    await sandbox.put("/control/faults", json={"error_rate": 1.0, "status": 503, "seed": 7})
    message_id = (await send(api, tenant, sms())).json()["id"]
    dead = await poll(
        lambda: message_status(api, tenant["headers"], message_id),
        lambda m: m["status"] == "dead",
        what="the message to be dead-lettered",
    )
    assert dead["attempts"] == 5
    assert "provider error 503" in dead["failure_reason"]
    assert await deliveries(sandbox, message_id) == 0
    events = (await sandbox.get("/monitoring/events", params={"type": "notification.failure"})).json()["events"]
    assert [e["reason"] for e in events if e["message_id"] == message_id] == ["provider error 503"]


async def test_retry_after_is_honoured_and_delivery_is_exactly_once(
    api: httpx.AsyncClient, sandbox: httpx.AsyncClient, new_tenant: NewTenant
) -> None:
    tenant = await new_tenant()
    await sandbox.put("/control/faults", json={"error_rate": 1.0, "status": 429, "retry_after_s": 0.5, "seed": 1})
    message_id = (await send(api, tenant, sms())).json()["id"]
    await poll(
        lambda: message_status(api, tenant["headers"], message_id),
        lambda m: m["status"] == "failed",
        what="a first failed attempt",
    )
    await sandbox.delete("/control/faults")
    delivered = await poll(
        lambda: message_status(api, tenant["headers"], message_id),
        lambda m: m["status"] == "delivered",
        what="delivery after the provider recovered",
    )
    assert delivered["attempts"] >= 2
    assert await deliveries(sandbox, message_id) == 1


async def test_outbox_replays_work_after_redis_loses_its_jobs(
    api: httpx.AsyncClient, sandbox: httpx.AsyncClient, platform: LocalEnvironment, new_tenant: NewTenant
) -> None:
    tenant = await new_tenant()
    before = metric_value((await api.get("/metrics")).text, "outbox_requeued_total", {"kind": "message"})
    platform.stop_service("worker-1")
    try:
        ids = [(await send(api, tenant, sms())).json()["id"] for _ in range(5)]
        client = aioredis.from_url(platform.redis_url)
        try:
            assert sum([await client.exists(f"bull:send-messages:{i}") for i in ids]) == 5
            await client.flushall()  # Redis loses every job
        finally:
            await client.aclose()
    finally:
        platform.start_service("worker-1")

    async def delivered_count() -> int:
        return sum([(await message_status(api, tenant["headers"], i))["status"] == "delivered" for i in ids])

    await poll(delivered_count, lambda n: n == 5, what="all 5 messages delivered via the outbox", timeout_s=30)
    assert [await deliveries(sandbox, i) for i in ids] == [1] * 5
    after = metric_value((await api.get("/metrics")).text, "outbox_requeued_total", {"kind": "message"})
    assert after >= before + 5


async def test_scheduled_backups_run_and_are_exposed(
    api: httpx.AsyncClient, platform: LocalEnvironment, admin_headers: dict[str, str]
) -> None:
    first = (await api.get("/backups/latest", headers=admin_headers)).json()
    assert first["timestamp"] is not None and first["size_bytes"] > 0
    assert platform.root is not None
    tables = backup_tables(str(platform.root / "backups" / first["file"]))
    assert {"tenants", "messages", "audit_events", "billing_webhook_events"} <= tables
    newer = await poll(
        lambda: api.get("/backups/latest", headers=admin_headers),
        lambda r: r.json()["timestamp"] > first["timestamp"],
        what="the next scheduled backup",
        timeout_s=15,
    )
    text = (await api.get("/metrics")).text
    assert metric_value(text, "backup_last_success_timestamp") >= newer.json()["timestamp"] - 0.01


# --- worker lifecycle ---------------------------------------------------------------------------


async def test_worker_sigterm_finishes_in_flight_jobs(
    api: httpx.AsyncClient, sandbox: httpx.AsyncClient, platform: LocalEnvironment, new_tenant: NewTenant
) -> None:
    tenant = await new_tenant()
    await sandbox.put("/control/faults", json={"latency_ms": 700})
    message_id = (await send(api, tenant, sms())).json()["id"]
    await poll(
        lambda: message_status(api, tenant["headers"], message_id),
        lambda m: m["status"] == "sending",
        what="the message to be in flight",
    )
    try:
        assert platform.stop_service("worker-1", timeout_s=15) == 0  # graceful: exit 0, not killed
    finally:
        platform.start_service("worker-1")
    assert (await message_status(api, tenant["headers"], message_id))["status"] == "delivered"
    assert await deliveries(sandbox, message_id) == 1


async def test_worker_sigkill_mid_flight_loses_and_doubles_nothing(
    api: httpx.AsyncClient, sandbox: httpx.AsyncClient, platform: LocalEnvironment, new_tenant: NewTenant
) -> None:
    tenant = await new_tenant()
    await sandbox.put("/control/faults", json={"latency_ms": 700})
    ids = [(await send(api, tenant, sms())).json()["id"] for _ in range(3)]
    await poll(
        lambda: message_status(api, tenant["headers"], ids[0]),
        lambda m: m["status"] == "sending",
        what="a message in flight",
    )
    platform.processes["worker-1"].kill()
    platform.stop_service("worker-1")
    await sandbox.delete("/control/faults")
    platform.start_service("worker-1")

    async def statuses() -> list[str]:
        return [(await message_status(api, tenant["headers"], i))["status"] for i in ids]

    await poll(statuses, lambda s: s == ["delivered"] * 3, what="every message delivered after the kill", timeout_s=30)
    assert [await deliveries(sandbox, i) for i in ids] == [1, 1, 1]
