"""The outbox sweeper: PostgreSQL is the source of truth, Redis only a delivery mechanism.

Work that PostgreSQL says is pending but that nobody touched within the outbox deadline is
re-enqueued and counted as retrying. So Redis losing its jobs loses nothing accepted, and a
stopped worker makes ``billing_webhook_total{status="retrying"}`` climb (seed 002's failure drill).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from opsgate.reference.database import Database
from opsgate.reference.errors import ApiError
from opsgate.reference.metrics import PlatformMetrics
from opsgate.reference.queues import BILLING_WEBHOOKS, SEND_MESSAGES, Queues

log = logging.getLogger("opsgate.reference.outbox")
BATCH = 500


@dataclass(frozen=True)
class _Kind:
    name: str
    queue: str
    select_sql: str


_KINDS = (
    _Kind(
        "message",
        SEND_MESSAGES,
        "SELECT id::text FROM messages WHERE status IN ('queued', 'sending', 'failed')"
        " AND next_attempt_at < now() - make_interval(secs => %s)"
        " ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED",
    ),
    _Kind(
        "billing_webhook",
        BILLING_WEBHOOKS,
        "SELECT event_id FROM billing_webhook_events WHERE status IN ('pending', 'processing')"
        " AND next_attempt_at < now() - make_interval(secs => %s)"
        " ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED",
    ),
)
_TOUCH_SQL = {
    "message": "UPDATE messages SET next_attempt_at = now() WHERE id = ANY(%s::uuid[])",
    "billing_webhook": "UPDATE billing_webhook_events SET next_attempt_at = now() WHERE event_id = ANY(%s)",
}


class OutboxSweeper:
    """Re-enqueues overdue pending work every ``interval_s``; one sweep at a time across replicas."""

    def __init__(
        self, db: Database, queues: Queues, metrics: PlatformMetrics, *, deadline_s: float, interval_s: float
    ) -> None:
        self.db = db
        self.queues = queues
        self.metrics = metrics
        self.deadline_s = deadline_s
        self.interval_s = interval_s

    async def sweep_once(self) -> dict[str, int]:
        """Re-enqueue what is overdue now; returns the count per kind."""
        counts: dict[str, int] = {}
        for kind in _KINDS:
            counts[kind.name] = await self._sweep_kind(kind)
        return counts

    async def _sweep_kind(self, kind: _Kind) -> int:
        async with self.db.connection() as conn, conn.transaction():
            cur = await conn.execute(kind.select_sql, (self.deadline_s, BATCH))
            ids = [row[0] for row in await cur.fetchall()]
            if not ids:
                return 0
            data_key = "message_id" if kind.name == "message" else "event_id"
            for entity_id in ids:
                # Raises on a Redis outage: the transaction rolls back and the next sweep retries.
                await self.queues.requeue(kind.queue, entity_id, {data_key: entity_id})
            await conn.execute(_TOUCH_SQL[kind.name], (ids,))
        self.metrics.outbox_requeued.labels(kind.name).inc(len(ids))
        if kind.name == "billing_webhook":
            self.metrics.billing_webhook.labels("retrying").inc(len(ids))
        log.info("outbox: re-enqueued %d overdue %s(s)", len(ids), kind.name)
        return len(ids)

    async def run(self) -> None:
        """Sweep forever (until cancelled); a failed sweep is logged and retried next interval."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sweep_once()
            except ApiError as exc:
                log.warning("outbox sweep skipped: %s", exc.detail)
            except Exception as exc:
                log.warning("outbox sweep failed: %s: %s", type(exc).__name__, exc)
