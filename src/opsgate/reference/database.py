"""The api's PostgreSQL pool: bounded waits, and every failed connection counted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from opsgate.reference.errors import ApiError
from opsgate.reference.metrics import PlatformMetrics

POOL_MAX_SIZE = 10
CONNECT_TIMEOUT_S = 2
OPEN_TIMEOUT_S = 30.0
RECONNECT_TIMEOUT_S = 1.0
"""Once open, how long the pool retries a lost connection in the background before it gives up; the next request
that needs one then connects at once. psycopg_pool's retries back off (1 s, doubling, unscaled by time_scale), so
with a long timeout a restarted PostgreSQL was noticed only at the next, ever later, retry: readiness recovered
seconds late after the postgres-outage drill (1.2 s scaled deadline; seen in the detection matrix's healthy runs)."""


def make_pool(database_url: str, max_size: int = POOL_MAX_SIZE) -> AsyncConnectionPool[Any]:
    """A pool that checks each connection on checkout, so a restarted server is noticed at once."""
    return AsyncConnectionPool(
        database_url,
        min_size=1,
        max_size=max_size,
        timeout=2.0,
        open=False,
        check=AsyncConnectionPool.check_connection,
        kwargs={"connect_timeout": CONNECT_TIMEOUT_S, "autocommit": True},
        reconnect_timeout=OPEN_TIMEOUT_S,
    )


async def open_pool(pool: AsyncConnectionPool[Any]) -> None:
    """Open ``pool``, waiting up to ``OPEN_TIMEOUT_S`` for PostgreSQL; then retry lost connections only briefly."""
    await pool.open(wait=True, timeout=OPEN_TIMEOUT_S)
    pool.reconnect_timeout = RECONNECT_TIMEOUT_S


class Database:
    """The pool plus the metrics its failures feed."""

    def __init__(self, pool: AsyncConnectionPool[Any], metrics: PlatformMetrics) -> None:
        self.pool = pool
        self.metrics = metrics
        metrics.db_max.set(pool.max_size)

    @asynccontextmanager
    async def connection(self, timeout_s: float = 2.0) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection within ``timeout_s``, else a 503 ``DATABASE_UNAVAILABLE`` (counted)."""
        try:
            async with self.pool.connection(timeout=timeout_s) as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as exc:
            self.metrics.db_failures.inc()
            raise ApiError(503, "DATABASE_UNAVAILABLE", f"PostgreSQL: {type(exc).__name__}") from None

    def refresh_gauges(self) -> None:
        """Update ``db_connections_active`` from the pool's statistics."""
        stats = self.pool.get_stats()
        self.metrics.db_active.set(stats.get("pool_size", 0) - stats.get("pool_available", 0))
