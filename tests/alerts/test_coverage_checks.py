"""The alerting coverage checks (issue 9) pass on a healthy stack and fail on the defect each one must catch.

The healthy case reads the session's healthy gate and drill runs (tests/conftest.py); each defect run is ``opsgate
gate`` on its own local stack (the defects of the alerting stack are planted by the environment that configures it,
so the session platform cannot host them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers import HealthyRun, live_checks_in_the_gate, run_opsgate
from opsgate.alerts import stack
from opsgate.alerts.live import missing_diagnostics
from opsgate.alerts.rulefiles import read_rules
from opsgate.config import LOCAL_TARGET, TargetError, load_target
from test_config import ENVIRON

RULES = Path(str(LOCAL_TARGET)).parent.parent / "reference" / "rules" / "platform.yml"
CHECKS = "alert_route or alert_severities or rules_applied or metric_labels or alert_routing"
GATES = "no-active-incidents or no-paging-alert-30m or readiness-availability or service-uptime"


def gate(tmp_path: Path, match: str, defects: str = "", target: Path | None = None) -> dict[str, dict[str, Any]]:
    """Run ``opsgate gate --match`` on a fresh local stack with ``defects``; the checks of its summary by id."""
    reports = tmp_path / "reports"
    if target is None:
        target = tmp_path / "local.yaml"
        target.write_text(LOCAL_TARGET.read_text())
    target.write_text(live_checks_in_the_gate(target.read_text()))  # sev2-pages-with-diagnostics is job: drill
    args = ["gate", "--match", match, "--target", str(target)]
    result = run_opsgate(args, timeout_s=400, env={"OPSGATE_REPORTS_DIR": str(reports), "OPSGATE_DEFECTS": defects})
    summary = json.loads(((reports / "latest").resolve() / "summary.json").read_text())
    assert result.returncode == (0 if summary["verdict"] == "pass" else 1), result.stdout[-3000:]
    return {c["id"]: c for c in summary["checks"]}


@pytest.mark.timeout(1300)  # with the session's healthy gate and drill runs in its setup
def test_the_coverage_checks_pass_on_a_healthy_stack(healthy_gate: HealthyRun, healthy_drill: HealthyRun) -> None:
    """The session's healthy runs: the gate's coverage checks and gates, and the drill job's SEV-2 live check."""
    kinds, gates = CHECKS.split(" or "), {f"gate[{name}]" for name in GATES.split(" or ")}
    checks = {k: c for k, c in healthy_gate.checks.items() if k.split("[")[0] in kinds or k in gates}
    checks["alert_live[BudgetApproaching90]"] = healthy_gate.checks["alert_live[BudgetApproaching90]"]
    checks["alert_live[sev2-pages-with-diagnostics]"] = healthy_drill.checks["alert_live[sev2-pages-with-diagnostics]"]
    assert {c["verdict"] for c in checks.values()} == {"pass"}, {k: c["message"] for k, c in checks.items()}
    assert len(checks) == 15, sorted(checks)
    assert (
        "diagnostics (summary, runbook_url, severity)" in checks["alert_live[sev2-pages-with-diagnostics]"]["message"]
    )
    assert checks["alert_live[sev2-pages-with-diagnostics]"]["claim"] == "seed-004.health.failure-alerts"
    assert "notified (info)" in checks["alert_live[BudgetApproaching90]"]["message"]


def test_platform_defects_fail_the_gates_and_the_metric_check(tmp_path: Path) -> None:
    # no-active-incidents, an instant gate, is judged after the read-only checks (about 30 s in): by then the
    # counted failures of a fresh stack's first scrapes have fired an alert.
    defects = (
        "readiness-flaps,metrics-counts-db-failure,worker-requests-unlabelled,budget-spend-misdated,"
        "metrics-endpoint-flaky"
    )
    match = f"{GATES} or metric_labels or (alert_live and BudgetApproaching90)"
    checks = gate(tmp_path, match, defects)
    assert {c["verdict"] for c in checks.values()} == {"fail"}, {k: c["message"] for k, c in checks.items()}
    assert "failing samples" in checks["gate[readiness-availability]"]["message"] or (
        "503" in checks["gate[readiness-availability]"]["message"]
    ), checks["gate[readiness-availability]"]["message"]
    assert checks["gate[no-active-incidents]"]["measured"] >= 1
    assert checks["gate[no-paging-alert-30m]"]["measured"] >= 1
    labels = checks["metric_labels[http_requests_total]"]["message"]
    assert "without a status label" in labels and labels.count("samples without") == 1, labels
    budget = checks["alert_live[BudgetApproaching90]"]["message"]
    assert "BudgetApproaching90 not pending within" in budget, budget
    assert checks["gate[service-uptime]"]["measured"] < 99.9


def test_deployment_defects_and_drifted_rules_fail_their_checks(tmp_path: Path) -> None:
    """Billing rules left out, annotations dropped, info unrouted, a critical rule gone warning."""
    text = RULES.read_text()
    drifted_rule = (
        "      - alert: DatabaseConnectionFailures\n"
        "        expr: floor(sum(increase(db_connection_failures_total[5m]))) > 0\n"
        "        for: 0s\n"
        "        labels: {severity: critical}"
    )
    assert text.count(drifted_rule) == 1
    drifted = tmp_path / "drifted.yml"
    drifted.write_text(text.replace(drifted_rule, drifted_rule.replace("critical}", "page}")))
    target = tmp_path / "local.yaml"
    target.write_text(
        LOCAL_TARGET.read_text().replace('rules: ["opsgate:reference/rules/platform.yml"]', f'rules: ["{drifted}"]')
    )
    # (metrics-endpoint-flaky is planted in the platform-defects run: its 500s on /metrics fire the error-rate
    # rules by themselves, so the SEV-2 live check here would have no steady state to trip from)
    defects = "deployed-rules-missing-billing,alert-annotations-dropped,alertmanager-info-unrouted"
    match = "alert_route or alert_severities or rules_applied or (alert_live and (sev2 or Budget))"
    checks = gate(tmp_path, match, defects, target)
    assert {c["verdict"] for c in checks.values()} == {"fail"}, {k: c["message"] for k, c in checks.items()}
    route = checks["alert_route[seed-001-critical]"]["message"]
    assert "DatabaseConnectionFailures: severity 'page', documented 'critical'" in route, route
    assert "routes to 'chat', documented 'paging'" in route, route
    severities = checks["alert_severities[levels]"]["message"]
    assert "DatabaseConnectionFailures: severity 'page' is none of" in severities, severities
    assert "severity=info routes to 'chat', documented 'info'" in severities, severities
    applied = checks["rules_applied[billing]"]["message"]
    assert "BillingWebhookRetrying is not loaded in Prometheus" in applied, applied
    assert "BillingWebhookFailed is not loaded in Prometheus" in applied, applied
    live = checks["alert_live[sev2-pages-with-diagnostics]"]["message"]
    assert "without its diagnostics: no summary, runbook_url" in live, live
    budget = checks["alert_live[BudgetApproaching90]"]["message"]
    assert "reached receiver 'chat', expected 'info'" in budget, budget


def test_the_environment_plants_its_defects_in_the_stack_config(tmp_path: Path) -> None:
    healthy = stack.alertmanager_config("http://127.0.0.1:1")
    assert 'severity="info"' in healthy
    assert 'severity="info"' not in stack.alertmanager_config(
        "http://127.0.0.1:1", defects=frozenset({"alertmanager-info-unrouted"})
    )
    out = tmp_path / "rules.yml"
    stack.compressed_rules(
        [RULES], 0.02, out, defects=frozenset({"deployed-rules-missing-billing", "alert-annotations-dropped"})
    )
    deployed = read_rules([out])
    assert deployed and not {"BillingWebhookRetrying", "BillingWebhookFailed"} & {r.alert for r in deployed}
    assert all(not r.annotations for r in deployed)


def test_missing_diagnostics_names_what_the_notification_lacks() -> None:
    alert = {"labels": {"alertname": "A", "severity": "sev2"}, "annotations": {"summary": "s", "runbook_url": ""}}
    assert missing_diagnostics({"alerts": [alert]}, ["summary", "runbook_url", "severity"]) == ["runbook_url"]
    assert missing_diagnostics({"alerts": []}, ["summary"]) == ["summary"]
    assert missing_diagnostics({"alerts": [alert]}, []) == []


@pytest.mark.parametrize(
    ("before", "after", "message"),
    [
        ("levels: [info, warning, critical]", "levels: [info, warning, critical, debug]",
         "alerts.severities.levels[3]: expected a severity of alerts.routing"),
        ("    - name: sev2-pages-with-diagnostics\n", "    - name: OptOutRateHigh\n",
         "alerts.live: expected one live check per id"),
    ],
)  # fmt: skip
def test_bad_alerting_config_is_one_line_naming_the_field(
    tmp_path: Path, before: str, after: str, message: str
) -> None:
    text = LOCAL_TARGET.read_text()
    assert text.count(before) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(before, after))
    with pytest.raises(TargetError) as caught:
        load_target(bad, environ=ENVIRON)
    assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
