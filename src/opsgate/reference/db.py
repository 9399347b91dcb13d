"""PostgreSQL access for the platform: migrations, the seeded tenants, small shared queries."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

MIGRATION_LOCK_ID = 740_221_001
GLOBAL_KILL_SWITCH_KEY = "sending.kill_switch_all"
"""Seed 001 "Suspected Breach": the kill switch that stops all sending, every tenant (api and worker read it)."""

DEMO_TENANTS: tuple[dict[str, Any], ...] = (
    # Seed 001 uses this id in its kill-switch examples.
    {
        "id": "00000000-0000-0000-0000-000000000001",
        "name": "acme",
        "region": "AU",
        "timezone": "Australia/Sydney",
        # No quiet hours on the demo tenant: synthetic checks send through it at any hour.
        "quiet_hours_start": None,
        "quiet_hours_end": None,
        "sending_number": "+61400000001",
    },
    {
        "id": "00000000-0000-0000-0000-000000000002",
        "name": "globex",
        "region": "US",
        "timezone": "America/New_York",
        "quiet_hours_start": None,
        "quiet_hours_end": None,
        "sending_number": "+12025550100",
    },
)


def token_digest(token: str) -> str:
    """The stored form of an API or session token (sha256 hex); tokens are never stored in clear."""
    return hashlib.sha256(token.encode()).hexdigest()


def _migration_files() -> list[tuple[str, str]]:
    folder = resources.files("opsgate.reference") / "migrations"
    files = sorted((p.name, p.read_text()) for p in folder.iterdir() if p.name.endswith(".sql"))
    return files


async def _pending(conn: psycopg.AsyncConnection[Any], files: list[tuple[str, str]]) -> list[tuple[str, str]]:
    cur = await conn.execute("SELECT name FROM schema_migrations")
    done = {row[0] for row in await cur.fetchall()}
    return [(name, sql) for name, sql in files if name not in done]


async def migrate(
    conn: psycopg.AsyncConnection[Any],
    *,
    backup: Callable[[], Awaitable[Any]] | None = None,
    skip_newest: bool = False,
) -> list[str]:
    """Apply pending SQL migrations under an advisory lock; returns the names applied.

    Seed 003: "**ALWAYS backup before migrations!**" -- when any is pending, ``backup()`` (a ``BackupInfo`` with
    ``path`` and ``timestamp``, unix s) runs first and each migration records the backup taken before it. Without
    ``backup`` they are applied with none recorded. ``skip_newest`` is the ``migration-skipped`` defect.
    """
    files = _migration_files()[:-1] if skip_newest else _migration_files()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz"
            " NOT NULL DEFAULT now())"
        )
        await conn.execute(
            "ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS backup_file text,"
            " ADD COLUMN IF NOT EXISTS backed_up_at timestamptz"
        )
        pending = await _pending(conn, files)
    taken = await backup() if pending and backup is not None else None
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        for name, sql in await _pending(conn, files):  # another process may have applied them meanwhile
            await conn.execute(sql.encode())
            await conn.execute(
                "INSERT INTO schema_migrations (name, backup_file, backed_up_at) VALUES (%s, %s, to_timestamp(%s))",
                (name, taken.path.name if taken else None, taken.timestamp if taken else None),
            )
            applied.append(name)
    return applied


async def seed_tenants(conn: psycopg.AsyncConnection[Any], tokens: dict[str, str]) -> None:
    """Insert the demo tenants (idempotent) and set the API token of each tenant listed in ``tokens``."""
    async with conn.transaction():
        for tenant in DEMO_TENANTS:
            await conn.execute(
                "INSERT INTO tenants (id, name, region, timezone, quiet_hours_start, quiet_hours_end)"
                " VALUES (%(id)s, %(name)s, %(region)s, %(timezone)s, %(quiet_hours_start)s,"
                " %(quiet_hours_end)s) ON CONFLICT (id) DO NOTHING",
                tenant,
            )
            await conn.execute(
                "INSERT INTO sending_numbers (phone_e164, tenant_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (tenant["sending_number"], tenant["id"]),
            )
        for tenant_id, token in tokens.items():
            await conn.execute(
                "UPDATE tenants SET api_token_sha256 = %s WHERE id = %s", (token_digest(token), tenant_id)
            )


async def audit(
    conn: psycopg.AsyncConnection[Any],
    *,
    tenant_id: str | None,
    module: str,
    action: str,
    entity_type: str,
    entity_id: str,
    actor: str,
    payload: dict[str, Any] | None = None,
) -> None:
    """Append one audit event (in the caller's transaction)."""
    await conn.execute(
        "INSERT INTO audit_events (tenant_id, module, action, entity_type, entity_id, actor, payload)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (tenant_id, module, action, entity_type, entity_id, actor, Jsonb(payload or {})),
    )


@dataclass(frozen=True)
class TenantState:
    """What a send needs to know about a tenant."""

    id: str
    status: str
    paused: bool


async def tenant_state(conn: psycopg.AsyncConnection[Any], tenant_id: str) -> TenantState | None:
    """Read a tenant's sending state, or None when it does not exist."""
    cur = await conn.execute("SELECT id::text, status, paused FROM tenants WHERE id = %s", (tenant_id,))
    row = await cur.fetchone()
    return TenantState(*row) if row else None


async def get_setting(conn: psycopg.AsyncConnection[Any], key: str, default: Any) -> Any:
    """Read one JSON setting (e.g. maintenance mode)."""
    cur = await conn.execute("SELECT value FROM settings WHERE key = %s", (key,))
    row = await cur.fetchone()
    return row[0] if row else default


async def set_setting(conn: psycopg.AsyncConnection[Any], key: str, value: Any) -> None:
    """Write one JSON setting."""
    await conn.execute(
        "INSERT INTO settings (key, value) VALUES (%s, %s)"
        " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
        (key, Jsonb(value)),
    )


OPTOUT_WINDOW = 100
"""Seed 001's "rolling 100 messages": the opt-out rate is judged over each tenant's newest 100 delivered SMS."""


@dataclass(frozen=True)
class OptOutWindow:
    """A tenant's rolling window: how many SMS it holds (at most ``OPTOUT_WINDOW``), how many recipients opted out."""

    tenant_id: str
    messages: int
    optouts: int


async def optout_windows(conn: psycopg.AsyncConnection[Any], size: int = OPTOUT_WINDOW) -> list[OptOutWindow]:
    """Per tenant: its newest ``size`` delivered SMS, and the recipients among them who replied STOP after one."""
    cur = await conn.execute(
        "SELECT t.id::text, count(w.recipient), count(DISTINCT w.recipient) FILTER (WHERE w.opted_out)"
        " FROM tenants t LEFT JOIN LATERAL ("
        "   SELECT m.recipient, EXISTS (SELECT 1 FROM do_not_contact d WHERE d.tenant_id = m.tenant_id"
        "     AND d.phone_e164 = m.recipient AND d.source = 'inbound-stop' AND d.created_at >= m.created_at)"
        "     AS opted_out"
        "   FROM messages m WHERE m.tenant_id = t.id AND m.channel = 'sms' AND m.status = 'delivered'"
        "   ORDER BY m.created_at DESC LIMIT %s) w ON true"
        " GROUP BY t.id",
        (size,),
    )
    return [OptOutWindow(tenant, int(messages), int(optouts)) for tenant, messages, optouts in await cur.fetchall()]
