"""Post-deploy verification, synthetic checks, smoke (API and browser), the worker's processing rate, and the
lint of QueueBacklogHigh (its metric must be on a scraped /metrics: the matrix's check for queue-gauge-missing).

The checks of targets/local.yaml citing seed-002.deploy.health, seed-002.monitoring.synthetic-checks,
seed-004.deploy.smoke-tests, seed-002.onboarding.smoke-e2e and seed-004.health.worker-processing-rate: each passes on
the session's healthy platform and fails on the defect that breaks its runbook claim, run through
``opsgate gate --match`` as a user would, against the running platform as an external target.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import admin_login, defects_planted, local_target_as_external, run_opsgate
from opsgate.environments.local import LocalEnvironment

pytestmark = pytest.mark.platform

FLOWS = {
    "flow[post-deploy-verification]": "seed-002.deploy.health",
    "flow[synthetic-checks]": "seed-002.monitoring.synthetic-checks",
    "flow[smoke]": "seed-004.deploy.smoke-tests",
    "browser[admin-smoke-e2e]": "seed-002.onboarding.smoke-e2e",
}
RATE_GATE = "gate[worker-processing-rate]"
QUEUE_LINT = "alert_lint[QueueBacklogHigh]"  # its metric, bull_queue_jobs_waiting, must be on a scraped /metrics
FLOWS_MATCH = f"post-deploy-verification or synthetic-checks or flow[smoke] or admin-smoke-e2e or {QUEUE_LINT}"


@pytest.fixture(scope="module")
def external_target(platform: LocalEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """targets/local.yaml, pointed at the session's already-running platform (nothing started)."""
    return local_target_as_external(tmp_path_factory.mktemp("target") / "standin.yaml")


def gate(platform: LocalEnvironment, target: Path, tmp_path: Path, match: str) -> dict[str, dict[str, Any]]:
    """Run ``opsgate gate --match``; returns the checks of its summary by id."""
    reports = tmp_path / "reports"
    result = run_opsgate(
        ["gate", "--target", str(target), "--match", match], timeout_s=240,
        env={**platform.environ(), "OPSGATE_REPORTS_DIR": str(reports)},
    )  # fmt: skip
    summary = json.loads(((reports / "latest").resolve() / "summary.json").read_text())
    assert result.returncode == (0 if summary["verdict"] == "pass" else 1), result.stdout[-2000:]
    return {c["id"]: c for c in summary["checks"]}


def test_each_passes_on_the_healthy_platform(platform: LocalEnvironment, external_target: Path, tmp_path: Path) -> None:
    checks = gate(platform, external_target, tmp_path, f"{FLOWS_MATCH} or worker-processing-rate")
    assert set(checks) == {*FLOWS, RATE_GATE, QUEUE_LINT}, checks.keys()
    assert {c["verdict"] for c in checks.values()} == {"pass"}, {k: c["message"] for k, c in checks.items()}
    assert {k: checks[k]["claim"] for k in FLOWS} == FLOWS
    assert checks[RATE_GATE]["claim"] == "seed-004.health.worker-processing-rate"
    assert checks[RATE_GATE]["measured"] >= 0.8


def test_the_message_list_needs_a_token(platform: LocalEnvironment) -> None:
    """The synthetic checks' list read: the service account's and the tenant's token read it; no token, 401."""
    tenant = platform.tenant_id
    admin = httpx.get(f"{platform.api_url}/tenants/{tenant}/messages?limit=1", headers=admin_login(platform))
    assert admin.status_code == 200 and admin.json()["tenant_id"] == tenant and admin.json()["count"] <= 1
    own = httpx.get(f"{platform.api_url}/v1/tenants/{tenant}/messages?limit=1",
                    headers={"Authorization": f"Bearer {platform.credentials.api_token}"})  # fmt: skip
    assert own.status_code == 200 and own.json()["count"] <= 1, own.text
    for path in (f"/tenants/{tenant}/messages?limit=1", f"/v1/tenants/{tenant}/messages?limit=1"):
        assert httpx.get(platform.api_url + path).status_code == 401
    bad_limit = httpx.get(f"{platform.api_url}/v1/tenants/{tenant}/messages?limit=0",
                          headers={"Authorization": f"Bearer {platform.credentials.api_token}"})  # fmt: skip
    assert bad_limit.status_code == 422 and "limit" in bad_limit.text


# Each check and the text its failure must carry; these defects do not touch each other's checks.
CAUGHT = {
    "queue-gauge-missing": {
        "flow[post-deploy-verification]": "step 2 (GET /metrics): body: expected to contain 'bull_queue_jobs_waiting",
        QUEUE_LINT: "uses metrics the target does not expose: bull_queue_jobs_waiting",
    },
    "message-list-unauthenticated": {"flow[synthetic-checks]": "expected status 401, got 200"},
    "email-sends-fail": {"flow[smoke]": "status: expected 'delivered', got"},
    "admin-login-form-broken": {"browser[admin-smoke-e2e]": "/admin/signin"},
}


def test_each_defect_fails_the_check_that_guards_it(
    platform: LocalEnvironment, external_target: Path, tmp_path: Path
) -> None:
    expected = {check: line for caught in CAUGHT.values() for check, line in caught.items()}
    with defects_planted(platform, ",".join(CAUGHT)):
        checks = gate(platform, external_target, tmp_path, FLOWS_MATCH)
    assert set(checks) == {*FLOWS, QUEUE_LINT}, checks.keys()
    assert {name for name, c in checks.items() if c["verdict"] == "fail"} == set(expected), checks
    for name, line in expected.items():
        assert line in checks[name]["message"], (name, checks[name]["message"])


def test_a_throttled_worker_fails_the_processing_rate_gate(
    platform: LocalEnvironment, external_target: Path, tmp_path: Path
) -> None:
    with defects_planted(platform, "worker-throttled"):
        checks = gate(platform, external_target, tmp_path, "worker-processing-rate")
    failed = checks[RATE_GATE]
    assert failed["verdict"] == "fail", failed
    assert failed["measured"] < 0.5, failed  # at most 2 sends/s processed of 20/s accepted
