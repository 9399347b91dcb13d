"""Seed 001 recovery objectives, proven by a restore: RPO 24 hours, RTO 60 minutes.

Seed 001, "Recovery Objectives": "**RPO (Recovery Point Objective):** 24 hours (daily backups)",
"**RTO (Recovery Time Objective):** 60 minutes"; seed 002: "Monthly restore drill: ... restore
latest dump, ... run smoke flows"; "nightly logical dump ... via `pg_dump -Fc`".

A backup is forced while no traffic flows (``POST /admin/backups``), the newest ``pg_dump -Fc`` file
is restored with ``pg_restore`` into a scratch database on the same PostgreSQL, and the restored
database must hold every table of the live one with the same row count, and read back the tenants,
the latest messages and a marker message sent just before the backup. RPO is the age of backup
evidence (wall clock, never scaled); RTO (restore start → verified) is scaled by ``time_scale``.
The scratch database is dropped on every way out.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis.asyncio
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from opsgate.config import Target
from opsgate.drills.drill import Check, Drill, DrillFailed, DrillInconclusive, Observation
from opsgate.environments import binaries
from opsgate.environments.local import LocalEnvironment
from opsgate.faults.journal import signals_blocked
from opsgate.probes.base import ProbeError
from opsgate.probes.http import HttpObservation, request
from opsgate.probes.queues import queue_depth
from opsgate.probes.sources import service_url

pytestmark = [pytest.mark.drill, pytest.mark.destructive]

RPO_S = 24 * 3600.0
"""Seed 001: "RPO ... 24 hours (daily backups)" -- the age of evidence: wall clock, never scaled."""
RTO_S = 60 * 60.0
"""Seed 001: "RTO ... 60 minutes" -- scaled by the target's time_scale."""
HTTP_TIMEOUT_S = 30.0
BACKUP_ATTEMPTS = 3
"""Backups taken at most until the live row counts are the same before and after one (no traffic)."""
LATEST_MESSAGES = 5
Counts = dict[str, int]


def admin_dsn(dsn: str, dbname: str) -> str:
    """``dsn`` pointing at another database of the same server."""
    return make_conninfo(dsn, dbname=dbname)


async def row_counts(dsn: str) -> Counts:
    """Exact row count of every table (``schema.table``; ``public.`` left out) of the database ``dsn``."""
    async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=10) as conn:
        cur = await conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
            " AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        )
        counts: Counts = {}
        for schema, table in await cur.fetchall():
            query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            row = await (await conn.execute(query)).fetchone()
            counts[table if schema == "public" else f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


async def databases(dsn: str) -> list[str]:
    """Databases on the server (templates left out)."""
    async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=10) as conn:
        cur = await conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1")
        return [str(row[0]) for row in await cur.fetchall()]


async def readback(dsn: str, message_ids: list[str]) -> dict[str, Any]:
    """What the smoke read looks at: tenant ids, applied migrations, the status of each given message."""
    async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=10) as conn:
        tenants = [str(r[0]) for r in await (await conn.execute("SELECT id::text FROM tenants ORDER BY 1")).fetchall()]
        migrations = [str(r[0]) for r in await (await conn.execute(
            "SELECT name FROM schema_migrations ORDER BY 1")).fetchall()]  # fmt: skip
        cur = await conn.execute("SELECT id::text, status FROM messages WHERE id = ANY(%s::uuid[])", (message_ids,))
        statuses = {str(r[0]): str(r[1]) for r in await cur.fetchall()}
    return {"tenants": tenants, "migrations": migrations, "messages": statuses}


async def latest_message_ids(dsn: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=10) as conn:
        cur = await conn.execute("SELECT id::text FROM messages ORDER BY created_at DESC LIMIT %s", (LATEST_MESSAGES,))
        return [str(r[0]) for r in await cur.fetchall()]


def count_diff(live: Counts, restored: Counts) -> list[str]:
    """Every table of ``live`` missing from ``restored`` or with another row count, as readable lines."""
    problems = []
    for table, rows in live.items():
        if table not in restored:
            problems.append(f"table {table} missing from the restored database (live had {rows} rows)")
        elif restored[table] != rows:
            problems.append(f"table {table}: {restored[table]} rows restored, {rows} live at backup time")
    return problems


async def pg_restore(dump: Path, dsn: str, timeout_s: float) -> str:
    """Restore ``dump`` into the database ``dsn`` as this user over TCP (password in the environment, not argv)."""
    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    if password:
        env["PGPASSWORD"] = str(password)
    binary = binaries.postgres_bin_dir() / "pg_restore"
    argv = [str(binary), "--no-owner", "--no-privileges", "--exit-on-error",
            "--dbname", make_conninfo("", **params), str(dump)]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env=env)  # fmt: skip
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise DrillFailed(f"pg_restore of {dump.name} did not finish within {timeout_s:.0f}s (the RTO)") from None
    if proc.returncode != 0:
        raise DrillFailed(f"the backup restores with pg_restore: {dump.name} exited {proc.returncode}: "
                          f"{stderr.decode(errors='replace').strip()[-300:]}")  # fmt: skip
    return f"{binary} --no-owner --no-privileges --exit-on-error {dump.name} exited 0"


class Api:
    """The api calls of the drill, with the service account's admin session."""

    def __init__(self, drill: Drill, target: Target) -> None:
        auth = target.auth
        if auth is None or not (auth.tenant_id and auth.api_token and auth.service_user and auth.service_password):
            raise DrillInconclusive("the restore drill needs auth.tenant_id, api_token, service_user, service_password")
        self.drill, self.target, self.auth = drill, target, auth
        self.base = service_url(target, "api")
        self.token: str | None = None

    async def call(self, method: str, path: str, body: Any = None, *, admin: bool = False) -> HttpObservation:
        headers = {"Content-Type": "application/json"}
        if admin:
            headers["Authorization"] = f"Bearer {self.token}"
        elif path.startswith("/v1/"):
            headers["Authorization"] = f"Bearer {self.auth.api_token}"
        content = json.dumps(body).encode() if body is not None else None
        return await request(self.drill.client, method, self.base + path, timeout_s=HTTP_TIMEOUT_S, headers=headers,
                             content=content)  # fmt: skip

    async def login(self) -> None:
        seen = await self.call("POST", "/auth/login", {"username": self.auth.service_user,
                                                       "password": self.auth.service_password})  # fmt: skip
        if seen.status != 200:
            raise DrillInconclusive(f"the service account cannot log in: POST /auth/login → {seen.status}")
        self.token = str(seen.json["token"])

    async def logout(self) -> None:
        """End the admin session (``/auth/logout`` reads it from the cookie); a failure is noted, never raised."""
        if self.token is None:
            return
        try:
            seen = await request(self.drill.client, "POST", self.base + "/auth/logout", timeout_s=HTTP_TIMEOUT_S,
                                 headers={"Cookie": f"session_id={self.token}"})  # fmt: skip
        except ProbeError as exc:
            self.drill.event("admin session NOT ended", str(exc))
            return
        self.token = None
        if seen.status != 200:
            self.drill.event("admin session NOT ended", f"POST /auth/logout → {seen.status}")


async def queues_idle(target: Target) -> Observation:
    """No job waiting or being worked on in any queue of the target (nothing about to write)."""
    if target.datastores.redis is None:
        return Observation(True, None, "no Redis in the target: no queues to wait for")
    client = redis.asyncio.Redis.from_url(target.datastores.redis.url, socket_timeout=5.0,
                                          socket_connect_timeout=5.0)  # fmt: skip
    busy, notes = 0, []
    try:
        for spec in target.queues:
            depth = await queue_depth(client, spec.layout, spec.name, prefix=spec.prefix)
            busy += depth.waiting + (depth.active or 0)
            notes.append(f"{spec.name}: waiting {depth.waiting}, active {depth.active}, delayed {depth.delayed}")
    finally:
        await client.aclose()
    return Observation(busy == 0, float(busy), "; ".join(notes) or "no queues")


async def test_backup_restore(drill: Drill, target: Target, local_environment: LocalEnvironment) -> None:
    """A forced backup restores completely (every table, every row) and readably, within the RPO and the RTO."""
    drill.claim = "seed-001.recovery.restore"
    drill.objective = (
        "Seed 001 recovery objectives, proven by a restore: a backup forced while no traffic flows (pg_dump -Fc, "
        "POST /admin/backups) restores with pg_restore into a scratch database holding every table of the live "
        "database with its backup-time row count, and the tenants, latest messages and a marker message read back. "
        "RPO: the newest backup is at most 24 h old (wall clock, unscaled); RTO: restore start → verified within "
        "60 min (scaled). The scratch database is dropped."
    )
    drill.timeout_s = target.scaled(2 * RTO_S, floor_s=60.0)
    live_dsn = local_environment.database_url
    async with drill.running():
        api = Api(drill, target)
        await drill.steady_state()
        if local_environment.root is None:
            raise DrillInconclusive("the local environment has no data directory: where would its backups be?")
        backup_dir = local_environment.backup_dir
        server_dsn = admin_dsn(live_dsn, "postgres")
        servers_databases = await databases(server_dsn)
        drill.snapshot("before", {"databases": servers_databases})
        await api.login()
        try:
            restored = await backup_and_restore(drill, api, live_dsn, backup_dir)
        finally:
            await api.logout()  # the admin session would be a row left behind

        async def nothing_left() -> Observation:
            now = await databases(server_dsn)
            return Observation(now == servers_databases, None, f"databases on the server: {', '.join(now)}")

        await drill.expect("the scratch database is gone (the server's databases as before the drill)", nothing_left)
        await drill.steady_state(after=True, within_s=target.scaled(300.0, floor_s=5.0))
        drill.snapshot("after", {"restored row counts": restored, "live row counts": await row_counts(live_dsn),
                                 "databases": await databases(server_dsn)})  # fmt: skip


async def backup_and_restore(drill: Drill, api: Api, live_dsn: str, backup_dir: Path) -> Counts:
    """Force a backup while nothing writes, restore it into a scratch database, verify it; the restored counts."""
    target = drill.target
    rto_s = target.scaled(RTO_S)
    every_s = target.scaled(5.0, floor_s=0.1)
    latest = await api.call("GET", "/backups/latest", admin=True)
    if latest.status != 200:
        raise DrillFailed(f"GET /backups/latest answers 200: got {latest.status}: {latest.text[:160]}")
    scheduled: dict[str, Any] = latest.json

    async def scheduled_backup_fresh() -> Observation:
        if scheduled.get("timestamp") is None:
            return Observation(False, None, "no backup exists at all")
        age = time.time() - float(scheduled["timestamp"])
        return Observation(age <= RPO_S, age, f"newest backup {scheduled['file']} is {age:.1f}s old "
                                              f"(RPO {RPO_S:.0f}s)")  # fmt: skip

    seen = await drill.expect("the newest backup is at most 24 h old when the drill begins (RPO, unscaled)",
                              scheduled_backup_fresh)  # fmt: skip
    drill.measured["RPO: age of the newest backup before the drill"] = seen.value or 0.0

    # A marker written (and delivered) just before the backup must come back from it.
    sent = await api.call("POST", f"/v1/tenants/{api.auth.tenant_id}/messages",
                          {"channel": "email", "to": f"restore-{uuid.uuid4().hex[:12]}@example.test",
                           "body": "backup/restore drill marker"})  # fmt: skip
    if sent.status != 202:
        raise DrillInconclusive(f"the marker message was not accepted: {sent.status}: {sent.text[:160]}")
    marker = str(sent.json["id"])

    async def marker_delivered() -> Observation:
        seen = await api.call("GET", f"/v1/messages/{marker}")
        status = seen.json.get("status") if seen.status == 200 else f"HTTP {seen.status}"
        return Observation(status == "delivered", None, f"marker {marker[:8]} is {status}")

    await drill.expect("the marker message is delivered before the backup", marker_delivered,
                       within_s=target.scaled(300.0, floor_s=5.0), every_s=every_s)  # fmt: skip
    await drill.expect("no traffic in flight before the backup (queues idle)", lambda: queues_idle(target),
                       within_s=target.scaled(300.0, floor_s=10.0), every_s=every_s)  # fmt: skip

    live: Counts = {}
    backup: dict[str, Any] = {}
    for attempt in range(1, BACKUP_ATTEMPTS + 1):
        live = await row_counts(live_dsn)
        latest_ids = await latest_message_ids(live_dsn)
        live_read = await readback(live_dsn, latest_ids)
        started = time.monotonic()
        forced = await api.call("POST", "/admin/backups", admin=True)
        if forced.status != 201:
            raise DrillFailed(f"a backup can be forced (POST /admin/backups → 201): got {forced.status}: "
                              f"{forced.text[:200]}")  # fmt: skip
        drill.measured["backup (pg_dump -Fc)"] = time.monotonic() - started
        backup = forced.json
        drill.event("backup forced", f"{backup['file']}: {backup['size_bytes']} bytes")
        after = await row_counts(live_dsn)
        if after == live:
            break
        changed = {t: f"{live.get(t)} → {n}" for t, n in after.items() if live.get(t) != n}
        drill.event("rows changed while the backup ran", f"attempt {attempt}: {changed}")
    else:
        raise DrillInconclusive(f"the database kept changing during {BACKUP_ATTEMPTS} backups: no quiet point "
                                "to compare a restore with")  # fmt: skip
    drill.snapshot("before", {"newest backup before the drill": scheduled, "forced backup": backup,
                              "live row counts at backup time": live})  # fmt: skip

    dump = backup_dir / str(backup["file"])
    if not dump.is_file() or not os.access(dump, os.R_OK):
        raise DrillFailed(f"the newest backup file is readable: {dump} is missing or unreadable")
    scratch = f"opsgate_restore_{uuid.uuid4().hex[:12]}"
    scratch_dsn = admin_dsn(live_dsn, scratch)
    server_dsn = admin_dsn(live_dsn, "postgres")
    restore_started = time.monotonic()
    restored: Counts = {}
    try:
        async with await psycopg.AsyncConnection.connect(server_dsn, autocommit=True, connect_timeout=10) as conn:
            await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
        drill.event("scratch database created", scratch)
        detail = await pg_restore(dump, scratch_dsn, rto_s)
        drill.event("backup restored", f"{detail} after {time.monotonic() - restore_started:.2f}s")
        restored = await row_counts(scratch_dsn)

        async def same_tables_and_rows() -> Observation:
            problems = count_diff(live, restored)
            note = "; ".join(problems) or f"{len(live)} tables, {sum(live.values())} rows: all match"
            return Observation(not problems, float(len(problems)), note)

        await drill.expect("every table of the backup-time database restored with its row count",
                           same_tables_and_rows)  # fmt: skip

        async def reads_back() -> Observation:
            got = await readback(scratch_dsn, [*live_read["messages"], marker])
            problems = []
            if got["tenants"] != live_read["tenants"]:
                problems.append(f"tenants {got['tenants']} restored, {live_read['tenants']} live")
            if api.auth.tenant_id not in got["tenants"]:
                problems.append(f"the seed 001 tenant {api.auth.tenant_id} is missing")
            if got["migrations"] != live_read["migrations"]:
                problems.append(f"schema at {got['migrations'][-1:]} restored, {live_read['migrations'][-1:]} live")
            missing = [m[:8] for m, status in live_read["messages"].items() if got["messages"].get(m) != status]
            if missing:
                problems.append(f"latest messages missing or changed: {missing}")
            if got["messages"].get(marker) != "delivered":
                problems.append(f"marker message {marker[:8]} is {got['messages'].get(marker, 'missing')}")
            note = (f"{len(got['tenants'])} tenants, schema {got['migrations'][-1:]}, latest "
                    f"{len(live_read['messages'])} messages and the marker read back")  # fmt: skip
            return Observation(not problems, None, "; ".join(problems) or note)

        await drill.expect("the restored data reads back: tenants, schema, latest messages, marker", reads_back)
        rto = time.monotonic() - restore_started
        drill.measured["RTO: restore start → verified"] = rto
        await drill.expect(f"restored and verified within the RTO of 60 min (scaled: {rto_s:g}s)",
                           _within(rto, rto_s, "restore start → verified"))  # fmt: skip
        age = time.time() - float(backup["timestamp"])
        drill.measured["RPO: restored backup's age when verified"] = age
        await drill.expect("the restored backup is at most 24 h old when verified (RPO, unscaled)",
                           _within(age, RPO_S, f"age of {backup['file']}"))  # fmt: skip
    finally:
        not_dropped = await _drop(drill, server_dsn, scratch)  # on every way out; a failure is on the timeline
    if not_dropped:
        raise ProbeError(not_dropped)
    return restored


def _within(value: float, limit: float, what: str) -> Check:
    async def check() -> Observation:
        return Observation(value <= limit, value, f"{what}: {value:.2f}s (limit {limit:g}s)")

    return check


async def _drop(drill: Drill, server_dsn: str, scratch: str) -> str | None:
    """Drop the scratch database (connections forced off), SIGINT/SIGTERM held; None, or why it was not dropped."""
    with signals_blocked():
        try:
            async with await psycopg.AsyncConnection.connect(server_dsn, autocommit=True, connect_timeout=10) as conn:
                await conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))
        except psycopg.Error as exc:
            reason = f"the scratch database {scratch} could not be dropped: {str(exc).splitlines()[0]}"
            drill.event("scratch database NOT dropped", reason)
            return reason
    drill.event("scratch database dropped", scratch)
    return None
