"""The SLO stage of ``opsgate gate`` and ``opsgate load``: each row of targets/local.yaml judged, as evidence."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from helpers import local_target_as_external, run_opsgate
from opsgate.environments.local import LocalEnvironment


@pytest.fixture(scope="module")
def standin(platform: LocalEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """targets/local.yaml pointed at the session's running platform (nothing started)."""
    return local_target_as_external(tmp_path_factory.mktemp("target") / "standin.yaml")


def run(args: list[str], tmp_path: Path, env: dict[str, str]) -> tuple[int, dict[str, Any], Path]:
    result = run_opsgate(args, timeout_s=240, env={**env, "OPSGATE_REPORTS_DIR": str(tmp_path),
                                                    "OPSGATE_STATE_DIR": str(tmp_path / "state")})  # fmt: skip
    run_dir = (tmp_path / "latest").resolve()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert result.returncode == (0 if summary["verdict"] == "pass" else 1), result.stdout[-3000:] + result.stderr
    return result.returncode, {c["id"]: c for c in summary["checks"]}, run_dir


def test_the_gate_short_stage_passes_every_row_with_exact_and_locust_figures(
    platform: LocalEnvironment, standin: Path, tmp_path: Path
) -> None:
    code, checks, run_dir = run(["gate", "--target", str(standin), "--only", "slo"], tmp_path, platform.environ())
    assert code == 0 and sorted(checks) == ["slo[core-api-tenant]", "slo[readiness]", "slo[send-message]"]
    for check in checks.values():
        figures = check["figures"]
        assert check["kind"] == "slo" and check["verdict"] == "pass", check["message"]
        assert figures["stage"] == "short" and figures["planned"] == 250 and figures["skipped"] == 0
        assert figures["count"] == figures["locust_count"] == 250  # Locust's own count agrees
        assert figures["achieved_rate_per_s"] >= 95 and figures["error_rate"] == 0
        assert check["measured"] == figures["p95_ms"] < check["threshold"]
        assert figures["locust_p95_ms"] is not None
        names = {Path(a).name for a in check["attachments"]}
        assert {"locust.json", "locust.html", "locust.log"} <= names
        assert all((run_dir / a).is_file() for a in check["attachments"])
    send = checks["slo[send-message]"]
    assert send["message"].startswith(f"POST /v1/tenants/{platform.tenant_id}/messages: p50 ")
    assert send["claim"] == "seed-001.slo.api-p95"
    cases = {c.get("name"): c for c in ET.parse(run_dir / "junit.xml").getroot().iter("testcase")}
    properties = {p.get("name"): p.get("value") for p in cases["test_slo[send-message]"].iter("property")}
    assert properties["kind"] == "slo" and properties["unit"] == "ms" and float(properties["threshold"]) == 500


@pytest.mark.matrix  # 23 s on a stack of its own; a make matrix row, and make test keeps tests/slo/test_slo_faults.py's
def test_the_slow_route_defect_fails_its_row_naming_endpoint_and_miss(tmp_path: Path) -> None:
    """The embedded platform started with slow-messages-route (1.5 s on POST messages): the gate fails."""
    code, checks, _ = run(["gate", "--only", "slo", "--match", "send-message or core-api"], tmp_path,
                          {"OPSGATE_DEFECTS": "slow-messages-route"})  # fmt: skip
    send, core = checks["slo[send-message]"], checks["slo[core-api-tenant]"]
    assert code == 1 and send["verdict"] == "fail" and core["verdict"] == "pass", send["message"]
    assert "POST /v1/tenants/" in send["message"] and "p95 " in send["message"] and "≥ 500 ms (by " in send["message"]
    assert send["measured"] >= 1500


def test_opsgate_load_runs_the_full_profile(platform: LocalEnvironment, standin: Path, tmp_path: Path) -> None:
    code, checks, _ = run(["load", "--target", str(standin), "--match", "readiness"], tmp_path, platform.environ())
    readiness = checks["slo[readiness]"]
    assert code == 0 and readiness["verdict"] == "pass", readiness["message"]
    # 10m x 0.02 = 12 s at 100/s, judged overall and in each 6 s (5m scaled) window.
    assert readiness["figures"]["stage"] == "full" and readiness["figures"]["planned"] == 1200


def test_a_row_judges_a_team_locustfile_by_request_name(
    platform: LocalEnvironment, standin: Path, tmp_path: Path
) -> None:
    """An SLO row naming load/reference_journey.py and one of its request names, run by ``opsgate load``."""
    journey = Path(__file__).parents[2] / "load" / "reference_journey.py"
    target = tmp_path / "journey.yaml"
    target.write_text(
        standin.read_text().split("\nslos:\n")[0]
        + f"""
slos:
  - name: journey-send
    locustfile: {journey}
    judge: send message
    p95_ms: 500
    error_rate: 0.01
    honesty: {{min_samples: 40}}
    load: {{model: closed, users: 4, duration: 5m, min_duration: 5s}}
"""
    )
    credentials = platform.credentials
    env = {
        **platform.environ(),
        "OPSGATE_TENANT_ID": platform.tenant_id,
        "OPSGATE_API_TOKEN": credentials.api_token,
        "OPSGATE_SERVICE_USER": credentials.service_user,
        "OPSGATE_SERVICE_PASSWORD": credentials.service_password,
    }
    code, checks, _ = run(["load", "--target", str(target)], tmp_path, env)
    row = checks["slo[journey-send]"]
    assert code == 0 and row["verdict"] == "pass", row["message"]
    figures = row["figures"]
    assert figures["model"] == "closed" and figures["planned"] == 0 and figures["count"] >= 40
    assert figures["count"] == figures["locust_count"]  # only the judged request name, as Locust counted it
    assert row["message"].startswith(f"{journey} (send message): p50 ")
