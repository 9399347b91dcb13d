"""The delivery SLO gate of targets/local.yaml (seed 001: "≥95% delivered within 5 minutes").

``opsgate gate --match delivered-within-5m`` sends 60 messages at 20/s to the session's platform and times each
from its 202 to the provider sandbox's own record (5m x time_scale = 6 s). Healthy, every one is recorded in
time; with ``worker-acks-without-send`` the platform marks them delivered but the provider records none.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from helpers import defects_planted, local_target_as_external, run_opsgate
from opsgate.environments.local import LocalEnvironment

pytestmark = pytest.mark.platform

GATE_ID = "gate[delivered-within-5m]"


@pytest.fixture(scope="module")
def external_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """targets/local.yaml, pointed at the session's already-running platform (nothing started)."""
    return local_target_as_external(tmp_path_factory.mktemp("target") / "standin.yaml")


def delivery_gate(platform: LocalEnvironment, target: Path, tmp_path: Path) -> tuple[int, dict[str, Any]]:
    """Run the delivery gate alone; returns the exit code and its summary record."""
    reports = tmp_path / f"reports-{uuid.uuid4().hex[:6]}"
    result = run_opsgate(
        ["gate", "--target", str(target), "--match", "delivered-within-5m"], timeout_s=120,
        env={**platform.environ(), "OPSGATE_REPORTS_DIR": str(reports)},
    )  # fmt: skip
    summary = json.loads(((reports / "latest").resolve() / "summary.json").read_text())
    checks = {c["id"]: c for c in summary["checks"]}
    assert set(checks) == {GATE_ID}, (checks.keys(), result.stdout[-2000:])
    return result.returncode, checks[GATE_ID]


def test_healthy_platform_delivers_within_the_limit(
    platform: LocalEnvironment, external_target: Path, tmp_path: Path
) -> None:
    code, record = delivery_gate(platform, external_target, tmp_path)
    assert code == 0 and record["verdict"] == "pass", record
    assert record["measured"] >= 0.95 and record["threshold"] == 0.95 and record["op"] == ">="
    assert record["claim"] == "seed-001.slo.delivery"
    note = record["samples"][0]["note"]
    assert "/60 delivered within 6s of acceptance (provider's record)" in note and "60 accepted" in note, note


def test_worker_acking_without_sending_fails_on_ground_truth(
    platform: LocalEnvironment, external_target: Path, tmp_path: Path
) -> None:
    with defects_planted(platform, "worker-acks-without-send"):
        code, record = delivery_gate(platform, external_target, tmp_path)
    assert code == 1 and record["verdict"] == "fail", record
    assert record["measured"] == 0
    note = record["samples"][0]["note"]
    assert note.startswith("0/60 delivered within 6s") and "60 never recorded" in note, note
    assert "expected >= 0.95 ratio" in record["message"], record["message"]
