"""What a drill looks at: queue depth, alert state, a health answer, a metric, a SQL count, a gate's verdict.

Each function returns a value (or an :class:`Observation`) from one look; :meth:`Drill.expect` polls them.
A target part that cannot be reached raises :class:`ProbeError` (a failing look, never a pass).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import psycopg
import redis.asyncio

from opsgate.alerts.live import LiveAlerts
from opsgate.config import FlowStep, HealthProbe, MetricSource, Target
from opsgate.drills.drill import Observation
from opsgate.flows import fill, problem_of, send_step
from opsgate.gate_run import run_gate
from opsgate.gates import OPS
from opsgate.probes import metrics
from opsgate.probes.base import ProbeError
from opsgate.probes.http import contains_mismatch, request, subset_mismatch
from opsgate.probes.queues import QueueDepth, queue_depth
from opsgate.probes.sources import service_url

TIMEOUT_S = 5.0


def compare(value: float | None, op: str, threshold: float, what: str) -> Observation:
    """``value <op> threshold`` as an observation with a readable note."""
    if value is None:
        return Observation(False, None, f"{what}: no value")
    ok = OPS[op](value, threshold)
    return Observation(ok, value, f"{what} = {value:g} ({'' if ok else 'not '}{op} {threshold:g})")


async def queue_waiting(target: Target, name: str) -> float:
    """Jobs waiting in the queue ``name`` of the target file."""
    return float((await queue_counts(target, name)).waiting)


async def queue_counts(target: Target, name: str) -> QueueDepth:
    """Jobs per state (waiting, active, delayed, failed) in the queue ``name`` of the target file."""
    spec = next((q for q in target.queues if q.name == name), None)
    if spec is None:
        raise ProbeError(f"no queue {name!r} in the target (known: {', '.join(q.name for q in target.queues)})")
    if target.datastores.redis is None:
        raise ProbeError("a queue needs datastores.redis")
    client = redis.asyncio.Redis.from_url(target.datastores.redis.url, socket_timeout=TIMEOUT_S,
                                          socket_connect_timeout=TIMEOUT_S)  # fmt: skip
    try:
        return await queue_depth(client, spec.layout, spec.name, prefix=spec.prefix)
    finally:
        await client.aclose()


async def alert_state(client: httpx.AsyncClient, target: Target, alert: str, wanted: str) -> Observation:
    """Whether ``alert`` is in state ``wanted`` on the target's Prometheus (firing counts as pending too)."""
    if target.metrics.prometheus is None:
        raise ProbeError("an alert expectation needs metrics.prometheus")
    state = await LiveAlerts(client, target.metrics.prometheus, target.alerts.receiver).state(alert)
    ok = state == wanted or (wanted == "pending" and state == "firing")
    return Observation(ok, None, f"{alert} is {state}")


async def health_answers(client: httpx.AsyncClient, target: Target, probe: HealthProbe) -> Observation:
    """Whether the service answers ``probe`` as expected (status, JSON subset, latency)."""
    url = service_url(target, probe.service) + probe.path
    seen = await request(client, probe.method, url, timeout_s=TIMEOUT_S, headers=probe.headers)
    what = f"{probe.method} {probe.path} → {seen.status} in {seen.latency_ms:.0f} ms"
    if seen.status != probe.expect.status:
        return Observation(False, seen.latency_ms, f"{what}, expected {probe.expect.status}: {seen.text[:160]}")
    if probe.expect.json is not None:
        mismatch = subset_mismatch(probe.expect.json, seen.json)
        if mismatch:
            return Observation(False, seen.latency_ms, f"{what}: {mismatch}")
    if mismatch := contains_mismatch(probe.expect.contains, seen):
        return Observation(False, seen.latency_ms, f"{what}: {mismatch}")
    if probe.expect.max_latency_ms is not None and seen.latency_ms > probe.expect.max_latency_ms:
        return Observation(False, seen.latency_ms, f"{what}, slower than {probe.expect.max_latency_ms:g} ms")
    return Observation(True, seen.latency_ms, what)


async def step_answers(client: httpx.AsyncClient, target: Target, step: FlowStep) -> Observation:
    """Whether one request gets the answer its ``expect`` describes."""
    seen = await send_step(client, target, step, {})
    mismatch = problem_of(step, seen)
    what = f"{step.method} {fill(step.path, {})} → {seen.status} in {seen.latency_ms:.0f} ms"
    return Observation(mismatch is None, seen.latency_ms, what if mismatch is None else f"{what}: {mismatch}")


async def metric_snapshot(client: httpx.AsyncClient, target: Target) -> metrics.Snapshot:
    """One scrape of every reachable ``metrics.scrape`` endpoint (a drill may have stopped one)."""
    return await metrics.scrape(client, target.metrics.scrape, timeout_s=TIMEOUT_S, skip_unreachable=True)


async def metric_value(
    client: httpx.AsyncClient, target: Target, source: MetricSource, since: metrics.Snapshot | None = None
) -> float | None:
    """The metric now, or its increase since ``since``."""
    result = metrics.evaluate(source, await metric_snapshot(client, target), since)
    return result.value


async def sql_value(target: Target, sql: str, params: dict[str, Sequence[str]] | None = None) -> float | None:
    """The first column of the first row of ``sql`` on the target's PostgreSQL (``%(name)s`` bound to lists)."""
    if target.datastores.postgres is None:
        raise ProbeError("an sql expectation needs datastores.postgres")
    try:
        conn = await psycopg.AsyncConnection.connect(target.datastores.postgres.dsn, connect_timeout=int(TIMEOUT_S))
    except psycopg.Error as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ProbeError(f"PostgreSQL unreachable: {reason}") from None
    try:
        async with conn:
            cursor = await conn.execute(sql, {k: list(v) for k, v in (params or {}).items()} or None)
            row: Any = await cursor.fetchone()
    except psycopg.Error as exc:
        raise ProbeError(f"query failed: {str(exc).splitlines()[0]}") from None
    if row is None or row[0] is None:
        return None
    return float(row[0])


async def gate_verdict(client: httpx.AsyncClient, target: Target, gate: str, wanted: str) -> Observation:
    """Run the gate ``gate`` now; holds when its verdict is ``wanted`` (the inner record is in the note)."""
    spec = next((g for g in target.gates if g.name == gate), None)
    if spec is None:
        raise ProbeError(f"no gate {gate!r} in the target (known: {', '.join(g.name for g in target.gates)})")
    record = await run_gate(client, target, spec)
    value = record.measured if isinstance(record.measured, float | int) else None
    return Observation(record.verdict == wanted, value, f"gate {gate}: {record.verdict.upper()}: {record.message}")
