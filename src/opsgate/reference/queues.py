"""BullMQ queues of the platform and the Redis keys around them (heartbeats)."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as redis
from bullmq import Queue
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

SEND_MESSAGES = "send-messages"
BILLING_WEBHOOKS = "billing-webhooks"
QUEUE_NAMES = (SEND_MESSAGES, BILLING_WEBHOOKS)
HEARTBEAT_PREFIX = "opsgate:worker:heartbeat:"

# Completed jobs are removed so the outbox sweeper can re-add a job with the same id; failed
# jobs are kept (bounded) for diagnosis, as the runbooks inspect failed jobs.
JOB_OPTIONS: dict[str, Any] = {"removeOnComplete": True, "removeOnFail": 1000}


def fast_redis(url: str) -> redis.Redis:
    """A Redis client that fails within about a second instead of retrying through an outage.

    One immediate reconnect on a connection error: after Redis restarts, a pooled connection to the old
    process is dead, and the first command on it must not fail a request while Redis is up again.
    """
    return redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        retry_on_timeout=False,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
    )


class Queues:
    """Producer side of the platform's queues, sharing one fail-fast Redis client."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.queues = {name: Queue(name, {"connection": client}) for name in QUEUE_NAMES}

    async def enqueue(self, queue: str, job_id: str, data: dict[str, Any]) -> None:
        """Add a job whose id is the entity id; adding an id that is still queued is a no-op."""
        await self.queues[queue].add(queue, data, {**JOB_OPTIONS, "jobId": job_id})

    async def requeue(self, queue: str, job_id: str, data: dict[str, Any]) -> None:
        """Enqueue again: a job still waiting, delayed or active is kept; a finished one is replaced."""
        state = await self.queues[queue].getJobState(job_id)
        if state in ("failed", "completed"):
            await self.queues[queue].remove(job_id)
        await self.enqueue(queue, job_id, data)

    async def counts(self) -> dict[str, dict[str, int]]:
        """Waiting/active/failed/delayed counts per queue."""
        result: dict[str, dict[str, int]] = {}
        for name, queue in self.queues.items():
            counts = await queue.getJobCounts("waiting", "active", "failed", "delayed")
            result[name] = {state: int(counts.get(state, 0)) for state in ("waiting", "active", "failed", "delayed")}
        return result

    async def heartbeat_age_s(self) -> float | None:
        """Seconds since the freshest worker heartbeat, or None when no worker ever beat."""
        newest: float | None = None
        async for key in self.client.scan_iter(match=HEARTBEAT_PREFIX + "*", count=100):
            raw = await self.client.get(key)
            if raw is not None:
                newest = max(newest or 0.0, float(raw))
        return None if newest is None else max(0.0, time.time() - newest)

    async def close(self) -> None:
        """Close the queues' shared client."""
        await self.client.aclose()


async def beat(client: redis.Redis, worker_id: str, ttl_s: float) -> None:
    """Write this worker's heartbeat (unix seconds), expiring after ``ttl_s``."""
    await client.set(HEARTBEAT_PREFIX + worker_id, repr(time.time()), px=max(1, int(ttl_s * 1000)))
