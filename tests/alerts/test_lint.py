"""Rule lint through ``opsgate gate``: missing severity/annotations/for and metrics the target lacks fail."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_opsgate
from opsgate.environments.local import LocalEnvironment

RULES = """groups:
  - name: lint
    rules:
      - alert: Tidy
        expr: sum(rate(http_requests_total{service="api"}[5m])) > 1000
        for: 5m
        labels: {severity: warning}
        annotations: {summary: "many requests", runbook_url: "https://runbooks.example/x"}
      - alert: Sloppy
        expr: rate(no_such_metric_total[5m]) > 1
        labels: {team: ops}
        annotations: {summary: "something"}
"""


def test_lint_fails_sloppy_rules_and_passes_tidy_ones(platform: LocalEnvironment, tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(RULES)
    target = tmp_path / "target.yaml"
    target.write_text(
        "name: lint-standin\nenvironment: staging\nprovider: external\n"
        f"services:\n  api: {{url: '{platform.api_url}'}}\n"
        f"metrics:\n  scrape: ['{platform.api_url}/metrics']\n"
        "alerts:\n  rules: [rules.yml]\n"
    )
    result = run_opsgate(
        ["gate", "--target", str(target), "--only", "alerts"], timeout_s=120,
        env={"OPSGATE_REPORTS_DIR": str(tmp_path / "r")},
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-2000:]
    summary = json.loads(((tmp_path / "r" / "latest").resolve() / "summary.json").read_text())
    checks = {c["id"]: c for c in summary["checks"]}
    assert checks["alert_lint[Tidy]"]["verdict"] == "pass"
    sloppy = checks["alert_lint[Sloppy]"]
    assert sloppy["verdict"] == "fail" and sloppy["kind"] == "alert-lint"
    for problem in ("no severity label", "no runbook_url annotation", "no explicit 'for:'",
                    "does not expose: no_such_metric_total"):  # fmt: skip
        assert problem in sloppy["message"]
