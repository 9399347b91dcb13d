"""Resend (seed 000) and outbox replay (seed 002) on the reference platform, through HTTP against the real stack.

A dead-lettered message is resent and delivered once (the provider sandbox's record); a failed billing event
is replayed once its tenant exists and applied once (one audit row). Everything else is refused: a second
resend or replay, a message delivered or an event processed (409), an unknown id (404), no admin (401).
"""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import psycopg
import pytest

from helpers import NewTenant, defects_planted, deliveries, message_status, poll
from opsgate.environments.local import LocalEnvironment
from opsgate.reference.signing import sign

pytestmark = pytest.mark.platform
SETTLE_S = 1.0
"""Long enough for a wrongly requeued job to be sent or applied (the worker takes it at once)."""


async def send_sms(api: httpx.AsyncClient, tenant: dict[str, object]) -> str:
    body = {"channel": "sms", "to": "+61412345678", "body": f"resend {uuid.uuid4().hex[:8]}"}
    response = await api.post(f"/v1/tenants/{tenant['id']}/messages", json=body, headers=tenant["headers"])  # type: ignore[arg-type]
    assert response.status_code == 202, response.text
    message_id: str = response.json()["id"]
    return message_id


async def post_event(api: httpx.AsyncClient, platform: LocalEnvironment, tenant_id: str) -> str:
    """Post a signed ``subscription.plan_changed`` for ``tenant_id``; returns its event id."""
    event_id = f"evt_{uuid.uuid4().hex}"
    data = {"tenantId": tenant_id, "plan": "pro"}
    body = json.dumps({"id": event_id, "type": "subscription.plan_changed", "data": data}).encode()
    headers = {"x-sandbox-signature": sign(platform.credentials.billing_webhook_secret, body)}
    response = await api.post("/billing/webhooks/sandbox", content=body, headers=headers)
    assert response.status_code == 202, response.text
    return event_id


async def event(api: httpx.AsyncClient, admin_headers: dict[str, str], event_id: str) -> dict[str, object]:
    response = await api.get(f"/billing/webhooks/events/{event_id}", headers=admin_headers)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def applied(platform: LocalEnvironment, event_id: str) -> int:
    """Audit rows the worker wrote for the event: how many times it was applied."""
    async with await psycopg.AsyncConnection.connect(platform.database_url) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM audit_events WHERE entity_type = 'billing_webhook_event' AND entity_id = %s",
            (event_id,),
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def dead_letter(api: httpx.AsyncClient, sandbox: httpx.AsyncClient, tenant: dict[str, object]) -> str:
    """A message dead-lettered by a provider outage (every send 503), the outage over again."""
    await sandbox.put("/control/faults", json={"error_rate": 1.0, "status": 503, "seed": 7})
    try:
        message_id = await send_sms(api, tenant)
        await poll(lambda: message_status(api, tenant["headers"], message_id), lambda m: m["status"] == "dead",  # type: ignore[arg-type]
                   what="the message dead-lettered", timeout_s=30)  # fmt: skip
    finally:
        await sandbox.delete("/control/faults")
    return message_id


async def test_resend_delivers_a_dead_letter_once_and_refuses_the_rest(
    api: httpx.AsyncClient, sandbox: httpx.AsyncClient, new_tenant: NewTenant, admin_headers: dict[str, str]
) -> None:
    tenant = await new_tenant()
    headers = tenant["headers"]
    message_id = await dead_letter(api, sandbox, tenant)
    dead = await message_status(api, headers, message_id)
    assert dead["attempts"] == 5 and "gave up after 5 attempts" in dead["failure_reason"]
    assert await deliveries(sandbox, message_id) == 0

    url = f"/api/notifications/{message_id}/resend"
    assert (await api.patch(url)).status_code == 401
    assert (await api.patch(url, headers=headers)).status_code == 401  # a tenant token is not an admin session
    resent = await api.patch(url, headers=admin_headers)
    assert resent.status_code == 202 and resent.json() == {"id": message_id, "status": "queued", "enqueued": True}
    delivered = await poll(lambda: message_status(api, headers, message_id), lambda m: m["status"] == "delivered",
                           what="the resent message delivered")  # fmt: skip
    assert delivered["attempts"] == 1 and delivered["failure_reason"] is None  # attempts were reset
    assert await deliveries(sandbox, message_id) == 1

    again = await api.patch(url, headers=admin_headers)
    assert again.status_code == 409 and again.json()["error"] == "NOT_DEAD_LETTERED", again.text
    assert "delivered" in again.json()["detail"]
    await asyncio.sleep(SETTLE_S)
    assert await deliveries(sandbox, message_id) == 1

    unknown = await api.patch(f"/api/notifications/{uuid.uuid4()}/resend", headers=admin_headers)
    assert unknown.status_code == 404 and unknown.json()["error"] == "NOT_FOUND"
    assert (await api.patch("/api/notifications/not-a-uuid/resend", headers=admin_headers)).status_code == 404


async def test_outbox_retry_replays_a_failed_event_once_its_tenant_exists(
    api: httpx.AsyncClient, platform: LocalEnvironment, admin_headers: dict[str, str]
) -> None:
    tenant_id = str(uuid.uuid4())
    event_id = await post_event(api, platform, tenant_id)
    failed = await poll(lambda: event(api, admin_headers, event_id), lambda e: e["status"] == "failed",
                        what="the event for an unknown tenant failed")  # fmt: skip
    assert failed["last_error"] == f"unknown tenant {tenant_id!r}"
    url = f"/ops/outbox/{event_id}/retry"
    assert (await api.post(url)).status_code == 401

    created = await api.post("/admin/tenants", json={"id": tenant_id, "name": "late"}, headers=admin_headers)
    assert created.status_code == 201 and created.json()["id"] == tenant_id, created.text
    taken = await api.post("/admin/tenants", json={"id": tenant_id, "name": "again"}, headers=admin_headers)
    assert taken.status_code == 409 and taken.json()["error"] == "TENANT_EXISTS", taken.text
    bad = await api.post("/admin/tenants", json={"id": "nope", "name": "bad"}, headers=admin_headers)
    assert bad.status_code == 422 and bad.json()["detail"].startswith("id: "), bad.text

    replayed = await api.post(url, headers=admin_headers)
    assert replayed.status_code == 202, replayed.text
    assert replayed.json() == {"event_id": event_id, "status": "pending", "enqueued": True}
    processed = await poll(lambda: event(api, admin_headers, event_id), lambda e: e["status"] == "processed",
                           what="the replayed event processed")  # fmt: skip
    assert processed["last_error"] is None and processed["attempts"] == 2
    assert await applied(platform, event_id) == 1
    tenant = (await api.get(f"/tenants/{tenant_id}", headers=admin_headers)).json()
    assert tenant["plan"] == "pro"

    again = await api.post(url, headers=admin_headers)
    assert again.status_code == 409 and again.json()["error"] == "NOT_FAILED", again.text
    await asyncio.sleep(SETTLE_S)
    assert await applied(platform, event_id) == 1
    unknown = await api.post(f"/ops/outbox/evt_{uuid.uuid4().hex}/retry", headers=admin_headers)
    assert unknown.status_code == 404 and unknown.json()["error"] == "NOT_FOUND"


async def test_defects_resend_and_replay_what_was_already_done(
    platform: LocalEnvironment,
    api: httpx.AsyncClient,
    sandbox: httpx.AsyncClient,
    new_tenant: NewTenant,
    admin_headers: dict[str, str],
) -> None:
    """resend-redelivers: a delivered message is sent again; replay-reapplies-processed: an event applied twice."""
    with defects_planted(platform, "resend-redelivers,replay-reapplies-processed"):
        tenant = await new_tenant()
        message_id = await send_sms(api, tenant)
        await poll(lambda: deliveries(sandbox, message_id), lambda n: n == 1, what="the message delivered")
        assert (await api.patch(f"/api/notifications/{message_id}/resend", headers=admin_headers)).status_code == 202
        await poll(lambda: deliveries(sandbox, message_id), lambda n: n == 2, what="the delivered message re-sent")

        event_id = await post_event(api, platform, tenant["id"])
        await poll(lambda: applied(platform, event_id), lambda n: n == 1, what="the event applied")
        assert (await api.post(f"/ops/outbox/{event_id}/retry", headers=admin_headers)).status_code == 202
        await poll(lambda: applied(platform, event_id), lambda n: n == 2, what="the processed event re-applied")
