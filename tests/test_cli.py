"""The ``opsgate`` command end to end, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest

from helpers import HealthyRun, alive, run_opsgate

OPSGATE = [sys.executable, "-m", "opsgate.cli"]


def run(args: list[str], reports: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = run_opsgate(
        args, timeout_s=timeout, env={"OPSGATE_REPORTS_DIR": str(reports), **env}
    )
    return result


def test_validate_reports_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nenvironment: prod\n")
    result = run(["validate", str(bad)], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert f"{bad}: environment:" in result.stderr and "Traceback" not in result.stderr
    gate = run(["gate", "--target", str(bad)], tmp_path)
    assert gate.returncode == 2 and "Traceback" not in gate.stderr


@pytest.mark.timeout(420)
def test_gate_on_the_embedded_default_passes_and_leaves_nothing(healthy_gate: HealthyRun) -> None:
    # The gate's budget (90 s) is make gate's, timed alone with `time make gate`, not here.
    result = healthy_gate.result
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = healthy_gate.run_dir
    assert (run_dir / "junit.xml").exists()
    processes = json.loads((run_dir / "logs" / "processes.json").read_text())
    assert processes == {}  # rewritten at stop: nothing running
    logs = {log.stem for log in (run_dir / "logs").iterdir()}
    assert {"prometheus", "alertmanager", "receiver"} <= logs  # its alert checks read them: they were started
    junit = ElementTree.parse(run_dir / "junit.xml")
    names = {case.get("name") for case in junit.iter("testcase")}
    assert {"test_health[api:/readyz]", "test_health[worker:/readyz]", "test_datastore[redis]"} <= names
    assert not [case for case in junit.iter("testcase") if case.find("failure") is not None]
    suite_properties = {p.get("name"): p.get("value") for p in junit.iter("property")}
    assert suite_properties["target"] == "reference-local" and suite_properties["environment"] == "local"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["verdict"] == "pass" and len(summary["checks"]) >= 20
    lives = [c for c in summary["checks"] if c["kind"] == "alert-live"]
    assert [c["id"] for c in lives] == ["alert_live[BudgetApproaching90]"]  # the others are job: drill
    live = lives[0]
    assert live["verdict"] == "pass" and 0 < live["measured"] < 60
    for event in ("tripped", "pending", "firing", "notified (info)", "restored", "resolved"):
        assert event in live["message"]
    kinds = {check["kind"] for check in summary["checks"]}
    assert kinds == {
        "health", "datastore", "queue", "metric", "flow", "diagnosis", "browser", "freshness",
        "alert-rule", "alert-lint", "alert-routing", "alert-route", "alert-severities", "rules-applied",
        "metric-labels", "alert-live", "slo",
    }  # fmt: skip
    slos = [c for c in summary["checks"] if c["kind"] == "slo"]
    assert len(slos) == 3 and all(c["figures"]["stage"] == "short" for c in slos)  # the gate's short SLO stage
    assert (run_dir / "report.html").exists() and (run_dir / "screenshots").is_dir()
    assert "verdict PASS" in result.stdout


def test_gate_against_an_unreachable_target_fails_fast(tmp_path: Path) -> None:
    target = tmp_path / "down.yaml"
    target.write_text(
        "name: down\nenvironment: staging\nprovider: external\n"
        "services:\n  api:\n    url: http://127.0.0.1:9\n    health:\n      - {path: /healthz, timeout: 2s}\n"
    )
    started = time.monotonic()
    result = run(["gate", "--target", str(target)], tmp_path)
    assert result.returncode == 1
    assert "connection refused to http://127.0.0.1:9/healthz" in result.stdout
    assert time.monotonic() - started < 60


def test_up_prints_addresses_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*OPSGATE, "up"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OPSGATE_REPORTS_DIR": str(tmp_path)},
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        text = "".join(lines)
        assert "Press Ctrl-C" in text, text
        api_url = next(line.split()[1] for line in lines if line.strip().startswith("api "))
        assert api_url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{api_url}/health").json() == {"status": "ok"}
        assert "postgresql://opsgate:***@127.0.0.1:" in text
        processes = json.loads(((tmp_path / "latest").resolve() / "logs" / "processes.json").read_text())
        pids = [row["pid"] for row in processes.values()]
        assert {"postgres", "redis", "provider", "api", "worker-1", "prometheus", "alertmanager"} <= set(processes)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:  # a failed assertion: stop it as a user would, so it stops what it started
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert [pid for pid in pids if alive(pid)] == []


def test_checks_folder_collects_the_suite_with_readable_ids(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "checks/", "--collect-only", "-q", "-p", "no:cacheprovider",
         "--opsgate-run-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for check_id in ("test_health[api:/readyz]", "test_queue[billing-webhooks]", "test_gate[api-p95]",
                     "test_flow[send-sms-delivered]", "test_browser[admin-kill-switch-state]"):  # fmt: skip
        assert check_id in result.stdout
    destructive = subprocess.run(
        [sys.executable, "-m", "pytest", "checks/", "--collect-only", "-q", "-p", "no:cacheprovider", "-m",
         "destructive", "--opsgate-run-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert "test_flow[send-sms-delivered]" in destructive.stdout and "test_health" not in destructive.stdout


def test_gate_interrupted_by_sigterm_stops_everything_it_started(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*OPSGATE, "gate"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "OPSGATE_REPORTS_DIR": str(tmp_path)},
    )  # fmt: skip
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(pids) < 7:
            listing = tmp_path / "latest" / "logs" / "processes.json"
            if listing.exists():
                pids = [row["pid"] for row in json.loads(listing.read_text() or "{}").values()]
            time.sleep(0.2)
        assert len(pids) >= 7, "the gate never listed its processes"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) != 0  # interrupted: never a pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [pid for pid in pids if alive(pid)] == []
