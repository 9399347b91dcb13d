"""SLO verdicts under real faults: a healthy send route passes, a planted slow route and database latency fail.

The limits are seed-001's "API Response Time: p95 < 500ms" and seed-003's "error rate < 1%". The achieved rate
is judged over the sending window (not the drain of the last slow answers), so a fault run can be as short as a
healthy one: 240 requests at 40/s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from helpers import BACKUP_INTERVAL_S
from opsgate.environments.local import LocalEnvironment
from opsgate.reference.api import SLOW_ROUTE_DELAY_S
from opsgate.slo.runner import Plan, run_load
from opsgate.slo.verdict import Limits, SloVerdict, judge

pytestmark = pytest.mark.platform

SLO = Limits(p95_ms=500, error_rate=0.01)
DB_LATENCY_MS = 300.0


def p95_missed(verdict: SloVerdict) -> float:
    """The p95 of a failed ``verdict``, checked to be named in its message with how much it missed 500 ms by."""
    p95 = verdict.percentiles_ms["p95"]
    assert verdict.verdict == "fail" and p95 is not None, verdict.message
    breach = next((part for part in verdict.message.split("; ") if part.startswith("p95 ")), "")
    assert f"p95 {p95:.1f} ms" in breach and f"by {p95 - 500:.1f} ms" in breach, verdict.message
    return p95


def test_healthy_send_route_meets_its_slo(message_plan: Callable[..., Plan], tmp_path: Path) -> None:
    """240 sends (40/s for 6 s; identical bodies are accepted, each is a new message) pass p95 < 500 ms."""
    result = run_load(message_plan(40, 6), tmp_path)
    verdict = judge(result.run, SLO)
    print(f"healthy send route: {verdict.count} sends: {verdict.message}")
    assert verdict.verdict == "pass", verdict.message
    assert verdict.count == 240 and verdict.error_rate == 0.0


def test_slow_messages_route_defect_fails_the_p95(
    platform: LocalEnvironment, message_plan: Callable[..., Plan], tmp_path: Path
) -> None:
    """The defect sleeps 1.5 s in the send route: 40/s for 6 s (240 sends) misses p95 < 500 ms by over 1 s."""
    platform.restart_platform(defects="slow-messages-route")
    try:
        result = run_load(message_plan(40, 6), tmp_path)
    finally:
        platform.restart_platform(defects="", backup_interval_s=BACKUP_INTERVAL_S)
    verdict = judge(result.run, SLO)
    print(f"slow-messages-route: {verdict.count} sends: {verdict.verdict}: {verdict.message}")
    assert p95_missed(verdict) >= SLOW_ROUTE_DELAY_S * 1000
    assert verdict.count == 240 and verdict.error_rate == 0.0
    assert verdict.message.count("; ") == 0, verdict.message  # nothing else missed: errors and rate fine
    healthy = timed_send(platform, message_plan(1, 1))
    assert healthy < SLOW_ROUTE_DELAY_S, f"a send took {healthy:.2f}s after the healthy restart"


def timed_send(platform: LocalEnvironment, plan: Plan) -> float:
    """Seconds one send of ``plan`` takes (it must be accepted)."""
    started = time.monotonic()
    response = httpx.request(
        plan.method, platform.api_url + plan.path, headers=plan.headers, json=plan.body, timeout=10
    )
    assert response.status_code == plan.status, response.text
    return time.monotonic() - started


def test_database_latency_fails_the_readiness_p95(platform: LocalEnvironment, tmp_path: Path) -> None:
    """300 ms on every chunk to PostgreSQL (through the fault proxy): /readyz at 40/s for 6 s misses p95 < 500 ms.

    /readyz checks PostgreSQL with a pooled connection: the pool's checkout check and ``SELECT 1`` are a
    round trip each, so each readiness answer takes at least 600 ms.
    """
    faults = f"{platform.postgres_proxy_url}/faults"
    response = httpx.put(faults, json={"mode": "latency", "latency_ms": DB_LATENCY_MS, "seed": 1}, timeout=10)
    assert response.status_code == 200 and response.json()["active"], response.text
    try:
        result = run_load(Plan(platform.api_url, "/readyz", rate_per_s=40, duration_s=6), tmp_path)
    finally:
        cleared = httpx.delete(faults, timeout=10)
    assert cleared.status_code == 200 and cleared.json()["mode"] == "pass", cleared.text
    assert httpx.get(faults, timeout=10).json()["active"] is False
    verdict = judge(result.run, SLO)
    print(
        f"database latency {DB_LATENCY_MS:g} ms: {verdict.count} readiness checks: {verdict.verdict}: {verdict.message}"
    )
    # Some checks may also answer 503 (a pool checkout over its 1 s wait): the error rate may fail too.
    assert p95_missed(verdict) >= 2 * DB_LATENCY_MS
    ready = httpx.get(f"{platform.api_url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["postgres"]["latency_ms"] < DB_LATENCY_MS / 2, ready.text  # the latency is gone
