"""The outbox-replay flow of targets/local.yaml (seed 002 "trigger via admin endpoint `/ops/outbox/{id}/retry`").

``opsgate gate --match outbox-retry`` runs it on the session's platform: healthy, retrying a processed billing
event is refused (409); with ``replay-reapplies-processed`` planted the retry is accepted and the flow fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers import defects_planted, local_target_as_external, run_opsgate
from opsgate.environments.local import LocalEnvironment

pytestmark = pytest.mark.platform
FLOW = "flow[outbox-retry-refuses-processed]"


@pytest.fixture(scope="module")
def external_target(platform: LocalEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """targets/local.yaml, pointed at the session's already-running platform (nothing started)."""
    return local_target_as_external(tmp_path_factory.mktemp("target") / "standin.yaml")


def retry_flow(platform: LocalEnvironment, target: Path, tmp_path: Path) -> dict[str, Any]:
    """Run the outbox-retry flow with ``opsgate gate``; returns its summary record."""
    reports = tmp_path / "reports"
    result = run_opsgate(
        ["gate", "--target", str(target), "--match", "outbox-retry"], timeout_s=120,
        env={**platform.environ(), "OPSGATE_REPORTS_DIR": str(reports)},
    )  # fmt: skip
    summary = json.loads(((reports / "latest").resolve() / "summary.json").read_text())
    assert result.returncode == (0 if summary["verdict"] == "pass" else 1), result.stdout[-2000:]
    checks = {c["id"]: c for c in summary["checks"]}
    assert set(checks) == {FLOW}, checks.keys()
    record: dict[str, Any] = checks[FLOW]
    assert record["claim"] == "seed-002.outbox.replay"
    return record


def test_retrying_a_processed_event_is_refused(
    platform: LocalEnvironment, external_target: Path, tmp_path: Path
) -> None:
    record = retry_flow(platform, external_target, tmp_path)
    assert record["verdict"] == "pass", record


def test_the_flow_fails_when_a_processed_event_is_replayed(
    platform: LocalEnvironment, external_target: Path, tmp_path: Path
) -> None:
    with defects_planted(platform, "replay-reapplies-processed"):
        record = retry_flow(platform, external_target, tmp_path)
    assert record["verdict"] == "fail" and "expected status 409, got 202" in record["message"], record
