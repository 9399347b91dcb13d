"""Seed 002's failure drill with the platform's idempotency promise: webhooks redelivered while no worker runs.

"scale worker to zero, post sandbox webhooks, confirm retrying alert fires, restore worker, verify backlog
drains." The billing provider redelivers webhooks (each event id posted twice); the worker must apply each
event exactly once — reconciled on side effects (one audit row per event id), not on a status column the
worker writes itself.
"""

from __future__ import annotations

import json
import uuid

import pytest

from opsgate.config import Target
from opsgate.drills import observe
from opsgate.drills.drill import Drill, DrillFailed, Observation
from opsgate.environments.local import LocalEnvironment
from opsgate.faults.actions import LocalServiceFault
from opsgate.reference.client import Reference
from opsgate.reference.signing import sign

pytestmark = [pytest.mark.drill, pytest.mark.destructive]
ALERT = "BillingWebhookRetrying"
QUEUE = "billing-webhooks"
EVENTS = 12


async def post_webhook(reference: Reference, secret: str, event_id: str) -> int:
    """Post one signed ``invoice.paid`` event; returns the status."""
    body = json.dumps({"id": event_id, "type": "invoice.paid", "data": {"tenantId": reference.tenant_id}}).encode()
    headers = {"x-sandbox-signature": sign(secret, body), "content-type": "application/json"}
    response = await reference.api.post("/billing/webhooks/sandbox", content=body, headers=headers)
    return response.status_code


async def audit_rows(target: Target, event_ids: list[str]) -> Observation:
    """One audit row per event id: the side effect, counted per id."""
    sql = ("select count(*) filter (where n = 1), count(*) filter (where n > 1) from ("
           " select count(a.entity_id) as n from unnest(%(ids)s::text[]) as e(id)"
           " left join audit_events a on a.entity_type = 'billing_webhook_event' and a.entity_id = e.id"
           " group by e.id) per_event")  # fmt: skip
    once = await observe.sql_value(target, sql, {"ids": event_ids})
    doubled = await observe.sql_value(target, sql.replace("count(*) filter (where n = 1), ", ""), {"ids": event_ids})
    ok = once == len(event_ids) and not doubled
    return Observation(ok, once, f"{once:g}/{len(event_ids)} events applied exactly once; {doubled:g} more than once")


async def test_worker_to_zero_redelivered_webhooks(
    drill: Drill, target: Target, local_environment: LocalEnvironment, reference: Reference
) -> None:
    drill.claim = "seed-002.drills.worker-to-zero-idempotent"
    drill.objective = (
        "Workers at zero; every billing webhook is delivered twice by the provider: the first is accepted (202),"
        " the redelivery answered as a duplicate; the backlog grows, the outbox sweeper's retries fire"
        f" {ALERT}; workers restored, the backlog drains and each event is applied exactly once."
    )
    secret = local_environment.credentials.billing_webhook_secret
    if target.metrics.prometheus is None:
        raise DrillFailed("this drill needs metrics.prometheus for the retrying alert")
    event_ids = [f"evt_redelivered_{uuid.uuid4().hex[:12]}" for _ in range(EVENTS)]
    async with drill.running():
        await drill.steady_state()
        drill.watch(f"queue {QUEUE} waiting", lambda: observe.queue_waiting(target, QUEUE), target.scaled(1, 0.2))
        drill.snapshot("before", {"audit rows for these events": 0, "queue waiting": await observe.queue_waiting(
            target, QUEUE)})  # fmt: skip
        async with drill.fault(LocalServiceFault(local_environment, local_environment.service_names("worker"))):
            first = [await post_webhook(reference, secret, e) for e in event_ids]
            again = [await post_webhook(reference, secret, e) for e in event_ids]
            drill.event("webhooks posted twice", f"first: {sorted(set(first))}, redelivered: {sorted(set(again))}")
            if set(first) != {202}:
                raise DrillFailed(f"webhooks not accepted with the worker down: statuses {sorted(set(first))}")
            await drill.expect("backlog grows", lambda: _waiting_at_least(target, EVENTS), within_s=10.0)
            await drill.expect(f"{ALERT} firing", lambda: observe.alert_state(drill.client, target, ALERT, "firing"),
                               within_s=target.scaled(900, floor_s=20.0))  # fmt: skip
        await drill.expect("backlog drained", lambda: _waiting_at_least(target, 0, exactly=True),
                           within_s=target.scaled(300, floor_s=10.0))  # fmt: skip
        await drill.expect("each event applied exactly once (audit rows)", lambda: audit_rows(target, event_ids),
                           within_s=target.scaled(60, floor_s=5.0))  # fmt: skip
        await drill.sleep(target.scaled(60, floor_s=2.0), "a late duplicate would show up by now")
        await drill.expect("still exactly once after the settle", lambda: audit_rows(target, event_ids))
        drill.snapshot("after", {"queue waiting": await observe.queue_waiting(target, QUEUE)})
        await drill.steady_state(after=True, within_s=target.scaled(300, floor_s=5.0))


async def _waiting_at_least(target: Target, count: int, *, exactly: bool = False) -> Observation:
    waiting = await observe.queue_waiting(target, QUEUE)
    ok = waiting == count if exactly else waiting >= count
    return Observation(ok, waiting, f"{waiting:g} waiting in {QUEUE}")
