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

log = logging.getLogger("opsgate.reference.backups")
RETAIN = 7  # seed 001: "7-day retention" of daily backups
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
    ) -> None:
        self.database_url = database_url
        self.folder = folder
        self.interval_s = interval_s
        self.metrics = metrics
        self.exclude_tables = exclude_tables
        self._lock = asyncio.Lock()
        folder.mkdir(parents=True, exist_ok=True)
        latest = self.latest()
        if latest:
            metrics.backup_last_success.set(latest.timestamp)

    def latest(self) -> BackupInfo | None:
        """The newest complete backup, or None."""
        files = sorted(self.folder.glob("backup-*.dump"))
        if not files:
            return None
        stat = files[-1].stat()
        return BackupInfo(files[-1], stat.st_mtime, stat.st_size)

    async def backup_now(self) -> BackupInfo:
        """Dump the database now; raises RuntimeError with pg_dump's stderr on failure."""
        async with self._lock:
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time() % 1:.3f}"[1:]
            final = self.folder / f"backup-{stamp}.dump"
            partial = final.with_suffix(".partial")
            args = [find_pg_dump(), "-Fc", "-f", str(partial), "--dbname", self.database_url]
            for table in self.exclude_tables:
                args += ["--exclude-table", table]
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
            partial.rename(final)
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
