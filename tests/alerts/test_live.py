"""Live alert checks fail on a drifted threshold and on a defect that keeps their rule from firing; routing checks
fail on a route that differs from the table."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import HealthyRun, live_checks_in_the_gate, run_opsgate
from opsgate.config import LOCAL_TARGET
from opsgate.environments.launch import Launcher


def test_live_checks_fail_on_a_drifted_threshold_and_on_stop_replies_that_never_reach_do_not_contact(
    tmp_path: Path,
) -> None:
    """One local stack for both (they touch different rules): a drifted NotificationFailureRateHigh threshold, a
    routing table the running Alertmanager does not follow, and the stop-not-added-to-dnc defect, under which
    STOP replies never trip OptOutRateHigh."""
    rules = Path(str(Launcher(LOCAL_TARGET, tmp_path / "probe").environment.alert_rules[0]))  # type: ignore[union-attr]
    original = '(sum(rate(messages_total{status=~"delivered|failed"}[10m])) > 0) > 0.05'
    assert original in rules.read_text()
    drifted = tmp_path / "drifted.yml"
    drifted.write_text(rules.read_text().replace(original, original.replace("> 0.05", "> 2")))  # can never fire
    target = tmp_path / "local-drifted.yaml"
    target.write_text(
        live_checks_in_the_gate(LOCAL_TARGET.read_text())
        .replace('rules: ["opsgate:reference/rules/platform.yml"]', f'rules: ["{drifted}"]')
        .replace("fire_within: 20m", "fire_within: 10m")  # fail within ~12 s, not 24 s
        .replace("sev2: paging", "sev2: chat")  # documented routing that the running Alertmanager does not do
    )
    result = run_opsgate(
        ["gate", "--target", str(target), "--match",
         "(alert_live and (NotificationFailureRateHigh or OptOutRateHigh)) or alert_rule or alert_routing"],
        timeout_s=300, env={"OPSGATE_REPORTS_DIR": str(tmp_path / "r"), "OPSGATE_DEFECTS": "stop-not-added-to-dnc"},
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-3000:]
    summary = json.loads(((tmp_path / "r" / "latest").resolve() / "summary.json").read_text())
    checks = {c["id"]: c for c in summary["checks"]}
    live = checks["alert_live[NotificationFailureRateHigh]"]
    assert live["verdict"] == "fail" and "not pending within" in live["message"]
    static = checks["alert_rule[NotificationFailureRateHigh]"]
    assert static["verdict"] == "fail" and "rule threshold 2 differs from the documented 5%" in static["message"]
    assert checks["alert_rule[DbPoolSaturated]"]["verdict"] == "pass"
    routing = checks["alert_routing[sev2]"]
    assert routing["verdict"] == "fail" and "routes to 'paging', documented 'chat'" in routing["message"]
    assert checks["alert_routing[critical]"]["verdict"] == "pass"
    opt_out = checks["alert_live[OptOutRateHigh]"]
    assert opt_out["verdict"] == "fail" and "OptOutRateHigh not pending within" in opt_out["message"], opt_out


def test_real_stop_replies_trip_the_opt_out_rule_and_new_messages_resolve_it(healthy_drill: HealthyRun) -> None:
    """The session's healthy drill run holds this live check (job: drill) at its documented fire_within."""
    check = healthy_drill.checks["alert_live[OptOutRateHigh]"]
    assert check["verdict"] == "pass", check["message"]
    assert "notified (chat)" in str(check["message"]) and "resolved +" in str(check["message"])
