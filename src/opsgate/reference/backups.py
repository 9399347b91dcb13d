"""Scheduled logical backups with ``pg_dump -Fc`` (seed 002: "nightly logical dump ... pg_dump -Fc")."""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from opsgate.reference.metrics import PlatformMetrics
from opsgate.reference.settings import PlatformSettings

log = logging.getLogger("opsgate.reference.backups")
RETAIN = 7
"""Seed 001: "7-day retention" of daily backups: the newest 7 files are kept, one per backup interval (the
platform's scaled "day"); older ones are pruned after every backup."""
DUMP_TIMEOUT_S = 120.0


def find_pg_dump() -> str:
    """The pg_dump binary: ``$PG_BIN_DIR``, then Debian's newest server bin dir, then PATH."""
    candidates = []
    if os.environ.get("PG_BIN_DIR"):
        candidates.append(os.path.join(os.environ["PG_BIN_DIR"], "pg_dump"))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"), reverse=True)
    candidates += [shutil.which("pg_dump") or ""]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError("pg_dump not found: install the Debian package postgresql-client")


@dataclass(frozen=True)
class BackupInfo:
    """One backup file: where, when (unix s) and how big (bytes)."""

    path: Path
    timestamp: float
    size_bytes: int


class BackupScheduler:
    """Runs pg_dump into ``folder`` every ``interval_s`` and exposes the newest backup's time."""

    def __init__(
        self,
        database_url: str,
        folder: Path,
        interval_s: float,
        metrics: PlatformMetrics,
        *,
        exclude_tables: tuple[str, ...] = (),
        exclude_table_data: tuple[str, ...] = (),
        dump_format: str = "c",
        prune: bool = True,
        truncate: bool = False,
    ) -> None:
        self.database_url = database_url
        self.folder = folder
        self.interval_s = interval_s
        self.metrics = metrics
        self.exclude_tables = exclude_tables
        self.exclude_table_data = exclude_table_data
        self.dump_format = dump_format
        """pg_dump's ``-F`` letter: ``c`` (custom, seed 002's ``-Fc``); ``p`` only with the plain-format defect."""
        self.prune = prune
        self.truncate = truncate
        self._lock = asyncio.Lock()
        folder.mkdir(parents=True, exist_ok=True)
        latest = self.latest()
        if latest:
            metrics.backup_last_success.set(latest.timestamp)

    def listing(self) -> list[BackupInfo]:
        """Every complete backup kept, oldest first (names sort by time)."""
        found = []
        for path in sorted(self.folder.glob("backup-*.dump")):
            try:
                stat = path.stat()
            except FileNotFoundError:  # pruned meanwhile
                continue
            found.append(BackupInfo(path, stat.st_mtime, stat.st_size))
        return found

    def latest(self) -> BackupInfo | None:
        """The newest complete backup, or None."""
        kept = self.listing()
        return kept[-1] if kept else None

    async def backup_now(self) -> BackupInfo:
        """Dump the database now; raises RuntimeError with pg_dump's stderr on failure."""
        async with self._lock:
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.3f}"[1:]
            final = self.folder / f"backup-{stamp}.dump"
            # the api and the worker may both back up before migrating, in the same millisecond: own partial file
            partial = final.with_suffix(f".{os.getpid()}.partial")
            args = [find_pg_dump(), f"-F{self.dump_format}", "-f", str(partial), "--dbname", self.database_url]
            for table in self.exclude_tables:
                args += ["--exclude-table", table]
            for table in self.exclude_table_data:
                args += ["--exclude-table-data", table]
            proc = await asyncio.create_subprocess_exec(
                *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
            try:
                _, stderr = await asyncio.wait_for(proc.communicate(), DUMP_TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                partial.unlink(missing_ok=True)
                raise RuntimeError(f"pg_dump did not finish within {DUMP_TIMEOUT_S:.0f}s") from None
            if proc.returncode != 0:
                partial.unlink(missing_ok=True)
                raise RuntimeError(f"pg_dump exited {proc.returncode}: {stderr.decode(errors='replace')[-300:]}")
            if self.truncate:  # defect backup-truncated: the copy stops half-way
                with partial.open("r+b") as fh:
                    fh.truncate(partial.stat().st_size // 2)
            partial.rename(final)
            if self.prune:
                for old in sorted(self.folder.glob("backup-*.dump"))[:-RETAIN]:
                    old.unlink(missing_ok=True)
            info = self.latest()
            assert info is not None
            self.metrics.backup_last_success.set(info.timestamp)
            log.info("backup written: %s (%d bytes)", final.name, info.size_bytes)
            return info

    async def run(self) -> None:
        """Back up at start, then every ``interval_s`` (until cancelled); failures are logged."""
        while True:
            try:
                await self.backup_now()
            except Exception as exc:
                log.error("scheduled backup failed: %s", exc)
            await asyncio.sleep(self.interval_s)


def scheduler_for(settings: PlatformSettings, metrics: PlatformMetrics) -> BackupScheduler | None:
    """The platform's backup scheduler as its settings and planted defects make it (None: no BACKUP_DIR)."""
    if settings.backup_dir is None:
        return None
    defects = settings.defects
    return BackupScheduler(
        settings.database_url,
        settings.backup_dir,
        settings.effective_backup_interval_s,
        metrics,
        exclude_tables=("audit_events",) if "backup-omits-table" in defects else (),
        exclude_table_data=("billing_webhook_events",) if "backup-excludes-outbox" in defects else (),
        dump_format="p" if "backup-plain-format" in defects else "c",
        prune="backup-retention-unbounded" not in defects,
        truncate="backup-truncated" in defects,
    )
