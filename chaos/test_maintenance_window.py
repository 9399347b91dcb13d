"""Seed 001 "Scheduled Maintenance" and seed 000 "Schema Migration / Release", end to end, every step timed.

Seed 001: "Enable kill switch 5 minutes before", "Drain queues: Wait for queue depth to reach 0", "Perform
maintenance (migrations, updates)", "Verify health checks", "Disable kill switch", "Monitor for 15 minutes".
Seed 000: "place tenant in maintenance, run migration, verify smoke tests".

The workers are stopped first so that sends really are queued when the switch is pulled; they come back
while it is on and must hold those jobs (BullMQ's delayed set), unsent. Maintenance mode must refuse writes
(503 ``MAINTENANCE``) and serve reads. The migration is a small reversible DDL (a column and its
``schema_migrations`` row) whose journalled undo is its down migration: it stays applied through the rest
of the window and the watch, and is rolled back at the end — or on any earlier way out. The provider
sandbox is the ground truth: nothing reaches it while the tenant is paused, and each held send exactly
once after the kill switch is off. Then no paging alert may fire over the (scaled) 15 minutes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
from procedures import (
    SEND_QUEUE,
    Window,
    column_migration,
    delivered_once,
    kill_switch_of,
    maintenance_of,
    reads_served,
    short,
    write_refused,
)

from opsgate.config import Target
from opsgate.drills import observe
from opsgate.drills.drill import Drill, DrillFailed, DrillInconclusive, Observation
from opsgate.environments.local import LocalEnvironment
from opsgate.faults.actions import LocalServiceFault

pytestmark = [pytest.mark.drill, pytest.mark.destructive]

HELD = 3
"""Sends accepted (workers stopped) before the kill switch: the window must hold them, then send each once."""
MIGRATION_NAME = "900_maintenance_window_drill"
COLUMN = "maintenance_window_note"


class Steps:
    """The window's steps, numbered in order: each one's duration (s) is a drill observation and a timeline event."""

    def __init__(self, drill: Drill) -> None:
        self.drill = drill
        self.count = 0
        self.started = time.monotonic()

    @asynccontextmanager
    async def timed(self, what: str) -> AsyncIterator[None]:
        """Time the block as the next step."""
        self.start()
        yield
        self.done(what)

    def start(self) -> None:
        """The next step starts now (for a step that ends where a ``with`` block ends: a fault's rollback)."""
        self.started = time.monotonic()

    def done(self, what: str) -> None:
        """The step begun at the last :meth:`start` is over."""
        took = time.monotonic() - self.started
        self.count += 1
        self.drill.measured[f"step {self.count:02d} {what}"] = took
        self.drill.event(f"step {self.count:02d} done: {what}", f"{took:.2f}s")


async def wait_quiet(drill: Drill, look: Window, what: str, *, settle_s: float, within_s: float) -> list[str]:
    """Wait until no paging alert is pending or firing for ``settle_s`` s on end; returns every one seen meanwhile.

    A page on its way shows as pending first, so a few quiet rule evaluations mean none is coming. Raises
    DrillFailed naming the alerts still active when ``within_s`` runs out (bounded: one look every 0.5 s).
    """
    started = time.monotonic()
    quiet_since = started
    active: list[str] = []
    seen: set[str] = set()
    for _ in range(int(within_s / 0.5) + 2):
        active = await look.paging_alerts(("pending", "firing"))
        seen.update(active)
        now = time.monotonic()
        if active:
            quiet_since = now
        elif now - quiet_since >= settle_s:
            drill.event(what, f"quiet for {now - quiet_since:.2f}s after {now - started:.2f}s; "
                              f"active meanwhile: {', '.join(sorted(seen)) or 'none'}")  # fmt: skip
            return sorted(seen)
        if now - started >= within_s:
            break
        await asyncio.sleep(0.5)
    raise DrillFailed(f"{what}: not within {within_s:.1f}s (no {settle_s:.1f}s without a paging alert pending or "
                      f"firing); last seen: {', '.join(active) or 'none'}")  # fmt: skip


async def watch_for_pages(drill: Drill, look: Window, *, since: float, watch_s: float) -> None:
    """No paging alert fires from ``since`` (unix s) for ``watch_s`` s: Prometheus' alerts and the paging
    receiver every 0.5 s (bounded in looks and time), then Prometheus' own record of the whole window."""
    looks = 0
    for _ in range(int(watch_s / 0.5) + 2):
        looks += 1
        firing, paged = await look.paging_alerts(), await look.pages_since(since)
        elapsed = time.time() - since
        drill.sample("paging alerts firing", float(len(firing)), not firing and not paged)
        if firing or paged:
            raise DrillFailed(f"no paging alert during the {watch_s:.1f}s watch (15 minutes scaled): after "
                              f"{elapsed:.1f}s firing {', '.join(firing) or 'none'}; "
                              f"paged: {', '.join(paged) or 'none'}")  # fmt: skip
        if elapsed >= watch_s:
            break
        await asyncio.sleep(min(0.5, watch_s - elapsed))
    most = await look.most_paging_firing_over(time.time() - since)
    if most:
        raise DrillFailed(f"no paging alert during the {watch_s:.1f}s watch: Prometheus recorded {most:g} paging "
                          "alert(s) firing at once between the looks")  # fmt: skip
    drill.event("no paging alert during the watch",
                f"{looks} looks over {time.time() - since:.1f}s; Prometheus: at most {most or 0:g} firing")  # fmt: skip


async def test_maintenance_window(drill: Drill, target: Target, local_environment: LocalEnvironment) -> None:
    """Kill switch, drain, maintenance, migration, health checks, both off; held sends sent once; no page."""
    drill.claim = "seed-001.maintenance.drain-queues"
    drill.objective = (
        "Scheduled maintenance (seed 001) with a release migration (seed 000): kill switch on, new sends 409, "
        "queues drained to depth 0 with the queued sends held unsent; maintenance on (writes 503 MAINTENANCE, "
        "reads 200); a reversible migration applied and verified; health checks pass; maintenance off, kill "
        "switch off; every held send delivered exactly once (provider sandbox); nothing reached the provider "
        "while paused; once the window's own refused writes have aged out of the alert rules, no paging alert "
        "fires over the 15 minutes watch (scaled); the migration rolled back."
    )
    drill.timeout_s = target.scaled(3600.0, floor_s=180.0)  # above the sum of its bounded waits (~90 s here)
    propagation_s = target.scaled(60.0)  # seed 001: "All new sends blocked within 60 seconds"
    drain_s = target.scaled(300.0, floor_s=5.0)
    watch_s = target.scaled(900.0, floor_s=5.0)  # seed 001: "Monitor for 15 minutes"
    every_s = target.scaled(5.0, floor_s=0.1)
    async with drill.running():
        look = Window(drill, target)
        steps = Steps(drill)
        kill_switch = kill_switch_of(target, look.tenant, look.headers)
        maintenance = maintenance_of(target)
        migration = column_migration(target, MIGRATION_NAME, COLUMN)
        await drill.steady_state()
        before = await look.tenant_state()
        if before.get("paused") or before.get("sending_state") != "sending":
            raise DrillInconclusive(f"tenant {look.tenant} is not sending before the drill ({before}): pausing and "
                                    "resuming it would not leave it as found")  # fmt: skip
        if await asyncio.to_thread(migration.is_applied):
            raise DrillInconclusive(f"migration {MIGRATION_NAME} is already applied: run opsgate recover first")

        settle_s = target.scaled(120.0, floor_s=3.0)  # a few rule evaluations: a page on its way shows as pending
        settle_within_s = target.scaled(900.0, floor_s=10.0) + settle_s
        try:  # an earlier drill's errors may still be on their way to a page: the window must not inherit it
            await wait_quiet(drill, look, "no paging alert pending or firing before the window", settle_s=settle_s,
                             within_s=settle_within_s)  # fmt: skip
        except DrillFailed as exc:
            raise DrillInconclusive(f"a page is on its way before the window: {exc}") from None
        drill.snapshot("before", {"tenant": before, "queue send-messages waiting":
                                  await observe.queue_waiting(target, SEND_QUEUE)})  # fmt: skip
        drill.watch("queue send-messages waiting", lambda: observe.queue_waiting(target, SEND_QUEUE), every_s)
        ids: list[str] = []
        calls_before, stopped_at = await look.send_calls(), time.time()

        async def nothing_sent_while_paused() -> Observation:
            """The provider's own record: no delivery of the tenant since the workers stopped, the held sends queued."""
            tenant_sent = await look.tenant_deliveries_since(stopped_at)
            held_sent, statuses = await look.deliveries(ids), await look.statuses(ids)
            moved = {i[:8]: s for i, s in statuses.items() if s != "queued"}
            note = (f"{tenant_sent} deliveries of the tenant since the workers stopped, {sum(held_sent.values())} of "
                    f"the held sends (status {sorted(set(statuses.values()))}); all tenants: "
                    f"{await look.send_calls() - calls_before} send calls")  # fmt: skip
            if moved:
                note += f"; not queued: {moved}"
            ok = not tenant_sent and not any(held_sent.values()) and not moved
            return Observation(ok, float(tenant_sent), note)

        async with AsyncExitStack() as migrated, AsyncExitStack() as paused:
            # Workers stopped, sends queued, kill switch on ("Enable kill switch 5 minutes before").
            steps.start()
            async with drill.fault(LocalServiceFault(local_environment, local_environment.service_names("worker"))):
                steps.done("workers stopped")
                async with steps.timed("sends accepted with the workers stopped"):
                    for number in range(HELD):
                        seen = await look.send(f"maintenance window: queued before the pause ({number + 1}/{HELD})")
                        if seen.status != 202:
                            raise DrillFailed(f"a send with the workers stopped is accepted (202): got {seen.status}: "
                                              f"{seen.text[:160]}")  # fmt: skip
                        ids.append(str(seen.json["id"]))
                    drill.event("sends queued", f"{HELD} accepted with the workers stopped: {short(ids)}")
                async with steps.timed("kill switch on"):
                    await paused.enter_async_context(drill.fault(kill_switch))

                async def new_send_refused() -> Observation:
                    seen = await look.send("maintenance window: sent while paused")
                    error = seen.json.get("error") if isinstance(seen.json, dict) else None
                    if seen.status == 202:
                        ids.append(str(seen.json["id"]))  # accepted anyway: it must not be lost either
                    note = f"POST /v1/tenants/{{id}}/messages → {seen.status} {error or seen.text[:120]}"
                    return Observation(seen.status == 409 and error == "SENDING_PAUSED", float(seen.status), note)

                async with steps.timed("new sends refused"):
                    await drill.expect("new sends refused (409 SENDING_PAUSED) within 60 s of the kill switch (scaled)",
                                       new_send_refused, within_s=propagation_s, every_s=0.2)  # fmt: skip
                steps.start()
            steps.done("workers back (restarted and ready)")
            # The workers are back (their rollback waited until ready) while the kill switch stays on.

            async def held_by_workers() -> Observation:
                delayed = await look.delayed(ids)
                note = f"{len(delayed)} of {len(ids)} jobs in the delayed set: {short(delayed) or 'none'}"
                return Observation(len(delayed) == len(ids), float(len(delayed)), note)

            async def drained() -> Observation:
                depths = {q.name: await observe.queue_counts(target, q.name) for q in target.queues}
                busy = {n: d.waiting + (d.active or 0) for n, d in depths.items()}
                note = ", ".join(f"{n} depth {v}" for n, v in busy.items())
                note += f"; {depths[SEND_QUEUE].delayed or 0} held (delayed)" if SEND_QUEUE in depths else ""
                return Observation(not any(busy.values()), float(sum(busy.values())), note)

            async with steps.timed("workers hold the queued sends"):
                await drill.expect("the workers took the queued sends and hold them (delayed, not sent)",
                                   held_by_workers, within_s=target.scaled(60.0, floor_s=5.0), every_s=0.1)  # fmt: skip
            async with steps.timed("queues drained"):
                await drill.expect("queues drained: depth 0 (waiting + active) in every queue", drained,
                                   within_s=drain_s, every_s=every_s, series="queue depth")  # fmt: skip
                await drill.expect("nothing reached the provider while paused (drained)", nothing_sent_while_paused)

            # "Perform maintenance (migrations, updates)", "Verify health checks" -- in maintenance mode (seed 000).
            steps.start()
            async with drill.fault(maintenance):
                steps.done("maintenance on")

                writes_refused, reads_ok = write_refused(look, ids), reads_served(look, ids)

                async with steps.timed("writes refused, reads served"):
                    await drill.expect("writes rejected with 503 MAINTENANCE during maintenance", writes_refused,
                                       within_s=propagation_s, every_s=0.5)  # fmt: skip
                    await drill.expect("reads served (200) during maintenance", reads_ok)
                async with steps.timed("migration applied and verified"):
                    await migrated.enter_async_context(drill.fault(migration))
                    await drill.expect("reads served (200) on the migrated schema", reads_ok)
                async with steps.timed("health checks pass"):
                    try:
                        await drill.steady_state(after=True, within_s=target.scaled(300.0, floor_s=5.0))
                    except DrillFailed as exc:
                        raise DrillFailed(f"health checks after the migration: {exc}") from None
                steps.start()
            steps.done("maintenance off")

            async def maintenance_lifted() -> Observation:
                seen = await look.send("maintenance window: write after maintenance, still paused")
                error = seen.json.get("error") if isinstance(seen.json, dict) else None
                if seen.status == 202:
                    ids.append(str(seen.json["id"]))
                note = f"POST /v1/tenants/{{id}}/messages → {seen.status} {error or seen.text[:120]}"
                return Observation(seen.status == 409 and error == "SENDING_PAUSED", float(seen.status), note)

            await drill.expect("maintenance lifted, kill switch still on (409 SENDING_PAUSED)", maintenance_lifted,
                               within_s=propagation_s, every_s=0.2)  # fmt: skip
            await drill.expect("nothing reached the provider while paused (before the kill switch comes off)",
                               nothing_sent_while_paused)  # fmt: skip
            async with steps.timed("kill switch off"):
                await paused.aclose()  # the kill switch's rollback: resume

            async def once() -> Observation:
                return delivered_once(await look.statuses(ids), await look.deliveries(ids))

            async with steps.timed("held sends delivered exactly once"):
                after = await look.send("maintenance window: sent after the window")
                if after.status != 202:
                    raise DrillFailed(f"a new send is accepted again after the window: got {after.status}: "
                                      f"{after.text[:160]}")  # fmt: skip
                ids.append(str(after.json["id"]))
                await drill.expect("every held send (and a new one) delivered exactly once after the kill switch",
                                   once, within_s=drain_s, every_s=every_s, series="delivered")  # fmt: skip

            # The window's own refused writes (503) may still be in the error-rate rules' windows, where time
            # compression leaves them a far larger share than at full scale: let them age out (what they set off is
            # evidence), then the watch starts quiet and must stay quiet.
            async with steps.timed("alerts settled after the window"):
                echoes = await wait_quiet(drill, look, "no paging alert pending or firing after the window",
                                          settle_s=settle_s, within_s=settle_within_s)  # fmt: skip
                drill.snapshot("after", {"paging alerts active while the window's own 503s aged out": echoes})
            watch_started = time.time()
            # "Monitor for 15 minutes" (scaled): no page -- Prometheus' alerts, the paging receiver, Prometheus' record.
            async with steps.timed("watch: no paging alert"):
                await watch_for_pages(drill, look, since=watch_started, watch_s=watch_s)
            await drill.expect("still exactly one delivery per message (no duplicate after the window)", once)
            steps.start()
        steps.done("migration rolled back")
        if await asyncio.to_thread(migration.is_applied):
            raise DrillFailed(f"migration {MIGRATION_NAME} is still applied after its rollback")
        await drill.steady_state(after=True, within_s=target.scaled(300.0, floor_s=5.0))
        drill.snapshot("after", {"tenant": await look.tenant_state(), "queue send-messages waiting":
                                 await observe.queue_waiting(target, SEND_QUEUE)})  # fmt: skip
        drill.snapshot("after", {"messages": await look.statuses(ids), "deliveries": await look.deliveries(ids)})
