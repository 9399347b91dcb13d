"""The runbooks' backup claims, checked on the reference platform's own backups (files, schedule, restores).

Seed 001 "Backups": "**Automated:** Runs daily via cron at 2 AM, 7-day retention"; seed 000: "keep backup
script or ... snapshot ID for quick restore"; seed 002 "Backups & Restore": "nightly logical dump ... via
`pg_dump -Fc`", "Redis snapshot (RDB) every 30m", "Monthly restore drill: provision staging clone, restore
latest dump, replay outbox, run smoke flows, document outcome in ops journal"; seed 002 "Key Routines":
"Daily: check failed jobs, audit anomaly reports, verify backups."

The platform's backup "day" is its backup interval (``GET /backups``: ``interval_s``, scaled by the time
scale), so the 7-day retention is the newest 7 backups. Every scratch database is dropped on every way out.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis.asyncio
from psycopg import sql
from psycopg.conninfo import make_conninfo

from opsgate.config import Target
from opsgate.drills.drill import Drill, DrillFailed, DrillInconclusive, Observation
from opsgate.environments import binaries
from opsgate.environments.local import REDIS_SNAPSHOT_S, LocalEnvironment
from opsgate.faults.journal import signals_blocked
from opsgate.probes.http import HttpObservation, request
from opsgate.probes.sources import service_url
from opsgate.reference.signing import sign

pytestmark = [pytest.mark.drill, pytest.mark.destructive]

HTTP_TIMEOUT_S = 30.0
RESTORE_TIMEOUT_S = 120.0
LATE_FACTOR = 1.5
"""A scheduled backup later than 1.5 intervals after the one before it (or than now) is a missed one."""
RETAIN_DAYS = 7
"""Seed 001: "7-day retention"."""
PGDMP = b"PGDMP"
"""The first bytes of every pg_dump custom-format (-Fc) archive."""
BILLING_EVENTS = 3
"""Billing webhooks posted before the restore drill's backup: an outbox to replay."""


class Admin:
    """The api calls of these drills, with the service account's admin session."""

    def __init__(self, drill: Drill, target: Target) -> None:
        auth = target.auth
        if auth is None or not (auth.service_user and auth.service_password):
            raise DrillInconclusive("these drills need auth.service_user and auth.service_password")
        self.drill, self.target, self.auth = drill, target, auth
        self.base = service_url(target, "api")
        self.token: str | None = None

    async def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                   content: bytes | None = None) -> HttpObservation:  # fmt: skip
        sent = {"Content-Type": "application/json", **(headers or {})}
        if self.token:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        if body is not None:
            content = json.dumps(body).encode()
        return await request(self.drill.client, method, self.base + path, timeout_s=HTTP_TIMEOUT_S, headers=sent,
                             content=content)  # fmt: skip

    async def __aenter__(self) -> Admin:
        seen = await self.call("POST", "/auth/login", {"username": self.auth.service_user,
                                                       "password": self.auth.service_password})  # fmt: skip
        if seen.status != 200:
            raise DrillInconclusive(f"the service account cannot log in: POST /auth/login → {seen.status}")
        self.token = str(seen.json["token"])
        return self

    async def __aexit__(self, *exc: object) -> None:
        """End the admin session (a row left behind otherwise); a failure is on the timeline, never raised."""
        token, self.token = self.token, None
        if token:
            seen = await self.call("POST", "/auth/logout", headers={"Cookie": f"session_id={token}"})
            if seen.status != 200:
                self.drill.event("admin session NOT ended", f"POST /auth/logout → {seen.status}")

    async def json(self, method: str, path: str, status: int = 200) -> dict[str, Any]:
        seen = await self.call(method, path)
        if seen.status != status:
            raise DrillFailed(f"{method} {path} answers {status}: got {seen.status}: {seen.text[:200]}")
        return dict(seen.json)

    async def force_backup(self) -> dict[str, Any]:
        """POST /admin/backups; the new newest backup's record."""
        return await self.json("POST", "/admin/backups", status=201)


async def run_tool(argv: list[str], timeout_s: float) -> tuple[int, str, str]:
    """Run a PostgreSQL client tool; exit code, stdout, stderr (tail). Killed after ``timeout_s``."""
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, "", f"did not finish within {timeout_s:.0f}s"
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace").strip()[-300:]


def pg_restore() -> str:
    return str(binaries.postgres_bin_dir() / "pg_restore")


async def restorable(dump: Path) -> Observation:
    """``dump`` restores: ``pg_restore --list`` reads its table of contents and a full ``pg_restore -f /dev/null``
    reads every entry's data to the end (a copy cut short fails there)."""
    code, listing, err = await run_tool([pg_restore(), "--list", str(dump)], RESTORE_TIMEOUT_S)
    if code != 0:
        return Observation(False, None, f"pg_restore --list {dump.name} exited {code}: {err}")
    code, _, err = await run_tool([pg_restore(), "--exit-on-error", "-f", "/dev/null", str(dump)], RESTORE_TIMEOUT_S)
    if code != 0:
        return Observation(False, None, f"pg_restore -f /dev/null {dump.name} exited {code}: {err}")
    entries = sum(1 for line in listing.splitlines() if line and not line.startswith(";"))
    return Observation(True, float(entries), f"{dump.name}: {entries} entries listed and read to the end")


def dumped_tables(listing: str) -> set[str]:
    """Tables whose rows a ``pg_restore --list`` holds (``TABLE DATA public name owner`` lines)."""
    tables = set()
    for line in listing.splitlines():
        parts = line.split()
        if "TABLE" in parts and "DATA" in parts:
            at = parts.index("DATA")
            if parts[at - 1] == "TABLE" and len(parts) > at + 2:
                tables.add(parts[at + 2])
    return tables


async def live_tables(dsn: str) -> set[str]:
    async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=10) as conn:
        cur = await conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                                 " AND table_type = 'BASE TABLE'")  # fmt: skip
        return {str(row[0]) for row in await cur.fetchall()}


def backup_path(local_environment: LocalEnvironment, record: dict[str, Any]) -> Path:
    if not record.get("file"):
        raise DrillFailed("a backup exists: GET /backups/latest names none")
    return local_environment.backup_dir / str(record["file"])


async def test_backup_schedule(drill: Drill, target: Target, local_environment: LocalEnvironment) -> None:
    """Backups keep coming at the configured interval, and only the newest 7 are kept (older ones pruned)."""
    drill.claim = "seed-001.backups.daily"
    drill.objective = (
        "Seed 001: backups run on a schedule with a 7-day retention. The newest backup is younger than 1.5 backup "
        "intervals and no two kept backups are further apart (none missed); after 8 forced backups at most 7 are "
        "kept and every backup older than them is pruned (the platform's backup day is its interval)."
    )
    drill.timeout_s = target.scaled(1800.0, floor_s=120.0)
    async with drill.running(), Admin(drill, target) as admin:
        schedule = await admin.json("GET", "/backups")
        interval_s, retain = float(schedule["interval_s"]), int(schedule["retain"])
        drill.snapshot("before", {"schedule": {"interval_s": interval_s, "retain": retain},
                                  "backups": schedule["backups"]})  # fmt: skip

        async def retention_is_seven_days() -> Observation:
            return Observation(retain == RETAIN_DAYS, float(retain), f"{retain} backups (backup days) kept")

        await drill.expect("retention is 7 backup days", retention_is_seven_days)

        async def on_schedule() -> Observation:
            stamps = [float(b["timestamp"]) for b in schedule["backups"]]
            if not stamps:
                return Observation(False, None, "no backup at all")
            late = LATE_FACTOR * interval_s
            gaps = [b - a for a, b in itertools.pairwise(stamps)]
            age = time.time() - stamps[-1]
            problems = [f"newest backup {age:.1f}s old"] if age > late else []
            problems += [f"{gap:.1f}s between two backups" for gap in gaps if gap > late]
            note = f"{len(stamps)} kept, newest {age:.1f}s old, longest gap {max(gaps, default=0):.1f}s"
            return Observation(not problems, age, "; ".join(problems) + f" (limit {late:.1f}s): {note}"
                               if problems else note)  # fmt: skip

        await drill.expect(f"backups keep coming: none missed (every {interval_s:g}s, late after "
                           f"{LATE_FACTOR * interval_s:g}s)", on_schedule)  # fmt: skip
        before = {b["file"] for b in schedule["backups"]}
        forced = [(await admin.force_backup())["file"] for _ in range(retain + 1)]
        drill.event("backups forced", f"{len(forced)}: {forced[0]} .. {forced[-1]}")
        after = await admin.json("GET", "/backups")
        kept = [b["file"] for b in after["backups"]]

        async def pruned() -> Observation:
            should_be_gone = sorted(before | set(forced))[:-retain]  # older than the newest 7
            kept_too_long = [f for f in should_be_gone if f in kept]
            problems = [f"{len(kept)} backups kept"] if len(kept) > retain else []
            if kept_too_long:
                problems.append(f"{len(kept_too_long)} older backups not pruned, e.g. {kept_too_long[0]}")
            return Observation(not problems, float(len(kept)), "; ".join(problems) or f"{len(kept)} kept, "
                               f"{len(should_be_gone)} older pruned")  # fmt: skip

        await drill.expect(f"at most {retain} backups kept after {retain + 1} forced, older ones pruned", pruned)
        drill.snapshot("after", {"backups kept": kept})


async def test_latest_backup_restorable(drill: Drill, target: Target, local_environment: LocalEnvironment) -> None:
    """``GET /backups/latest`` names a backup that restores (pg_restore reads it whole): the rollback's backup."""
    drill.claim = "seed-000.release.rollback-backup"
    drill.objective = (
        "Seed 000: a release's rollback keeps a backup id for quick restore. GET /backups/latest names a backup; "
        "pg_restore --list reads its table of contents and a full pg_restore reads every entry to the end."
    )
    drill.timeout_s = target.scaled(600.0, floor_s=60.0)
    async with drill.running(), Admin(drill, target) as admin:
        latest = await admin.json("GET", "/backups/latest")
        drill.snapshot("before", {"latest backup": latest})
        dump = backup_path(local_environment, latest)
        await drill.expect(f"the latest backup restores (pg_restore reads {dump.name} whole)",
                           lambda: restorable(dump))  # fmt: skip


async def test_nightly_dump_custom_format(drill: Drill, target: Target, local_environment: LocalEnvironment) -> None:
    """The latest backup is a ``pg_dump -Fc`` custom-format logical dump holding the rows of every live table."""
    drill.claim = "seed-002.backups.nightly-dump"
    drill.objective = (
        "Seed 002: the nightly logical dump is `pg_dump -Fc`. The latest backup starts with the custom format's "
        "PGDMP header, pg_restore --list reads it, and it holds the data of every table of the live database."
    )
    drill.timeout_s = target.scaled(600.0, floor_s=60.0)
    async with drill.running(), Admin(drill, target) as admin:
        dump = backup_path(local_environment, await admin.json("GET", "/backups/latest"))

        async def custom_format() -> Observation:
            with dump.open("rb") as fh:
                head = fh.read(len(PGDMP))
            return Observation(head == PGDMP, None, f"{dump.name} starts with {head!r} (custom format: {PGDMP!r})")

        await drill.expect("the latest backup is a custom-format (-Fc) archive", custom_format)
        code, listing, err = await run_tool([pg_restore(), "--list", str(dump)], RESTORE_TIMEOUT_S)
        if code != 0:
            raise DrillFailed(f"pg_restore --list reads the latest backup: {dump.name} exited {code}: {err}")
        live = await live_tables(local_environment.database_url)
        dumped = dumped_tables(listing)

        async def every_table() -> Observation:
            missing = sorted(live - dumped)
            return Observation(not missing, float(len(missing)), f"missing: {', '.join(missing)}" if missing
                               else f"all {len(live)} live tables dumped with their data")  # fmt: skip

        await drill.expect("the dump holds the data of every live table", every_table)
        drill.snapshot("after", {"tables dumped": sorted(dumped), "live tables": sorted(live)})


async def test_redis_rdb_snapshots(drill: Drill, target: Target) -> None:
    """Redis takes RDB snapshots at least every 30 min (scaled), and its last one is younger than that."""
    drill.claim = "seed-002.backups.redis-snapshot"
    limit_s = target.scaled(REDIS_SNAPSHOT_S, floor_s=2.0)
    drill.objective = (
        f"Seed 002: Redis snapshot (RDB) every 30m. CONFIG GET save holds a rule snapshotting at most every 30 min "
        f"(scaled: {limit_s:g}s) after a change, and LASTSAVE is younger than that (plus one scaled period to write)."
    )
    drill.timeout_s = target.scaled(600.0, floor_s=60.0)
    if target.datastores.redis is None:
        raise DrillInconclusive("the target has no Redis")
    client = redis.asyncio.Redis.from_url(target.datastores.redis.url, socket_timeout=5.0,
                                          socket_connect_timeout=5.0)  # fmt: skip
    try:
        async with drill.running():
            save = str((await client.config_get("save")).get("save", ""))
            drill.snapshot("before", {"CONFIG GET save": save or "(empty)"})

            async def configured() -> Observation:
                numbers = [int(n) for n in save.split()]
                periods = [numbers[i] for i in range(0, len(numbers) - 1, 2)]
                ok = bool(periods) and min(periods) <= limit_s + 1  # redis rules are whole seconds
                note = f"save rule {save!r}" if save else "save is empty: RDB snapshots are off"
                return Observation(ok, float(min(periods)) if periods else None, note)

            await drill.expect(f"RDB snapshots configured at most every {limit_s:g}s", configured)

            async def recent() -> Observation:
                last = await client.lastsave()
                age = time.time() - last.timestamp()
                return Observation(age <= 2 * limit_s, age, f"last RDB snapshot {age:.1f}s ago "
                                                            f"(limit {2 * limit_s:g}s)")  # fmt: skip

            await drill.expect("the last RDB snapshot is recent (LASTSAVE)", recent,
                               within_s=2 * limit_s, every_s=1.0)  # fmt: skip
    finally:
        await client.aclose()


async def scalar(dsn: str, query: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=10) as conn:
        row = await (await conn.execute(query)).fetchone()
        return int(row[0]) if row and row[0] is not None else 0


OUTBOX_SQL = "SELECT count(*) FROM billing_webhook_events WHERE status IN ('pending', 'processing', 'failed')"
EVENTS_SQL = "SELECT count(*) FROM billing_webhook_events"
QUEUED_SQL = "SELECT count(*) FROM messages WHERE status = 'queued'"


async def test_restore_drill_replays_outbox(drill: Drill, target: Target, local_environment: LocalEnvironment) -> None:
    """The monthly restore drill: the latest dump restored into a fresh clone, its outbox counted, smoke reads."""
    drill.claim = "seed-002.backups.restore-drill"
    drill.objective = (
        "Seed 002 monthly restore drill: billing webhooks posted, a backup forced (the latest dump), restored with "
        "pg_restore into a fresh clone database; the clone holds every billing event and the same outbox to replay "
        "(pending billing events, queued sends) as the live database at backup time; smoke reads of tenants, "
        "messages and the posted events; the outcome documented in this drill log. The clone is dropped."
    )
    drill.timeout_s = target.scaled(1800.0, floor_s=120.0)
    live_dsn = local_environment.database_url
    secret = local_environment.credentials.billing_webhook_secret
    async with drill.running(), Admin(drill, target) as admin:
        await drill.steady_state()
        events = [f"evt_restore_{uuid.uuid4().hex[:12]}" for _ in range(BILLING_EVENTS)]
        for event in events:
            body = json.dumps(
                {
                    "id": event,
                    "type": "invoice.paid",
                    "data": {"tenantId": target.auth.tenant_id if target.auth else ""},
                }
            ).encode()
            seen = await admin.call("POST", "/billing/webhooks/sandbox", content=body,
                                    headers={"x-sandbox-signature": sign(secret, body)})  # fmt: skip
            if seen.status != 202:
                raise DrillInconclusive(f"a billing webhook was not accepted: {seen.status}: {seen.text[:160]}")
        drill.event("billing webhooks posted", ", ".join(events))
        live: dict[str, int] = {}
        backup: dict[str, Any] = {}
        for _ in range(3):  # a quiet point: the live counts the same before and after the dump
            live = {q: await scalar(live_dsn, q) for q in (EVENTS_SQL, OUTBOX_SQL, QUEUED_SQL)}
            backup = await admin.force_backup()
            if live == {q: await scalar(live_dsn, q) for q in live}:
                break
        else:
            raise DrillInconclusive("the billing events kept changing during 3 backups: nothing to compare with")
        drill.snapshot("before", {"latest dump": backup, "live at backup time": live})
        dump = backup_path(local_environment, backup)
        clone = f"opsgate_clone_{uuid.uuid4().hex[:12]}"
        server_dsn = make_conninfo(live_dsn, dbname="postgres")
        clone_dsn = make_conninfo(live_dsn, dbname=clone)
        outcome: dict[str, Any] = {}
        try:
            async with await psycopg.AsyncConnection.connect(server_dsn, autocommit=True, connect_timeout=10) as c:
                await c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(clone)))
            drill.event("clone database provisioned", clone)
            code, _, err = await run_tool([pg_restore(), "--no-owner", "--no-privileges", "--exit-on-error",
                                           "--dbname", clone_dsn, str(dump)], RESTORE_TIMEOUT_S)  # fmt: skip
            if code != 0:
                raise DrillFailed(f"the latest dump restores into the clone: pg_restore exited {code}: {err}")
            drill.event("latest dump restored into the clone", dump.name)
            restored = {q: await scalar(clone_dsn, q) for q in live}

            async def outbox_replayable() -> Observation:
                names = {EVENTS_SQL: "billing events", OUTBOX_SQL: "pending billing events",
                         QUEUED_SQL: "queued sends"}  # fmt: skip
                problems = [
                    f"{names[q]} {restored[q]} restored, {live[q]} live" for q in live if restored[q] != live[q]
                ]
                note = ", ".join(f"{names[q]} {restored[q]}" for q in live)
                return Observation(not problems, float(restored[OUTBOX_SQL]), "; ".join(problems) or note)

            await drill.expect("the clone holds every billing event and the outbox to replay", outbox_replayable)

            async def smoke_reads() -> Observation:
                async with await psycopg.AsyncConnection.connect(clone_dsn, connect_timeout=10) as conn:
                    tenants = await (await conn.execute("SELECT count(*) FROM tenants")).fetchone()
                    cur = await conn.execute(
                        "SELECT event_id FROM billing_webhook_events WHERE event_id = ANY(%s)", (events,)
                    )
                    found = {str(r[0]) for r in await cur.fetchall()}
                    await conn.execute("SELECT id, status FROM messages ORDER BY created_at DESC LIMIT 5")
                missing = sorted(set(events) - found)
                ok = bool(tenants and tenants[0]) and not missing
                read = f"missing: {', '.join(missing)}" if missing else "all read back"
                return Observation(ok, None, f"{tenants[0] if tenants else 0} tenants; posted events {read}")

            await drill.expect("smoke reads on the clone: tenants, latest messages, the posted events", smoke_reads)
            outcome = {"outcome": "restored and verified", "dump": dump.name, "clone": clone, "clone counts": restored}
        finally:
            with signals_blocked():
                try:
                    async with await psycopg.AsyncConnection.connect(server_dsn, autocommit=True,
                                                                     connect_timeout=10) as c:  # fmt: skip
                        await c.execute(
                            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(clone))
                        )
                    drill.event("clone database dropped", clone)
                except psycopg.Error as exc:
                    drill.event("clone database NOT dropped", str(exc).splitlines()[0])
                    raise
        drill.snapshot("after", outcome)  # the ops-journal entry: this drill log
        drill.event("outcome documented", f"{outcome['outcome']}: {dump.name}")


async def test_daily_routine(drill: Drill, target: Target, local_environment: LocalEnvironment) -> None:
    """Seed 002's daily routine: failed jobs checked (none stuck failing), backups verified (fresh, restorable).

    "audit anomaly reports" is not checked: the reference platform has no anomaly reports (the claims registry
    marks audit anomaly detection out of scope).
    """
    drill.claim = "seed-002.routines.daily"
    drill.objective = (
        "Seed 002 daily routine: check failed jobs (no billing event left failed, no send stuck queued past two "
        "outbox deadlines) and verify backups (the newest is younger than 1.5 backup intervals and restores). "
        "Audit anomaly reports are not checked: the platform has none."
    )
    drill.timeout_s = target.scaled(600.0, floor_s=60.0)
    dsn = local_environment.database_url
    async with drill.running(), Admin(drill, target) as admin:

        async def no_failed_jobs() -> Observation:
            failed = await scalar(dsn, "SELECT count(*) FROM billing_webhook_events WHERE status = 'failed'")
            return Observation(failed == 0, float(failed), f"{failed} billing events failed")

        await drill.expect("failed jobs checked: no billing event failed", no_failed_jobs)
        schedule = await admin.json("GET", "/backups")
        latest = await admin.json("GET", "/backups/latest")
        drill.snapshot("before", {"latest backup": latest})

        async def fresh() -> Observation:
            late = LATE_FACTOR * float(schedule["interval_s"])
            age = float(latest["age_s"]) if latest.get("age_s") is not None else None
            return Observation(age is not None and age <= late, age, f"newest backup {age}s old (limit {late:g}s)")

        await drill.expect("backups verified: the newest is on schedule", fresh)
        dump = backup_path(local_environment, latest)
        await drill.expect("backups verified: the newest restores", lambda: restorable(dump))
