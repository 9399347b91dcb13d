"""The reference platform's api: messaging, kill switch, tenants, billing webhooks, health, metrics.

Run with ``python -m opsgate.reference.api --port N``; settings come from the environment
(:mod:`opsgate.reference.settings`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs

import httpx
import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from opsgate.reference import admin_page, db, entitlements, sending, signing
from opsgate.reference.auth import (
    SESSION_COOKIE,
    SESSION_TTL_S,
    create_session,
    delete_session,
    password_matches,
    require_admin,
    require_tenant,
    session_user,
)
from opsgate.reference.backups import RETAIN, BackupScheduler, scheduler_for
from opsgate.reference.database import Database, make_pool, open_pool
from opsgate.reference.errors import ApiError, handle_api_error
from opsgate.reference.metrics import PlatformMetrics, RequestMetricsMiddleware, timings_route
from opsgate.reference.monitoring import MonitoringOutbox, pending_count
from opsgate.reference.outbox import OutboxSweeper
from opsgate.reference.queues import BILLING_WEBHOOKS, QUEUE_NAMES, SEND_MESSAGES, Queues, fast_redis
from opsgate.reference.sending import RejectedSend
from opsgate.reference.settings import PlatformSettings, process_start

log = logging.getLogger("opsgate.reference.api")
MAINTENANCE_KEY = "support.maintenance_mode"  # seed 002's feature flag name
WEBHOOK_SECRET_KEY = "billing.webhook_secret_active"  # which secret signs billing webhooks: configured | next
OPTOUT_REFRESH_TIMEOUT_S = 0.5
SCRAPE_DB_BUDGET_S = 0.4  # seconds of a /metrics scrape spent reading per-tenant gauges from PostgreSQL
SLOW_ROUTE_DELAY_S = 1.5  # the slow-messages-route defect: 3x the 500 ms SLO (seed 001)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SendMessage(_Body):
    channel: Literal["sms", "email"]
    to: str = Field(min_length=3, max_length=320)
    body: str = Field(min_length=1, max_length=1600)
    timezone: str | None = None  # the contact's time zone; the tenant's when absent


class NewTenant(_Body):
    id: uuid.UUID | None = None  # a chosen id (e.g. the tenant a billing event names); a fresh one when absent
    name: str = Field(min_length=1, max_length=100)
    region: str = Field(default="AU", min_length=2, max_length=2)
    timezone: str = "UTC"
    quiet_hours_start: int | None = Field(default=None, ge=0, le=23)
    quiet_hours_end: int | None = Field(default=None, ge=0, le=23)
    daily_budget_cents: int = Field(default=100_000, ge=0)
    sms_cost_cents: int = Field(default=5, ge=0)
    email_cost_cents: int = Field(default=1, ge=0)
    sending_number: str | None = None


class Login(_Body):
    username: str
    password: str


class Suspend(_Body):
    reason: str = Field(default="unspecified", max_length=500)


class Maintenance(_Body):
    enabled: bool


class DncEntry(_Body):
    phone: str


class Override(_Body):
    kind: Literal["module", "feature_flag"]
    name: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    enabled: bool = True


class BillingEvent(BaseModel):
    id: str = Field(min_length=1, max_length=200)
    type: str = Field(min_length=1, max_length=100)
    data: dict[str, Any] = Field(default_factory=dict)


class InboundReply(BaseModel):
    from_: str = Field(alias="from")
    to: str
    body: str


M = TypeVar("M", bound=BaseModel)


async def parse_body(request: Request, model: type[M]) -> M:
    """Validate the JSON body; a bad body is a 422 ``INVALID_REQUEST`` naming the field."""
    try:
        raw = await request.body()
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise ApiError(422, "INVALID_REQUEST", f"{where}: {err['msg']}") from None


def parse_uuid(value: str, what: str) -> str:
    """``value`` as a canonical UUID string, or a 404 for a malformed id."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ApiError(404, "NOT_FOUND", f"no such {what}") from None


@dataclass
class ApiContext:
    """Everything the api's handlers share, built in the lifespan."""

    settings: PlatformSettings
    metrics: PlatformMetrics
    db: Database
    queues: Queues
    http: httpx.AsyncClient
    backups: BackupScheduler | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    monitoring: MonitoringOutbox | None = None
    """The monitoring outbox; set in the lifespan (its relay runs in this process)."""
    maintenance_seen: bool = False
    """Defect ``maintenance-flag-sticks`` only: maintenance mode was seen on once, and is never read again."""

    def defect(self, name: str) -> bool:
        """True when the named defect is planted."""
        return name in self.settings.defects


def ctx(request: Request) -> ApiContext:
    """The api context of the running app."""
    context: ApiContext = request.app.state.ctx
    return context


# --- health -------------------------------------------------------------------------------------


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


_READINESS_PROBES = itertools.count(1)  # defect readiness-flaps: every 4th probe fails


async def readyz(request: Request) -> Response:
    """200 only when PostgreSQL and Redis answer; the worker's heartbeat is reported, not required."""
    c = ctx(request)
    checks: dict[str, dict[str, Any]] = {}
    if not c.defect("readiness-always-ok"):
        checks["postgres"] = await _timed_check(_postgres_ok(c))
        if not c.defect("readiness-ignores-redis"):
            checks["redis"] = await _timed_check(_redis_ok(c))
    try:
        age = await c.queues.heartbeat_age_s()
    except Exception:
        age = None
    checks["worker"] = {
        "ok": age is not None and age <= c.settings.heartbeat_stale_s,
        "heartbeat_age_s": None if age is None else round(age, 3),
        "required": False,
    }
    if c.defect("readiness-flaps") and next(_READINESS_PROBES) % 4 == 0:
        checks["postgres"] = {"ok": False, "error": "connection reset while the pool recycled it", "latency_ms": 0.0}
    failing = [name for name in ("postgres", "redis") if name in checks and not checks[name]["ok"]]
    body: dict[str, Any] = {"ready": not failing, "checks": checks}
    if failing:
        body["failing"] = failing
    return JSONResponse(body, status_code=503 if failing else 200)


async def health_db(request: Request) -> Response:
    """Seed 003's ``/api/health/db``: 200 ``{"postgres": "connected"}``, or 503 ``disconnected``.

    The runbook's platform answers ``{"mongodb": ...}``; the reference platform's database is PostgreSQL, so the
    key names it. Asked with ``SELECT 1`` every time (1 s at most), never from a cached state.
    """
    c = ctx(request)
    if c.defect("health-db-always-connected"):
        return JSONResponse({"postgres": "connected"})
    check = await _timed_check(_postgres_ok(c))
    return _connectivity("postgres", check)


async def health_redis(request: Request) -> Response:
    """Seed 003's ``/api/health/redis``: 200 ``{"redis": "connected"}`` after a PING, or 503 ``disconnected``."""
    c = ctx(request)
    if c.defect("health-redis-always-connected"):
        return JSONResponse({"redis": "connected"})
    check = await _timed_check(_redis_ok(c))
    return _connectivity("redis", check)


def _connectivity(name: str, check: dict[str, Any]) -> Response:
    """One dependency's connectivity answer: ``{name: connected|disconnected, latency_ms[, error]}``."""
    body: dict[str, Any] = {name: "connected" if check["ok"] else "disconnected", "latency_ms": check["latency_ms"]}
    if not check["ok"]:
        body["error"] = check.get("error", "")
    return JSONResponse(body, status_code=200 if check["ok"] else 503)


async def _postgres_ok(c: ApiContext) -> None:
    async with c.db.connection(timeout_s=1.0) as conn:
        await conn.execute("SELECT 1")


async def _redis_ok(c: ApiContext) -> None:
    await c.queues.client.ping()


async def _timed_check(probe: Awaitable[None]) -> dict[str, Any]:
    """Run one readiness probe: ``{"ok": bool, "latency_ms": ms[, "error": text]}``."""
    started = time.perf_counter()
    result: dict[str, Any] = {"ok": True}
    try:
        await probe
    except ApiError as exc:
        result = {"ok": False, "error": exc.detail}
    except Exception as exc:
        result = {"ok": False, "error": type(exc).__name__}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


_METRICS_SCRAPES = itertools.count(1)  # defect metrics-endpoint-flaky: every 3rd scrape fails


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus exposition; queue, heartbeat and pool gauges are read at scrape time."""
    c = ctx(request)
    if c.defect("metrics-endpoint-flaky") and next(_METRICS_SCRAPES) % 3 == 0:
        return Response("internal error", status_code=500)
    c.db.refresh_gauges()
    if c.metrics.queue_jobs:
        with contextlib.suppress(Exception):
            for queue, counts in (await c.queues.counts()).items():
                for state, value in counts.items():
                    c.metrics.queue_jobs[state].labels(queue).set(value)
    with contextlib.suppress(Exception):
        age = await c.queues.heartbeat_age_s()
        if age is not None:
            c.metrics.heartbeat_age.set(age)
    # The per-tenant gauges come from PostgreSQL: bounded as a whole, so a loaded api still answers its scrape
    # inside Prometheus's 1 s timeout (a failed scrape reads as the api down), with the last values kept.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(_refresh_optout_windows(c), timeout=SCRAPE_DB_BUDGET_S)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(_refresh_budgets(c), timeout=SCRAPE_DB_BUDGET_S / 2)
    with contextlib.suppress(OSError):
        c.metrics.refresh_disk(str(c.settings.backup_dir or "."))
    if c.defect("metrics-counts-db-failure"):
        c.metrics.db_failures.inc()
    with contextlib.suppress(Exception):
        async with c.db.pool.connection(timeout=OPTOUT_REFRESH_TIMEOUT_S) as conn:
            c.metrics.monitoring_pending.set(await pending_count(conn))
    return Response(c.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def _refresh_optout_windows(c: ApiContext) -> None:
    """Seed 001's opt-out rate "in rolling 100 messages", as two gauges per tenant (PostgreSQL is the source).

    Read from the pool directly with a short wait: a scrape must not stall, nor count as the app's connection failure.
    """
    async with c.db.pool.connection(timeout=OPTOUT_REFRESH_TIMEOUT_S) as conn:
        windows = await db.optout_windows(conn)
    for window in windows:
        c.metrics.sms_window_messages.labels(window.tenant_id).set(window.messages)
        c.metrics.sms_window_optouts.labels(window.tenant_id).set(window.optouts)


async def _refresh_budgets(c: ApiContext) -> None:
    """Seed 001's "Budget approaching 90%": today's spend and the daily budget per tenant, from PostgreSQL."""
    async with c.db.pool.connection(timeout=OPTOUT_REFRESH_TIMEOUT_S) as conn:
        cur = await conn.execute(
            "SELECT t.id::text, t.daily_budget_cents, coalesce(b.daily_spent_cents, 0) FROM tenants t"
            " LEFT JOIN budgets b ON b.tenant_id = t.id AND b.day = current_date - %s",
            (1 if c.defect("budget-spend-misdated") else 0,),
        )
        rows = await cur.fetchall()
    for tenant, limit, spent in rows:
        c.metrics.budget_limit.labels(tenant).set(limit)
        c.metrics.budget_spent.labels(tenant).set(spent)


# --- maintenance --------------------------------------------------------------------------------


async def ensure_writable(c: ApiContext, conn: psycopg.AsyncConnection[Any]) -> None:
    """Reject a write with 503 ``MAINTENANCE`` while maintenance mode is on (seed 002)."""
    if c.defect("maintenance-allows-writes"):
        return
    if c.maintenance_seen or await db.get_setting(conn, MAINTENANCE_KEY, False):
        c.maintenance_seen = c.defect("maintenance-flag-sticks")
        raise ApiError(503, "MAINTENANCE", "maintenance mode is on: writes are rejected, reads are served")


async def get_maintenance(request: Request) -> Response:
    return await _get_flag(request, MAINTENANCE_KEY)


async def put_maintenance(request: Request) -> Response:
    return await _put_flag(request, MAINTENANCE_KEY, "support", "maintenance")


async def get_kill_switch(request: Request) -> Response:
    """The global kill switch (seed 001 "Suspected Breach": stop all sending, every tenant): ``{"enabled": ...}``."""
    return await _get_flag(request, db.GLOBAL_KILL_SWITCH_KEY)


async def put_kill_switch(request: Request) -> Response:
    """Pull or release the global kill switch (admin, audited): new sends of every tenant 409, queued jobs held."""
    return await _put_flag(request, db.GLOBAL_KILL_SWITCH_KEY, "security", "kill_switch")


async def _get_flag(request: Request, key: str) -> Response:
    """An admin on/off setting as ``{"enabled": bool}``."""
    c = ctx(request)
    async with c.db.connection() as conn:
        await require_admin(conn, request)
        enabled = bool(await db.get_setting(conn, key, False))
    return JSONResponse({"enabled": enabled})


async def _put_flag(request: Request, key: str, module: str, action: str) -> Response:
    """Set an admin on/off setting and audit it as ``<action>.enabled`` / ``<action>.disabled`` in ``module``."""
    c = ctx(request)
    body = await parse_body(request, Maintenance)
    async with c.db.connection() as conn:
        user = await require_admin(conn, request)
        async with conn.transaction():
            await db.set_setting(conn, key, body.enabled)
            await db.audit(
                conn,
                tenant_id=None,
                module=module,
                action=f"{action}.enabled" if body.enabled else f"{action}.disabled",
                entity_type="setting",
                entity_id=key,
                actor=user,
            )
    return JSONResponse({"enabled": body.enabled})


# --- auth ---------------------------------------------------------------------------------------


async def login(request: Request) -> Response:
    """Service-account login: a session token in the body and as the ``session_id`` cookie."""
    c = ctx(request)
    body = await parse_body(request, Login)
    if body.username != c.settings.service_user or not password_matches(c.settings.service_password, body.password):
        raise ApiError(401, "INVALID_CREDENTIALS", "wrong username or password")
    async with c.db.connection() as conn:
        token = await create_session(conn, body.username)
    response = JSONResponse({"token": token, "expires_in_s": SESSION_TTL_S})
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_TTL_S, httponly=True, samesite="strict")
    return response


async def logout(request: Request) -> Response:
    c = ctx(request)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        async with c.db.connection() as conn:
            await delete_session(conn, token)
    response = JSONResponse({"logged_out": True})
    response.delete_cookie(SESSION_COOKIE)
    return response


# --- messages -----------------------------------------------------------------------------------


async def send_message(request: Request) -> Response:
    """Accept a message through every send gate, persist it, then enqueue it (202)."""
    c = ctx(request)
    tenant_id = parse_uuid(request.path_params["tenant_id"], "tenant")
    body = await parse_body(request, SendMessage)
    if c.defect("slow-messages-route"):
        await asyncio.sleep(SLOW_ROUTE_DELAY_S)
    async with c.db.connection() as conn:
        await require_tenant(conn, request, tenant_id)
        await ensure_writable(c, conn)
        if await db.get_setting(conn, db.GLOBAL_KILL_SWITCH_KEY, False):
            raise ApiError(409, "SENDING_PAUSED", "the global kill switch is on: sending is stopped for every tenant")
        cur = await conn.execute(
            "SELECT status, paused, region, timezone, quiet_hours_start, quiet_hours_end,"
            " sms_cost_cents, email_cost_cents FROM tenants WHERE id = %s",
            (tenant_id,),
        )
        row = await cur.fetchone()
        if row is None:
            raise ApiError(404, "NOT_FOUND", "no such tenant")
        try:
            recipient = _check_send_gates(c, row, body)
            if body.channel == "sms" and not c.defect("dnc-check-skipped"):
                dnc_key = body.to if c.defect("dnc-skips-unnormalised") else recipient
                cur = await conn.execute(
                    "SELECT 1 FROM do_not_contact WHERE tenant_id = %s AND phone_e164 = %s",
                    (tenant_id, dnc_key),
                )
                if await cur.fetchone():
                    raise RejectedSend("DO_NOT_CONTACT", "the recipient is on the do-not-contact list", 422)
        except RejectedSend as exc:
            raise ApiError(exc.http_status, exc.code, exc.detail) from None

        cost = row[6] if body.channel == "sms" else row[7]
        message_id = str(uuid.uuid4())
        await _insert_within_budget(c, conn, tenant_id, cost, message_id, body.channel, recipient, body.body)
        try:
            await c.queues.enqueue(SEND_MESSAGES, message_id, {"message_id": message_id})
        except Exception as exc:
            # Not accepted: undo the row and the spend, so nothing is sent behind the caller's back.
            async with conn.transaction():
                await conn.execute("DELETE FROM messages WHERE id = %s", (message_id,))
                await conn.execute(
                    "UPDATE budgets SET daily_spent_cents = daily_spent_cents - %s"
                    " WHERE tenant_id = %s AND day = current_date",
                    (cost, tenant_id),
                )
            raise ApiError(503, "QUEUE_UNAVAILABLE", f"Redis: {type(exc).__name__}") from None
    return JSONResponse({"id": message_id, "status": "queued", "to": recipient}, status_code=202)


def _check_send_gates(c: ApiContext, tenant_row: tuple[Any, ...], body: SendMessage) -> str:
    """Tenant state, recipient format and quiet hours; returns the normalised recipient."""
    status, paused, region, tenant_tz, qh_start, qh_end = tenant_row[:6]
    if status == "suspended" and not c.defect("suspension-ignored"):
        raise RejectedSend("TENANT_SUSPENDED", "the tenant is suspended", 403)
    if paused and not c.defect("kill-switch-ignored"):
        raise RejectedSend("SENDING_PAUSED", "the tenant's kill switch is on: sending is paused", 409)
    if body.channel == "sms":
        recipient = sending.to_e164(body.to, region)
    else:
        recipient = body.to.strip().lower()
        if "@" not in recipient:
            raise RejectedSend("INVALID_RECIPIENT", "not an email address", 422)
    tz = sending.zone("UTC" if c.defect("quiet-hours-server-time") else (body.timezone or tenant_tz))
    if body.timezone:
        sending.zone(body.timezone)  # an unknown zone is refused even when the defect ignores it
    wraps = qh_start is not None and qh_end is not None and qh_start > qh_end
    if c.defect("quiet-hours-no-wrap") and wraps:
        qh_end = qh_start  # the bug: a window across midnight (21 -> 9) is read as empty
    if sending.in_quiet_hours(datetime.now(UTC), tz, qh_start, qh_end):
        raise RejectedSend("QUIET_HOURS", f"quiet hours {qh_start}:00-{qh_end}:00 in {tz.key}", 422)
    return recipient


# The spend and the message are one autocommit statement: today's budget row is every send's hot row,
# and a lock held across client round trips (BEGIN, UPDATE, INSERT, COMMIT) caps the route's throughput
# at 1/(round trips) under load. Inside one statement the row lock lasts only the server's own work.
_INSERT_WITHIN_BUDGET = """
WITH spend AS (
    INSERT INTO budgets AS b (tenant_id, day, daily_spent_cents)
    SELECT t.id, current_date, %(cost)s FROM tenants t
    WHERE t.id = %(t)s AND (%(unlimited)s OR %(cost)s <= t.daily_budget_cents)
    ON CONFLICT (tenant_id, day) DO UPDATE SET daily_spent_cents = b.daily_spent_cents + EXCLUDED.daily_spent_cents
    WHERE %(unlimited)s
       OR b.daily_spent_cents + EXCLUDED.daily_spent_cents
          <= (SELECT daily_budget_cents FROM tenants WHERE id = %(t)s)
    RETURNING b.tenant_id
)
INSERT INTO messages (id, tenant_id, channel, recipient, body, cost_cents)
SELECT %(id)s::uuid, spend.tenant_id, %(channel)s, %(recipient)s, %(body)s, %(cost)s FROM spend
RETURNING id
"""


async def _insert_within_budget(
    c: ApiContext,
    conn: psycopg.AsyncConnection[Any],
    tenant_id: str,
    cost: int,
    message_id: str,
    channel: str,
    recipient: str,
    text: str,
) -> None:
    """Add ``cost`` to today's spend and insert the message atomically; 402 when it would pass the budget."""
    params = {
        "t": tenant_id,
        "cost": cost,
        "unlimited": c.defect("budget-not-enforced"),
        "id": message_id,
        "channel": channel,
        "recipient": recipient,
        "body": text,
    }
    cur = await conn.execute(_INSERT_WITHIN_BUDGET, params)
    if await cur.fetchone() is None:
        raise ApiError(402, "BUDGET_EXCEEDED", "the tenant's daily budget is spent")


async def get_message(request: Request) -> Response:
    c = ctx(request)
    message_id = parse_uuid(request.path_params["message_id"], "message")
    async with c.db.connection() as conn:
        tenant_id = await require_tenant(conn, request, None)
        cur = await conn.execute(
            "SELECT id::text, tenant_id::text, channel, recipient, status, attempts, failure_reason,"
            " provider_id, created_at, delivered_at FROM messages WHERE id = %s AND tenant_id = %s",
            (message_id, tenant_id),
        )
        row = await cur.fetchone()
    if row is None:
        raise ApiError(404, "NOT_FOUND", "no such message")
    keys = ("id", "tenant_id", "channel", "to", "status", "attempts", "failure_reason", "provider_id")
    result: dict[str, Any] = dict(zip(keys, row[:8], strict=True))
    result["created_at"] = row[8].isoformat()
    result["delivered_at"] = row[9].isoformat() if row[9] else None
    return JSONResponse(result)


async def resend_notification(request: Request) -> Response:
    """Seed 000 "manual ``PATCH /api/notifications/:id/resend``": a dead-lettered message sent again (202).

    Only a dead message: back to ``queued`` with its attempts reset, then requeued. A message already
    delivered (or still on its way) is a 409, so a resend can never deliver anything twice; an unknown id
    a 404. Committed before it is requeued: should Redis fail, the outbox sweeper re-enqueues the queued row.
    """
    c = ctx(request)
    message_id = parse_uuid(request.path_params["message_id"], "notification")
    resendable = ("dead", "delivered") if c.defect("resend-redelivers") else ("dead",)
    async with c.db.connection() as conn:
        user = await require_admin(conn, request)
        await ensure_writable(c, conn)
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT status, tenant_id::text FROM messages WHERE id = %s FOR UPDATE", (message_id,)
            )
            row = await cur.fetchone()
            if row is None:
                raise ApiError(404, "NOT_FOUND", "no such notification")
            status, tenant_id = row
            if status not in resendable:
                raise ApiError(
                    409, "NOT_DEAD_LETTERED", f"the notification is {status}: only a dead-lettered one is resent"
                )
            await conn.execute(
                "UPDATE messages SET status = 'queued', attempts = 0, failure_reason = NULL, updated_at = now(),"
                " next_attempt_at = now() WHERE id = %s",
                (message_id,),
            )
            await db.audit(
                conn,
                tenant_id=tenant_id,
                module="messaging",
                action="message.resent",
                entity_type="message",
                entity_id=message_id,
                actor=user,
                payload={"previous_status": status},
            )
    enqueued = await _requeue(c, SEND_MESSAGES, message_id, {"message_id": message_id})
    return JSONResponse({"id": message_id, "status": "queued", "enqueued": enqueued}, status_code=202)


async def _requeue(c: ApiContext, queue: str, job_id: str, data: dict[str, Any]) -> bool:
    """Requeue committed work; False when Redis refused (the outbox sweeper then re-enqueues it)."""
    try:
        await c.queues.requeue(queue, job_id, data)
    except Exception as exc:
        log.warning("requeue of %s on %s failed (%s): left to the outbox sweeper", job_id, queue, type(exc).__name__)
        return False
    return True


MESSAGE_LIST_MAX = 100


async def list_messages(request: Request) -> Response:
    """A tenant's newest messages (``?limit=N``, 1..100, default 20): for the tenant and for admins.

    Seed 002's synthetic check reads ``/pos/tickets?limit=1`` with a service-account token; this is that read here.
    """
    c = ctx(request)
    tenant_id = parse_uuid(request.path_params["tenant_id"], "tenant")
    raw = request.query_params.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= MESSAGE_LIST_MAX:
        raise ApiError(422, "VALIDATION_ERROR", f"limit: expected an integer 1..{MESSAGE_LIST_MAX}, got {raw!r}")
    async with c.db.connection() as conn:
        if not c.defect("message-list-unauthenticated"):
            if request.url.path.startswith("/v1/"):
                await require_tenant(conn, request, tenant_id)
            else:
                await require_admin(conn, request)
        cur = await conn.execute(
            "SELECT id::text, channel, recipient, status, created_at FROM messages WHERE tenant_id = %s"
            " ORDER BY created_at DESC, id LIMIT %s",
            (tenant_id, int(raw)),
        )
        rows = await cur.fetchall()
    messages = [{"id": r[0], "channel": r[1], "to": r[2], "status": r[3], "created_at": r[4].isoformat()} for r in rows]
    return JSONResponse({"tenant_id": tenant_id, "count": len(messages), "messages": messages})


async def add_dnc(request: Request) -> Response:
    c = ctx(request)
    tenant_id = parse_uuid(request.path_params["tenant_id"], "tenant")
    body = await parse_body(request, DncEntry)
    async with c.db.connection() as conn:
        await require_tenant(conn, request, tenant_id)
        await ensure_writable(c, conn)
        cur = await conn.execute("SELECT region FROM tenants WHERE id = %s", (tenant_id,))
        row = await cur.fetchone()
        assert row is not None
        try:
            phone = sending.to_e164(body.phone, row[0])
        except RejectedSend as exc:
            raise ApiError(exc.http_status, exc.code, exc.detail) from None
        await conn.execute(
            "INSERT INTO do_not_contact (tenant_id, phone_e164, source) VALUES (%s, %s, 'api') ON CONFLICT DO NOTHING",
            (tenant_id, phone),
        )
    return JSONResponse({"phone_e164": phone}, status_code=201)


# --- tenants (admin) ----------------------------------------------------------------------------


async def _set_tenant(
    c: ApiContext, request: Request, sql: str, args: tuple[Any, ...], action: str, payload: dict[str, Any]
) -> dict[str, Any]:
    tenant_id = parse_uuid(request.path_params["tenant_id"], "tenant")
    async with c.db.connection() as conn:
        user = await require_admin(conn, request)
        async with conn.transaction():
            cur = await conn.execute(sql + " WHERE id = %s RETURNING status, paused", (*args, tenant_id))
            row = await cur.fetchone()
            if row is None:
                raise ApiError(404, "NOT_FOUND", "no such tenant")
            await db.audit(
                conn,
                tenant_id=tenant_id,
                module="tenants",
                action=action,
                entity_type="tenant",
                entity_id=tenant_id,
                actor=user,
                payload=payload,
            )
    return {"id": tenant_id, "status": row[0], "paused": row[1]}


async def pause_tenant(request: Request) -> Response:
    """Kill switch on (seed 001): new sends refused, queued jobs stay queued."""
    c = ctx(request)
    return JSONResponse(await _set_tenant(c, request, "UPDATE tenants SET paused = true", (), "tenant.paused", {}))


async def resume_tenant(request: Request) -> Response:
    c = ctx(request)
    update = "UPDATE tenants SET paused = paused" if c.defect("resume-ignored") else "UPDATE tenants SET paused = false"
    return JSONResponse(await _set_tenant(c, request, update, (), "tenant.resumed", {}))


async def suspend_tenant(request: Request) -> Response:
    """Suspend (seed 000): audit event plus a notification on the monitoring webhook."""
    c = ctx(request)
    body = await parse_body(request, Suspend)
    result = await _set_tenant(
        c, request, "UPDATE tenants SET status = 'suspended'", (), "tenant.suspended", {"reason": body.reason}
    )
    await _monitoring(c).emit({"type": "tenant.suspended", "tenant_id": result["id"], "reason": body.reason})
    return JSONResponse(result)


async def activate_tenant(request: Request) -> Response:
    c = ctx(request)
    update = (
        "UPDATE tenants SET status = status"
        if c.defect("activation-not-saved")
        else ("UPDATE tenants SET status = 'active'")
    )
    result = await _set_tenant(c, request, update, (), "tenant.activated", {})
    await _monitoring(c).emit({"type": "tenant.activated", "tenant_id": result["id"]})
    return JSONResponse(result)


def _monitoring(c: ApiContext) -> MonitoringOutbox:
    assert c.monitoring is not None, "the lifespan sets the monitoring outbox"
    return c.monitoring


async def get_tenant(request: Request) -> Response:
    """A tenant's settings and sending state: for admins, and for the tenant itself (``/v1/tenants/{id}``)."""
    c = ctx(request)
    tenant_id = parse_uuid(request.path_params["tenant_id"], "tenant")
    async with c.db.connection() as conn:
        if request.url.path.startswith("/v1/"):
            await require_tenant(conn, request, tenant_id)
        else:
            await require_admin(conn, request)
        cur = await conn.execute(
            "SELECT id::text, name, status, paused, plan, region, timezone, daily_budget_cents"
            " FROM tenants WHERE id = %s",
            (tenant_id,),
        )
        row = await cur.fetchone()
    if row is None:
        raise ApiError(404, "NOT_FOUND", "no such tenant")
    keys = ("id", "name", "status", "paused", "plan", "region", "timezone", "daily_budget_cents")
    tenant = dict(zip(keys, row, strict=True))
    tenant["sending_state"] = admin_page.TenantRow(row[0], row[1], row[2], row[3]).sending_state
    return JSONResponse(tenant)


async def set_override(request: Request) -> Response:
    """An admin override of one module or feature flag (seed 002: kept through plan changes and cancellation)."""
    c = ctx(request)
    tenant_id = parse_uuid(request.path_params["tenant_id"], "tenant")
    body = await parse_body(request, Override)
    async with c.db.connection() as conn:
        user = await require_admin(conn, request)
        await ensure_writable(c, conn)
        async with conn.transaction():
            if await db.tenant_state(conn, tenant_id) is None:
                raise ApiError(404, "NOT_FOUND", "no such tenant")
            await entitlements.set_override(conn, tenant_id, body.kind, body.name, body.enabled)
            await db.audit(
                conn,
                tenant_id=tenant_id,
                module="tenants",
                action="tenant.entitlement_overridden",
                entity_type="tenant",
                entity_id=tenant_id,
                actor=user,
                payload=body.model_dump(),
            )
    return JSONResponse({"tenant_id": tenant_id, "source": "override", **body.model_dump()})


class Budget(_Body):
    daily_budget_cents: int = Field(ge=0)


async def set_budget(request: Request) -> Response:
    """Set a tenant's daily budget (cents), audited: the admin's answer to seed 001's "Budget approaching 90%"."""
    c = ctx(request)
    tenant_id = parse_uuid(request.path_params["tenant_id"], "tenant")
    body = await parse_body(request, Budget)
    async with c.db.connection() as conn:
        user = await require_admin(conn, request)
        await ensure_writable(c, conn)
        async with conn.transaction():
            cur = await conn.execute(
                "UPDATE tenants SET daily_budget_cents = %s WHERE id = %s RETURNING id",
                (body.daily_budget_cents, tenant_id),
            )
            if await cur.fetchone() is None:
                raise ApiError(404, "NOT_FOUND", "no such tenant")
            await db.audit(
                conn,
                tenant_id=tenant_id,
                module="tenants",
                action="tenant.budget_changed",
                entity_type="tenant",
                entity_id=tenant_id,
                actor=user,
                payload=body.model_dump(),
            )
    return JSONResponse({"tenant_id": tenant_id, **body.model_dump()})


async def create_tenant(request: Request) -> Response:
    """Register a tenant; its API token is returned once and stored hashed."""
    c = ctx(request)
    body = await parse_body(request, NewTenant)
    try:
        sending.zone(body.timezone)
        number = sending.to_e164(body.sending_number, body.region) if body.sending_number else None
    except RejectedSend as exc:
        raise ApiError(exc.http_status, exc.code, exc.detail) from None
    tenant_id = str(body.id or uuid.uuid4())
    token = "tok_" + uuid.uuid4().hex + uuid.uuid4().hex
    async with c.db.connection() as conn:
        user = await require_admin(conn, request)
        async with conn.transaction():
            cur = await conn.execute(
                "INSERT INTO tenants (id, name, region, timezone, quiet_hours_start, quiet_hours_end,"
                " daily_budget_cents, sms_cost_cents, email_cost_cents, api_token_sha256)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING id",
                (
                    tenant_id,
                    body.name,
                    body.region.upper(),
                    body.timezone,
                    body.quiet_hours_start,
                    body.quiet_hours_end,
                    body.daily_budget_cents,
                    body.sms_cost_cents,
                    body.email_cost_cents,
                    db.token_digest(token),
                ),
            )
            if await cur.fetchone() is None:
                raise ApiError(409, "TENANT_EXISTS", f"a tenant with id {tenant_id} already exists")
            if number:
                await conn.execute(
                    "INSERT INTO sending_numbers (phone_e164, tenant_id) VALUES (%s, %s)", (number, tenant_id)
                )
            await db.audit(
                conn,
                tenant_id=tenant_id,
                module="tenants",
                action="tenant.created",
                entity_type="tenant",
                entity_id=tenant_id,
                actor=user,
            )
    return JSONResponse({"id": tenant_id, "api_token": token, "sending_number": number}, status_code=201)


# --- backups ------------------------------------------------------------------------------------


def _backup_json(c: ApiContext) -> dict[str, Any]:
    latest = c.backups.latest() if c.backups else None
    if latest is None:
        return {"timestamp": None, "age_s": None, "file": None, "size_bytes": None}
    return {
        "timestamp": latest.timestamp,
        "age_s": round(time.time() - latest.timestamp, 3),
        "file": latest.path.name,
        "size_bytes": latest.size_bytes,
    }


async def latest_backup(request: Request) -> Response:
    """The newest backup's time and age (seed 001/002 'verify backups')."""
    c = ctx(request)
    async with c.db.connection() as conn:
        await require_admin(conn, request)
    return JSONResponse(_backup_json(c))


async def list_backups(request: Request) -> Response:
    """Every backup kept, oldest first, with the schedule (interval, retention); ``?newer_than=FILE`` keeps only
    those taken after that backup (seed 001 "Verify Backup: ls -lh /backups/")."""
    c = ctx(request)
    async with c.db.connection() as conn:
        await require_admin(conn, request)
    if c.backups is None:
        raise ApiError(409, "BACKUPS_DISABLED", "no BACKUP_DIR configured")
    kept = c.backups.listing()
    after = request.query_params.get("newer_than")
    if after:
        kept = [b for b in kept if b.path.name > after]
    return JSONResponse(
        {
            "interval_s": c.backups.interval_s,
            "retain": RETAIN,
            "count": len(kept),
            "newest": kept[-1].path.name if kept else None,
            "backups": [{"file": b.path.name, "timestamp": b.timestamp, "size_bytes": b.size_bytes} for b in kept],
        }
    )


async def force_backup(request: Request) -> Response:
    c = ctx(request)
    async with c.db.connection() as conn:
        await require_admin(conn, request)
    if c.backups is None:
        raise ApiError(409, "BACKUPS_DISABLED", "no BACKUP_DIR configured")
    if "force-backup-noop" in c.settings.defects and c.backups.latest() is not None:
        return JSONResponse(_backup_json(c), status_code=201)  # answers as if it had dumped
    try:
        await c.backups.backup_now()
    except RuntimeError as exc:
        raise ApiError(500, "BACKUP_FAILED", str(exc)) from None
    return JSONResponse(_backup_json(c), status_code=201)


# --- webhook secret rotation --------------------------------------------------------------------


async def webhook_secrets(c: ApiContext, conn: psycopg.AsyncConnection[Any]) -> tuple[str, list[str]]:
    """Which billing webhook secret is active (``configured`` or ``next``) and the secrets that verify a signature.

    After a rotation only the next secret verifies, unless the rotation-keeps-old-secret defect is planted.
    """
    active = "next" if await db.get_setting(conn, WEBHOOK_SECRET_KEY, "configured") == "next" else "configured"
    next_secret = c.settings.billing_webhook_secret_next
    if active == "configured" or not next_secret:
        return "configured", [c.settings.billing_webhook_secret]
    if c.defect("rotation-keeps-old-secret"):
        return active, [next_secret, c.settings.billing_webhook_secret]
    return active, [next_secret]


def _fingerprint(secret: str) -> str:
    """A secret's public fingerprint: the first 12 hex digits of its SHA-256 (never the secret itself)."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def _secret_json(c: ApiContext, active: str) -> dict[str, Any]:
    secret = c.settings.billing_webhook_secret_next if active == "next" else c.settings.billing_webhook_secret
    return {
        "active": active,
        "fingerprint": _fingerprint(secret or ""),
        "next_configured": bool(c.settings.billing_webhook_secret_next),
    }


async def get_webhook_secret(request: Request) -> Response:
    """Which billing webhook secret is active, as a fingerprint."""
    c = ctx(request)
    async with c.db.connection() as conn:
        await require_admin(conn, request)
        active, _ = await webhook_secrets(c, conn)
    return JSONResponse(_secret_json(c, active))


async def rotate_webhook_secret(request: Request) -> Response:
    """PUT switches to the configured next secret (``BILLING_WEBHOOK_SECRET_NEXT``); DELETE rolls back (seed 002)."""
    c = ctx(request)
    rotate = request.method == "PUT"
    async with c.db.connection() as conn:
        user = await require_admin(conn, request)
        if rotate and not c.settings.billing_webhook_secret_next:
            raise ApiError(409, "NO_NEXT_SECRET", "BILLING_WEBHOOK_SECRET_NEXT is not configured: nothing to rotate to")
        active = "next" if rotate else "configured"
        async with conn.transaction():
            await db.set_setting(conn, WEBHOOK_SECRET_KEY, active)
            await db.audit(
                conn,
                tenant_id=None,
                module="billing",
                action="webhook_secret.rotated" if rotate else "webhook_secret.rolled_back",
                entity_type="setting",
                entity_id=WEBHOOK_SECRET_KEY,
                actor=user,
            )
    return JSONResponse(_secret_json(c, active))


# --- webhooks -----------------------------------------------------------------------------------


async def billing_webhook(request: Request) -> Response:
    """Signed billing webhook (active secret): stored as pending, then enqueued; idempotent by event id (seed 002)."""
    c = ctx(request)
    raw = await request.body()
    async with c.db.connection() as conn:
        _, secrets = await webhook_secrets(c, conn)
        signature = request.headers.get("x-sandbox-signature")
        if not c.defect("webhook-signature-unchecked") and not any(signing.verify(s, raw, signature) for s in secrets):
            raise ApiError(401, "INVALID_SIGNATURE", "x-sandbox-signature does not match the body")
        try:
            event = BillingEvent.model_validate_json(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ApiError(422, "INVALID_REQUEST", f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
        await ensure_writable(c, conn)
        cur = await conn.execute(
            "INSERT INTO billing_webhook_events (id, event_id, event_type, payload) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (event_id) DO NOTHING RETURNING id",
            (str(uuid.uuid4()), event.id, event.type, Jsonb(json.loads(raw))),
        )
        inserted = await cur.fetchone() is not None
        c.metrics.billing_webhook.labels("received").inc()
        job_id = event.id
        if not inserted:
            if not c.defect("duplicate-webhook-processed"):
                return JSONResponse({"event_id": event.id, "status": "duplicate"}, status_code=200)
            job_id = f"{event.id}:{uuid.uuid4().hex}"
            await conn.execute("UPDATE billing_webhook_events SET status = 'pending' WHERE event_id = %s", (event.id,))
        try:
            await c.queues.enqueue(BILLING_WEBHOOKS, job_id, {"event_id": event.id})
        except Exception as exc:
            if inserted:
                await conn.execute("DELETE FROM billing_webhook_events WHERE event_id = %s", (event.id,))
            raise ApiError(503, "QUEUE_UNAVAILABLE", f"Redis: {type(exc).__name__}") from None
    return JSONResponse({"event_id": event.id, "status": "pending"}, status_code=202)


async def billing_event_status(request: Request) -> Response:
    """Where a billing webhook is: pending, processed or failed (seed 002 "inspect billing_webhook_events")."""
    c = ctx(request)
    async with c.db.connection() as conn:
        await require_admin(conn, request)
        cur = await conn.execute(
            "SELECT event_id, event_type, status, attempts, last_error, received_at, processed_at"
            " FROM billing_webhook_events WHERE event_id = %s",
            (request.path_params["event_id"],),
        )
        row = await cur.fetchone()
    if row is None:
        raise ApiError(404, "NOT_FOUND", "no such billing event")
    keys = ("event_id", "type", "status", "attempts", "last_error")
    body: dict[str, Any] = dict(zip(keys, row[:5], strict=True))
    body["received_at"] = row[5].isoformat()
    body["processed_at"] = row[6].isoformat() if row[6] else None
    return JSONResponse(body)


async def retry_outbox_event(request: Request) -> Response:
    """Seed 002 "trigger via admin endpoint ``/ops/outbox/{id}/retry``": replay a failed billing event (202).

    As the runbook's manual replay: ``status`` back to ``'pending'``, ``last_error`` cleared, requeued with the
    event id as the job id. Only a failed event: a processed one is a 409 (never applied twice), one still
    pending a 409 too (it is on its way), an unknown event id a 404.
    """
    c = ctx(request)
    event_id = request.path_params["event_id"]
    retryable = ("failed", "processed") if c.defect("replay-reapplies-processed") else ("failed",)
    async with c.db.connection() as conn:
        user = await require_admin(conn, request)
        await ensure_writable(c, conn)
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT status, last_error FROM billing_webhook_events WHERE event_id = %s FOR UPDATE", (event_id,)
            )
            row = await cur.fetchone()
            if row is None:
                raise ApiError(404, "NOT_FOUND", "no such billing event")
            status, last_error = row
            if status not in retryable:
                raise ApiError(409, "NOT_FAILED", f"the billing event is {status}: only a failed one is replayed")
            await conn.execute(
                "UPDATE billing_webhook_events SET status = 'pending', last_error = NULL, next_attempt_at = now()"
                " WHERE event_id = %s",
                (event_id,),
            )
            # Its own entity type: the worker's one audit row per applied event stays the reconciliation's count.
            await db.audit(
                conn,
                tenant_id=None,
                module="ops",
                action="outbox.retried",
                entity_type="billing_webhook_replay",
                entity_id=event_id,
                actor=user,
                payload={"previous_status": status, "last_error": last_error},
            )
    enqueued = await _requeue(c, BILLING_WEBHOOKS, event_id, {"event_id": event_id})
    return JSONResponse({"event_id": event_id, "status": "pending", "enqueued": enqueued}, status_code=202)


async def inbound_reply(request: Request) -> Response:
    """A recipient's reply relayed by the provider; STOP adds the sender to do-not-contact (seed 001)."""
    c = ctx(request)
    raw = await request.body()
    signature = request.headers.get("x-provider-signature")
    if not c.defect("webhook-signature-unchecked") and not signing.verify(
        c.settings.provider_webhook_secret, raw, signature
    ):
        raise ApiError(401, "INVALID_SIGNATURE", "x-provider-signature does not match the body")
    try:
        reply = InboundReply.model_validate_json(raw)
    except ValidationError as exc:
        raise ApiError(422, "INVALID_REQUEST", str(exc.errors()[0]["msg"])) from None
    async with c.db.connection() as conn:
        await ensure_writable(c, conn)
        cur = await conn.execute(
            "SELECT t.id::text, t.region FROM sending_numbers n JOIN tenants t ON t.id = n.tenant_id"
            " WHERE n.phone_e164 = %s",
            (reply.to,),
        )
        row = await cur.fetchone()
        if row is None:
            raise ApiError(404, "UNKNOWN_NUMBER", "the receiving number is not mapped to a tenant")
        tenant_id, region = row
        if not sending.is_stop_reply(reply.body):
            return JSONResponse({"tenant_id": tenant_id, "action": "ignored"})
        try:
            phone = sending.to_e164(reply.from_, region)
        except RejectedSend as exc:
            raise ApiError(exc.http_status, exc.code, exc.detail) from None
        async with conn.transaction():
            if c.defect("stop-not-added-to-dnc"):
                added = True  # audited and counted as an opt-out, but the do-not-contact row is never written
            else:
                cur = await conn.execute(
                    "INSERT INTO do_not_contact (tenant_id, phone_e164, source) VALUES (%s, %s, 'inbound-stop')"
                    " ON CONFLICT DO NOTHING RETURNING phone_e164",
                    (tenant_id, phone),
                )
                added = await cur.fetchone() is not None
            if added:
                await db.audit(
                    conn,
                    tenant_id=tenant_id,
                    module="messaging",
                    action="contact.opted_out",
                    entity_type="phone",
                    entity_id=phone,
                    actor="provider",
                )
    if added:
        c.metrics.optouts.labels(tenant_id).inc()
    return JSONResponse({"tenant_id": tenant_id, "action": "opted_out", "phone_e164": phone})


# --- admin page ---------------------------------------------------------------------------------


async def admin_home(request: Request) -> Response:
    """The server-rendered admin page: tenants with their sending state, queue depths, kill switch."""
    c = ctx(request)
    async with c.db.connection() as conn:
        if await session_user(conn, request) is None:
            return RedirectResponse("/admin/login", status_code=303)
        cur = await conn.execute("SELECT id::text, name, status, paused FROM tenants ORDER BY created_at, name")
        tenants = [admin_page.TenantRow(*row) for row in await cur.fetchall()]
        maintenance = bool(await db.get_setting(conn, MAINTENANCE_KEY, False))
    try:
        counts = await c.queues.counts()
    except Exception:
        counts = {name: {} for name in QUEUE_NAMES}
    return HTMLResponse(admin_page.render_home(tenants, counts, maintenance))


async def admin_login_form(request: Request) -> Response:
    # The admin-login-form-broken defect: the form still posts to the route's old name, which answers 404.
    action = "/admin/signin" if ctx(request).defect("admin-login-form-broken") else "/admin/login"
    return HTMLResponse(admin_page.render_login(error=None, action=action))


async def admin_login_submit(request: Request) -> Response:
    c = ctx(request)
    # A urlencoded login form is two fields: parse it without pulling in a multipart parser.
    form = parse_qs((await request.body()).decode(errors="replace"))
    username, password = form.get("username", [""])[0], form.get("password", [""])[0]
    if username != c.settings.service_user or not password_matches(c.settings.service_password, password):
        return HTMLResponse(admin_page.render_login(error="Wrong username or password."), status_code=401)
    async with c.db.connection() as conn:
        token = await create_session(conn, username)
    response = RedirectResponse("/admin", status_code=303)
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_TTL_S, httponly=True, samesite="strict")
    return response


async def admin_logout(request: Request) -> Response:
    """The admin page's "Log out": ends the session and goes back to the login form."""
    c = ctx(request)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        async with c.db.connection() as conn:
            await delete_session(conn, token)
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


async def admin_kill_switch(request: Request) -> Response:
    """Form target of "Settings → Kill Switch → Pause Sending" (and Resume)."""
    c = ctx(request)
    action = request.path_params["action"]
    if action not in ("pause", "resume"):
        raise ApiError(404, "NOT_FOUND", f"no admin action {action!r}: pause or resume")
    paused = action == "pause"
    await _set_tenant(
        c,
        request,
        "UPDATE tenants SET paused = %s",
        (paused,),
        "tenant.paused" if paused else "tenant.resumed",
        {"via": "admin-ui"},
    )
    return RedirectResponse("/admin", status_code=303)


# --- app ----------------------------------------------------------------------------------------


def create_app(settings: PlatformSettings) -> Starlette:
    """The api as an ASGI app; the lifespan migrates, seeds and starts the sweeper and backups."""
    metrics = PlatformMetrics("api", queue_gauges="queue-gauge-missing" not in settings.defects)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = make_pool(settings.database_url)
        await open_pool(pool)
        database = Database(pool, metrics)
        backups = scheduler_for(settings, metrics)
        async with database.connection(timeout_s=10.0) as conn:
            applied = await db.migrate(
                conn,
                backup=None
                if backups is None or "migration-without-backup" in settings.defects
                else backups.backup_now,
                skip_newest="migration-skipped" in settings.defects,
            )
            await db.seed_tenants(conn, settings.tenant_tokens)
        if applied:
            log.info("migrations applied: %s", ", ".join(applied))
        queues = Queues(fast_redis(settings.redis_url))
        http = httpx.AsyncClient()
        context = ApiContext(settings, metrics, database, queues, http)
        sweeper = OutboxSweeper(
            database,
            queues,
            metrics,
            deadline_s=settings.outbox_deadline_s,
            interval_s=settings.sweep_interval_s,
        )
        if "outbox-sweeper-off" not in settings.defects:
            context.tasks.append(asyncio.create_task(sweeper.run(), name="outbox-sweeper"))
        context.monitoring = MonitoringOutbox(
            database,
            http,
            settings.monitoring_webhook_url,
            metrics,
            relay_interval_s=settings.monitoring_relay_interval_s,
            max_backoff_s=settings.monitoring_max_backoff_s,
            defects=settings.defects.names,
        )
        if "monitoring-relay-off" not in settings.defects:
            context.tasks.append(asyncio.create_task(context.monitoring.run(), name="monitoring-relay"))
        if backups is not None:
            context.backups = backups
            context.tasks.append(asyncio.create_task(backups.run(), name="backups"))
        app.state.ctx = context
        try:
            yield
        finally:
            for task in context.tasks:
                task.cancel()
            await asyncio.gather(*context.tasks, return_exceptions=True)
            await context.monitoring.close()
            await http.aclose()
            await queues.close()
            await pool.close()

    routes = [
        Route("/health", health),
        Route("/healthz", health),
        Route("/readyz", readyz),
        Route("/api/health/db", health_db),
        Route("/api/health/redis", health_redis),
        Route("/metrics", metrics_endpoint),
        timings_route(metrics.request_timings),
        Route("/auth/login", login, methods=["POST"]),
        Route("/auth/logout", logout, methods=["POST"]),
        Route("/v1/tenants/{tenant_id}/messages", send_message, methods=["POST"]),
        Route("/v1/tenants/{tenant_id}/messages", list_messages, methods=["GET"]),
        Route("/tenants/{tenant_id}/messages", list_messages, methods=["GET"]),
        Route("/v1/tenants/{tenant_id}/do-not-contact", add_dnc, methods=["POST"]),
        Route("/v1/messages/{message_id}", get_message),
        Route("/api/notifications/{message_id}/resend", resend_notification, methods=["PATCH"]),
        Route("/v1/tenants/{tenant_id}", get_tenant),
        Route("/tenants/{tenant_id}", get_tenant),
        Route("/tenants/{tenant_id}/pause", pause_tenant, methods=["POST"]),
        Route("/tenants/{tenant_id}/resume", resume_tenant, methods=["POST"]),
        Route("/tenants/{tenant_id}/suspend", suspend_tenant, methods=["PATCH"]),
        Route("/tenants/{tenant_id}/activate", activate_tenant, methods=["PATCH"]),
        Route("/admin", admin_home),
        Route("/admin/login", admin_login_form, methods=["GET"]),
        Route("/admin/login", admin_login_submit, methods=["POST"]),
        Route("/admin/logout", admin_logout, methods=["POST"]),
        Route("/admin/tenants", create_tenant, methods=["POST"]),
        Route("/admin/tenants/{tenant_id}/overrides", set_override, methods=["PUT"]),
        Route("/admin/tenants/{tenant_id}/budget", set_budget, methods=["PUT"]),
        Route("/admin/tenants/{tenant_id}/{action:str}", admin_kill_switch, methods=["POST"]),
        Route("/admin/maintenance", get_maintenance, methods=["GET"]),
        Route("/admin/maintenance", put_maintenance, methods=["PUT"]),
        Route("/admin/kill-switch", get_kill_switch, methods=["GET"]),
        Route("/admin/kill-switch", put_kill_switch, methods=["PUT"]),
        Route("/admin/backups", force_backup, methods=["POST"]),
        Route("/admin/secrets/billing-webhook", get_webhook_secret, methods=["GET"]),
        Route("/admin/secrets/billing-webhook", rotate_webhook_secret, methods=["PUT", "DELETE"]),
        Route("/backups", list_backups),
        Route("/backups/latest", latest_backup),
        Route("/billing/webhooks/sandbox", billing_webhook, methods=["POST"]),
        Route("/billing/webhooks/events/{event_id}", billing_event_status),
        Route("/ops/outbox/{event_id}/retry", retry_outbox_event, methods=["POST"]),
        Route("/webhooks/provider/inbound", inbound_reply, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={ApiError: handle_api_error})
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return app


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m opsgate.reference.api --host 127.0.0.1 --port N``."""
    import uvicorn

    settings, host, port = process_start("opsgate.reference.api", argv)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=False)


if __name__ == "__main__":
    main()
