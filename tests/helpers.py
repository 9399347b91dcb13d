"""Bounded polling helpers for tests against the running platform."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from opsgate.environments.local import LocalEnvironment
from opsgate.flows import zone_at_hour

TIME_SCALE = 0.02
BACKUP_INTERVAL_S = 3.0
NewTenant = Callable[..., Awaitable[dict[str, Any]]]

# The drills and live alert checks of the healthy drill run that took 9 s or more each (2026-12-03, CI clone on
# this 2-core machine: 269 of the run's 330 s; most wait for an alert's compressed ``for:`` to fire and resolve).
# ``make test`` runs every other drill healthy; ``make test-matrix`` (marker ``matrix``) runs them all, as does each
# healthy run of ``make matrix``. health-baseline (9 s) is not left out: tests/drills/test_health_baseline.py reads it
# from the same run rather than start a stack of its own (26 s).
LONG_DRILLS = (
    "provider_errors", "maintenance_window", "provider-errors", "NotificationFailureRateHigh", "worker-to-zero",
    "postgres-latency", "ApiErrorRateSev1", "monitoring_sink_failure", "worker_to_zero_redelivered_webhooks",
    "rolling_restart_of_two_replicas", "worker_killed_mid_flight", "zero_downtime_worker_swap",
    "kill_switch_admin_page",
)  # fmt: skip


async def poll(
    fetch: Callable[[], Awaitable[Any]],
    until: Callable[[Any], bool],
    *,
    what: str,
    timeout_s: float = 20.0,
    interval_s: float = 0.1,
) -> Any:
    """Call ``fetch`` until ``until(value)``; fail after ``timeout_s`` (and a matching attempt cap)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    for _ in range(int(timeout_s / interval_s) + 10):
        last = await fetch()
        if until(last):
            return last
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last value: {last!r}")


async def message_status(api: httpx.AsyncClient, headers: dict[str, str], message_id: str) -> dict[str, Any]:
    """GET /v1/messages/{id} as JSON."""
    response = await api.get(f"/v1/messages/{message_id}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def deliveries(sandbox: httpx.AsyncClient, message_id: str) -> int:
    """How many deliveries the provider sandbox recorded for ``message_id`` (ground truth)."""
    response = await sandbox.get("/deliveries", params={"message_id": message_id})
    count: int = response.json()["count"]
    return count


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` in an exposition text."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += sample.value
    return total


def admin_login(platform: LocalEnvironment) -> dict[str, str]:
    """Authorization for the admin API of ``platform``: a service-account session token."""
    c = platform.credentials
    response = httpx.post(
        f"{platform.api_url}/auth/login", json={"username": c.service_user, "password": c.service_password}
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['token']}"}


def local_target_as_external(path: Path) -> Path:
    """Write targets/local.yaml to ``path`` as an external target: the session's running platform, nothing started.

    Each edit must apply: a target file that silently stayed ``local`` would start (and check) a platform of
    its own, and a gate expected to fail would pass.
    """
    from opsgate.config import LOCAL_TARGET

    text = LOCAL_TARGET.read_text()
    edits = [
        ("provider: ${OPSGATE_PROVIDER:-local}\n", "provider: external\n"),
        ("platform:\n  workers: 1\n", ""),
        ("    control:\n      kind: process\n", ""),
    ]
    for old, new in edits:
        assert old in text, f"{LOCAL_TARGET} no longer contains {old!r}"
        text = text.replace(old, new)
    path.write_text(text)
    return path


def alive(pid: int) -> bool:
    """True while a process with ``pid`` exists."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def backup_tables(path: str) -> set[str]:
    """Names of the tables whose data a ``pg_dump -Fc`` file holds (via ``pg_restore --list``)."""
    import subprocess

    from opsgate.environments.binaries import postgres_bin_dir

    listing = subprocess.run(
        [str(postgres_bin_dir() / "pg_restore"), "--list", path], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return {line.split()[-2] for line in listing.splitlines() if " TABLE DATA " in line}


def fixed_offset_zone(local_hour: int) -> str:
    """An Etc/GMT zone in which it is now ``local_hour`` o'clock."""
    return zone_at_hour(local_hour)


def run_opsgate(args: list[str], *, timeout_s: float, env: dict[str, str] | None = None) -> Any:
    """Run ``python -m opsgate.cli ARGS``; on timeout stop it with SIGTERM first so it stops what it started.

    (A SIGKILL would orphan the platform it launched; only if SIGTERM does not end it within 30 s.)
    """
    import os
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "opsgate.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        raise AssertionError(
            f"opsgate {' '.join(args)} did not finish within {timeout_s}s:\n{stdout[-2000:]}"
        ) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@contextmanager
def defects_planted(platform: LocalEnvironment, defects: str) -> Iterator[LocalEnvironment]:
    """Restart the session platform's api and worker with ``defects``; restart them healthy afterwards."""
    platform.restart_platform(defects=defects)
    try:
        yield platform
    finally:
        platform.restart_platform(defects="", backup_interval_s=BACKUP_INTERVAL_S)


def live_checks_in_the_gate(target_text: str) -> str:
    """A target file's text with every live alert check in the gate's job: one ``opsgate gate`` run, one stack,
    judges them with the gate's other checks."""
    assert "      job: drill\n" in target_text
    return target_text.replace("      job: drill\n", "")


@dataclass(frozen=True)
class HealthyRun:
    """One ``opsgate`` run on a fresh, healthy reference platform: its exit, output and evidence."""

    result: subprocess.CompletedProcess[str]
    folder: Path
    """The run's scratch folder (reports/, and for a drill run drills/ and state/)."""

    @property
    def run_dir(self) -> Path:
        return (self.folder / "reports" / "latest").resolve()

    @property
    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.run_dir / "summary.json").read_text())
        return data

    @property
    def checks(self) -> dict[str, dict[str, Any]]:
        return {c["id"]: c for c in self.summary["checks"]}
