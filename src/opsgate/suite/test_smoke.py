"""Smoke: every health endpoint, datastore and queue the target file lists answers as documented."""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest
import redis.asyncio as redis

from opsgate.config import Target
from opsgate.plugin import health_checks

pytestmark = pytest.mark.smoke


def _subset_mismatch(expected: object, actual: object, path: str = "") -> str | None:
    """Where ``actual`` does not contain ``expected`` (dicts by subset, everything else by equality)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path or 'body'}: expected an object, got {actual!r}"
        for key, value in expected.items():
            if key not in actual:
                return f"{path}{key}: missing"
            problem = _subset_mismatch(value, actual[key], f"{path}{key}.")
            if problem:
                return problem
        return None
    return None if expected == actual else f"{path.rstrip('.')}: expected {expected!r}, got {actual!r}"


async def test_health(health_check: str, target: Target) -> None:
    """The endpoint answers the documented status, body and latency."""
    __tracebackhide__ = True
    base_url, check = next((url, c) for cid, url, c in health_checks(target) if cid == health_check)
    url = base_url.rstrip("/") + check.path
    started = time.perf_counter()
    async with httpx.AsyncClient() as client:
        try:
            response = await client.request(check.method, url, timeout=check.timeout)
        except httpx.ConnectError:
            pytest.fail(f"connection refused to {url}")
        except httpx.TimeoutException:
            pytest.fail(f"no answer from {url} within {check.timeout:g}s")
    latency_ms = (time.perf_counter() - started) * 1000
    expect = check.expect
    assert response.status_code == expect.status, (
        f"{check.method} {url}: expected status {expect.status}, got {response.status_code}: {response.text[:200]}"
    )
    if expect.json is not None:
        problem = _subset_mismatch(expect.json, response.json())
        assert problem is None, f"{url}: {problem}"
    if expect.max_latency_ms is not None:
        assert latency_ms < expect.max_latency_ms, (
            f"{url}: latency {latency_ms:.0f} ms, expected < {expect.max_latency_ms:g} ms"
        )


async def test_postgres_accepts_connections(target: Target) -> None:
    """Like ``pg_isready``: connect and run ``SELECT 1``."""
    if target.datastores.postgres is None:
        pytest.skip("the target declares no PostgreSQL")
    try:
        async with await psycopg.AsyncConnection.connect(target.datastores.postgres.dsn, connect_timeout=5) as conn:
            cur = await conn.execute("SELECT 1")
            assert await cur.fetchone() == (1,)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL does not accept connections: {str(exc).splitlines()[0]}")


async def test_redis_ping(target: Target) -> None:
    """``redis-cli ping`` returns ``PONG``."""
    if target.datastores.redis is None:
        pytest.skip("the target declares no Redis")
    client = redis.from_url(target.datastores.redis.url, socket_connect_timeout=5, socket_timeout=5)
    try:
        assert await client.ping() is True
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis does not answer PING: {exc}")
    finally:
        await client.aclose()
