"""Drills declared in a target file's ``drills:`` section, run for any system without Python.

Steady state → (per cycle) fault applied and proved → traffic sent → ``expect_during`` → hold →
rollback → ``expect_after`` (drain, recovery, reconciliation). Abort conditions are checked while
the fault holds.
"""

from __future__ import annotations

import asyncio

from opsgate.config import CommandControl, DrillExpect, DrillFault, DrillSpec, DrillTraffic, Target
from opsgate.drills import observe
from opsgate.drills.drill import Check, Drill, DrillInconclusive, Observation
from opsgate.drills.traffic import TrafficLog, send_batch
from opsgate.environments.local import LocalEnvironment
from opsgate.faults.actions import CommandFault, Fault, LocalServiceFault, ProviderFault, ProxyFault, ToggleFault
from opsgate.probes import metrics
from opsgate.probes.sources import http_number

DATASTORES = ("postgres", "redis")


def command_control(target: Target, name: str) -> CommandControl | None:
    """The stop/start commands the target file gives for service or datastore ``name``, if any."""
    service = target.services.get(name)
    if service is not None and isinstance(service.control, CommandControl):
        return service.control
    store = getattr(target.datastores, name) if name in DATASTORES else None
    return store.control if store is not None else None


def build_fault(target: Target, spec: DrillFault, environment: LocalEnvironment | None, drill_name: str) -> Fault:
    """The fault ``spec`` describes, through the control the target (or opsgate's local environment) offers."""
    if spec.stop is not None:
        commands = command_control(target, spec.stop)
        if commands is not None:
            return CommandFault(spec.stop, commands)
        service = target.services.get(spec.stop)
        if environment is not None and (spec.stop in DATASTORES or (service and service.control)):
            names = environment.service_names(spec.stop)
            return LocalServiceFault(environment, names)
        where = f"datastores.{spec.stop}.control" if spec.stop in DATASTORES else f"services.{spec.stop}.control"
        raise DrillInconclusive(f"cannot stop {spec.stop!r}: it has no control ({where}) and opsgate did not start it")
    if spec.provider is not None:
        control = spec.provider_control
        if control is None:
            if "provider" not in target.services:
                raise DrillInconclusive("a provider fault needs fault.provider_control or services.provider")
            control = target.services["provider"].url.rstrip("/") + "/control/faults"
        return ProviderFault(control, dict(spec.provider))
    if spec.proxy is not None:
        settings = {k: v for k, v in spec.proxy.items() if k != "dependency"}
        control = spec.proxy_control
        if control is None and environment is not None and spec.proxy["dependency"] == "postgres":
            control = environment.postgres_proxy_url + "/faults"
        if control is None:
            raise DrillInconclusive(f"no fault proxy in front of {spec.proxy['dependency']}: set fault.proxy_control")
        return ProxyFault(control, settings)
    assert spec.toggle is not None
    toggle = spec.toggle
    return ToggleFault(target, toggle.enable, toggle.disable, toggle.check, toggle.name, drill=drill_name)


class Expectations:
    """Turns declared expectations into checks, with the drill's traffic and metric baseline at hand."""

    def __init__(self, drill: Drill, traffic: TrafficLog, baseline: metrics.Snapshot | None, spec: DrillSpec) -> None:
        self.drill = drill
        self.spec = spec
        self.traffic = traffic
        self.baseline = baseline

    def threshold(self, spec: DrillExpect) -> float:
        if spec.value == "sent":
            return float(self.traffic.sent)
        if spec.value == "accepted":
            return float(self.traffic.accepted)
        assert spec.value is not None
        return float(spec.value)

    def check(self, spec: DrillExpect) -> Check:
        drill, target = self.drill, self.drill.target
        client = drill.client

        async def look() -> Observation:
            if spec.alert is not None:
                assert spec.state is not None
                return await observe.alert_state(client, target, spec.alert, spec.state)
            if spec.gate is not None:
                assert spec.verdict is not None
                return await observe.gate_verdict(client, target, spec.gate, spec.verdict)
            if spec.health is not None:
                return await observe.health_answers(client, target, spec.health)
            if spec.step is not None:
                return await observe.step_answers(client, target, spec.step)
            if spec.traffic is not None:
                return self._traffic(spec)
            assert spec.op is not None
            what = spec.describe().split(f" {spec.op} ")[0]
            value = await self._value(spec)
            if spec.value in ("sent", "accepted") and self.threshold(spec) == 0:
                return Observation(False, value, f"no traffic was {spec.value}: nothing to count {what} against")
            return observe.compare(value, spec.op, self.threshold(spec), what)

        return look

    async def _value(self, spec: DrillExpect) -> float | None:
        target, client = self.drill.target, self.drill.client
        if spec.queue is not None:
            return await observe.queue_waiting(target, spec.queue)
        if spec.metric is not None:
            return await observe.metric_value(client, target, spec.metric, self.baseline if spec.increase else None)
        if spec.http is not None:
            return (await http_number(client, target, spec.http)).value
        assert spec.sql is not None
        names = {name for traffic in self.spec.traffic for name in traffic.step.save}
        return await observe.sql_value(target, spec.sql, {name: self.traffic.saved(name) for name in names})

    def _traffic(self, spec: DrillExpect) -> Observation:
        assert spec.traffic is not None
        wanted = spec.traffic
        during = [r for r in self.traffic.requests if r.phase == "during"]
        bad = [r for r in during
               if (wanted.status is not None and r.status not in wanted.status)
               or (wanted.max_latency_ms is not None and r.latency_ms > wanted.max_latency_ms)]  # fmt: skip
        if not during:
            return Observation(False, None, "no traffic was sent during the fault")
        slowest = max(r.latency_ms for r in during)
        if bad:
            first = bad[0]
            note = f"status {first.status} in {first.latency_ms:.0f} ms {first.note[:120]}"
            return Observation(False, slowest, f"{len(bad)} of {len(during)} responses broke it; first: {note}")
        return Observation(True, slowest, f"{self.traffic.describe()}; slowest {slowest:.0f} ms")


async def run_declared(drill: Drill, spec: DrillSpec, environment: LocalEnvironment | None) -> None:
    """Run the declared drill ``spec`` inside ``drill.running()``."""
    target = drill.target
    every = target.scaled(1.0, floor_s=0.2)
    for queue in spec.watch:
        drill.watch(f"queue {queue} waiting", lambda q=queue: observe.queue_waiting(target, q), every)  # type: ignore[misc]
    await drill.steady_state()
    drill.snapshot("before", await _queue_snapshot(target, spec))
    baseline = await observe.metric_snapshot(drill.client, target) if target.metrics.scrape else None
    traffic = TrafficLog()
    judge = Expectations(drill, traffic, baseline, spec)
    for batch in (t for t in spec.traffic if t.phase == "before"):
        await send_batch(drill.client, target, batch, traffic)
        drill.event("traffic sent before the fault", traffic.describe())
    during = [t for t in spec.traffic if t.phase == "during"]
    for cycle in range(spec.fault.repeat):
        label = f" (cycle {cycle + 1} of {spec.fault.repeat})" if spec.fault.repeat > 1 else ""
        async with drill.fault(build_fault(target, spec.fault, environment, spec.name)):
            aborts = [_abort(drill, judge, a, target.scaled(spec.abort_every, floor_s=0.2)) for a in spec.abort]
            sending = None
            if during:
                sending = asyncio.create_task(_send_all(drill, during, traffic))
            try:
                for expectation in spec.expect_during:
                    if judged_on_traffic(expectation) and sending is not None:
                        await sending
                    await _expect(drill, judge, expectation, label)
                if sending is not None:
                    await sending
                    drill.event("traffic sent" + label, traffic.describe())
                await drill.sleep(target.scaled(spec.fault.hold), "holding the fault")
            finally:
                for task in aborts:
                    task.cancel()
                if sending is not None and not sending.done():
                    sending.cancel()
                    await asyncio.gather(sending, return_exceptions=True)
        if cycle + 1 < spec.fault.repeat:
            await drill.sleep(target.scaled(spec.fault.gap), "gap between outages")
    for expectation in spec.expect_after:
        await _expect(drill, judge, expectation, "")
    await drill.steady_state(after=True, within_s=target.scaled(spec.recover_within, floor_s=5.0))
    drill.snapshot("after", await _queue_snapshot(target, spec))


def judged_on_traffic(spec: DrillExpect) -> bool:
    """True when ``spec`` is judged against the drill's traffic (its responses, its sent or accepted count, or
    the values it saved): judged while traffic is still going out, ``== accepted`` could hold on 0 of 0."""
    return spec.traffic is not None or spec.value in ("sent", "accepted") or bool(spec.sql and "%(" in spec.sql)


async def _send_all(drill: Drill, batches: list[DrillTraffic], log: TrafficLog) -> None:
    for batch in batches:
        await send_batch(drill.client, drill.target, batch, log)


async def _expect(drill: Drill, judge: Expectations, spec: DrillExpect, label: str) -> None:
    target = drill.target
    within = target.scaled(spec.within) if spec.within else 0.0
    series = f"queue {spec.queue} waiting" if spec.queue else None
    await drill.expect(spec.describe() + label, judge.check(spec), within_s=within,
                       every_s=target.scaled(spec.every, floor_s=0.1), series=series)  # fmt: skip


def _abort(drill: Drill, judge: Expectations, spec: DrillExpect, every_s: float) -> asyncio.Task[None]:
    """Check ``spec`` every ``every_s`` while the fault holds; a failure aborts the drill (see Drill.abort_when)."""
    return drill.abort_when(spec.describe(), judge.check(spec), every_s)


async def _queue_snapshot(target: Target, spec: DrillSpec) -> dict[str, float]:
    values = {}
    for queue in spec.watch:
        values[f"queue {queue} waiting"] = await observe.queue_waiting(target, queue)
    return values
