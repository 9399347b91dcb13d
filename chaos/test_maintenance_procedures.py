"""Three runbook procedures around maintenance mode, each end to end on the reference platform.

- Seed 000 "Schema Migration / Release": "**Deploy window:** place tenant in maintenance, run migration, verify
  smoke tests (invoice creation, sync dashboard)." -- maintenance on, a reversible migration applied and verified,
  smoke tests (a write refused, reads served; after maintenance: a send delivered, a billing webhook processed).
- Seed 003 "Scheduled Maintenance", "3. **Execute** — Enable maintenance mode, Perform maintenance, Verify
  functionality" -- the maintenance performed is a ``VACUUM (ANALYZE)`` and a ``REINDEX`` of ``messages``.
- Seed 003 "Database Rollback": "# 1. Stop application traffic (maintenance mode)", restore the pre-migration
  backup over the live database, re-enable traffic.

The provider sandbox is the ground truth of every send. Each migration's journalled undo is its down migration
and maintenance mode's is "off": both are rolled back on every way out.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

import psycopg
import pytest
from procedures import (
    Window,
    column_migration,
    expect_billing_webhook_processed,
    expect_sends_delivered,
    maintenance_of,
    reads_served,
    write_refused,
)
from psycopg.conninfo import conninfo_to_dict

from opsgate.config import Target
from opsgate.drills.drill import Drill, DrillFailed, DrillInconclusive, Observation
from opsgate.environments import binaries
from opsgate.environments.local import LocalEnvironment
from opsgate.faults.actions import Migration

pytestmark = [pytest.mark.drill, pytest.mark.destructive]

PG_TOOL_TIMEOUT_S = 120.0
LOCK_TIMEOUT_MS = 10_000
"""How long the restore waits for a table lock held by a connected client before it gives up (nothing changed)."""
KEPT_LIVE = "settings"
"""The table a rollback restore leaves as it is live: it holds maintenance mode, on until traffic is re-enabled."""


def _windows(target: Target) -> tuple[float, float]:
    """(propagation_s, drain_s): seed 001's 60 s for a switch to take and 5 min for sends to drain, scaled."""
    return target.scaled(60.0), target.scaled(300.0, floor_s=5.0)


async def _sent_and_delivered(drill: Drill, look: Window, label: str, *, within_s: float) -> str:
    """One send before the procedure, delivered (provider record): a row the procedure must leave readable."""
    ids: list[str] = []
    await expect_sends_delivered(drill, look, ids, within_s=within_s)
    drill.event(f"{label} sent and delivered", ids[0][:8])
    return ids[0]


async def _not_applied(migration: Migration) -> None:
    if await asyncio.to_thread(migration.is_applied):
        raise DrillInconclusive(f"migration {migration.name} is already applied: run opsgate recover first")


async def test_release_deploy_window(drill: Drill, target: Target, local_environment: LocalEnvironment) -> None:
    """Maintenance on, migration applied and verified, smoke tests in and after maintenance; migration rolled back."""
    drill.claim = "seed-000.release.maintenance-window"
    drill.objective = (
        "Seed 000 deploy window: maintenance on (a write refused 503 MAINTENANCE, reads served); a reversible "
        "migration applied and verified, reads served on the migrated schema, health checks pass; maintenance off: "
        "a send delivered exactly once (provider record) and an invoice.created billing webhook processed; the "
        "migration rolled back on every way out."
    )
    drill.timeout_s = target.scaled(1800.0, floor_s=120.0)
    propagation_s, drain_s = _windows(target)
    async with drill.running():
        look = Window(drill, target)
        migration = column_migration(target, "901_release_deploy_window_drill", "release_window_note")
        await drill.steady_state()
        await _not_applied(migration)
        ids = [await _sent_and_delivered(drill, look, "a message before the window", within_s=drain_s)]
        async with AsyncExitStack() as migrated:
            async with drill.fault(maintenance_of(target)):
                await drill.expect("deploy window: a write refused with 503 MAINTENANCE while in maintenance",
                                   write_refused(look, ids), within_s=propagation_s, every_s=0.5)  # fmt: skip
                await drill.expect("deploy window: reads served (200) in maintenance", reads_served(look, ids))
                await migrated.enter_async_context(drill.fault(migration))
                await drill.expect("deploy window: reads served (200) on the migrated schema", reads_served(look, ids))
                await drill.steady_state(after=True, within_s=target.scaled(300.0, floor_s=5.0))
            # Smoke tests once the tenant is out of maintenance: a send (sync dashboard) and an invoice webhook.
            await expect_sends_delivered(drill, look, ids, within_s=drain_s)
            secret = local_environment.credentials.billing_webhook_secret
            await expect_billing_webhook_processed(drill, look, secret, within_s=drain_s)
        if await asyncio.to_thread(migration.is_applied):
            raise DrillFailed(f"migration {migration.name} is still applied after its rollback")
        await drill.steady_state(after=True, within_s=target.scaled(300.0, floor_s=5.0))


async def _table_stats(dsn: str, table: str) -> tuple[int, int]:
    """(vacuum_count, analyze_count) of ``table`` from pg_stat_user_tables."""
    async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=10) as conn:
        cur = await conn.execute(
            "SELECT vacuum_count, analyze_count FROM pg_stat_user_tables WHERE relname = %s", (table,)
        )
        row = await cur.fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


async def _maintain(dsn: str, table: str, timeout_s: float) -> None:
    """The maintenance performed: ``VACUUM (ANALYZE)`` then ``REINDEX TABLE``, each bounded by ``timeout_s``."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        await conn.execute(f"SET statement_timeout = {int(timeout_s * 1000)}")
        await conn.execute(f"VACUUM (ANALYZE) {table}")
        await conn.execute(f"REINDEX TABLE {table}")


async def test_scheduled_maintenance_execute(drill: Drill, target: Target, local_environment: LocalEnvironment) -> None:
    """Enable maintenance mode, perform maintenance (VACUUM, REINDEX), verify functionality during and after."""
    drill.claim = "seed-003.maintenance.execute"
    drill.objective = (
        "Seed 003 scheduled maintenance, step 3 Execute: maintenance mode on (a write refused 503 MAINTENANCE, "
        "reads served, health checks pass); maintenance performed (VACUUM (ANALYZE) and REINDEX of messages, "
        "seen in pg_stat_user_tables); functionality verified: health checks and reads in maintenance, and after "
        "maintenance off a send delivered exactly once (provider record)."
    )
    drill.timeout_s = target.scaled(1800.0, floor_s=120.0)
    propagation_s, drain_s = _windows(target)
    dsn = local_environment.database_url
    async with drill.running():
        look = Window(drill, target)
        await drill.steady_state()
        ids = [await _sent_and_delivered(drill, look, "a message before maintenance", within_s=drain_s)]
        before = await _table_stats(dsn, "messages")
        async with drill.fault(maintenance_of(target)):
            await drill.expect("maintenance mode: a write refused with 503 MAINTENANCE", write_refused(look, ids),
                               within_s=propagation_s, every_s=0.5)  # fmt: skip
            started = time.monotonic()
            await _maintain(dsn, "messages", PG_TOOL_TIMEOUT_S)
            drill.event("maintenance performed", f"VACUUM (ANALYZE) and REINDEX TABLE messages in "
                                                 f"{time.monotonic() - started:.2f}s")  # fmt: skip

            async def performed() -> Observation:
                now = await _table_stats(dsn, "messages")
                note = f"messages: vacuum_count {before[0]} → {now[0]}, analyze_count {before[1]} → {now[1]}"
                return Observation(now[0] > before[0] and now[1] > before[1], float(now[0]), note)

            await drill.expect("the maintenance is on record (pg_stat_user_tables)", performed,
                               within_s=target.scaled(60.0, floor_s=5.0), every_s=0.2)  # fmt: skip
            await drill.steady_state(after=True, within_s=target.scaled(300.0, floor_s=5.0))
            await drill.expect("functionality verified in maintenance: reads served (200)", reads_served(look, ids))
        await expect_sends_delivered(drill, look, ids, within_s=drain_s)
        await drill.steady_state(after=True, within_s=target.scaled(300.0, floor_s=5.0))


async def _pg_tool(tool: str, args: list[str], dsn: str, *, timeout_s: float, options: str = "") -> str:
    """Run a PostgreSQL client tool against ``dsn`` (password in the environment, never in argv); its stdout.

    Killed after ``timeout_s``; a non-zero exit raises DrillFailed with the tail of its stderr.
    """
    params = conninfo_to_dict(dsn)
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10", "PGHOST": str(params.get("host", "127.0.0.1")),
           "PGPORT": str(params.get("port", 5432)), "PGUSER": str(params.get("user", "")),
           "PGDATABASE": str(params.get("dbname", ""))}  # fmt: skip
    if params.get("password"):
        env["PGPASSWORD"] = str(params["password"])
    if options:
        env["PGOPTIONS"] = options
    argv = [str(binaries.postgres_bin_dir() / tool), *args]
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env=env)  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise DrillFailed(f"{tool} did not finish within {timeout_s:.0f}s") from None
    if proc.returncode != 0:
        raise DrillFailed(f"{tool} {' '.join(args[:3])}... exited {proc.returncode}: "
                          f"{err.decode(errors='replace').strip()[-300:]}")  # fmt: skip
    return out.decode(errors="replace")


async def _snapshot(dsn: str, marker: str) -> dict[str, object]:
    """What a rollback must bring back: tenants, applied migrations, the message count, the marker's row."""
    async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=10) as conn:
        tenants = [str(r[0]) for r in await (await conn.execute("SELECT id::text FROM tenants ORDER BY 1")).fetchall()]
        migrations = [str(r[0]) for r in await (await conn.execute(
            "SELECT name FROM schema_migrations ORDER BY 1")).fetchall()]  # fmt: skip
        count = await (await conn.execute("SELECT count(*) FROM messages")).fetchone()
        row = await (await conn.execute("SELECT status, body FROM messages WHERE id = %s", (marker,))).fetchone()
    return {"tenants": tenants, "migrations": migrations, "messages": int(count[0]) if count else 0,
            "marker": list(row) if row else None}  # fmt: skip


async def test_database_rollback(drill: Drill, target: Target, local_environment: LocalEnvironment) -> None:
    """Pre-migration backup, migration, maintenance on, backup restored over the live database, maintenance off."""
    drill.claim = "seed-003.rollback.database-maintenance"
    drill.objective = (
        "Seed 003 database rollback: a pre-migration backup (pg_dump -Fc); a migration that adds a backfilled "
        "column and its schema_migrations row; 1. traffic stopped (maintenance mode: a write refused 503 "
        "MAINTENANCE); 2. the backup restored over the live database with pg_restore --clean --if-exists "
        "--single-transaction (the live settings table, which holds maintenance mode, left out); the migration's "
        "column and row are gone, tenants, migrations, the message count and a message written before the backup "
        "are as they were; 3. traffic re-enabled: a send delivered exactly once (provider record). The migration's "
        "down runs on every way out; the dump file is removed."
    )
    drill.timeout_s = target.scaled(1800.0, floor_s=120.0)
    propagation_s, drain_s = _windows(target)
    dsn = local_environment.database_url
    if local_environment.root is None:
        raise DrillInconclusive("the local environment has no scratch root for the pre-migration backup")
    dump = local_environment.root / f"pre-migration-{uuid.uuid4().hex[:12]}.dump"
    async with drill.running():
        look = Window(drill, target)
        migration = column_migration(target, "902_database_rollback_drill", "rollback_drill_note", default="migrated")
        await drill.steady_state()
        await _not_applied(migration)
        marker = await _sent_and_delivered(drill, look, "a marker message before the backup", within_s=drain_s)
        try:
            await _backup_migrate_restore(drill, look, migration, dsn, dump, marker, propagation_s)
        finally:
            dump.unlink(missing_ok=True)
        await expect_sends_delivered(drill, look, [], within_s=drain_s)
        await drill.steady_state(after=True, within_s=target.scaled(300.0, floor_s=5.0))


async def _backup_migrate_restore(drill: Drill, look: Window, migration: Migration, dsn: str, dump: Path,
                                  marker: str, propagation_s: float) -> None:  # fmt: skip
    """The rollback's steps, from the pre-migration backup to the verified restore (maintenance still on)."""
    before = await _snapshot(dsn, marker)
    started = time.monotonic()
    await _pg_tool("pg_dump", ["-Fc", "-f", str(dump)], dsn, timeout_s=PG_TOOL_TIMEOUT_S)
    took = time.monotonic() - started
    drill.event("pre-migration backup", f"pg_dump -Fc: {dump.stat().st_size} bytes in {took:.2f}s")
    drill.snapshot("before", {"database at backup time": before})
    async with drill.fault(migration):
        migrated = await _snapshot(dsn, marker)
        drill.snapshot("before", {"database migrated": migrated})
        ids = [marker]
        async with drill.fault(maintenance_of(look.target)):
            # 1. Stop application traffic (maintenance mode).
            await drill.expect("traffic stopped: a write refused with 503 MAINTENANCE", write_refused(look, ids),
                               within_s=propagation_s, every_s=0.5)  # fmt: skip
            # 2. Restore from the pre-migration backup: everything but the live settings, in one transaction.
            listing = await _pg_tool("pg_restore", ["--list", str(dump)], dsn, timeout_s=PG_TOOL_TIMEOUT_S)
            kept = re.compile(rf" public {KEPT_LIVE} ")
            restore_list = dump.with_suffix(".list")
            restore_list.write_text("".join(line + "\n" for line in listing.splitlines() if not kept.search(line)))
            started = time.monotonic()
            try:
                await _pg_tool("pg_restore", ["--clean", "--if-exists", "--single-transaction", "--no-owner",
                                              "--no-privileges", "--exit-on-error", "-L", str(restore_list),
                                              "-d", str(conninfo_to_dict(dsn).get("dbname", "")), str(dump)],
                               dsn, timeout_s=PG_TOOL_TIMEOUT_S,
                               options=f"-c lock_timeout={LOCK_TIMEOUT_MS}")  # fmt: skip
            finally:
                restore_list.unlink(missing_ok=True)
            drill.measured["restore (pg_restore --clean, one transaction)"] = time.monotonic() - started
            drill.event("backup restored over the live database", f"{dump.name}, {KEPT_LIVE} kept live")

            async def rolled_back() -> Observation:
                now = await _snapshot(dsn, marker)
                applied = await asyncio.to_thread(migration.is_applied)
                changed = {k: f"{before[k]} → {now[k]}" for k in before if now[k] != before[k]}
                note = f"migration {'still applied' if applied else 'gone'}; " + (
                    f"changed since the backup: {changed}" if changed else "tenants, migrations, messages, marker "
                    "as at backup time")  # fmt: skip
                return Observation(not applied and not changed, float(len(changed)), note)

            await drill.expect("the migration's changes are gone and the rows before the backup intact", rolled_back)
            await drill.expect("traffic still stopped after the restore: a write refused with 503 MAINTENANCE",
                               write_refused(look, ids))  # fmt: skip
        # 3. Re-enable traffic: maintenance off (its rollback); the migration's down finds nothing left to undo.
