"""The monitoring webhook fails (seed 000 "Logging / Monitoring Health Checks"): first 410 Gone, then down.

While it fails, sends still go out (the provider's own record), the failure events of dead letters are held in
the platform's outbox instead of lost, and the sink's failure is itself visible: ``monitoring_webhook_failures_total``
grows and ``monitoring_events_pending`` holds the backlog. Once the webhook answers 2xx again the backlog is
exported: every dead letter's ``notification.failure`` is recorded by the sink exactly once (by its event_id).
"""

from __future__ import annotations

from collections import Counter

import pytest

from opsgate.config import Target
from opsgate.drills.drill import Drill, Observation
from opsgate.faults.actions import MonitoringSinkFault, ProviderFault
from opsgate.probes.metrics import scrape
from opsgate.reference.client import Reference

pytestmark = [pytest.mark.drill, pytest.mark.destructive]
BATCH = 3
"""Messages per step: dead-lettered under a provider outage, or sent while the sink fails."""


async def metric_total(drill: Drill, target: Target, name: str) -> float:
    """``name`` summed over every scraped endpoint (api and workers)."""
    snapshot = await scrape(drill.client, target.metrics.scrape)
    return sum(snapshot.matching(name, {}).values())


async def all_status(reference: Reference, ids: list[str], status: str) -> Observation:
    statuses = Counter([(await reference.message(m))["status"] for m in ids])
    return Observation(statuses[status] == len(ids), float(statuses[status]),
                       f"{statuses[status]} of {len(ids)} {status} ({dict(statuses)})")  # fmt: skip


async def delivered_once(reference: Reference, ids: list[str]) -> Observation:
    """Each message recorded exactly once by the provider (ground truth) and reported delivered."""
    counts = [await reference.deliveries(m) for m in ids]
    statuses = [(await reference.message(m))["status"] for m in ids]
    good = sum(1 for c, s in zip(counts, statuses, strict=True) if c == 1 and s == "delivered")
    note = f"{good} of {len(ids)} delivered once (provider records {counts}, statuses {statuses})"
    return Observation(good == len(ids), float(good), note)


async def reported_once(reference: Reference, dead: list[str]) -> Observation:
    """Every dead letter's notification.failure recorded by the sink exactly once, no event_id twice."""
    events = (await reference.provider.get("/monitoring/events", params={"type": "notification.failure"})).json()
    mine = [e for e in events["events"] if e.get("message_id") in set(dead)]
    per_message = Counter(e["message_id"] for e in mine)
    per_event = Counter(e.get("event_id") for e in mine)
    missing = [m for m in dead if per_message[m] == 0]
    doubled = [m for m in dead if per_message[m] > 1] + [str(e) for e, n in per_event.items() if n > 1 or e is None]
    note = f"{len(dead) - len(missing)} of {len(dead)} dead letters reported, {len(doubled)} more than once"
    if missing:
        note += f" (e.g. {missing[0]} never reported)"
    elif doubled:
        note += f" (e.g. {doubled[0]})"
    return Observation(not missing and not doubled, float(len(dead) - len(missing)), note)


async def test_monitoring_sink_failure(drill: Drill, target: Target, reference: Reference) -> None:
    drill.claim = "seed-000.monitoring.webhook-2xx"
    drill.objective = (
        "The monitoring webhook answers 410 Gone, then is down: sends are still delivered, the sink's failures"
        " are counted and the failure events of dead letters are held in the outbox; restored, the backlog is"
        " exported and every dead letter's notification.failure is reported exactly once (by event_id)."
    )
    provider = target.services["provider"].url
    sink_control = provider + "/control/monitoring"
    dead: list[str] = []
    delivered: list[str] = []
    settle_s = target.scaled(300, floor_s=15.0)

    async def failing_phase(phase: str) -> None:
        """Under the current sink fault: dead letters held in the outbox, failures counted, sends delivered."""
        failures = await metric_total(drill, target, "monitoring_webhook_failures_total")
        async with drill.fault(ProviderFault(provider + "/control/faults", {"error_rate": 1.0, "status": 503})):
            batch = await reference.send_accepted(BATCH)
            await drill.expect(f"sends dead-lettered while the sink is {phase}",
                               lambda: all_status(reference, batch, "dead"), within_s=settle_s)  # fmt: skip
        dead.extend(batch)

        async def counted() -> Observation:
            now = await metric_total(drill, target, "monitoring_webhook_failures_total")
            return Observation(now > failures, now - failures, f"monitoring_webhook_failures_total +{now - failures:g}")

        async def held() -> Observation:
            pending = await metric_total(drill, target, "monitoring_events_pending")
            note = f"monitoring_events_pending {pending:g}, {len(dead)} dead letters unreported"
            return Observation(pending >= len(dead), pending, note)

        await drill.expect(f"sink failures counted while it is {phase}", counted, within_s=10.0)
        await drill.expect(f"failure events held in the outbox while the sink is {phase}", held, within_s=10.0)
        sends = await reference.send_accepted(BATCH)
        await drill.expect(f"sends delivered while the sink is {phase}", lambda: delivered_once(reference, sends),
                           within_s=settle_s)  # fmt: skip
        delivered.extend(sends)

    async with drill.running():
        await drill.steady_state()
        async with drill.fault(MonitoringSinkFault(sink_control, {"status": 410})):
            await failing_phase("410 Gone")
            async with drill.fault(MonitoringSinkFault(sink_control, {"down": True})):
                await failing_phase("down")

        async def exported() -> Observation:
            pending = await metric_total(drill, target, "monitoring_events_pending")
            return Observation(pending == 0, pending, f"monitoring_events_pending {pending:g}")

        drain_s = target.scaled(600, floor_s=20.0)
        await drill.expect("every dead letter's failure event reported exactly once",
                           lambda: reported_once(reference, dead), within_s=drain_s)  # fmt: skip
        await drill.expect("backlog exported once the sink is restored", exported, within_s=drain_s)
        await drill.sleep(target.scaled(60, floor_s=2.0), "a late duplicate would show up by now")
        await drill.expect("still: each reported exactly once", lambda: reported_once(reference, dead))
        drill.snapshot("after", {"dead letters": len(dead), "delivered during the sink failure": len(delivered)})
        await drill.steady_state(after=True, within_s=target.scaled(300, floor_s=5.0))
