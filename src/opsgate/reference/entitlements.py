"""Plans and tenant entitlements (seed 002 "Billing Plan Entitlement Drills").

A tenant's modules and feature flags live in ``tenant_modules`` / ``tenant_feature_flags``, each row
with a ``source``: ``'plan'`` rows follow the tenant's subscription (replaced on a plan change, removed
on cancellation), ``'override'`` rows are set by an admin and survive both. Every function works in the
caller's transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

import psycopg

Kind = Literal["module", "feature_flag"]
TABLES: dict[Kind, tuple[str, str]] = {
    "module": ("tenant_modules", "module"),
    "feature_flag": ("tenant_feature_flags", "flag"),
}
"""Per kind of entitlement: its table and the column naming it."""


class UnknownPlan(LookupError):
    """A billing event names a plan the platform does not have."""


@dataclass(frozen=True)
class Plan:
    """One plan: its id, code (``core``/``pro``/``enterprise``) and what it entitles a tenant to."""

    id: str
    code: str
    modules: tuple[str, ...]
    feature_flags: tuple[str, ...]


async def find_plan(conn: psycopg.AsyncConnection[Any], ref: str) -> Plan:
    """The plan whose id (a uuid, as seed 002's ``planId``) or code (``pro``) is ``ref``; raises UnknownPlan."""
    try:
        by_id: str | None = str(uuid.UUID(ref))
    except ValueError:
        by_id = None
    cur = await conn.execute(
        "SELECT id::text, code, entitlements FROM plans WHERE id = %s::uuid OR code = lower(%s)", (by_id, ref)
    )
    row = await cur.fetchone()
    if row is None:
        raise UnknownPlan(f"unknown plan {ref!r}")
    entitlements = row[2]
    return Plan(row[0], row[1], tuple(entitlements.get("modules", ())), tuple(entitlements.get("feature_flags", ())))


async def apply_plan(conn: psycopg.AsyncConnection[Any], tenant_id: str, plan: Plan, *, keep_old: bool = False) -> None:
    """Replace the tenant's plan-sourced modules and flags with ``plan``'s; overrides are not touched.

    ``keep_old`` is the ``plan-change-keeps-old-modules`` defect: the old plan's modules are left behind.
    """
    per_kind: list[tuple[Kind, tuple[str, ...]]] = [("module", plan.modules), ("feature_flag", plan.feature_flags)]
    for kind, names in per_kind:
        table, column = TABLES[kind]
        if not (keep_old and kind == "module"):
            await conn.execute(f"DELETE FROM {table} WHERE tenant_id = %s AND source = 'plan'", (tenant_id,))
        for name in names:
            await conn.execute(
                f"INSERT INTO {table} (tenant_id, {column}, source) VALUES (%s, %s, 'plan')"
                f" ON CONFLICT (tenant_id, {column}, source) DO UPDATE SET enabled = true, updated_at = now()",
                (tenant_id, name),
            )
    await conn.execute("UPDATE tenants SET plan = %s WHERE id = %s", (plan.code, tenant_id))


async def remove_plan(conn: psycopg.AsyncConnection[Any], tenant_id: str, *, drop_overrides: bool = False) -> None:
    """Remove the tenant's plan-sourced modules and flags (cancellation); overrides stay.

    ``drop_overrides`` is the ``cancellation-drops-overrides`` defect: every row goes.
    """
    only_plan = "" if drop_overrides else " AND source = 'plan'"
    for table, _ in TABLES.values():
        await conn.execute(f"DELETE FROM {table} WHERE tenant_id = %s{only_plan}", (tenant_id,))
    await conn.execute("UPDATE tenants SET plan = 'none' WHERE id = %s", (tenant_id,))


async def set_override(
    conn: psycopg.AsyncConnection[Any], tenant_id: str, kind: Kind, name: str, enabled: bool
) -> None:
    """Set (insert or update) one admin override of the tenant."""
    table, column = TABLES[kind]
    await conn.execute(
        f"INSERT INTO {table} (tenant_id, {column}, source, enabled) VALUES (%s, %s, 'override', %s)"
        f" ON CONFLICT (tenant_id, {column}, source) DO UPDATE SET enabled = EXCLUDED.enabled, updated_at = now()",
        (tenant_id, name, enabled),
    )
