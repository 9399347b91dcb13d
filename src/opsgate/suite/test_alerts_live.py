"""Live alerts: a documented rule tripped through the system's real behaviour fires, notifies and resolves."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from opsgate.alerts.live import AlertTimeout, LiveAlerts, missing_diagnostics
from opsgate.config import Target
from opsgate.evidence.recorder import Recorder
from opsgate.evidence.records import CheckRecord, Sample
from opsgate.flows import FlowFailed, FlowRun, fresh_variables, run_steps
from opsgate.probes.base import ProbeError
from opsgate.traffic import drive

pytestmark = [pytest.mark.alerts, pytest.mark.destructive]


async def test_alert_live(live_alert_name: str, target: Target, evidence: Recorder) -> None:
    """Trip → pending → firing → notified at the receiver → restore → resolved, each within its deadline."""
    spec = next(live for live in target.alerts.live if live.id == live_alert_name)
    record = CheckRecord(id=spec.id, kind="alert-live", verdict="pass", claim=spec.claim, unit="s",
                         started_at=time.time())  # fmt: skip
    prometheus, receiver = target.metrics.prometheus, target.alerts.receiver
    if prometheus is None or receiver is None:
        record.verdict = "error"
        record.message = "a live alert check needs metrics.prometheus and alerts.receiver"
        evidence.conclude(record)
        return
    fire_s = target.scaled(spec.fire_within, floor_s=5.0)
    resolve_s = target.scaled(spec.resolve_within, floor_s=5.0)
    events: list[tuple[str, float]] = []
    stop = asyncio.Event()
    steps = FlowRun(variables=fresh_variables())  # the trip's saves (a login's token) survive a failing later step
    async with httpx.AsyncClient() as client:
        alerts = LiveAlerts(client, prometheus, receiver)
        traffic = None
        trip_started = False
        try:
            try:  # an earlier drill's fault may still be resolving: its own resolve deadline, then no steady state
                waited = await alerts.wait_state(spec.alert, "inactive", within_s=resolve_s)
            except AlertTimeout:
                raise AlertTimeout(
                    f"{spec.alert} still active {resolve_s:.1f}s before the trip: no steady state to start from"
                ) from None
            events.append(("inactive", waited))
            steady = await alerts.active()
            tripped = time.time()
            trip_started = True
            await run_steps(client, target, spec.trip, steps)
            events.append(("tripped", tripped))
            if spec.traffic is not None:
                traffic = asyncio.create_task(drive(client, target, spec.traffic, fire_s, stop))
            events.append(("pending", await alerts.wait_state(spec.alert, "pending", within_s=fire_s)))
            events.append(("firing", await alerts.wait_state(spec.alert, "firing", within_s=fire_s)))
            notified = await alerts.wait_notified(spec.alert, "firing", since=tripped, within_s=fire_s)
            events.append((f"notified ({notified['receiver']})", notified["received_at"]))
            if spec.receiver is not None and notified["receiver"] != spec.receiver:
                raise AlertTimeout(
                    f"{spec.alert} reached receiver {notified['receiver']!r}, expected {spec.receiver!r}"
                )
            missing = missing_diagnostics(notified, spec.diagnostics)
            if missing:
                raise AlertTimeout(
                    f"{spec.alert} reached {notified['receiver']!r} without its diagnostics: no {', '.join(missing)}"
                )
            if spec.diagnostics:
                events.append((f"diagnostics ({', '.join(spec.diagnostics)})", time.time()))
            record.measured = round(notified["received_at"] - tripped, 2)
        except (AlertTimeout, ProbeError, FlowFailed) as exc:
            record.verdict = "fail"
            record.message = str(exc)
        finally:
            stop.set()
            if traffic is not None:
                await traffic
            if trip_started:  # nothing to undo when the check failed before tripping anything
                restored = time.time()
                try:
                    await run_steps(client, target, spec.restore, steps)
                except FlowFailed as exc:  # the target may be left tripped: an error, saying what did not undo
                    record.verdict = "error"
                    record.message = f"{record.message + '; ' if record.message else ''}restore failed: {exc}"
                events.append(("restored", restored))
        if record.verdict == "pass":
            rolling = None
            if spec.traffic is not None and spec.traffic_through_restore:
                stop = asyncio.Event()
                rolling = asyncio.create_task(drive(client, target, spec.traffic, resolve_s, stop))
            try:
                resolved = await alerts.wait_notified(spec.alert, "resolved", since=restored, within_s=resolve_s)
                events.append(("resolved", resolved["received_at"]))
                stop.set()
                # Nothing left broken: every alert the trip set off is gone again, not only the one judged.
                events.append(("steady", await alerts.wait_active_within(steady, within_s=resolve_s)))
            except AlertTimeout as exc:
                record.verdict = "fail"
                record.message = str(exc)
            finally:
                stop.set()
                if rolling is not None:
                    await rolling
    record.samples = [Sample(at, None, True, name) for name, at in events]
    record.finished_at = time.time()
    timeline = ", ".join(f"{name} +{at - events[0][1]:.1f}s" for name, at in events)
    record.message = f"{record.message + '; ' if record.message else ''}timeline: {timeline}"
    evidence.conclude(record)
