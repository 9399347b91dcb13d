"""``opsgate gate`` and ``opsgate drill`` on the containers provider, end to end, as a user runs them.

The embedded target with ``OPSGATE_PROVIDER=containers``: PostgreSQL and Redis in containers, the platform
on the host. The full gate (checks/, alert rules, live alerts, short SLO stage) and the worker-to-zero and
Redis-outage drills must pass; afterwards no container and no process of the run is left, also after a run
killed with SIGKILL in the middle of its fault and cleaned up by ``opsgate recover``.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from leftovers import opsgate_containers

from drillrun import opsgate_env, paused_run
from helpers import alive, run_opsgate

pytestmark = pytest.mark.containers

CONTAINERS = {"OPSGATE_PROVIDER": "containers"}


def summary_of(tmp_path: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((tmp_path / "reports" / "latest" / "summary.json").read_text())
    return summary


def drill_args(tmp_path: Path, match: str) -> list[str]:
    # The target file's declared drills only: the --chaos folder does not exist.
    return ["drill", "--match", match, "--chaos", str(tmp_path / "no-chaos"), "--drill-logs", str(tmp_path / "logs")]


@pytest.mark.matrix  # 70 s; make test keeps the drills on containers and tests/containers/test_environment.py
def test_the_full_gate_passes_on_the_containers_provider(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_opsgate(["gate"], timeout_s=300, env=opsgate_env(tmp_path, CONTAINERS))
    print(f"\nopsgate gate on containers: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = summary_of(tmp_path)
    assert summary["info"]["provider"] == "containers"
    assert summary["info"]["container images"] == "postgres opsgate-deps:bookworm, redis opsgate-deps:bookworm"
    kinds = {check["kind"] for check in summary["checks"]}
    assert {"health", "datastore", "queue", "metric", "flow", "browser", "alert-rule", "alert-live", "slo"} <= kinds
    assert [c["id"] for c in summary["checks"] if c["verdict"] != "pass"] == []
    assert opsgate_containers(tmp_path) == []


def test_worker_to_zero_and_redis_outage_drills_pass_on_the_containers_provider(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_opsgate(drill_args(tmp_path, "worker-to-zero or redis-outage"), timeout_s=300,
                         env=opsgate_env(tmp_path, CONTAINERS))  # fmt: skip
    print(f"\nopsgate drill worker-to-zero + redis-outage on containers: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    verdicts = {c["id"]: c["verdict"] for c in summary_of(tmp_path)["checks"]}
    assert verdicts == {"drill[worker-to-zero]": "pass", "drill[redis-outage]": "pass"}, verdicts
    assert opsgate_containers(tmp_path) == []


@pytest.mark.matrix  # 34 s; make test keeps the local SIGKILL recovery (tests/drills/test_interrupts_local.py)
def test_recover_removes_the_containers_of_a_sigkilled_drill(tmp_path: Path) -> None:
    with paused_run(drill_args(tmp_path, "redis-outage"), tmp_path, "fault-applied", CONTAINERS) as drill:
        drill.wait_reached("fault-applied")
        containers = {entry["id"]: entry["name"] for entry in drill.journal_entries("container")}
        assert set(containers.values()) == {"postgres", "redis"}, containers
        pids = {**drill.journal_pids(), **drill.listed_pids()}
        drill.send(signal.SIGKILL)  # no teardown: the containers and processes it started are orphaned
        assert drill.wait_exit(10) == -signal.SIGKILL
        left = {c["Id"] for c in opsgate_containers(tmp_path)}
        assert set(containers) <= left, "the killed run's containers should still exist before recovery"
        recovered = run_opsgate(["recover"], timeout_s=120, env=opsgate_env(tmp_path))
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
        for name in ("postgres", "redis"):
            assert f"remove container {name}" in recovered.stdout, recovered.stdout
        assert "FAIL" not in recovered.stdout, recovered.stdout
        assert drill.wait_all_gone(pids) == [], recovered.stdout
        assert drill.journals() == []
    assert not set(containers) & {c["Id"] for c in opsgate_containers(tmp_path)}
    assert [f"{name} (pid {pid})" for pid, name in pids.items() if alive(pid)] == []


def test_an_engine_that_does_not_answer_errors_every_check_with_its_reason(tmp_path: Path) -> None:
    unreachable = {**CONTAINERS, "DOCKER_HOST": "tcp://127.0.0.1:1"}  # nothing listens on port 1
    result = run_opsgate(["gate", "--only", "smoke"], timeout_s=120, env=opsgate_env(tmp_path, unreachable))
    assert result.returncode == 3, result.stdout[-4000:] + result.stderr[-2000:]  # error: opsgate could not check
    checks = summary_of(tmp_path)["checks"]
    assert checks and {c["verdict"] for c in checks} == {"error"}
    assert all("DOCKER_HOST=tcp://127.0.0.1:1 does not answer" in c["message"] for c in checks), checks[0]
