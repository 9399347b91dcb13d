"""The rollback journal: every undo is on disk *before* its fault is applied.

One JSON-lines file per run under the state directory (``$OPSGATE_STATE_DIR``, default
``.opsgate/journal``; mode 0600, outside ``reports/``): an ``owner`` line (PID and start time of
the run), then ``undo`` entries, ``process`` entries (what the run started) and ``done`` marks.
:meth:`Journal.rollback` replays pending undos in reverse, each once, continuing past failures,
with SIGINT/SIGTERM blocked so a second signal cannot skip a step. ``opsgate recover`` replays the
journals of runs that died (SIGKILL) — only those whose owner is gone.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import psycopg
from pydantic import BaseModel, ConfigDict

from opsgate.environments.process import default_signal_mask, process_start_time

UNDO_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def state_dir() -> Path:
    """Where journals live: ``$OPSGATE_STATE_DIR`` or ``.opsgate/journal``."""
    return Path(os.environ.get("OPSGATE_STATE_DIR") or ".opsgate/journal")


class HttpUndo(BaseModel):
    """Undo by one HTTP request (e.g. ``DELETE /control/faults``); a 2xx answer means undone."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["http"] = "http"
    method: str
    url: str
    json_body: Any = None
    headers: dict[str, str] = {}


class CommandUndo(BaseModel):
    """Undo by a shell command (e.g. ``kubectl scale deploy/worker --replicas=2``); exit 0 means undone."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["command"] = "command"
    command: str
    timeout_s: float = UNDO_TIMEOUT_S


class LocalUndo(BaseModel):
    """An undo carried out in-process on opsgate's own local environment (e.g. start a stopped worker).

    Replayed by a recovery it needs nothing: the dead run's local environment is stopped as a whole.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["local"] = "local"
    what: str


class SqlUndo(BaseModel):
    """Undo by SQL statements run in one transaction (e.g. a migration's down steps); a commit means undone.

    The statements must be idempotent (``DROP ... IF EXISTS``): a recovery may replay an undo already carried out.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["sql"] = "sql"
    dsn: str
    statements: list[str]
    timeout_s: float = UNDO_TIMEOUT_S


Undo = HttpUndo | CommandUndo | LocalUndo | SqlUndo


UNDO_KINDS: dict[str, type[HttpUndo] | type[CommandUndo] | type[LocalUndo] | type[SqlUndo]] = {
    "http": HttpUndo,
    "command": CommandUndo,
    "local": LocalUndo,
    "sql": SqlUndo,
}


@dataclass(frozen=True)
class Restored:
    """One undo or process stop carried out during a rollback: what, whether it worked, why not."""

    what: str
    ok: bool
    detail: str = ""


def run_undo(undo: Undo) -> str:
    """Carry out one undo; raises RuntimeError with a one-line reason when it did not work."""
    if isinstance(undo, LocalUndo):
        return f"{undo.what}: not needed, the run's local environment is stopped as a whole"
    if isinstance(undo, HttpUndo):
        try:
            response = httpx.request(undo.method, undo.url, json=undo.json_body, headers=undo.headers,
                                     timeout=UNDO_TIMEOUT_S)  # fmt: skip
        except httpx.HTTPError as exc:
            raise RuntimeError(f"{undo.method} {undo.url}: {type(exc).__name__}") from None
        if response.status_code // 100 != 2:
            raise RuntimeError(f"{undo.method} {undo.url} answered {response.status_code}")
        return f"{undo.method} {undo.url} → {response.status_code}"
    if isinstance(undo, SqlUndo):
        return run_sql(undo.dsn, undo.statements, timeout_s=undo.timeout_s)
    try:
        result = subprocess.run(undo.command, shell=True, capture_output=True, text=True, timeout=undo.timeout_s,
                                check=False, preexec_fn=default_signal_mask)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the undo command did not finish within {undo.timeout_s:g}s") from None
    # The command itself is not repeated: a target's command may carry a secret (a token on kubectl's line).
    if result.returncode != 0:
        raise RuntimeError(f"the undo command exited {result.returncode}: {result.stderr.strip()[:200]}")
    return "the undo command exited 0"


def run_sql(dsn: str, statements: list[str], *, timeout_s: float) -> str:
    """Run ``statements`` in one transaction, each lock wait and statement bounded by ``timeout_s``.

    Raises RuntimeError with the first line of PostgreSQL's reason; the DSN (it may hold a password) is never shown.
    """
    limit_ms = int(timeout_s * 1000)
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, int(timeout_s))) as conn:
            conn.execute(f"SET lock_timeout = {limit_ms}")
            conn.execute(f"SET statement_timeout = {limit_ms}")
            with conn.transaction():
                for statement in statements:
                    conn.execute(statement)
    except psycopg.Error as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RuntimeError(f"SQL on PostgreSQL failed: {reason}") from None
    return f"{len(statements)} SQL statement(s) committed"


def stop_process(pid: int, start_ticks: int | None) -> str:
    """Stop the process ``pid`` if it is still the one started (same start time); SIGTERM, then SIGKILL."""
    if start_ticks is None or process_start_time(pid) != start_ticks:
        return f"pid {pid} already gone"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process_start_time(pid) != start_ticks:
            return f"pid {pid} stopped"
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return f"pid {pid} killed after {STOP_TIMEOUT_S:g}s"


def remove_container(name: str, container_id: str) -> Restored:
    """Remove (force) a container a run created, by its id; gone already counts as done."""
    import docker  # here, not at the top: docker's client costs every opsgate start-up about 0.1 s

    what = f"remove container {name} ({container_id[:12]})"
    try:
        client = docker.from_env()
    except docker.errors.DockerException as exc:
        return Restored(what, False, f"no Docker engine answers: {exc}")
    try:
        client.containers.get(container_id).remove(force=True, v=True)
        return Restored(what, True, "removed")
    except docker.errors.NotFound:
        return Restored(what, True, "already gone")
    except docker.errors.DockerException as exc:
        return Restored(what, False, str(exc))
    finally:
        client.close()


@contextmanager
def signals_blocked() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, so a rollback is never cut short."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@dataclass
class Journal:
    """An open journal file of this run."""

    path: Path
    _next_id: int = 0
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def create(cls, folder: Path | None = None) -> Journal:
        """A new journal owned by this process."""
        folder = folder or state_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{secrets.token_hex(3)}.jsonl"
        journal = cls(path)
        pid = os.getpid()
        journal._append({"type": "owner", "pid": pid, "start_ticks": process_start_time(pid), "at": time.time()})
        os.chmod(path, 0o600)
        return journal

    def _append(self, entry: dict[str, Any]) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def record_undo(self, describe: str, undo: Undo) -> int:
        """Write the undo of a fault about to be applied; returns its id. Call this *before* the fault."""
        self._next_id += 1
        self._append({"type": "undo", "id": self._next_id, "describe": describe, "action": undo.model_dump()})
        return self._next_id

    def record_process(self, name: str, pid: int, start_ticks: int | None) -> None:
        """Note a process this run started, so a recovery can stop it (by PID *and* start time)."""
        self._append({"type": "process", "name": name, "pid": pid, "start_ticks": start_ticks})

    def record_container(self, name: str, container_id: str) -> None:
        """Note a container this run created, so a recovery can remove it (before stopping a dockerd it started)."""
        self._append({"type": "container", "name": name, "id": container_id})

    def record_scratch(self, path: Path) -> None:
        """Note a scratch directory this run created (data dirs), so a recovery can remove it."""
        self._append({"type": "scratch", "path": str(path)})

    def mark_done(self, entry_id: int) -> None:
        """The undo ``entry_id`` has been carried out (or is no longer needed)."""
        self._append({"type": "done", "id": entry_id})

    def rollback(self) -> list[Restored]:
        """Undo everything pending, newest first, with signals blocked; then remove the journal if all worked."""
        with signals_blocked():
            results = replay(self.path, stop_processes=False)
        return results

    def close(self) -> None:
        """Roll back what is pending and delete the journal."""
        if not self._closed:
            self.rollback()
            self._closed = True


def _entries(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a hard kill: everything before it is intact
    return rows


def replay(path: Path, *, stop_processes: bool) -> list[Restored]:
    """Carry out the pending undos of a journal in reverse (and stop its processes); delete it when all worked."""
    entries = _entries(path)
    done = {e["id"] for e in entries if e.get("type") == "done"}
    results: list[Restored] = []
    pending = [e for e in entries if e.get("type") == "undo" and e["id"] not in done]
    with path.open("a") as fh:
        for entry in reversed(pending):
            action = entry["action"]
            undo: Undo = UNDO_KINDS[action["kind"]].model_validate(action)
            try:
                detail = run_undo(undo)
            except RuntimeError as exc:
                results.append(Restored(entry["describe"], False, str(exc)))
                continue
            fh.write(json.dumps({"type": "done", "id": entry["id"]}) + "\n")
            fh.flush()
            results.append(Restored(entry["describe"], True, detail))
    if stop_processes:
        containers = {e["id"]: e["name"] for e in entries if e.get("type") == "container"}
        for container_id, name in reversed(list(containers.items())):
            results.append(remove_container(name, container_id))
        for entry in reversed([e for e in entries if e.get("type") == "process"]):
            results.append(Restored(f"stop {entry['name']}", True, stop_process(entry["pid"], entry["start_ticks"])))
        for entry in [e for e in entries if e.get("type") == "scratch"]:
            shutil.rmtree(entry["path"], ignore_errors=True)
            results.append(Restored(f"remove {entry['path']}", True, "removed"))
    if all(r.ok for r in results):
        path.unlink(missing_ok=True)
    return results


def owner_alive(path: Path) -> bool:
    """True when the run that owns the journal is still running (same PID *and* start time)."""
    entries = _entries(path)
    owner = next((e for e in entries if e.get("type") == "owner"), None)
    if owner is None:
        return False
    return process_start_time(int(owner["pid"])) == owner.get("start_ticks")


def recover(folder: Path | None = None) -> dict[str, list[Restored]]:
    """Replay every journal whose owner is dead; journals of live runs are left alone."""
    folder = folder or state_dir()
    results: dict[str, list[Restored]] = {}
    if not folder.is_dir():
        return results
    for path in sorted(folder.glob("*.jsonl")):
        if owner_alive(path):
            continue
        with signals_blocked():
            results[path.name] = replay(path, stop_processes=True)
    return results
