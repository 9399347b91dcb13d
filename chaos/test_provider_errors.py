"""Provider failures (seed 001 "Provider outage"): 50% 5xx, then 100%, then 429 with Retry-After, then timeouts.

The platform retries with backoff, honours Retry-After, dead-letters with a reason after its last attempt,
posts a ``notification.failure`` monitoring event for each, and the failure-rate alert fires. Once the
provider is healthy again every accepted message is delivered exactly once (the provider's own record)
or dead-lettered with a reason: none lost, none duplicated.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from opsgate.alerts.live import LiveAlerts
from opsgate.config import Target
from opsgate.drills.drill import Drill, DrillFailed, Observation
from opsgate.faults.actions import ProviderFault
from opsgate.reference.client import Reference

pytestmark = [pytest.mark.drill, pytest.mark.destructive]
ALERT = "NotificationFailureRateHigh"
RETRY_AFTER_S = 1.0


def provider_fault(target: Target, **settings: object) -> ProviderFault:
    return ProviderFault(target.services["provider"].url + "/control/faults", dict(settings))


async def counter(reference: Reference, outcome: str) -> int:
    """How many sends the provider answered with ``outcome`` (faulted, hung, delivered...)."""
    value: int = (await reference.provider.get("/requests")).json()[outcome]
    return value


async def grew(reference: Reference, outcome: str, before: int, at_least: int = 1) -> Observation:
    """The provider's ``outcome`` counter rose by ``at_least`` since ``before``."""
    now = await counter(reference, outcome)
    return Observation(now - before >= at_least, float(now - before), f"{now - before} sends {outcome} by the provider")


async def final_state(reference: Reference, ids: list[str]) -> Observation:
    """Each message delivered exactly once (provider record + status) or dead with a reason; the note lists the rest."""
    delivered = dead = 0
    problems: list[str] = []
    for message_id in ids:
        message = await reference.message(message_id)
        count = await reference.deliveries(message_id)
        if message["status"] == "delivered" and count == 1:
            delivered += 1
        elif message["status"] == "dead" and message.get("failure_reason") and count == 0:
            dead += 1
        else:
            problems.append(f"{message_id}: status {message['status']}, {count} provider deliveries")
    note = f"{delivered} delivered once, {dead} dead-lettered with a reason, {len(problems)} neither"
    if problems:
        note += f" (e.g. {problems[0]})"
    return Observation(not problems, float(len(problems)), note)


async def test_provider_errors(drill: Drill, target: Target, reference: Reference) -> None:
    drill.claim = "seed-001.drills.provider-outage"
    drill.objective = (
        "Provider answers 50% 503, then 100% 503, then 429 with Retry-After, then hangs: sends are retried with"
        " backoff, dead-lettered with a reason and reported to the monitoring webhook, the failure-rate alert"
        " fires; restored, every message is delivered exactly once or dead-lettered — none lost, none doubled."
    )
    if target.metrics.prometheus is None:
        raise DrillFailed("this drill needs metrics.prometheus for the failure-rate alert")
    alerts = LiveAlerts(drill.client, target.metrics.prometheus, target.alerts.receiver)
    ids: list[str] = []
    async with drill.running():
        await drill.steady_state()
        # The alert this drill proves must be its own doing: another drill's failures may still hold it.
        await drill.expect(f"{ALERT} inactive before the drill", lambda: _inactive(alerts),
                           within_s=target.scaled(1200, floor_s=30.0))  # fmt: skip
        events_before = len((await reference.provider.get("/monitoring/events")).json()["events"])

        # 1. Half the sends fail: retries with backoff get most through.
        faulted = await counter(reference, "faulted")
        async with drill.fault(provider_fault(target, error_rate=0.5, status=503)):
            ids += await reference.send_accepted(10)
            await drill.expect("the provider fails sends (50% 503)", lambda: grew(reference, "faulted", faulted),
                               within_s=10.0)  # fmt: skip

        # 2. Every send fails: dead letters with a reason, monitoring events, the failure-rate alert.
        async with drill.fault(provider_fault(target, error_rate=1.0, status=503)):
            sending = asyncio.create_task(_send_until(reference, ids, alerts, rate_per_s=4.0,
                                                      limit_s=target.scaled(1200, floor_s=30.0)))  # fmt: skip
            try:
                await drill.expect(f"{ALERT} firing", lambda: _firing(alerts),
                                   within_s=target.scaled(1200, floor_s=30.0), every_s=0.5)  # fmt: skip
            finally:
                await sending
            await drill.expect("dead-lettered messages reported to the monitoring webhook",
                               lambda: _dead_reported(reference, ids, events_before),
                               within_s=target.scaled(300, floor_s=10.0))  # fmt: skip

        # 3. Rate limited: 429 with Retry-After, which the worker must honour.
        async with drill.fault(provider_fault(target, error_rate=1.0, status=429, retry_after_s=RETRY_AFTER_S)):
            limited = await reference.send_accepted(5)
            sent_at = time.time()
            ids += limited
            # Held until each rate-limited send has been refused once: rolled back earlier, a late first attempt
            # would simply go through, and "delivered no sooner than Retry-After" would judge nothing. Judged per
            # message: the provider's refusal count also holds an earlier stage's retries (seen in the matrix).
            await drill.expect("the provider rate-limits every send (429)",
                               lambda: _each_refused_once(reference, limited), within_s=10.0)  # fmt: skip
        await drill.expect("rate-limited sends delivered no sooner than Retry-After",
                           lambda: _after_retry_after(reference, limited, sent_at),
                           within_s=target.scaled(300, floor_s=15.0))  # fmt: skip

        # 4. The provider hangs: the worker's timeout cuts each call, and it retries.
        hung = await counter(reference, "hung")
        async with drill.fault(provider_fault(target, hang=True)):
            ids += await reference.send_accepted(5)
            await drill.expect("sends time out against the hanging provider", lambda: grew(reference, "hung", hung),
                               within_s=target.scaled(600, floor_s=15.0))  # fmt: skip

        await drill.expect("every message delivered exactly once or dead-lettered with a reason",
                           lambda: final_state(reference, ids), within_s=target.scaled(900, floor_s=30.0))  # fmt: skip
        await drill.sleep(target.scaled(60, floor_s=2.0), "a late duplicate would show up by now")
        await drill.expect("still: none lost, none doubled", lambda: final_state(reference, ids))
        await drill.expect(f"{ALERT} resolved", lambda: _inactive(alerts), within_s=target.scaled(1200, floor_s=30.0))
        drill.snapshot("after", {"messages": len(ids), "monitoring events": len(
            (await reference.provider.get("/monitoring/events")).json()["events"]) - events_before})  # fmt: skip
        await drill.steady_state(after=True, within_s=target.scaled(300, floor_s=5.0))


async def _send_until(reference: Reference, ids: list[str], alerts: LiveAlerts, *, rate_per_s: float,
                      limit_s: float) -> None:  # fmt: skip
    """Keep sending at ``rate_per_s`` until the alert fires (bounded by ``limit_s`` and a request cap)."""
    deadline = time.monotonic() + limit_s
    for _ in range(int(limit_s * rate_per_s) + 1):
        if time.monotonic() >= deadline or await alerts.state(ALERT) == "firing":
            return
        ids += await reference.send_accepted(1)
        await asyncio.sleep(1 / rate_per_s)


async def _firing(alerts: LiveAlerts) -> Observation:
    state = await alerts.state(ALERT)
    return Observation(state == "firing", None, f"{ALERT} is {state}")


async def _inactive(alerts: LiveAlerts) -> Observation:
    state = await alerts.state(ALERT)
    return Observation(state == "inactive", None, f"{ALERT} is {state}")


async def _dead_reported(reference: Reference, ids: list[str], events_before: int) -> Observation:
    dead = [m for m in ids if (await reference.message(m))["status"] == "dead"]
    events = (await reference.provider.get("/monitoring/events", params={"type": "notification.failure"})).json()
    reported = {e.get("message_id") for e in events["events"]}
    missing = [m for m in dead if m not in reported]
    note = f"{len(dead)} dead-lettered, {len(dead) - len(missing)} reported as notification.failure"
    return Observation(bool(dead) and not missing, float(len(dead) - len(missing)), note)


async def _each_refused_once(reference: Reference, ids: list[str]) -> Observation:
    """Every message's first attempt is over (and, the provider refusing every send, was refused)."""
    done = 0
    for message_id in ids:
        message = await reference.message(message_id)
        done += message["attempts"] >= 1 and message["status"] != "sending"
    return Observation(done == len(ids), float(done), f"{done} of {len(ids)} sends refused once")


async def _after_retry_after(reference: Reference, ids: list[str], sent_at: float) -> Observation:
    late = []
    for message_id in ids:
        rows = (await reference.provider.get("/deliveries", params={"message_id": message_id})).json()["deliveries"]
        if len(rows) != 1:
            return Observation(False, None, f"{message_id}: {len(rows)} deliveries so far")
        if rows[0]["attempt"] < 2 or rows[0]["received_at"] - sent_at < RETRY_AFTER_S * 0.9:
            late.append(f"{message_id}: attempt {rows[0]['attempt']} at +{rows[0]['received_at'] - sent_at:.2f}s")
    note = "each retried, delivered after Retry-After" if not late else f"not honoured: {late[0]}"
    return Observation(not late, None, note)
