"""The rollback journal: undo on disk before the fault, reverse replay, signals cannot cut it short,
and ``opsgate recover`` after a SIGKILL restores the target and stops what the dead run started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from helpers import alive
from opsgate.environments.local import LocalEnvironment
from opsgate.faults.actions import Migration
from opsgate.faults.journal import CommandUndo, HttpUndo, Journal, SqlUndo, owner_alive, recover, replay, run_undo


def faults_active(platform: LocalEnvironment) -> bool:
    return bool(httpx.get(f"{platform.provider_url}/control/faults").json()["active"])


def test_rollback_restores_and_removes_the_journal(platform: LocalEnvironment, tmp_path: Path) -> None:
    journal = Journal.create(tmp_path)
    undo_id = journal.record_undo(
        "provider healthy", HttpUndo(method="DELETE", url=f"{platform.provider_url}/control/faults")
    )
    assert "DELETE" in journal.path.read_text()  # on disk before the fault is applied
    assert journal.path.stat().st_mode & 0o777 == 0o600  # it may hold a control URL's credentials
    httpx.put(f"{platform.provider_url}/control/faults", json={"error_rate": 1.0}).raise_for_status()
    assert faults_active(platform)
    results = journal.rollback()
    assert [(r.what, r.ok) for r in results] == [("provider healthy", True)] and undo_id == 1
    assert not faults_active(platform)
    assert not journal.path.exists()


def test_replay_is_reverse_and_continues_past_a_failure(tmp_path: Path) -> None:
    out = tmp_path / "order.txt"
    journal = Journal.create(tmp_path / "state")
    journal.record_undo("first", CommandUndo(command=f"echo 1 >> {out}"))
    journal.record_undo("broken", CommandUndo(command="exit 3"))
    journal.record_undo("third", CommandUndo(command=f"echo 3 >> {out}"))
    results = journal.rollback()
    assert out.read_text().split() == ["3", "1"]
    assert [(r.what, r.ok) for r in results] == [("third", True), ("broken", False), ("first", True)]
    assert "exited 3" in results[1].detail
    assert journal.path.exists()  # kept: one step failed, a later recover retries only what is pending
    journal.record_undo("fixed", CommandUndo(command="true"))
    again = journal.rollback()
    assert [r.what for r in again] == ["fixed", "broken"]


SCRIPT = """
import os, subprocess, sys, time, httpx
from pathlib import Path
from opsgate.environments.process import process_start_time
from opsgate.faults.journal import HttpUndo, Journal
journal = Journal.create(Path(sys.argv[1]))
child = subprocess.Popen(["sleep", "300"], start_new_session=True)
journal.record_process("sleeper", child.pid, process_start_time(child.pid))
journal.record_undo("provider healthy", HttpUndo(method="DELETE", url=sys.argv[2] + "/control/faults"))
httpx.put(sys.argv[2] + "/control/faults", json={"error_rate": 1.0}).raise_for_status()
print(child.pid, flush=True)
time.sleep(300)
"""


def test_recover_after_sigkill(platform: LocalEnvironment, tmp_path: Path) -> None:
    state = tmp_path / "state"
    run = subprocess.Popen([sys.executable, "-c", SCRIPT, str(state), platform.provider_url],
                           stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert run.stdout is not None
        sleeper = int(run.stdout.readline())
        journal = next(state.glob("*.jsonl"))
        assert owner_alive(journal) and recover(state) == {}  # a live run's journal is never touched
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        assert faults_active(platform) and alive(sleeper)
        result = subprocess.run([sys.executable, "-m", "opsgate.cli", "recover"], capture_output=True, text=True,
                                timeout=60, env={**os.environ, "OPSGATE_STATE_DIR": str(state)})  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ok   provider healthy: DELETE" in result.stdout and "ok   stop sleeper" in result.stdout
        assert not faults_active(platform)
        deadline = time.monotonic() + 10
        while alive(sleeper) and time.monotonic() < deadline:
            time.sleep(0.05)  # the sleeper is not our child: wait until init has reaped it
        assert not alive(sleeper)
        assert list(state.glob("*.jsonl")) == []
    finally:
        if run.poll() is None:
            run.kill()


SLOW_ROLLBACK = """
import sys
from pathlib import Path
from opsgate.faults.journal import CommandUndo, Journal
journal = Journal.create(Path(sys.argv[1]))
for n in (1, 2, 3):
    journal.record_undo(f"step {n}", CommandUndo(command=f"sleep 0.4; echo {n} >> {sys.argv[2]}"))
print("rolling back", flush=True)
journal.rollback()
print("done", flush=True)
"""


@pytest.mark.parametrize("signals", [1, 2])
def test_signals_during_rollback_do_not_skip_steps(tmp_path: Path, signals: int) -> None:
    out = tmp_path / "steps.txt"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_ROLLBACK, str(tmp_path / "state"), str(out)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "rolling back"
    for _ in range(signals):
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    assert out.read_text().split() == ["3", "2", "1"]  # every undo ran, newest first
    assert proc.returncode == -signal.SIGTERM  # the signal took effect only after the rollback


@pytest.mark.matrix  # 25 s; make test keeps the drill's (tests/drills/test_interrupts_local.py): it undoes a fault too
def test_recover_stops_every_process_of_a_sigkilled_gate(tmp_path: Path) -> None:
    env = {**os.environ, "OPSGATE_REPORTS_DIR": str(tmp_path / "reports"), "OPSGATE_STATE_DIR": str(tmp_path / "state")}
    gate = subprocess.Popen([sys.executable, "-m", "opsgate.cli", "gate"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 90
        listing = tmp_path / "reports" / "latest" / "logs" / "processes.json"
        while time.monotonic() < deadline and len(pids) < 8:
            if listing.exists():
                pids = [row["pid"] for row in json.loads(listing.read_text() or "{}").values()]
            time.sleep(0.2)
        assert len(pids) >= 8, "the gate never listed its processes"
        gate.send_signal(signal.SIGKILL)  # no handler, no teardown: everything it started is orphaned
        gate.wait(timeout=10)
        assert all(alive(pid) for pid in pids)
        result = subprocess.run([sys.executable, "-m", "opsgate.cli", "recover"], capture_output=True, text=True,
                                timeout=120, env=env)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        for step in ("stop postgres", "stop prometheus", "stop worker-1", "remove /tmp/opsgate-local-"):
            assert step in result.stdout, result.stdout
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in pids if alive(pid)] == []
        assert list((tmp_path / "state").glob("*.jsonl")) == []
    finally:
        if gate.poll() is None:
            gate.kill()


def test_replay_runs_a_migrations_down_steps_once_and_again_harmlessly(platform: LocalEnvironment,
                                                                       tmp_path: Path) -> None:  # fmt: skip
    table = f"opsgate_recover_{os.getpid()}_{time.monotonic_ns() % 10**6}"
    applied = f"SELECT to_regclass('{table}') IS NOT NULL"
    migration = Migration(platform.database_url, f"create {table}", up=[f"CREATE TABLE {table} (id int)"],
                          down=[f"DROP TABLE IF EXISTS {table}"], applied=applied)  # fmt: skip
    journal = Journal.create(tmp_path)
    journal.record_undo(migration.describe(), migration.undo())  # as a run that then dies leaves it
    migration.apply()
    assert migration.is_applied()
    results = replay(journal.path, stop_processes=False)
    assert [(r.what, r.ok, r.detail) for r in results] == [(f"migration create {table}: CREATE TABLE {table} (id int)",
                                                            True, "1 SQL statement(s) committed")]  # fmt: skip
    assert not migration.is_applied() and not journal.path.exists()
    assert run_undo(migration.undo()) == "1 SQL statement(s) committed"  # replayed twice: idempotent
    broken = SqlUndo(dsn=platform.database_url, statements=["DROP TABLE no_such_table"])
    with pytest.raises(RuntimeError, match="no_such_table") as caught:
        run_undo(broken)
    assert platform.database_url not in str(caught.value)
