"""Health: every endpoint, datastore and queue the target lists answers as its runbook says."""

from __future__ import annotations

import httpx
import pytest
import redis.asyncio as aioredis

from opsgate.config import Target
from opsgate.evidence.recorder import Recorder
from opsgate.gates import Measure, Rule, judge
from opsgate.plugin import health_checks
from opsgate.probes import datastores
from opsgate.probes.base import ProbeError
from opsgate.probes.http import contains_mismatch, request, subset_mismatch
from opsgate.probes.queues import queue_depth

pytestmark = pytest.mark.smoke


async def test_health(health_check: str, target: Target, evidence: Recorder) -> None:
    """The endpoint answers the documented status, body and latency — once, or over a window."""
    base_url, check = next((url, c) for cid, url, c in health_checks(target) if cid == health_check)
    url = base_url.rstrip("/") + check.path
    expect = check.expect
    last: list[str] = []

    async def measure() -> Measure:
        async with httpx.AsyncClient() as client:
            observed = await request(client, check.method, url, timeout_s=check.timeout)
        problem = None
        if observed.status != expect.status:
            problem = f"expected status {expect.status}, got {observed.status}: {observed.text[:200]}"
        elif expect.json is not None:
            problem = subset_mismatch(expect.json, observed.json)
        elif expect.headers:
            problem = next(
                (f"header {k}: expected {v!r}, got {observed.headers.get(k.lower())!r}"
                 for k, v in expect.headers.items() if observed.headers.get(k.lower()) != v),
                None,
            )  # fmt: skip
        if problem is None:
            problem = contains_mismatch(expect.contains, observed)
        if problem is None and expect.max_latency_ms is not None and observed.latency_ms >= expect.max_latency_ms:
            problem = f"latency {observed.latency_ms:.0f} ms, expected < {expect.max_latency_ms:g} ms"
        last.append(problem or "")
        return Measure(0.0 if problem is None else 1.0, problem or f"{observed.status} in {observed.latency_ms:.0f} ms")

    window = target.scaled(check.window, floor_s=1.0) if check.window is not None else None
    record = await judge(
        measure,
        Rule("==", 0.0, "failed probes"),
        record_id=health_check,
        kind="health",
        claim=check.claim,
        window_s=window,
        every_s=target.scaled(check.every, floor_s=0.2),
        max_failures=check.max_failures,
    )
    failing = [s.note for s in record.samples if not s.ok]
    if record.verdict == "fail" and window is None:
        record.message = f"{check.method} {url}: {failing[0]}"
    elif record.verdict == "fail":
        record.message = f"{check.method} {url}: {len(failing)} of {len(record.samples)} probes failed "
        record.message += f"(at most {check.max_failures} allowed); first: {failing[0]}"
    record.measured = float(len(failing))
    record.threshold = float(check.max_failures)
    record.op = "<="
    evidence.conclude(record)


async def test_datastore(datastore_name: str, target: Target, evidence: Recorder) -> None:
    """PostgreSQL accepts connections (like ``pg_isready``); Redis answers ``PING`` with ``PONG``."""

    async def measure() -> Measure:
        if datastore_name == "postgres":
            assert target.datastores.postgres is not None
            ok = await datastores.postgres_ready(target.datastores.postgres.dsn)
            return Measure(1.0 if ok else 0.0, "accepting connections")
        assert target.datastores.redis is not None
        reply = await datastores.redis_ping(target.datastores.redis.url)
        return Measure(1.0 if reply == "PONG" else 0.0, reply)

    store = target.datastores.postgres if datastore_name == "postgres" else target.datastores.redis
    claim = store.claim if store is not None else None
    record = await judge(measure, Rule("==", 1.0, "up"), record_id=datastore_name, kind="datastore", claim=claim)
    if record.verdict == "fail" and record.samples:
        record.message = record.samples[0].note
    evidence.conclude(record)


@pytest.mark.health
async def test_datastore_connections(target: Target, evidence: Recorder) -> None:
    """PostgreSQL connections in use stay under ``max_pool_ratio`` of ``max_connections``."""
    postgres = target.datastores.postgres
    if postgres is None:
        pytest.skip("the target declares no PostgreSQL")

    async def measure() -> Measure:
        used = await datastores.postgres_connections(postgres.dsn)
        return Measure(used.ratio, f"{used.used} of {used.max} connections")

    rule = Rule("<", postgres.max_pool_ratio, "ratio")
    evidence.conclude(await judge(measure, rule, record_id="connections", kind="datastore", claim=postgres.pool_claim))


@pytest.mark.health
async def test_queue(queue_name: str, target: Target, evidence: Recorder) -> None:
    """Queue depth: fewer than ``max_waiting`` jobs wait (runbook: "background queue depth < 50")."""
    spec = next(q for q in target.queues if q.name == queue_name)
    assert target.datastores.redis is not None
    limit = spec.max_waiting

    async def measure() -> Measure:
        client = aioredis.from_url(target.datastores.redis.url, socket_connect_timeout=5, socket_timeout=5)  # type: ignore[union-attr]
        try:
            depth = await queue_depth(client, spec.layout, spec.name, prefix=spec.prefix)
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
            raise ProbeError(f"Redis does not answer: {exc}") from None
        finally:
            await client.aclose()
        states = f"active {depth.active}, delayed {depth.delayed}, failed {depth.failed}"
        return Measure(float(depth.waiting), f"waiting {depth.waiting}; {states}")

    rule = Rule("<", float(limit), "jobs") if limit is not None else Rule(">=", 0.0, "jobs")
    record = await judge(measure, rule, record_id=queue_name, kind="queue", claim=spec.claim)
    if record.samples:
        record.message = f"{record.message} ({record.samples[-1].note})"
    evidence.conclude(record)
