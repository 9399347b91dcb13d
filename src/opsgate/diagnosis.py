"""Runbook diagnoses: the steps a runbook lists under "Diagnosis", run together, each a finding.

seed 001, "Issue: Messages Not Sending": check the worker is running, Redis answers ``PING``, the send
queue's depth. Run when a flow fails (its message then says *why*), and as checks of their own.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

import httpx
import redis.asyncio as aioredis

from opsgate.config import DiagnosisStep, Target
from opsgate.probes import datastores
from opsgate.probes.base import ProbeError
from opsgate.probes.http import contains_mismatch, request, subset_mismatch
from opsgate.probes.queues import queue_depth
from opsgate.probes.sources import service_url

__all__ = ["Finding", "diagnose", "explain", "run_step"]

GRACE_S = 1.0
"""Seconds a step may run past its own ``timeout`` (connecting, closing) before it is cut off."""


@dataclass(frozen=True)
class Finding:
    """What one diagnosis step found: ok or not, a one-line detail, and the measured value against its limit."""

    step: str
    ok: bool
    detail: str
    measured: float | None = None
    threshold: float | None = None
    op: str = ""
    unit: str = ""
    duration_s: float = 0.0

    def line(self) -> str:
        """``worker-running FAILED (connection refused to ...)`` or ``redis-ping ok (PONG)``."""
        return f"{self.step} {'ok' if self.ok else 'FAILED'} ({self.detail})"


async def _http(client: httpx.AsyncClient, target: Target, step: DiagnosisStep) -> Finding:
    assert step.http is not None
    probe, expect = step.http, step.http.expect
    url = service_url(target, probe.service) + probe.path
    observed = await request(client, probe.method, url, timeout_s=step.timeout, headers=probe.headers)
    problem = None
    if observed.status != expect.status:
        problem = f"{probe.method} {url}: expected status {expect.status}, got {observed.status}: {observed.text[:120]}"
    elif mismatch := (
        (subset_mismatch(expect.json, observed.json) if expect.json is not None else None)
        or contains_mismatch(expect.contains, observed)
    ):
        problem = f"{probe.method} {url}: {mismatch}"
    elif expect.max_latency_ms is not None and observed.latency_ms >= expect.max_latency_ms:
        problem = f"{probe.method} {url}: latency {observed.latency_ms:.0f} ms, expected < {expect.max_latency_ms:g} ms"
    detail = problem or f"{observed.status} in {observed.latency_ms:.0f} ms"
    return Finding(step.id, problem is None, detail, float(observed.status), float(expect.status), "==", "status")


async def _ping(target: Target, step: DiagnosisStep) -> Finding:
    if step.ping == "redis":
        assert target.datastores.redis is not None
        reply = await datastores.redis_ping(target.datastores.redis.url, timeout_s=step.timeout)
        return Finding(step.id, reply == "PONG", reply, 1.0 if reply == "PONG" else 0.0, 1.0, "==", "up")
    assert target.datastores.postgres is not None
    ok = await datastores.postgres_ready(target.datastores.postgres.dsn, timeout_s=step.timeout)
    detail = "accepting connections" if ok else "SELECT 1 did not return 1"
    return Finding(step.id, ok, detail, float(ok), 1.0, "==", "up")


async def _queue(target: Target, step: DiagnosisStep) -> Finding:
    spec = next(q for q in target.queues if q.name == step.queue)
    assert target.datastores.redis is not None
    client = aioredis.from_url(target.datastores.redis.url, socket_connect_timeout=step.timeout,
                               socket_timeout=step.timeout)  # fmt: skip
    try:
        depth = await queue_depth(client, spec.layout, spec.name, prefix=spec.prefix)
    except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
        raise ProbeError(f"Redis does not answer: {exc}") from None
    finally:
        await client.aclose()
    waiting = depth.waiting
    if step.max_depth is not None:
        ok, op, limit = waiting <= step.max_depth, "<=", step.max_depth
    elif spec.max_waiting is not None:
        ok, op, limit = waiting < spec.max_waiting, "<", spec.max_waiting
    else:  # no limit anywhere: the depth is reported, only an unreadable queue fails
        return Finding(step.id, True, f"depth {waiting}, no limit set", float(waiting), None, "", "jobs")
    shown = op if ok else {"<=": ">", "<": ">="}[op]
    return Finding(step.id, ok, f"depth {waiting} {shown} {limit}", float(waiting), float(limit), op, "jobs")


async def run_step(client: httpx.AsyncClient, target: Target, step: DiagnosisStep) -> Finding:
    """Run one step, cut off after its ``timeout`` (+ ``GRACE_S``); unreachable or too slow is a failed finding."""
    started = time.monotonic()
    try:
        if step.http is not None:
            work = _http(client, target, step)
        elif step.ping is not None:
            work = _ping(target, step)
        else:
            work = _queue(target, step)
        finding = await asyncio.wait_for(work, timeout=step.timeout + GRACE_S)
    except ProbeError as exc:
        finding = Finding(step.id, False, str(exc))
    except TimeoutError:
        finding = Finding(step.id, False, f"no answer within {step.timeout + GRACE_S:g}s")
    detail = " ".join(finding.detail.split())  # one line, whatever a driver's error text holds
    return replace(finding, detail=detail, duration_s=round(time.monotonic() - started, 3))


async def diagnose(client: httpx.AsyncClient, target: Target, name: str) -> list[Finding]:
    """Run every step of the diagnosis ``name`` concurrently; findings in the file's order."""
    return list(await asyncio.gather(*(run_step(client, target, step) for step in target.diagnoses[name])))


async def explain(client: httpx.AsyncClient, target: Target, name: str) -> str:
    """``diagnosis messages-not-sending: worker-running FAILED (...); redis-ping ok (PONG); ...``."""
    findings = await diagnose(client, target, name)
    return f"diagnosis {name}: " + "; ".join(finding.line() for finding in findings)
