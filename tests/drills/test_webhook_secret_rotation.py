"""Billing webhook secret rotation (seed 002 "rotate quarterly or if the secret leaks").

The api's admin endpoint switches to the configured next secret and rolls back, showing only a fingerprint;
the declared ``webhook-secret-rotation`` drill passes on the session's healthy platform (run by ``opsgate drill``
as a user would, against it as an external target) and leaves no secret in any artifact it wrote. Its failure
on the ``rotation-keeps-old-secret`` defect is a row of GROUPS in tests/chaos/test_drills_catch_defects.py.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path

import httpx
import pytest

from helpers import admin_login, defects_planted, local_target_as_external, run_opsgate
from opsgate.environments.local import LocalEnvironment
from opsgate.evidence.drill_logs import read_front_matter
from opsgate.reference.signing import sign

pytestmark = pytest.mark.platform

SECRETS_URL = "/admin/secrets/billing-webhook"


def post_webhook(platform: LocalEnvironment, secret: str) -> int:
    """Status of one invoice.paid webhook signed with ``secret``."""
    body = json.dumps({"id": f"evt_rot_{uuid.uuid4().hex}", "type": "invoice.paid",
                       "data": {"tenantId": platform.tenant_id}}).encode()  # fmt: skip
    response = httpx.post(f"{platform.api_url}/billing/webhooks/sandbox", content=body,
                          headers={"x-sandbox-signature": sign(secret, body)}, timeout=10)  # fmt: skip
    return response.status_code


def secret_values(platform: LocalEnvironment) -> dict[str, str]:
    """Every credential of the platform (and the DSNs holding them), by name."""
    values = {k: v for k, v in dataclasses.asdict(platform.credentials).items() if k != "service_user"}
    values |= {"DATABASE_URL": platform.database_url, "REDIS_URL": platform.redis_url}
    return values


def test_rotation_switches_the_accepted_secret_and_rolls_back(platform: LocalEnvironment) -> None:
    c = platform.credentials
    headers = admin_login(platform)
    url = platform.api_url + SECRETS_URL
    assert httpx.get(url).status_code == 401  # admin only
    before = httpx.get(url, headers=headers).json()
    assert before["active"] == "configured" and before["next_configured"] is True
    try:
        rotated = httpx.put(url, headers=headers)
        assert rotated.status_code == 200 and rotated.json()["active"] == "next", rotated.text
        assert rotated.json()["fingerprint"] != before["fingerprint"]
        assert post_webhook(platform, c.billing_webhook_secret) == 401
        assert post_webhook(platform, c.billing_webhook_secret_next) == 202
    finally:
        rolled_back = httpx.delete(url, headers=headers)
    assert rolled_back.status_code == 200 and rolled_back.json() == before
    assert post_webhook(platform, c.billing_webhook_secret) == 202
    assert post_webhook(platform, c.billing_webhook_secret_next) == 401
    for answer in (before, rotated.json(), rolled_back.json()):
        text = json.dumps(answer)
        assert all(secret not in text for secret in secret_values(platform).values()), text


def test_defect_rotation_keeps_old_secret_accepts_the_old_signature(platform: LocalEnvironment) -> None:
    c = platform.credentials
    with defects_planted(platform, "rotation-keeps-old-secret"):
        headers = admin_login(platform)
        url = platform.api_url + SECRETS_URL
        try:
            assert httpx.put(url, headers=headers).json()["active"] == "next"
            assert post_webhook(platform, c.billing_webhook_secret_next) == 202
            assert post_webhook(platform, c.billing_webhook_secret) == 202  # the bug: the old secret still works
        finally:
            httpx.delete(url, headers=headers)


def test_rotation_drill_passes_and_writes_no_secret_anywhere(
    platform: LocalEnvironment, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    target = local_target_as_external(tmp_path_factory.mktemp("target") / "standin.yaml")
    reports, logs, state = tmp_path / "reports", tmp_path / "drills", tmp_path / "state"
    result = run_opsgate(
        ["drill", "--target", str(target), "--match", "webhook-secret-rotation",
         "--chaos", str(tmp_path / "no-chaos"), "--drill-logs", str(logs)],
        timeout_s=300,
        env={**platform.environ(), "OPSGATE_REPORTS_DIR": str(reports), "OPSGATE_STATE_DIR": str(state),
             "OPSGATE_DEFECTS": ""},
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    summary = json.loads(((reports / "latest").resolve() / "summary.json").read_text())
    assert [(c["id"], c["verdict"]) for c in summary["checks"]] == [("drill[webhook-secret-rotation]", "pass")]
    drill_logs = list(logs.rglob("*.md"))
    assert len(drill_logs) == 1, drill_logs
    front = read_front_matter(drill_logs[0])
    assert front is not None and front.outcome == "pass"
    text = drill_logs[0].read_text()
    for step in (
        "old signature refused after the switch",
        "new signature accepted",
        "rollback applied",
        "configured secret accepted again after the rollback",
        "every accepted webhook applied exactly once",
    ):
        assert step in text, text
    assert "claim: seed-002.deploy.webhook-secret-rotation" in text
    assert not list(state.glob("*.jsonl")), "rolled back: nothing left in the journal"
    assert httpx.get(platform.api_url + SECRETS_URL, headers=admin_login(platform)).json()["active"] == "configured"

    artifacts = [p for folder in (reports, logs, state) for p in folder.rglob("*") if p.is_file()]
    assert len(artifacts) >= 5, artifacts
    secrets = secret_values(platform)
    leaks = [(name, str(path)) for path in artifacts for name, value in secrets.items()
             if value in path.read_text(errors="replace")]  # fmt: skip
    assert not leaks, leaks
    assert not [name for name, value in secrets.items() if value in output], "a secret in opsgate's output"
