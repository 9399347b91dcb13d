"""The reference platform's worker: sends messages through the provider and processes billing events.

BullMQ workers for ``send-messages`` and ``billing-webhooks``; retries with exponential backoff
(honouring ``Retry-After``), dead-letter with a reason after ``MAX_ATTEMPTS``; a heartbeat in
Redis; its own ``/healthz``, ``/readyz`` and ``/metrics``. SIGTERM finishes in-flight jobs; after
SIGKILL, BullMQ's stalled-job check and the api's outbox sweeper recover the jobs.

Run with ``python -m opsgate.reference.worker --port N``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from bullmq import Job, Worker
from bullmq.custom_errors import DelayedError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from opsgate.reference import db, entitlements, provider_client
from opsgate.reference.backups import scheduler_for
from opsgate.reference.database import Database, make_pool, open_pool
from opsgate.reference.errors import ApiError
from opsgate.reference.httpserver import embedded_server
from opsgate.reference.metrics import PlatformMetrics, RequestMetricsMiddleware
from opsgate.reference.monitoring import MonitoringOutbox, StoredEvent, pending_count
from opsgate.reference.queues import BILLING_WEBHOOKS, SEND_MESSAGES, beat, fast_redis
from opsgate.reference.settings import PlatformSettings, process_start

log = logging.getLogger("opsgate.reference.worker")
HEARTBEAT_TTL_S = 24 * 3600.0
WEBHOOK_LAG_LIMIT_S = 30.0  # seed 001: "**Webhook Processing:** < 30 seconds lag"
PLAN_EVENTS = {"subscription.created", "subscription.plan_changed", "subscription.canceled"}
AUDIT_ONLY_EVENTS = {"invoice.paid", "invoice.payment_failed", "invoice.created"}
THROTTLE_S = 0.5  # the worker-throttled defect: one send at a time, each held this long (2 sends/s at most)
GLOBAL_KEY = "*"
"""The cache entry of the global kill switch (never a tenant id: those are UUIDs)."""


class PermanentEventError(Exception):
    """A billing event that can never be processed (unknown tenant, unsupported type)."""


@dataclass
class _CachedTenant:
    blocked: bool
    fetched_at: float


@dataclass
class WorkerApp:
    """The worker process: queue consumers, heartbeat and HTTP probes."""

    settings: PlatformSettings
    metrics: PlatformMetrics = field(init=False)
    consumers: list[Worker] = field(default_factory=list)
    _tenants: dict[str, _CachedTenant] = field(default_factory=dict)
    _throttle: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.metrics = PlatformMetrics("worker", drop_status_label=self.defect("worker-requests-unlabelled"))

    def defect(self, name: str) -> bool:
        """True when the named defect is planted."""
        return name in self.settings.defects

    async def start(self) -> None:
        """Open the pool, apply migrations, and start consuming."""
        s = self.settings
        self.pool = make_pool(s.database_url, max_size=8)
        await open_pool(self.pool)
        self.db = Database(self.pool, self.metrics)
        # "ALWAYS backup before migrations!" (seed 003), whoever migrates; its gauge stays off the worker's
        # /metrics (the api owns backup_last_success_timestamp, and scrapes are summed).
        backups = scheduler_for(s, PlatformMetrics("worker-migration-backup"))
        async with self.db.connection(timeout_s=10.0) as conn:
            await db.migrate(
                conn,
                backup=None if backups is None or self.defect("migration-without-backup") else backups.backup_now,
                skip_newest=self.defect("migration-skipped"),
            )
        self.redis = fast_redis(s.redis_url)
        self.provider = httpx.AsyncClient(
            base_url=s.provider_url, headers={"Authorization": f"Bearer {s.provider_api_key}"}
        )
        self.http = httpx.AsyncClient()
        # Events are stored here and posted at once; the api's relay re-posts whatever the webhook did not take.
        self.monitoring = MonitoringOutbox(self.db, self.http, s.monitoring_webhook_url, self.metrics,
                                           defects=s.defects.names)  # fmt: skip
        opts: dict[str, Any] = {
            "connection": s.redis_url,
            "lockDuration": s.lock_duration_ms,
            "stalledInterval": s.lock_duration_ms,
            "maxStalledCount": 5,
            "drainDelay": 1,
            "name": s.worker_id,
        }
        self.consumers = [
            Worker(SEND_MESSAGES, self.process_message, {**opts, "concurrency": 8}),
            Worker(BILLING_WEBHOOKS, self.process_billing_event, {**opts, "concurrency": 4}),
        ]
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")

    async def stop(self) -> None:
        """Stop taking jobs, let in-flight jobs finish, then close every client."""
        await asyncio.gather(*(consumer.close() for consumer in self.consumers), return_exceptions=True)
        self._heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._heartbeat
        await self.monitoring.close()
        await self.provider.aclose()
        await self.http.aclose()
        await self.redis.aclose()
        await self.pool.close()

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await beat(self.redis, self.settings.worker_id, HEARTBEAT_TTL_S)
            except Exception as exc:
                log.warning("heartbeat not written: %s", type(exc).__name__)
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    async def _tenant_blocked(self, conn: psycopg.AsyncConnection[Any], tenant_id: str) -> bool:
        """Paused or suspended, as seen through a cache of ``tenant_cache_ttl_s`` (kill-switch propagation)."""
        cached = self._tenants.get(tenant_id)
        now = time.monotonic()
        if cached is None or now - cached.fetched_at > self.settings.tenant_cache_ttl_s:
            state = await db.tenant_state(conn, tenant_id)
            blocked = state is None or state.paused or state.status == "suspended"
            cached = _CachedTenant(blocked, now)
            self._tenants[tenant_id] = cached
        return cached.blocked

    async def _sending_stopped(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """The global kill switch is on, as seen through the same cache (``tenant_cache_ttl_s``) as a tenant's."""
        cached = self._tenants.get(GLOBAL_KEY)
        now = time.monotonic()
        if cached is None or now - cached.fetched_at > self.settings.tenant_cache_ttl_s:
            cached = _CachedTenant(bool(await db.get_setting(conn, db.GLOBAL_KILL_SWITCH_KEY, False)), now)
            self._tenants[GLOBAL_KEY] = cached
        return cached.blocked

    async def _monitoring_backlog(self) -> int:
        async with self.db.connection() as conn:
            return await pending_count(conn)

    async def _delay(self, job: Job, token: str, delay_s: float) -> None:
        await job.moveToDelayed(int((time.time() + delay_s) * 1000), token)
        raise DelayedError()

    # --- send-messages ----------------------------------------------------------------------

    async def process_message(self, job: Job, token: str) -> str:
        """Send one message: claim it, respect the kill switch, call the provider, record the outcome."""
        message_id = str(job.data["message_id"])
        s = self.settings
        if self.defect("worker-throttled"):
            async with self._throttle:
                await asyncio.sleep(THROTTLE_S)
        async with self.db.connection() as conn:
            cur = await conn.execute("SELECT tenant_id::text FROM messages WHERE id = %s", (message_id,))
            found = await cur.fetchone()
            if found is None:
                return "unknown-message"
            # The kill switch is checked before the claim, so a held message stays 'queued' throughout.
            stopped = await self._sending_stopped(conn) and not self.defect("global-kill-switch-skips-queued")
            if stopped or (await self._tenant_blocked(conn, found[0]) and not self.defect("kill-switch-ignored")):
                if self.defect("held-sends-set-aside"):
                    # Parked "until resume", but nothing on resume looks for parked sends; the sweeper skips them.
                    await conn.execute(
                        "UPDATE messages SET next_attempt_at = 'infinity' WHERE id = %s AND status = 'queued'",
                        (message_id,),
                    )
                    return "held"
                recheck_s = s.tenant_cache_ttl_s
                await conn.execute(
                    "UPDATE messages SET next_attempt_at = now() + make_interval(secs => %s)"
                    " WHERE id = %s AND status IN ('queued', 'failed')",
                    (recheck_s, message_id),
                )
                await self._delay(job, token, recheck_s)
            cur = await conn.execute(
                "UPDATE messages SET status = 'sending', attempts = attempts + 1, updated_at = now(),"
                " next_attempt_at = now() WHERE id = %s AND (status IN ('queued', 'failed')"
                " OR (status = 'sending' AND updated_at < now() - make_interval(secs => %s)))"
                " RETURNING tenant_id::text, channel, recipient, body, attempts",
                (message_id, s.outbox_deadline_s),
            )
            row = await cur.fetchone()
            if row is None:
                return "not-claimable"  # delivered, dead, or being sent by someone else
            tenant_id, channel, recipient, body, attempts = row

        if self.defect("worker-acks-without-send"):
            result = provider_client.SendResult(ok=True, provider_id="ack-without-send")
        elif self.defect("monitoring-failure-blocks-sends") and await self._monitoring_backlog():
            # Fail closed on observability: "no send while its failure could not be reported".
            result = provider_client.SendResult(ok=False, reason="monitoring webhook failing: send held back")
        elif channel == "email" and self.defect("email-sends-fail"):
            result = provider_client.SendResult(ok=False, reason="no provider route for channel 'email'")
        else:
            result = await provider_client.send(
                self.provider,
                message_id=message_id,
                attempt=attempts,
                channel=channel,
                to=recipient,
                body=body,
                tenant_id=tenant_id,
                timeout_s=s.provider_timeout_s,
            )
        if result.ok:
            async with self.db.connection() as conn:
                await conn.execute(
                    "UPDATE messages SET status = 'delivered', provider_id = %s, delivered_at = now(),"
                    " updated_at = now(), failure_reason = NULL WHERE id = %s",
                    (result.provider_id, message_id),
                )
            self.metrics.messages.labels(channel, "delivered", tenant_id).inc()
            return "delivered"
        return await self._failed_attempt(job, token, message_id, tenant_id, channel, attempts, result)

    async def _failed_attempt(
        self,
        job: Job,
        token: str,
        message_id: str,
        tenant_id: str,
        channel: str,
        attempts: int,
        result: provider_client.SendResult,
    ) -> str:
        s = self.settings
        self.metrics.notification_failures.labels(channel).inc()
        self.metrics.messages.labels(channel, "failed", tenant_id).inc()
        reason = result.reason or "provider error"
        async with self.db.connection() as conn:
            if self.defect("retries-drop-messages"):
                await conn.execute(
                    "UPDATE messages SET status = 'failed', failure_reason = %s, updated_at = now(),"
                    " next_attempt_at = 'infinity' WHERE id = %s",
                    (reason, message_id),
                )
                return "dropped"
            if attempts >= s.max_attempts:
                event: StoredEvent | None = None
                async with conn.transaction():  # the dead letter and its failure event, or neither
                    await conn.execute(
                        "UPDATE messages SET status = 'dead', updated_at = now(), failure_reason = %s WHERE id = %s",
                        (f"{reason} (gave up after {attempts} attempts)", message_id),
                    )
                    if not self.defect("monitoring-webhook-silent"):
                        failure = {"type": "notification.failure", "channel": channel, "tenant_id": tenant_id,
                                   "message_id": message_id, "reason": reason, "attempts": attempts}  # fmt: skip
                        event = await self.monitoring.store(conn, failure)
                self.metrics.messages.labels(channel, "dead", tenant_id).inc()
                if event is not None:
                    self.monitoring.post_soon(event)  # in the background: the sink never holds up a job
                return "dead"
            delay_s = result.retry_after_s
            if delay_s is None:
                delay_s = s.backoff_base_s * 2 ** (attempts - 1)
            await conn.execute(
                "UPDATE messages SET status = 'failed', failure_reason = %s, updated_at = now(),"
                " next_attempt_at = now() + make_interval(secs => %s) WHERE id = %s",
                (reason, delay_s, message_id),
            )
        await self._delay(job, token, delay_s)
        return "retrying"  # not reached: _delay raises DelayedError

    # --- billing-webhooks -------------------------------------------------------------------

    async def process_billing_event(self, job: Job, token: str) -> str:
        """Apply one billing event exactly once: side effects, audit row and status in one transaction."""
        event_id = str(job.data["event_id"])
        if self.defect("webhook-processing-slow"):
            await asyncio.sleep(self.settings.scaled(WEBHOOK_LAG_LIMIT_S * 3, 3.0))
        try:
            async with self.db.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "SELECT event_type, payload, status FROM billing_webhook_events WHERE event_id = %s FOR UPDATE",
                    (event_id,),
                )
                row = await cur.fetchone()
                if row is None:
                    return "unknown-event"
                event_type, payload, status = row
                if status in ("processed", "failed") and not self.defect("duplicate-webhook-processed"):
                    return f"already-{status}"
                await self._apply_billing_event(conn, event_id, event_type, payload.get("data") or {})
                # The defect keys the status update by the row id, which never equals an event id: no row changes.
                key = "id::text" if self.defect("webhook-status-not-saved") else "event_id"
                cur = await conn.execute(
                    "UPDATE billing_webhook_events SET status = 'processed', attempts = attempts + 1,"
                    f" processed_at = now(), last_error = NULL WHERE {key} = %s"
                    " RETURNING extract(epoch FROM processed_at - received_at)",
                    (event_id,),
                )
                lag = await cur.fetchone()
        except PermanentEventError as exc:
            async with self.db.connection() as conn:
                await conn.execute(
                    "UPDATE billing_webhook_events SET status = 'failed', attempts = attempts + 1, last_error = %s"
                    " WHERE event_id = %s",
                    (str(exc), event_id),
                )
            self.metrics.billing_webhook.labels("failed").inc()
            return "failed"
        self.metrics.billing_webhook.labels("processed").inc()
        if lag is not None:
            self.metrics.billing_webhook_lag.observe(float(lag[0]))
        return "processed"

    async def _apply_billing_event(
        self, conn: psycopg.AsyncConnection[Any], event_id: str, event_type: str, data: dict[str, Any]
    ) -> None:
        tenant_id = str(data.get("tenantId") or "")
        if event_type not in PLAN_EVENTS | AUDIT_ONLY_EVENTS:
            raise PermanentEventError(f"unsupported event type {event_type!r}")
        cur = await conn.execute("SELECT 1 FROM tenants WHERE id::text = %s", (tenant_id,))
        if await cur.fetchone() is None:
            raise PermanentEventError(f"unknown tenant {tenant_id!r}")
        if event_type in ("subscription.created", "subscription.plan_changed"):
            # Seed 002 posts a plan id (``planId``); a plan code (``plan``) is accepted too.
            try:
                plan = await entitlements.find_plan(conn, str(data.get("planId") or data.get("plan") or "core"))
            except entitlements.UnknownPlan as exc:
                raise PermanentEventError(str(exc)) from None
            keep_old = self.defect("plan-change-keeps-old-modules")
            await entitlements.apply_plan(conn, tenant_id, plan, keep_old=keep_old)
        elif event_type == "subscription.canceled":
            drop_overrides = self.defect("cancellation-drops-overrides")
            await entitlements.remove_plan(conn, tenant_id, drop_overrides=drop_overrides)
        misfiled = self.defect("billing-audit-misfiled")
        await db.audit(
            conn,
            tenant_id=tenant_id,
            module="webhooks" if misfiled else "billing",
            action=event_type if misfiled else f"billing.{event_type}",
            entity_type="billing_webhook_event",
            entity_id=event_id,
            actor="billing-worker",
            payload=data,
        )

    # --- HTTP probes ------------------------------------------------------------------------

    def http_app(self) -> Starlette:
        """``/healthz``, ``/readyz`` and ``/metrics`` of this worker."""

        async def healthz(request: Request) -> Response:
            return JSONResponse({"status": "ok", "worker_id": self.settings.worker_id})

        async def readyz(request: Request) -> Response:
            checks: dict[str, bool] = {}
            try:
                async with self.db.connection(timeout_s=1.0) as conn:
                    await conn.execute("SELECT 1")
                checks["postgres"] = True
            except ApiError:
                checks["postgres"] = False
            try:
                checks["redis"] = bool(await self.redis.ping())
            except Exception:
                checks["redis"] = False
            checks["consumers"] = all(c.running and not c.closing for c in self.consumers)
            failing = [name for name, ok in checks.items() if not ok]
            body = {"ready": not failing, "checks": checks, **({"failing": failing} if failing else {})}
            return JSONResponse(body, status_code=503 if failing else 200)

        async def metrics(request: Request) -> Response:
            self.db.refresh_gauges()
            return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

        routes = [Route("/healthz", healthz), Route("/health", healthz), Route("/readyz", readyz)]
        if self.defect("worker-health-route-missing"):  # renamed to the probes' /healthz; the runbook's /health gone
            routes = [route for route in routes if route.path != "/health"]
        app = Starlette(routes=[*routes, Route("/metrics", metrics)])
        app.add_middleware(RequestMetricsMiddleware, metrics=self.metrics)
        return app


async def run(settings: PlatformSettings, host: str, port: int) -> None:
    """Run until SIGTERM/SIGINT; the first signal drains in-flight jobs, a second one exits at once."""
    worker = WorkerApp(settings)
    await worker.start()
    server = embedded_server(worker.http_app(), host, port)
    serving = asyncio.create_task(server.serve(), name="http")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set() or "sigterm-abandons-jobs" in settings.defects:
            log.warning("signal %s: exiting without waiting", signum)
            os._exit(1)
        log.info("signal %s: finishing in-flight jobs", signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    log.info(
        "worker %s consuming %s and %s; http on %s:%s", settings.worker_id, SEND_MESSAGES, BILLING_WEBHOOKS, host, port
    )
    await stop.wait()
    await worker.stop()
    server.should_exit = True
    await serving
    log.info("worker %s stopped cleanly", settings.worker_id)


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m opsgate.reference.worker --host 127.0.0.1 --port N``."""
    settings, host, port = process_start("opsgate.reference.worker", argv)
    asyncio.run(run(settings, host, port))


if __name__ == "__main__":
    main()
