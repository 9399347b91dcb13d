"""PostgreSQL access for the platform: migrations, the seeded tenants, small shared queries."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

MIGRATION_LOCK_ID = 740_221_001

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


async def migrate(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    """Apply pending SQL migrations under an advisory lock; returns the names applied."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz"
            " NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT name FROM schema_migrations")
        done = {row[0] for row in await cur.fetchall()}
        for name, sql in _migration_files():
            if name in done:
                continue
            await conn.execute(sql.encode())
            await conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
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
