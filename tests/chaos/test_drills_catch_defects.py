"""Every drill passes on the healthy reference platform and fails, naming what broke, on its defect.

Each case runs ``opsgate drill`` end to end (the local stack, the drill, the rollback, the drill log)
with one defect planted through ``OPSGATE_DEFECTS``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import LONG_DRILLS, HealthyRun, run_opsgate
from opsgate.evidence.drill_logs import read_front_matter

ROOT = Path(__file__).resolve().parents[2]
CHAOS = ROOT / "chaos"

# Each group is one ``opsgate drill`` run on one platform with all of its defects planted: every drill it selects
# must fail, each naming the expectation its own defect breaks. A group's defects do not touch each other's drills
# (a platform start per defect would cost minutes each); a defect breaking two drills of one group is listed twice.
# Rows: (drill selection, defect, text the failure must contain: the broken expectation).
GROUPS: dict[str, list[tuple[str, str, str]]] = {
    "data-and-outbox": [
        ("drill and worker-to-zero", "outbox-sweeper-off", "billing_webhook_total increase > 5"),
        ("webhook-secret-rotation", "rotation-keeps-old-secret", "old signature refused after the switch"),
        # a second resend (of a message delivered by the first) re-sends it: the provider records it twice
        ("resend_dead_letters", "resend-redelivers", "still exactly once: a second resend delivers nothing again"),
        ("backup_restore", "backup-omits-table", "table audit_events missing from the restored database"),
        # Pro -> Core leaves Pro's modules behind; cancellation takes the admin overrides with the plan's rows
        ("plan_change_entitlements", "plan-change-keeps-old-modules", "plan-sourced modules and flags match Core"),
        ("cancellation_entitlements", "cancellation-drops-overrides", "overrides intact after the cancellation"),
        ("monitoring_sink_failure", "monitoring-relay-off", "every dead letter's failure event reported exactly once"),
    ],
    # a readiness endpoint that lies fails every drill's steady state (its body lacks the dependency checks):
    # these two only share a platform with each other
    "readiness": [
        ("redis-outage", "readiness-ignores-redis", "/readyz"),
        ("postgres-outage", "readiness-always-ok", "/readyz"),
    ],
    "switches": [
        ("drill and kill-switch", "kill-switch-ignored", "new sends refused within 60 s"),
        ("kill_switch_admin_page", "kill-switch-ignored", "new sends refused"),
        # a second replay of the processed event re-applies it: a second audit row
        ("replay_failed_billing_event", "replay-reapplies-processed", "still applied exactly once after the second"),
        ("monitoring_sink_failure", "monitoring-events-dropped", "failure events held in the outbox"),
        ("backup_schedule", "backup-retention-unbounded", "older backups not pruned"),
        ("redis_rdb_snapshots", "redis-snapshots-off", "RDB snapshots are off"),
        ("maintenance_window", "kill-switch-ignored", "new sends refused (409 SENDING_PAUSED)"),
        # the worker ignores the global kill switch: the queued sends of both tenants go out
        ("breach_kill_switch_all_tenants", "global-kill-switch-skips-queued", "queued sends of both tenants held"),
    ],
    "restarts": [
        ("graceful_stop", "sigterm-abandons-jobs", "no in-flight send abandoned by the graceful stop"),
        ("rolling_restart", "sigterm-abandons-jobs", "no send abandoned by the restarts"),
        ("zero_downtime_worker_swap", "sigterm-abandons-jobs", "no send abandoned by the swap"),
        ("redelivered_webhooks", "duplicate-webhook-processed", "each event applied exactly once"),
        ("monitoring_sink_failure", "monitoring-failure-blocks-sends", "sends delivered while the sink is 410 Gone"),
        ("latest_backup_restorable", "backup-truncated", "the latest backup restores (pg_restore reads"),
        ("daily_routine", "backup-truncated", "backups verified: the newest restores"),
    ],
    "retries": [
        ("maintenance-mode", "maintenance-allows-writes", "traffic responses"),
        ("drill and provider-errors", "retries-drop-messages", "failing sends dead-lettered with a reason"),
        # dropped after the first failure: nothing is ever dead-lettered (nor delivered)
        ("provider_errors", "retries-drop-messages", "0 dead-lettered"),
        ("nightly_dump_custom_format", "backup-plain-format", "custom format"),
        ("maintenance_window", "maintenance-allows-writes", "writes rejected with 503 MAINTENANCE during maintenance"),
        ("release_deploy_window", "maintenance-allows-writes", "deploy window: a write refused with 503 MAINTENANCE"),
        ("scheduled_maintenance_execute", "maintenance-allows-writes", "maintenance mode: a write refused with 503"),
        ("database_rollback", "maintenance-allows-writes", "traffic stopped: a write refused with 503 MAINTENANCE"),
    ],
    "monitoring-silent": [
        ("provider_errors", "monitoring-webhook-silent", "reported to the monitoring webhook"),
        ("email-failures-reported", "monitoring-webhook-silent", "every dead email reported as notification.failure"),
        ("sms-failures-reported", "monitoring-webhook-silent", "every dead sms reported as notification.failure"),
        ("restore_drill_replays_outbox", "backup-excludes-outbox", "billing events 0 restored"),
    ],
    # held sends parked for good: the resume path never finds them (it shares kill_switch_admin_page with
    # kill-switch-ignored, which sends them instead, so alone)
    "held-aside": [
        ("kill_switch_admin_page", "held-sends-set-aside", "held them (delayed, not sent)"),
    ],
    # maintenance left on once seen: every later write of every later drill is refused, so alone
    "maintenance-sticks": [
        ("maintenance_window", "maintenance-flag-sticks", "maintenance lifted, kill switch still on"),
    ],
    # connectivity endpoints answering "connected" without asking: only an outage shows the lie
    "connectivity-lies": [
        ("postgres-outage", "health-db-always-connected", "/api/health/db says disconnected"),
        ("redis-outage", "health-redis-always-connected", "/api/health/redis says disconnected"),
    ],
    # one send at a time, 0.5 s each: every drill's traffic would crawl, so alone
    "throttled": [
        ("health-baseline", "worker-throttled", "send queue back to its baseline (empty)"),
    ],
    # the worker never holds a send while the provider is slow: it does not call the provider at all
    "acks-without-send": [
        ("worker_killed_mid_flight", "worker-acks-without-send", "sends held in flight by the worker"),
    ],
    # every send takes 1.5 s: alone, since it would slow every other drill's traffic
    "slow-route": [
        ("postgres-latency", "slow-messages-route", "gate send-message-p95 verdict pass"),
    ],
}


def drill(tmp_path: Path, match: str | None, defects: str = "") -> tuple[int, str, dict[str, object]]:
    """Run ``opsgate drill`` in ``tmp_path``'s state; returns exit code, output and summary.json."""
    args = ["drill", "--chaos", str(CHAOS), "--drill-logs", str(tmp_path / "drills")]
    if match:
        args += ["--match", match]
    env = {"OPSGATE_DEFECTS": defects, "OPSGATE_STATE_DIR": str(tmp_path / "state"),
           "OPSGATE_REPORTS_DIR": str(tmp_path / "reports")}  # fmt: skip
    result = run_opsgate(args, timeout_s=1200, env=env)
    output = result.stdout + result.stderr
    report = next((line for line in output.splitlines() if "report: " in line), "")
    summary_path = Path(report.split("report: ", 1)[-1].strip()).with_name("summary.json") if report else None
    summary = json.loads(summary_path.read_text()) if summary_path and summary_path.exists() else {}
    return result.returncode, output, summary


def judge_healthy(run: HealthyRun, lives: set[str]) -> list[dict[str, object]]:
    """Every check of a healthy drill run passed, the live alert checks are ``lives``, each drill left a passing
    log and the journal is empty; returns the checks."""
    assert run.result.returncode == 0, (run.result.stdout + run.result.stderr)[-4000:]
    checks = list(run.checks.values())
    assert {c["verdict"] for c in checks} == {"pass"} and {c["kind"] for c in checks} == {"drill", "alert-live"}
    assert {c["id"] for c in checks if c["kind"] == "alert-live"} == lives  # the live alert checks of job: drill
    logs = [read_front_matter(p) for p in sorted((run.folder / "drills" / "local").glob("*.md"))]
    assert len(logs) == len(checks) - len(lives) and all(log is not None and log.outcome == "pass" for log in logs)
    assert not list((run.folder / "state").glob("*.jsonl")), "the journal must be empty after a clean run"
    return checks


@pytest.mark.timeout(1300)  # the session's healthy drill run is in its setup (run_opsgate stops it at 1200 s)
def test_the_short_drills_pass_on_the_healthy_platform_and_leave_a_log(healthy_drill: HealthyRun) -> None:
    checks = judge_healthy(healthy_drill, {"alert_live[sev2-pages-with-diagnostics]", "alert_live[OptOutRateHigh]"})
    assert len(checks) >= 20
    assert not [c["id"] for c in checks if any(long.lower() in c["id"].lower() for long in LONG_DRILLS)]


@pytest.mark.matrix
@pytest.mark.timeout(1300)  # one run of every drill: minutes (run_opsgate stops it at 1200 s, cleanly)
def test_every_drill_passes_on_the_healthy_platform_and_leaves_a_log(every_drill_healthy: HealthyRun) -> None:
    lives = {"alert_live[NotificationFailureRateHigh]", "alert_live[ApiErrorRateSev1]",
             "alert_live[sev2-pages-with-diagnostics]", "alert_live[OptOutRateHigh]"}  # fmt: skip
    checks = judge_healthy(every_drill_healthy, lives)
    assert len(checks) >= 14


MATRIX_ONLY = {"data-and-outbox", "switches", "restarts", "retries", "monitoring-silent", "maintenance-sticks",
               "slow-route", "held-aside"}  # fmt: skip
"""The longer groups (1-4 minutes each, 13 minutes in all): run by ``make test-matrix`` (marker ``matrix``), not
by ``make test``, which keeps to its 30 minutes with the short groups. Each of their defects is also caught in
``make matrix`` (bench/detection_matrix.py)."""


@pytest.mark.timeout(1300)
@pytest.mark.parametrize(
    "group", [pytest.param(name, marks=[pytest.mark.matrix] * (name in MATRIX_ONLY)) for name in GROUPS]
)
def test_each_drill_fails_on_its_defect_naming_the_broken_expectation(tmp_path: Path, group: str) -> None:
    rows = GROUPS[group]
    defects = ",".join(sorted({defect for _, defect, _ in rows}))
    match = " or ".join(f"({m})" for m in dict.fromkeys(m for m, _, _ in rows))
    code, output, summary = drill(tmp_path, match, defects)
    assert code == 1, output[-4000:]
    checks = summary.get("checks", [])
    assert isinstance(checks, list) and checks, output[-4000:]
    passed = [f"{c['id']}: {c['verdict']} {c['message'][:300]}" for c in checks if c["verdict"] != "fail"]
    assert not passed, f"each drill of the group must fail on its defect; these did not: {passed}"
    messages = [c["message"] for c in checks]
    for match_, defect, broken in rows:
        assert any(broken in m for m in messages), (match_, defect, broken, messages)
    logs = [read_front_matter(p) for p in (tmp_path / "drills" / "local").glob("*.md")]
    assert len(logs) == len(checks) and all(log is not None and log.outcome == "fail" for log in logs)
    assert not list((tmp_path / "state").glob("*.jsonl")), "rolled back: nothing left in the journal"
