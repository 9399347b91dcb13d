"""Failure events (``notification.failure`` and friends) for the monitoring webhook, through an outbox.

Seed 000 "Logging / Monitoring Health Checks": the webhook must answer 2xx, and a backlog is exported once the
service is restored. Every event is stored in ``monitoring_events`` (with its ``event_id``) before it is posted;
the emitter tries one post at once, in the background, and the relay re-posts what is still pending, oldest
first, while the webhook answers non-2xx or is down. A caller (a send, a dead letter, a tenant change) never
waits on the sink. Failed posts are counted (``monitoring_webhook_failures_total``) and the backlog is a gauge
(``monitoring_events_pending``), so the sink's failure is itself visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb

from opsgate.reference.database import Database
from opsgate.reference.errors import ApiError
from opsgate.reference.metrics import PlatformMetrics

log = logging.getLogger("opsgate.reference.monitoring")

POST_TIMEOUT_S = 2.0
"""One post to the webhook; a slower sink counts as failing."""
LEASE_S = 3 * POST_TIMEOUT_S
"""How long a row being posted is invisible to other relays (longer than any post can take)."""
RELAY_BATCH = 100
MAX_IN_FLIGHT = 32
"""Immediate posts running at once; past that, new events wait for the relay."""


async def _post(client: httpx.AsyncClient, url: str, metrics: PlatformMetrics, body: dict[str, Any]) -> str | None:
    """Post ``body``; None on a 2xx, else why not (counted in ``monitoring_webhook_failures_total``)."""
    try:
        response = await client.post(url, json=body, timeout=POST_TIMEOUT_S)
    except httpx.HTTPError as exc:
        metrics.monitoring_failures.inc()
        log.warning("monitoring webhook unreachable: %s", type(exc).__name__)
        return f"unreachable: {type(exc).__name__}"
    if not 200 <= response.status_code < 300:
        metrics.monitoring_failures.inc()
        log.warning("monitoring webhook answered %s", response.status_code)
        return f"answered {response.status_code}"
    return None


@dataclass(frozen=True)
class StoredEvent:
    """An event as it will be posted (``event_id`` and ``emitted_at`` added); ``stored`` False if not in the outbox."""

    event_id: str
    body: dict[str, Any]
    stored: bool


@dataclass
class MonitoringOutbox:
    """Store-then-post of monitoring events, and the relay that exports the backlog (see the module doc)."""

    db: Database
    http: httpx.AsyncClient
    url: str | None
    metrics: PlatformMetrics
    relay_interval_s: float = 10.0
    """Seconds between relay passes while the sink is healthy."""
    max_backoff_s: float = 60.0
    """Longest pause between relay passes while the sink keeps failing (doubling from ``relay_interval_s``)."""
    defects: Collection[str] = ()
    _in_flight: set[asyncio.Task[None]] = field(default_factory=set)

    # --- emitting ------------------------------------------------------------------------------

    async def store(self, conn: psycopg.AsyncConnection[Any], event: dict[str, Any]) -> StoredEvent:
        """Write ``event`` to the outbox in the caller's transaction (leased to this emitter for its first post)."""
        body = {**event, "event_id": str(uuid.uuid4()), "emitted_at": time.time()}
        if not self.url or "monitoring-events-dropped" in self.defects:
            return StoredEvent(body["event_id"], body, stored=False)
        await conn.execute(
            "INSERT INTO monitoring_events (event_id, event_type, body, next_attempt_at)"
            " VALUES (%s, %s, %s, now() + make_interval(secs => %s))",
            (body["event_id"], str(event.get("type", "")), Jsonb(body), LEASE_S),
        )
        return StoredEvent(body["event_id"], body, stored=True)

    def post_soon(self, event: StoredEvent) -> None:
        """Try the first post in the background (after the caller's commit); the relay retries a failure."""
        if not self.url or len(self._in_flight) >= MAX_IN_FLIGHT:
            return
        task = asyncio.create_task(self._first_post(event), name=f"monitoring-post-{event.event_id}")
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def emit(self, event: dict[str, Any]) -> StoredEvent | None:
        """Store ``event`` (its own connection) and post it soon; None when not even the outbox took it (logged)."""
        if not self.url:
            return None
        try:
            async with self.db.connection() as conn:
                stored = await self.store(conn, event)
        except ApiError as exc:
            log.warning("monitoring event %s not stored: %s", event.get("type"), exc.detail)
            return None
        self.post_soon(stored)
        return stored

    async def _first_post(self, event: StoredEvent) -> None:
        assert self.url is not None
        error = await _post(self.http, self.url, self.metrics, event.body)
        if not event.stored:
            if error is not None:
                log.warning("monitoring event %s lost: %s", event.event_id, error)
            return
        try:
            async with self.db.connection() as conn:
                if error is None:
                    await conn.execute(_SENT_SQL + " WHERE event_id = %s", (event.event_id,))
                else:
                    await conn.execute(_FAILED_SQL + " WHERE event_id = %s AND status = 'pending'",
                                       (error, event.event_id))  # fmt: skip
        except ApiError as exc:  # the lease expires and the relay posts it (again, with the same event_id)
            log.warning("monitoring event %s outcome not saved: %s", event.event_id, exc.detail)

    # --- relaying ------------------------------------------------------------------------------

    async def relay_once(self) -> tuple[int, str | None]:
        """Post due pending events oldest first until one fails; returns (posted, the failure or None)."""
        if not self.url:
            return 0, None
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "UPDATE monitoring_events SET next_attempt_at = now() + make_interval(secs => %s)"
                " WHERE id IN (SELECT id FROM monitoring_events WHERE status = 'pending' AND next_attempt_at <= now()"
                " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id, body",
                (LEASE_S, RELAY_BATCH),
            )
            batch = sorted(await cur.fetchall())
        posted = 0
        error: str | None = None
        async with self.db.connection() as conn:
            for index, (row_id, body) in enumerate(batch):
                error = await _post(self.http, self.url, self.metrics, body)
                if error is not None:
                    await conn.execute(_FAILED_SQL + " WHERE id = %s", (error, row_id))
                    rest = [r for r, _ in batch[index + 1 :]]
                    if rest:  # released at once: still due, still in order for the next pass
                        await conn.execute("UPDATE monitoring_events SET next_attempt_at = now() WHERE id = ANY(%s)",
                                           (rest,))  # fmt: skip
                    break
                await conn.execute(_SENT_SQL + " WHERE id = %s", (row_id,))
                posted += 1
            self.metrics.monitoring_pending.set(await pending_count(conn))
        if posted or error:
            log.info("monitoring relay: %d pending event(s) posted%s", posted, f"; stopped: {error}" if error else "")
        return posted, error

    async def run(self) -> None:
        """Relay forever (until cancelled): every ``relay_interval_s``, backing off while the sink fails."""
        failures = 0
        while True:
            await asyncio.sleep(min(self.max_backoff_s, self.relay_interval_s * 2 ** min(failures, 16)))
            try:
                _posted, error = await self.relay_once()
            except ApiError as exc:
                log.warning("monitoring relay skipped: %s", exc.detail)
                continue
            except Exception as exc:
                log.warning("monitoring relay failed: %s: %s", type(exc).__name__, exc)
                continue
            failures = failures + 1 if error else 0

    async def close(self) -> None:
        """Cancel the immediate posts still running (their rows stay pending for the relay)."""
        for task in list(self._in_flight):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._in_flight, return_exceptions=True)


_SENT_SQL = "UPDATE monitoring_events SET status = 'sent', sent_at = now(), attempts = attempts + 1, last_error = NULL"
_FAILED_SQL = "UPDATE monitoring_events SET attempts = attempts + 1, last_error = %s, next_attempt_at = now()"


async def pending_count(conn: psycopg.AsyncConnection[Any]) -> int:
    """Events in the outbox not yet accepted by the webhook."""
    cur = await conn.execute("SELECT count(*) FROM monitoring_events WHERE status = 'pending'")
    row = await cur.fetchone()
    return int(row[0]) if row else 0
