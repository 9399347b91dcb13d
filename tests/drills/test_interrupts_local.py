"""``opsgate drill`` on the embedded reference platform, interrupted at exact moments of ``worker-to-zero``.

Whatever ends the run — Ctrl-C or SIGTERM while the worker is stopped, SIGTERM twice during the rollback,
or SIGKILL followed by ``opsgate recover`` — no process the run started is left alive (by the PIDs its
``logs/processes.json`` and its journal listed, and by a marker every child inherits), its scratch
directory is gone and its journal folder is empty.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from drillrun import PausedRun, opsgate_env, paused_run
from helpers import alive, run_opsgate

# The local environment with its alerting stack (PostgreSQL, Redis, sandbox, api, worker, Prometheus...).
CORE = {"postgres", "postgres-proxy", "redis", "provider", "api", "worker-1", "prometheus", "alertmanager"}


def drill_args(tmp_path: Path) -> list[str]:
    # No --target: the embedded default, started by the run. The --chaos folder does not exist, so only the
    # target file's declared drills run (an empty folder runs none: see test_external_target.py).
    return ["drill", "--match", "worker-to-zero", "--chaos", str(tmp_path / "no-chaos"),
            "--drill-logs", str(tmp_path / "drill-logs")]  # fmt: skip


def started(drill: PausedRun) -> tuple[dict[int, str], list[str]]:
    """PID → name of every process the run started so far (its process list and its journal), its scratch dirs."""
    pids = {**drill.journal_pids(), **drill.listed_pids()}
    assert set(pids.values()) >= CORE, pids
    assert "worker-1" not in drill.listed_pids().values()  # the fault holds: the worker is stopped
    return pids, [entry["path"] for entry in drill.journal_entries("scratch")]


# make test runs the fault-applied interrupts on the external target (tests/drills/test_external_target.py) and
# leaves these two local ones (15 s each) to make test-matrix.
@pytest.mark.parametrize(
    ("point", "signals"),
    [
        pytest.param("fault-applied", [signal.SIGINT], id="sigint-fault-applied", marks=pytest.mark.matrix),
        pytest.param("fault-applied", [signal.SIGTERM], id="sigterm-fault-applied", marks=pytest.mark.matrix),
        pytest.param("in-rollback", [signal.SIGTERM, signal.SIGTERM], id="sigterm-twice-in-rollback"),
    ],
)
def test_an_interrupted_drill_leaves_no_process_and_no_journal(
    tmp_path: Path, point: str, signals: list[signal.Signals]
) -> None:
    with paused_run(drill_args(tmp_path), tmp_path, point) as drill:
        drill.wait_reached(point)
        pids, scratch = started(drill)
        drill.interrupt(point, signals)
        code = drill.wait_exit()
        output = drill.text()
    assert code != 0, output[-4000:]  # interrupted: never a pass
    assert drill.wait_all_gone(pids) == [], output[-4000:]
    assert scratch and not any(Path(path).exists() for path in scratch)
    assert drill.journals() == [] and drill.listed_pids() == {}


def test_recover_after_a_sigkilled_drill_stops_everything_it_started(tmp_path: Path) -> None:
    with paused_run(drill_args(tmp_path), tmp_path, "fault-applied") as drill:
        drill.wait_reached("fault-applied")
        pids, scratch = started(drill)
        drill.send(signal.SIGKILL)  # no handler, no teardown: everything it started is orphaned
        assert drill.wait_exit(10) == -signal.SIGKILL
        orphans = {pid: name for pid, name in pids.items() if alive(pid)}
        assert CORE - {"worker-1"} <= set(orphans.values()), orphans
        recovered = run_opsgate(["recover"], timeout_s=120, env=opsgate_env(tmp_path))
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
        for step in ("stop worker-1 (local processes)", "stop postgres", "stop prometheus", "remove /tmp/opsgate-"):
            assert step in recovered.stdout, recovered.stdout
        assert "FAIL" not in recovered.stdout, recovered.stdout
        assert drill.wait_all_gone(pids) == [], recovered.stdout
        assert not any(Path(path).exists() for path in scratch)
        assert drill.journals() == []
