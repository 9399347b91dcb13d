"""Every drill passes on the healthy reference platform and fails, naming what broke, on its defect.

Each case runs ``opsgate drill`` end to end (the local stack, the drill, the rollback, the drill log)
with one defect planted through ``OPSGATE_DEFECTS``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import run_opsgate
from opsgate.evidence.drill_logs import read_front_matter

ROOT = Path(__file__).resolve().parents[2]
CHAOS = ROOT / "chaos"

# (drill selection, defect, text the failure must contain: the broken expectation)
CAUGHT = [
    ("drill and worker-to-zero", "outbox-sweeper-off", "billing_webhook_total increase > 5"),
    ("redis-outage", "readiness-ignores-redis", "/readyz"),
    ("postgres-outage", "readiness-always-ok", "/readyz"),
    ("maintenance-mode", "maintenance-allows-writes", "traffic responses"),
    ("drill and provider-errors", "retries-drop-messages", "failing sends dead-lettered with a reason"),
    ("drill and kill-switch", "kill-switch-ignored", "new sends refused within 60 s"),
    ("postgres-latency", "slow-messages-route", "gate send-message-p95 verdict pass"),
    # the worker never holds a send while the provider is slow: it does not call the provider at all
    ("worker_killed_mid_flight", "worker-acks-without-send", "sends held in flight by the worker"),
    ("graceful_stop", "sigterm-abandons-jobs", "no in-flight send abandoned by the graceful stop"),
    ("rolling_restart", "sigterm-abandons-jobs", "no send abandoned by the restarts"),
    # dropped after the first failure: nothing is ever dead-lettered (nor delivered)
    ("provider_errors", "retries-drop-messages", "0 dead-lettered"),
    ("provider_errors", "monitoring-webhook-silent", "reported to the monitoring webhook"),
    ("redelivered_webhooks", "duplicate-webhook-processed", "each event applied exactly once"),
    ("kill_switch_admin_page", "kill-switch-ignored", "new sends refused"),
    ("backup_restore", "backup-omits-table", "table audit_events missing from the restored database"),
]


def drill(tmp_path: Path, match: str | None, defects: str = "") -> tuple[int, str, dict[str, object]]:
    """Run ``opsgate drill`` in ``tmp_path``'s state; returns exit code, output and summary.json."""
    args = ["drill", "--chaos", str(CHAOS), "--drill-logs", str(tmp_path / "drills")]
    if match:
        args += ["--match", match]
    env = {"OPSGATE_DEFECTS": defects, "OPSGATE_STATE_DIR": str(tmp_path / "state")}
    result = run_opsgate(args, timeout_s=600, env=env)
    output = result.stdout + result.stderr
    report = next((line for line in output.splitlines() if "report: " in line), "")
    summary_path = Path(report.split("report: ", 1)[-1].strip()).with_name("summary.json") if report else None
    summary = json.loads(summary_path.read_text()) if summary_path and summary_path.exists() else {}
    return result.returncode, output, summary


def test_every_drill_passes_on_the_healthy_platform_and_leaves_a_log(tmp_path: Path) -> None:
    code, output, summary = drill(tmp_path, None)
    checks = summary.get("checks", [])
    assert code == 0, output[-4000:]
    assert isinstance(checks, list) and len(checks) >= 14
    assert {c["verdict"] for c in checks} == {"pass"} and {c["kind"] for c in checks} == {"drill"}
    logs = [read_front_matter(p) for p in sorted((tmp_path / "drills" / "local").glob("*.md"))]
    assert len(logs) == len(checks) and all(log is not None and log.outcome == "pass" for log in logs)
    assert not list((tmp_path / "state").glob("*.jsonl")), "the journal must be empty after a clean run"


@pytest.mark.parametrize(("match", "defect", "broken"), CAUGHT, ids=[f"{m}-{d}" for m, d, _ in CAUGHT])
def test_drill_fails_on_its_defect_naming_the_broken_expectation(
    tmp_path: Path, match: str, defect: str, broken: str
) -> None:
    code, output, summary = drill(tmp_path, match, defect)
    assert code == 1, output[-4000:]
    failed = [c for c in summary.get("checks", []) if c["verdict"] == "fail"]  # type: ignore[union-attr]
    assert failed, output[-4000:]
    assert any(broken in c["message"] for c in failed), [c["message"] for c in failed]
    logs = [read_front_matter(p) for p in (tmp_path / "drills" / "local").glob("*.md")]
    assert any(log is not None and log.outcome == "fail" for log in logs)
    assert not list((tmp_path / "state").glob("*.jsonl")), "rolled back: nothing left in the journal"
