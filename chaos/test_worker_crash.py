"""Workers dying with jobs in flight: nothing accepted is lost, nothing is sent twice (provider ground truth).

- SIGKILL with sends in flight → restart → the stalled jobs are recovered and delivered exactly once.
- Graceful SIGTERM → the worker finishes what it holds before it exits (nothing abandoned at the provider).
- A rolling restart of 2 replicas under traffic loses nothing and doubles nothing.
"""

from __future__ import annotations

import asyncio

import pytest

from opsgate.config import Target
from opsgate.drills import observe
from opsgate.drills.drill import Drill, DrillInconclusive, Observation
from opsgate.environments.local import LocalEnvironment
from opsgate.faults.actions import LocalServiceFault, ProviderFault
from opsgate.reference.client import Reference

pytestmark = [pytest.mark.drill, pytest.mark.destructive]
QUEUE = "send-messages"
HELD = "sends held in flight by the worker (the provider is slow)"


async def delivered_once(reference: Reference, ids: list[str]) -> Observation:
    """Every message recorded exactly once by the provider; the note names the lost and the doubled."""
    counts = {message_id: await reference.deliveries(message_id) for message_id in ids}
    lost = [m for m, n in counts.items() if n == 0]
    doubled = [m for m, n in counts.items() if n > 1]
    once = len(ids) - len(lost) - len(doubled)
    note = f"{once}/{len(ids)} delivered exactly once"
    if lost:
        note += f"; not delivered: {len(lost)} (e.g. {lost[0]})"
    if doubled:
        note += f"; delivered more than once: {len(doubled)} (e.g. {doubled[0]} x{counts[doubled[0]]})"
    return Observation(not lost and not doubled, float(once), note)


async def abandoned(reference: Reference) -> int:
    """Sends the provider saw abandoned by their client mid-request (a worker that died holding them)."""
    count: int = (await reference.provider.get("/requests")).json()["abandoned"]
    return count


def provider_latency(target: Target, ms: int) -> ProviderFault:
    """Slow provider answers, so the worker holds sends in flight for ``ms`` each."""
    return ProviderFault(target.services["provider"].url + "/control/faults", {"latency_ms": ms})


async def in_flight(reference: Reference) -> Observation:
    """Sends the provider is holding right now (ground truth: a worker that only marks jobs active does not count)."""
    count: int = (await reference.provider.get("/requests")).json()["in_flight"]
    return Observation(count >= 1, float(count), f"{count} sends held at the provider")


async def drained(target: Target) -> Observation:
    counts = await observe.queue_counts(target, QUEUE)
    busy = counts.waiting + (counts.active or 0) + (counts.delayed or 0)
    return Observation(busy == 0, float(busy), f"waiting {counts.waiting}, active {counts.active}, "
                                               f"delayed {counts.delayed}")  # fmt: skip


async def reconcile(drill: Drill, reference: Reference, ids: list[str]) -> None:
    """Delivered exactly once, queue drained, and still exactly once after a settle (no late duplicate)."""
    target = drill.target
    await drill.expect("every message delivered exactly once", lambda: delivered_once(reference, ids),
                       within_s=target.scaled(600, floor_s=30.0), every_s=0.5)  # fmt: skip
    await drill.expect("send queue drained", lambda: drained(target), within_s=target.scaled(300, floor_s=10.0))
    await drill.sleep(target.scaled(60, floor_s=2.0), "settle: a late retry would show up as a duplicate")
    await drill.expect("still exactly once after the settle", lambda: delivered_once(reference, ids))


async def test_worker_killed_mid_flight(
    drill: Drill, target: Target, local_environment: LocalEnvironment, reference: Reference
) -> None:
    drill.claim = "seed-001.drills.worker-crash"
    drill.objective = (
        "SIGKILL every worker while it holds sends in flight, restart it: the stalled jobs are recovered"
        " and every accepted message is delivered exactly once (provider ground truth)."
    )
    async with drill.running():
        await drill.steady_state()
        before = await abandoned(reference)
        async with drill.fault(provider_latency(target, 1500)):
            ids = await reference.send_accepted(8)
            drill.event("messages accepted", f"{len(ids)} sends")
            await drill.expect(
                "sends held in flight by the worker (the provider is slow)",
                lambda: in_flight(reference),
                within_s=10.0,
                every_s=0.05,
            )
            crash = LocalServiceFault(local_environment, local_environment.service_names("worker"), crash=True)
            async with drill.fault(crash):
                drill.snapshot("before", {"queue": (await observe.queue_counts(target, QUEUE)).__dict__})
                await drill.expect("the provider saw in-flight sends abandoned",
                                   lambda: _abandoned_more(reference, before), within_s=5.0)  # fmt: skip
        await reconcile(drill, reference, ids)
        drill.snapshot("after", {"queue": (await observe.queue_counts(target, QUEUE)).__dict__})
        await drill.steady_state(after=True, within_s=target.scaled(300, floor_s=5.0))


async def _abandoned_more(reference: Reference, before: int) -> Observation:
    now = await abandoned(reference)
    return Observation(now > before, float(now - before), f"{now - before} sends abandoned by the dead worker")


async def test_worker_graceful_stop_finishes_in_flight(
    drill: Drill, target: Target, local_environment: LocalEnvironment, reference: Reference
) -> None:
    drill.claim = "seed-002.drills.worker-graceful-stop"
    drill.objective = ("SIGTERM every worker while it holds sends in flight: it finishes them before exiting "
                       "(the provider sees none abandoned); restarted, it delivers the rest exactly once.")  # fmt: skip
    async with drill.running():
        await drill.steady_state()
        before = await abandoned(reference)
        async with drill.fault(provider_latency(target, 500)):
            ids = await reference.send_accepted(6)
            await drill.expect(
                "sends held in flight by the worker (the provider is slow)",
                lambda: in_flight(reference),
                within_s=10.0,
                every_s=0.05,
            )
            async with drill.fault(LocalServiceFault(local_environment, local_environment.service_names("worker"))):
                lost = await abandoned(reference) - before
                if lost:
                    drill.event("in-flight sends abandoned by the stop", str(lost))
                await drill.expect("no in-flight send abandoned by the graceful stop",
                                   lambda: _abandoned_none(reference, before))  # fmt: skip
        await reconcile(drill, reference, ids)
        await drill.steady_state(after=True, within_s=target.scaled(300, floor_s=5.0))


async def _abandoned_none(reference: Reference, before: int) -> Observation:
    now = await abandoned(reference)
    return Observation(now == before, float(now - before), f"{now - before} sends abandoned")


async def test_rolling_restart_of_two_replicas(
    drill: Drill, target: Target, local_environment: LocalEnvironment, reference: Reference
) -> None:
    drill.claim = "seed-002.drills.rolling-restart"
    drill.objective = ("Two worker replicas restarted one after the other under steady sends: every accepted "
                       "message is delivered exactly once and no send is abandoned.")  # fmt: skip
    replicas = local_environment.workers
    async with drill.running():
        await drill.steady_state()
        local_environment.scale_workers(2)
        drill.event("scaled to 2 replicas", ", ".join(local_environment.service_names("worker")))
        try:
            before = await abandoned(reference)
            async with drill.fault(provider_latency(target, 300)):  # sends are always in flight somewhere
                sending = asyncio.create_task(_send_steadily(reference, 30, 10.0))
                for name in local_environment.service_names("worker"):
                    await drill.expect(
                        "sends held in flight by the worker (the provider is slow)",
                        lambda: in_flight(reference),
                        within_s=10.0,
                        every_s=0.05,
                    )
                    async with drill.fault(LocalServiceFault(local_environment, [name])):
                        await drill.sleep(target.scaled(10, floor_s=0.3), f"{name} down, the other replica serves")
                ids = await sending
            drill.event("traffic sent", f"{len(ids)} accepted")
            await reconcile(drill, reference, ids)
            await drill.expect("no send abandoned by the restarts", lambda: _abandoned_none(reference, before))
        finally:
            local_environment.scale_workers(replicas)
            drill.event(f"scaled back to {replicas} replica(s)")
        await drill.steady_state(after=True, within_s=target.scaled(300, floor_s=5.0))


async def _send_steadily(reference: Reference, count: int, rate_per_s: float) -> list[str]:
    ids = []
    for _ in range(count):
        ids += await reference.send_accepted(1)
        await asyncio.sleep(1 / rate_per_s)
    return ids


async def test_zero_downtime_worker_swap(
    drill: Drill, target: Target, local_environment: LocalEnvironment, reference: Reference
) -> None:
    drill.claim = "seed-001.deploy.drain-old-workers"
    drill.objective = ("Zero-downtime deployment (seed 001) with sends flowing: a new worker instance started, the "
                       "old one drained (SIGTERM: it finishes the sends it holds) and terminated; every send accepted "
                       "during the swap delivered exactly once by the new instance, none abandoned (provider "
                       "record).")  # fmt: skip
    replicas = local_environment.workers
    if replicas != 1:
        raise DrillInconclusive(f"the swap starts from one worker instance; the environment runs {replicas}")
    async with drill.running():
        await drill.steady_state()
        old = local_environment.service_names("worker")[0]
        try:
            before = await abandoned(reference)
            async with drill.fault(provider_latency(target, 300)):  # the old instance always holds sends in flight
                sending = asyncio.create_task(_send_steadily(reference, 30, 10.0))
                try:
                    await drill.expect(HELD, lambda: in_flight(reference), within_s=10.0, every_s=0.05)
                    local_environment.scale_workers(2)  # deploy the new instance (waits until it is ready)
                    new = [n for n in local_environment.service_names("worker") if n != old]
                    drill.event("new worker instance ready", ", ".join(new))
                    await drill.expect(HELD, lambda: in_flight(reference), within_s=10.0, every_s=0.05)
                    # Drain the old instance (graceful SIGTERM) and terminate it: it stays down through the rest.
                    async with drill.fault(LocalServiceFault(local_environment, [old])):
                        drill.event("old worker instance drained and terminated", old)
                        ids = await sending
                        drill.event("traffic sent during the swap", f"{len(ids)} accepted")
                        await reconcile(drill, reference, ids)
                        await drill.expect("no send abandoned by the swap", lambda: _abandoned_none(reference, before))
                finally:
                    sending.cancel()
        finally:
            local_environment.scale_workers(replicas)
            drill.event(f"back to {replicas} instance(s)", ", ".join(local_environment.service_names("worker")))
        await drill.steady_state(after=True, within_s=target.scaled(300, floor_s=5.0))
