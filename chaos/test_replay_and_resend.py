"""Replay and resend, safely: what a provider outage dead-lettered is sent again, and nothing twice.

Seed 000, "Email Delivery Failures" remediation: "Retry failed notifications via ... manual
`PATCH /api/notifications/:id/resend`". Seed 002, "Billing Webhooks": "To replay a failed event, update
`status` back to `'pending'`, clear `last_error`, and requeue" (the platform's admin endpoint
``POST /ops/outbox/{id}/retry`` does exactly that). A replay path is only safe if replaying twice
delivers nothing twice: each drill resends or replays a second time and reconciles on ground truth --
the provider sandbox's own record of deliveries per message id, and the one audit row the worker writes
per applied billing event -- never on a status column the platform writes itself.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from opsgate.config import Target
from opsgate.drills import observe
from opsgate.drills.drill import Drill, DrillFailed, Observation
from opsgate.environments.local import LocalEnvironment
from opsgate.faults.actions import ProviderFault
from opsgate.reference.client import Reference
from opsgate.reference.signing import sign

pytestmark = [pytest.mark.drill, pytest.mark.destructive]
DEAD_LETTERED = 4
"""Messages sent during the provider outage, each dead-lettered."""


async def resend(reference: Reference, admin: dict[str, str], message_id: str) -> int:
    """``PATCH /api/notifications/{id}/resend`` as an admin; returns the status."""
    response = await reference.api.patch(f"/api/notifications/{message_id}/resend", headers=admin)
    return response.status_code


async def delivered_once(reference: Reference, ids: list[str]) -> Observation:
    """Each message delivered with exactly one provider delivery (ground truth); the note names one that is not."""
    problems: list[str] = []
    for message_id in ids:
        message = await reference.message(message_id)
        count = await reference.deliveries(message_id)
        if message["status"] != "delivered" or count != 1:
            problems.append(f"{message_id}: status {message['status']}, {count} provider deliveries")
    note = f"{len(ids) - len(problems)}/{len(ids)} delivered exactly once"
    if problems:
        note += f" (e.g. {problems[0]})"
    return Observation(not problems, float(len(ids) - len(problems)), note)


async def dead_lettered(reference: Reference, ids: list[str]) -> Observation:
    """Each message dead with a reason and never delivered (provider record)."""
    dead = 0
    problems: list[str] = []
    for message_id in ids:
        message = await reference.message(message_id)
        count = await reference.deliveries(message_id)
        if message["status"] == "dead" and message.get("failure_reason") and count == 0:
            dead += 1
        else:
            problems.append(f"{message_id}: status {message['status']}, {count} provider deliveries")
    note = f"{dead}/{len(ids)} dead-lettered with a reason, none delivered"
    if problems:
        note += f" (e.g. {problems[0]})"
    return Observation(not problems, float(dead), note)


async def refused(what: str, statuses: dict[str, int]) -> Observation:
    """Every second attempt answered 409; the note counts the others."""
    other = {i: s for i, s in statuses.items() if s != 409}
    note = f"{len(statuses) - len(other)}/{len(statuses)} {what} refused with 409"
    if other:
        note += f" (e.g. {next(iter(other))}: {next(iter(other.values()))})"
    return Observation(not other, float(len(statuses) - len(other)), note)


async def test_resend_dead_letters(drill: Drill, target: Target, reference: Reference) -> None:
    drill.claim = "seed-000.email.resend"
    drill.objective = (
        "A provider outage dead-letters every send; once it is over, each dead letter is resent"
        " (PATCH /api/notifications/{id}/resend) and delivered exactly once by the provider's record. A second"
        " resend, and a resend of a message delivered all along, are refused (409) and deliver nothing again."
    )
    async with drill.running():
        await drill.steady_state()
        admin = {"Authorization": f"Bearer {await reference.admin_token()}"}
        control = await reference.send_accepted(1)
        await drill.expect("a message sent before the outage delivered", lambda: delivered_once(reference, control),
                           within_s=target.scaled(300, floor_s=10.0))  # fmt: skip

        outage = ProviderFault(target.services["provider"].url + "/control/faults", {"error_rate": 1.0, "status": 503})
        async with drill.fault(outage):
            ids = await reference.send_accepted(DEAD_LETTERED)
            await drill.expect("every send of the outage dead-lettered with a reason", lambda: dead_lettered(
                reference, ids), within_s=target.scaled(600, floor_s=15.0))  # fmt: skip
        drill.snapshot("before", {"dead-lettered": len(ids), "provider deliveries of them": sum(
            [await reference.deliveries(m) for m in ids])})  # fmt: skip

        first = {m: await resend(reference, admin, m) for m in ids}
        drill.event("dead letters resent", f"statuses {sorted(set(first.values()))}")
        if set(first.values()) != {202}:
            raise DrillFailed(f"resend of a dead-lettered message not accepted: statuses {first}")
        await drill.expect("each resent message delivered exactly once (provider record)",
                           lambda: delivered_once(reference, ids),
                           within_s=target.scaled(300, floor_s=10.0))  # fmt: skip

        again = {m: await resend(reference, admin, m) for m in [*ids, *control]}
        drill.event("resent again, and a message delivered all along resent", f"statuses {sorted(set(again.values()))}")
        await drill.sleep(target.scaled(60, floor_s=2.0), "a redelivery would show up by now")
        once = await drill.expect("still exactly once: a second resend delivers nothing again",
                                  lambda: delivered_once(reference, [*ids, *control]))  # fmt: skip
        refusals = await drill.expect("every resend of a delivered message refused", lambda: refused("resends", again))
        drill.snapshot("after", {"delivered exactly once": once.value, "resends refused (409)": refusals.value})
        await drill.steady_state(after=True, within_s=target.scaled(300, floor_s=5.0))


async def post_event(reference: Reference, secret: str, event_id: str, tenant_id: str) -> int:
    """Post one signed ``subscription.plan_changed`` event for ``tenant_id``; returns the status."""
    data = {"tenantId": tenant_id, "plan": "pro"}
    body = json.dumps({"id": event_id, "type": "subscription.plan_changed", "data": data}).encode()
    headers = {"x-sandbox-signature": sign(secret, body), "content-type": "application/json"}
    response = await reference.api.post("/billing/webhooks/sandbox", content=body, headers=headers)
    return response.status_code


async def event_state(reference: Reference, admin: dict[str, str], event_id: str) -> dict[str, Any]:
    response = await reference.api.get(f"/billing/webhooks/events/{event_id}", headers=admin)
    body: dict[str, Any] = response.json()
    return body


async def event_is(reference: Reference, admin: dict[str, str], event_id: str, status: str) -> Observation:
    event = await event_state(reference, admin, event_id)
    error = f", last_error {event.get('last_error')!r}" if event.get("last_error") else ""
    return Observation(event.get("status") == status, None, f"event {event.get('status')}{error}")


async def applied_once(target: Target, event_id: str) -> Observation:
    """One audit row for the event: the worker's side effect, counted (not its status column)."""
    sql = "select count(*) from audit_events where entity_type = 'billing_webhook_event' and entity_id = any(%(ids)s)"
    rows = await observe.sql_value(target, sql, {"ids": [event_id]})
    return Observation(rows == 1, rows, f"{rows:g} audit rows for the event (applied exactly once: 1)")


async def test_replay_failed_billing_event(
    drill: Drill, target: Target, local_environment: LocalEnvironment, reference: Reference
) -> None:
    drill.claim = "seed-002.billing.replay"
    drill.objective = (
        "A billing event for a tenant not provisioned yet fails with its reason; the tenant is created and the"
        " event replayed (POST /ops/outbox/{id}/retry: back to pending, last_error cleared, requeued): processed,"
        " applied exactly once (one audit row). Replayed again, it is refused (409) and still applied once."
    )
    secret = local_environment.credentials.billing_webhook_secret
    tenant_id = str(uuid.uuid4())
    event_id = f"evt_replay_{uuid.uuid4().hex[:12]}"
    async with drill.running():
        await drill.steady_state()
        admin = {"Authorization": f"Bearer {await reference.admin_token()}"}
        status = await post_event(reference, secret, event_id, tenant_id)
        if status != 202:
            raise DrillFailed(f"the billing webhook was not accepted: status {status}")
        await drill.expect("the event for an unprovisioned tenant failed with its reason",
                           lambda: event_is(reference, admin, event_id, "failed"),
                           within_s=target.scaled(300, floor_s=10.0))  # fmt: skip
        drill.snapshot("before", {"event": await event_state(reference, admin, event_id)})

        created = await reference.api.post("/admin/tenants", json={"id": tenant_id, "name": "replayed"}, headers=admin)
        drill.event("missing tenant created", f"{tenant_id}: {created.status_code}")
        if created.status_code != 201:
            raise DrillFailed(f"the missing tenant could not be created: {created.status_code} {created.text[:200]}")

        replay = await reference.api.post(f"/ops/outbox/{event_id}/retry", headers=admin)
        drill.event("failed event replayed", f"status {replay.status_code}")
        if replay.status_code != 202:
            raise DrillFailed(f"the replay of the failed event was not accepted: {replay.status_code} {replay.text}")
        await drill.expect("the replayed event processed", lambda: event_is(reference, admin, event_id, "processed"),
                           within_s=target.scaled(300, floor_s=10.0))  # fmt: skip
        await drill.expect("applied exactly once (one audit row)", lambda: applied_once(target, event_id),
                           within_s=target.scaled(60, floor_s=5.0))  # fmt: skip

        again = await reference.api.post(f"/ops/outbox/{event_id}/retry", headers=admin)
        drill.event("processed event replayed again", f"status {again.status_code}")
        await drill.sleep(target.scaled(60, floor_s=2.0), "a second application would show up by now")
        await drill.expect("still applied exactly once after the second replay", lambda: applied_once(target, event_id))
        await drill.expect("the second replay refused", lambda: refused("replays", {event_id: again.status_code}))
        drill.snapshot("after", {"event": await event_state(reference, admin, event_id)})
        await drill.steady_state(after=True, within_s=target.scaled(300, floor_s=5.0))
