"""Live alert checks fail on a drifted threshold; routing checks fail on a route that differs from the table."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import HealthyRun, live_checks_in_the_gate, run_opsgate
from opsgate.config import LOCAL_TARGET
from opsgate.environments.launch import Launcher


def test_live_check_fails_on_a_drifted_threshold(tmp_path: Path) -> None:
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
         "(alert_live and NotificationFailureRateHigh) or alert_rule or alert_routing"], timeout_s=300,
        env={"OPSGATE_REPORTS_DIR": str(tmp_path / "r")},
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


def opt_out_live(tmp_path: Path, defects: str) -> dict[str, object]:
    """Run the OptOutRateHigh live check (fire_within 10m = 12 s) on its own local stack with ``defects``."""
    target = tmp_path / "local-optout.yaml"
    target.write_text(live_checks_in_the_gate(LOCAL_TARGET.read_text()).replace("fire_within: 20m", "fire_within: 10m"))
    result = run_opsgate(
        ["gate", "--target", str(target), "--match", "alert_live and OptOutRateHigh"], timeout_s=300,
        env={"OPSGATE_REPORTS_DIR": str(tmp_path / "r"), "OPSGATE_DEFECTS": defects},
    )  # fmt: skip
    summary = json.loads(((tmp_path / "r" / "latest").resolve() / "summary.json").read_text())
    check: dict[str, object] = next(c for c in summary["checks"] if c["id"] == "alert_live[OptOutRateHigh]")
    assert result.returncode == (0 if check["verdict"] == "pass" else 1), result.stdout[-3000:]
    return check


def test_real_stop_replies_trip_the_opt_out_rule_and_new_messages_resolve_it(healthy_drill: HealthyRun) -> None:
    """The session's healthy drill run holds this live check (job: drill) at its documented fire_within."""
    check = healthy_drill.checks["alert_live[OptOutRateHigh]"]
    assert check["verdict"] == "pass", check["message"]
    assert "notified (chat)" in str(check["message"]) and "resolved +" in str(check["message"])


def test_stop_replies_that_never_reach_do_not_contact_never_trip_the_opt_out_rule(tmp_path: Path) -> None:
    check = opt_out_live(tmp_path, "stop-not-added-to-dnc")
    assert check["verdict"] == "fail" and "OptOutRateHigh not pending within" in str(check["message"]), check
