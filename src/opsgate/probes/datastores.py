"""Datastore probes: PostgreSQL (pg_isready-like, scalar, connections) and Redis (PING)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import psycopg
import redis.asyncio as aioredis

from opsgate.probes.base import ProbeError


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


async def postgres_scalar(
    dsn: str, sql: str, *, timeout_s: float = 5.0, params: Mapping[str, float] | None = None
) -> float | None:
    """Run ``sql`` (``%(name)s`` bound to ``params``) and return its single value as a number (None for SQL NULL)."""
    try:
        async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=max(1, int(timeout_s))) as conn:
            await conn.execute(f"SET statement_timeout = {int(timeout_s * 1000)}")
            cur = await conn.execute(sql.encode(), dict(params) if params else None)
            row = await cur.fetchone()
    except psycopg.OperationalError as exc:
        raise ProbeError(f"PostgreSQL does not accept connections: {_first_line(exc)}") from None
    except psycopg.Error as exc:
        raise ProbeError(f"PostgreSQL query failed: {_first_line(exc)}") from None
    if row is None or len(row) != 1:
        raise ProbeError(f"query must return one row with one column, got {row!r}")
    return None if row[0] is None else float(row[0])


async def postgres_ready(dsn: str, *, timeout_s: float = 5.0) -> bool:
    """Like ``pg_isready``: connect and ``SELECT 1``; raises :class:`ProbeError` when refused."""
    return await postgres_scalar(dsn, "SELECT 1", timeout_s=timeout_s) == 1


@dataclass(frozen=True)
class Connections:
    """Server connections in use vs ``max_connections``."""

    used: int
    max: int

    @property
    def ratio(self) -> float:
        """Share of the limit in use (0..1)."""
        return self.used / self.max if self.max else 0.0


async def postgres_connections(dsn: str, *, timeout_s: float = 5.0) -> Connections:
    """Connections in use (``pg_stat_activity`` client backends) and the server's ``max_connections``."""
    used = await postgres_scalar(
        dsn, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'", timeout_s=timeout_s
    )
    limit = await postgres_scalar(dsn, "SELECT current_setting('max_connections')::int", timeout_s=timeout_s)
    return Connections(int(used or 0), int(limit or 0))


async def redis_ping(url: str, *, timeout_s: float = 5.0) -> str:
    """``redis-cli ping``: returns ``PONG``; raises :class:`ProbeError` when Redis does not answer."""
    client = aioredis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return "PONG" if await client.ping() else "no PONG"
    except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
        raise ProbeError(f"Redis does not answer PING: {_first_line(exc)}") from None
    except aioredis.ResponseError as exc:
        raise ProbeError(f"Redis refused PING: {_first_line(exc)}") from None
    finally:
        await client.aclose()


LENGTH_COMMANDS = {"list": "LLEN", "set": "SCARD", "zset": "ZCARD", "hash": "HLEN", "stream": "XLEN"}


async def redis_key_number(url: str, key: str, *, timeout_s: float = 5.0) -> float | None:
    """A key's number: its value for a string, its length for a collection; None when the key does not exist."""
    client = aioredis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, decode_responses=True)
    try:
        kind = str(await client.type(key))
        if kind == "none":
            return None
        if kind == "string":
            raw = str(await client.get(key))
            try:
                return float(raw)
            except (TypeError, ValueError):
                raise ProbeError(f"Redis key {key!r} holds {raw!r}, not a number") from None
        if kind not in LENGTH_COMMANDS:
            raise ProbeError(f"Redis key {key!r} is a {kind}; expected a string or a collection")
        length = await client.execute_command(LENGTH_COMMANDS[kind], key)  # type: ignore[no-untyped-call]
        return float(length)
    except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
        raise ProbeError(f"Redis does not answer: {_first_line(exc)}") from None
    finally:
        await client.aclose()
