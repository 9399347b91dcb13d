"""The tenant-state and send-rule flows of targets/local.yaml: each passes on the healthy platform and fails on
the defect that breaks its runbook claim (suspension, activation, budget, quiet hours, forged signatures).

Each flow makes a tenant of its own, so they run on the session's platform, through ``opsgate gate --match``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import defects_planted, local_target_as_external, run_opsgate
from opsgate.environments.local import LocalEnvironment

pytestmark = pytest.mark.platform
FLOWS = {
    "flow[billing-webhook-forged-refused]",
    "flow[forged-provider-reply-refused]",
    "flow[budget-enforced]",
    "flow[quiet-hours-enforced]",
    "flow[quiet-hours-contact-timezone]",
    "flow[suspend-blocks-sends]",
    "flow[suspend-notifies]",
    "flow[activate-restores-sends]",
    "flow[resume-restores-sends]",
    "flow[dnc-contact-receives-nothing]",
}
MATCH = (
    "forged-refused or forged-provider or budget-enforced or quiet-hours or suspend or activate-restores"
    " or resume-restores or dnc-contact-receives"
)


@pytest.fixture(scope="module")
def external_target(platform: LocalEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """targets/local.yaml, pointed at the session's already-running platform (nothing started)."""
    return local_target_as_external(tmp_path_factory.mktemp("target") / "standin.yaml")


def flows(platform: LocalEnvironment, target: Path, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Run the tenant flows with ``opsgate gate``; returns their summary records by id."""
    reports = tmp_path / "reports"
    result = run_opsgate(
        ["gate", "--target", str(target), "--match", MATCH], timeout_s=120,
        env={**platform.environ(), "OPSGATE_REPORTS_DIR": str(reports)},
    )  # fmt: skip
    summary = json.loads(((reports / "latest").resolve() / "summary.json").read_text())
    assert result.returncode == (0 if summary["verdict"] == "pass" else 1), result.stdout[-2000:]
    checks = {c["id"]: c for c in summary["checks"]}
    assert set(checks) == FLOWS, checks.keys()
    return checks


def tenants_near_their_budget(platform: LocalEnvironment) -> set[str]:
    """Tenants whose spend is at 90% of their daily budget or more (what BudgetApproaching90 fires on)."""
    text = httpx.get(f"{platform.api_url}/metrics", timeout=10).text
    values: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("tenant_budget_spent_cents", "tenant_budget_limit_cents"):
                values.setdefault(sample.labels["tenant"], {})[sample.name] = sample.value
    return {tenant for tenant, v in values.items()
            if v.get("tenant_budget_limit_cents", 0) > 0
            and v.get("tenant_budget_spent_cents", 0) / v["tenant_budget_limit_cents"] >= 0.9}  # fmt: skip


def test_every_tenant_flow_passes_on_the_healthy_platform(
    platform: LocalEnvironment, external_target: Path, tmp_path: Path
) -> None:
    before = tenants_near_their_budget(platform)
    checks = flows(platform, external_target, tmp_path)
    assert {c["verdict"] for c in checks.values()} == {"pass"}, {k: c["message"] for k, c in checks.items()}
    # nothing left broken: the budget flow raises the budget it spent, so BudgetApproaching90 does not stay firing
    assert tenants_near_their_budget(platform) <= before


# Each flow and the line its failure must carry; the defects of one group do not touch each other's flows.
NON_INTERACTING = {
    "webhook-signature-unchecked": {
        "flow[billing-webhook-forged-refused]": "expected status 401, got 202",
        "flow[forged-provider-reply-refused]": "expected status 401, got 200",
    },
    "budget-not-enforced": {"flow[budget-enforced]": "expected status 402, got 202"},
    # a window across midnight read as empty: 23:00 is not quiet, in the tenant's zone or the contact's
    "quiet-hours-no-wrap": {
        "flow[quiet-hours-enforced]": "expected status 422, got 202",
        "flow[quiet-hours-contact-timezone]": "expected status 422, got 202",
    },
    "suspension-ignored": {"flow[suspend-blocks-sends]": "expected status 403, got 202"},
    "activation-not-saved": {"flow[activate-restores-sends]": "status: expected 'active', got 'suspended'"},
    "resume-ignored": {"flow[resume-restores-sends]": "paused: expected False, got True"},
    "dnc-check-skipped": {"flow[dnc-contact-receives-nothing]": "expected status 422, got 202"},
}


def test_each_defect_fails_the_flow_that_guards_it(
    platform: LocalEnvironment, external_target: Path, tmp_path: Path
) -> None:
    expected = {flow: line for caught in NON_INTERACTING.values() for flow, line in caught.items()}
    before = tenants_near_their_budget(platform)
    with defects_planted(platform, ",".join(NON_INTERACTING)):
        checks = flows(platform, external_target, tmp_path)
    assert {name for name, c in checks.items() if c["verdict"] == "fail"} == set(expected), checks
    for name, line in expected.items():
        assert line in checks[name]["message"], (name, checks[name]["message"])
    # the failed budget flow (its tenant spent past the budget) still ran its cleanup: no tenant left near it
    assert "PUT /admin/tenants/" not in checks["flow[budget-enforced]"]["message"]  # (no cleanup problem named)
    assert tenants_near_their_budget(platform) <= before


def test_quiet_hours_in_server_time_fail_the_contact_time_zone_flow_whatever_the_hour(
    platform: LocalEnvironment, external_target: Path, tmp_path: Path
) -> None:
    """In UTC daytime the contact at 23:00 is let through; at UTC night the contact at 15:00 is refused."""
    with defects_planted(platform, "quiet-hours-server-time"):
        checks = flows(platform, external_target, tmp_path)
    failed = checks["flow[quiet-hours-contact-timezone]"]
    assert failed["verdict"] == "fail", failed
    assert "expected status 422, got 202" in failed["message"] or "expected status 202, got 422" in failed["message"]
