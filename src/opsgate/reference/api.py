"""The reference platform's api: messaging, kill switch, tenants, billing webhooks, health, metrics.

Run with ``python -m opsgate.reference.api --port N``; settings come from the environment
(:mod:`opsgate.reference.settings`).
"""

from __future__ import annotations

import asyncio
import contextlib
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

from opsgate.reference import admin_page, db, sending, signing
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
from opsgate.reference.backups import BackupScheduler
from opsgate.reference.database import Database, make_pool
from opsgate.reference.errors import ApiError, handle_api_error
from opsgate.reference.metrics import PlatformMetrics, RequestMetricsMiddleware, timings_route
from opsgate.reference.monitoring import post_event
from opsgate.reference.outbox import OutboxSweeper
from opsgate.reference.queues import BILLING_WEBHOOKS, QUEUE_NAMES, SEND_MESSAGES, Queues, fast_redis
from opsgate.reference.sending import RejectedSend
from opsgate.reference.settings import PlatformSettings, process_start

log = logging.getLogger("opsgate.reference.api")
MAINTENANCE_KEY = "support.maintenance_mode"  # seed 002's feature flag name
SLOW_ROUTE_DELAY_S = 1.5  # the slow-messages-route defect: 3x the 500 ms SLO (seed 001)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SendMessage(_Body):
    channel: Literal["sms", "email"]
    to: str = Field(min_length=3, max_length=320)
    body: str = Field(min_length=1, max_length=1600)
    timezone: str | None = None  # the contact's time zone; the tenant's when absent


class NewTenant(_Body):
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
    failing = [name for name in ("postgres", "redis") if name in checks and not checks[name]["ok"]]
    body: dict[str, Any] = {"ready": not failing, "checks": checks}
    if failing:
        body["failing"] = failing
    return JSONResponse(body, status_code=503 if failing else 200)


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


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus exposition; queue, heartbeat and pool gauges are read at scrape time."""
    c = ctx(request)
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
    return Response(c.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


# --- maintenance --------------------------------------------------------------------------------


async def ensure_writable(c: ApiContext, conn: psycopg.AsyncConnection[Any]) -> None:
    """Reject a write with 503 ``MAINTENANCE`` while maintenance mode is on (seed 002)."""
    if c.defect("maintenance-allows-writes"):
        return
    if await db.get_setting(conn, MAINTENANCE_KEY, False):
        raise ApiError(503, "MAINTENANCE", "maintenance mode is on: writes are rejected, reads are served")


async def get_maintenance(request: Request) -> Response:
    c = ctx(request)
    async with c.db.connection() as conn:
        await require_admin(conn, request)
        enabled = bool(await db.get_setting(conn, MAINTENANCE_KEY, False))
    return JSONResponse({"enabled": enabled})


async def put_maintenance(request: Request) -> Response:
    c = ctx(request)
    body = await parse_body(request, Maintenance)
    async with c.db.connection() as conn:
        user = await require_admin(conn, request)
        async with conn.transaction():
            await db.set_setting(conn, MAINTENANCE_KEY, body.enabled)
            await db.audit(
                conn,
                tenant_id=None,
                module="support",
                action="maintenance.enabled" if body.enabled else "maintenance.disabled",
                entity_type="setting",
                entity_id=MAINTENANCE_KEY,
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
            if body.channel == "sms":
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
    if status == "suspended":
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
    return JSONResponse(await _set_tenant(c, request, "UPDATE tenants SET paused = false", (), "tenant.resumed", {}))


async def suspend_tenant(request: Request) -> Response:
    """Suspend (seed 000): audit event plus a notification on the monitoring webhook."""
    c = ctx(request)
    body = await parse_body(request, Suspend)
    result = await _set_tenant(
        c, request, "UPDATE tenants SET status = 'suspended'", (), "tenant.suspended", {"reason": body.reason}
    )
    await post_event(
        c.http,
        c.settings.monitoring_webhook_url,
        c.metrics,
        {"type": "tenant.suspended", "tenant_id": result["id"], "reason": body.reason},
    )
    return JSONResponse(result)


async def activate_tenant(request: Request) -> Response:
    c = ctx(request)
    result = await _set_tenant(c, request, "UPDATE tenants SET status = 'active'", (), "tenant.activated", {})
    await post_event(
        c.http,
        c.settings.monitoring_webhook_url,
        c.metrics,
        {"type": "tenant.activated", "tenant_id": result["id"]},
    )
    return JSONResponse(result)


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


async def create_tenant(request: Request) -> Response:
    """Register a tenant; its API token is returned once and stored hashed."""
    c = ctx(request)
    body = await parse_body(request, NewTenant)
    try:
        sending.zone(body.timezone)
        number = sending.to_e164(body.sending_number, body.region) if body.sending_number else None
    except RejectedSend as exc:
        raise ApiError(exc.http_status, exc.code, exc.detail) from None
    tenant_id = str(uuid.uuid4())
    token = "tok_" + uuid.uuid4().hex + uuid.uuid4().hex
    async with c.db.connection() as conn:
        user = await require_admin(conn, request)
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO tenants (id, name, region, timezone, quiet_hours_start, quiet_hours_end,"
                " daily_budget_cents, sms_cost_cents, email_cost_cents, api_token_sha256)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
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


async def force_backup(request: Request) -> Response:
    c = ctx(request)
    async with c.db.connection() as conn:
        await require_admin(conn, request)
    if c.backups is None:
        raise ApiError(409, "BACKUPS_DISABLED", "no BACKUP_DIR configured")
    try:
        await c.backups.backup_now()
    except RuntimeError as exc:
        raise ApiError(500, "BACKUP_FAILED", str(exc)) from None
    return JSONResponse(_backup_json(c), status_code=201)


# --- webhooks -----------------------------------------------------------------------------------


async def billing_webhook(request: Request) -> Response:
    """Signed billing webhook: stored as pending, then enqueued; idempotent by event id (seed 002)."""
    c = ctx(request)
    raw = await request.body()
    if not c.defect("webhook-signature-unchecked") and not signing.verify(
        c.settings.billing_webhook_secret, raw, request.headers.get("x-sandbox-signature")
    ):
        raise ApiError(401, "INVALID_SIGNATURE", "x-sandbox-signature does not match the body")
    try:
        event = BillingEvent.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ApiError(422, "INVALID_REQUEST", f"{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    async with c.db.connection() as conn:
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


async def inbound_reply(request: Request) -> Response:
    """A recipient's reply relayed by the provider; STOP adds the sender to do-not-contact (seed 001)."""
    c = ctx(request)
    raw = await request.body()
    if not signing.verify(c.settings.provider_webhook_secret, raw, request.headers.get("x-provider-signature")):
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
    return HTMLResponse(admin_page.render_login(error=None))


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
        await pool.open(wait=True, timeout=30.0)
        database = Database(pool, metrics)
        async with database.connection(timeout_s=10.0) as conn:
            applied = await db.migrate(conn)
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
        if settings.backup_dir is not None:
            excluded = ("audit_events",) if "backup-omits-table" in settings.defects else ()
            context.backups = BackupScheduler(
                settings.database_url,
                settings.backup_dir,
                settings.effective_backup_interval_s,
                metrics,
                exclude_tables=excluded,
            )
            context.tasks.append(asyncio.create_task(context.backups.run(), name="backups"))
        app.state.ctx = context
        try:
            yield
        finally:
            for task in context.tasks:
                task.cancel()
            await asyncio.gather(*context.tasks, return_exceptions=True)
            await http.aclose()
            await queues.close()
            await pool.close()

    routes = [
        Route("/health", health),
        Route("/healthz", health),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
        timings_route(metrics.request_timings),
        Route("/auth/login", login, methods=["POST"]),
        Route("/auth/logout", logout, methods=["POST"]),
        Route("/v1/tenants/{tenant_id}/messages", send_message, methods=["POST"]),
        Route("/v1/tenants/{tenant_id}/do-not-contact", add_dnc, methods=["POST"]),
        Route("/v1/messages/{message_id}", get_message),
        Route("/v1/tenants/{tenant_id}", get_tenant),
        Route("/tenants/{tenant_id}", get_tenant),
        Route("/tenants/{tenant_id}/pause", pause_tenant, methods=["POST"]),
        Route("/tenants/{tenant_id}/resume", resume_tenant, methods=["POST"]),
        Route("/tenants/{tenant_id}/suspend", suspend_tenant, methods=["PATCH"]),
        Route("/tenants/{tenant_id}/activate", activate_tenant, methods=["PATCH"]),
        Route("/admin", admin_home),
        Route("/admin/login", admin_login_form, methods=["GET"]),
        Route("/admin/login", admin_login_submit, methods=["POST"]),
        Route("/admin/tenants", create_tenant, methods=["POST"]),
        Route("/admin/tenants/{tenant_id}/{action:str}", admin_kill_switch, methods=["POST"]),
        Route("/admin/maintenance", get_maintenance, methods=["GET"]),
        Route("/admin/maintenance", put_maintenance, methods=["PUT"]),
        Route("/admin/backups", force_backup, methods=["POST"]),
        Route("/backups/latest", latest_backup),
        Route("/billing/webhooks/sandbox", billing_webhook, methods=["POST"]),
        Route("/billing/webhooks/events/{event_id}", billing_event_status),
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
