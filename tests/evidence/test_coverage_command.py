"""``opsgate coverage`` through the real CLI, on real gate runs against the session's running platform."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import BACKUP_INTERVAL_S, local_target_as_external, run_opsgate
from opsgate.config import LOCAL_TARGET
from opsgate.environments.local import LocalEnvironment
from opsgate.evidence.claims import load_registry

REGISTRY = load_registry(LOCAL_TARGET.parent.parent / "reference" / "claims.yaml")
LINE = re.compile(r"claims: (\d+) verified, (\d+) failing, (\d+) untested, (\d+) stale, (\d+) out of scope")
ROW = re.compile(r"  (VERIFIED|FAILING|UNTESTED|STALE|OUT-OF-SCOPE) +(\S+) +(.*)")


@pytest.fixture(scope="module")
def standin(platform: LocalEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """targets/local.yaml pointed at the session's running platform (nothing started), its registry and all."""
    return local_target_as_external(tmp_path_factory.mktemp("target") / "standin.yaml")


def opsgate(platform: LocalEnvironment, reports: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = run_opsgate(
        list(args), timeout_s=240, env={**platform.environ(), "OPSGATE_REPORTS_DIR": str(reports)}
    )
    return result


def newest_summary(reports: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(((reports / "latest").resolve() / "summary.json").read_text())
    return summary


def table(stdout: str) -> tuple[dict[str, tuple[str, str]], tuple[int, ...]]:
    """The coverage table as claim id → (STATE, rest of the row), and the numbers of the exact last line."""
    lines = stdout.strip().splitlines()
    last = LINE.fullmatch(lines[-1])
    assert last, f"last line is not the count line: {lines[-1]!r}"
    rows = {m.group(2): (m.group(1), m.group(3)) for m in map(ROW.fullmatch, lines) if m}
    return rows, tuple(int(n) for n in last.groups())


def test_coverage_of_a_smoke_gate(platform: LocalEnvironment, standin: Path, tmp_path: Path) -> None:
    gate = opsgate(platform, tmp_path, "gate", "--target", str(standin), "--only", "smoke")
    summary = newest_summary(tmp_path)
    assert gate.returncode == 0 and summary["verdict"] == "pass", gate.stdout[-3000:]
    passed = {c["claim"] for c in summary["checks"] if c["claim"] and c["verdict"] == "pass"}
    assert "seed-004.health.api-liveness" in passed

    result = opsgate(platform, tmp_path, "coverage", "--target", str(standin))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    rows, (verified, failing, untested, stale, out_of_scope) = table(result.stdout)
    assert len(rows) == len(REGISTRY.claims) == verified + failing + untested + stale + out_of_scope
    assert out_of_scope == sum(1 for claim in REGISTRY.claims if claim.out_of_scope)
    assert (verified, failing, stale) == (len(passed), 0, 0)  # exactly the claims this run's passing checks cite
    assert rows["seed-004.health.api-liveness"][0] == "VERIFIED"
    assert "health[api:/healthz]" in rows["seed-004.health.api-liveness"][1]
    state, detail = rows["seed-003.health-gates.p95"]  # cited by a gate that is not smoke: it did not run
    assert state == "UNTESTED" and "cited by gates[0].claim" in detail
    assert rows["seed-002.drills.worker-to-zero"][0] == "UNTESTED"  # a drill: the gate does not run it
    assert rows["seed-004.health.web-lighthouse"][0] == "OUT-OF-SCOPE"
    assert f"{tmp_path}" in result.stdout  # names the run it read

    # summary.json carries the same run's coverage (the report renders it)
    embedded = {c["id"]: c["state"] for c in summary["coverage"]["claims"]}
    assert embedded == {claim_id: state.lower() for claim_id, (state, _) in rows.items()}

    # the same evidence judged with a 1 s freshness window: what was verified is stale, and that is no failure
    finished_s = max(c["finished_at"] or c["started_at"] for c in summary["checks"])  # unix s
    time.sleep(min(5.0, max(0.0, finished_s + 2.0 - time.time())))
    aged = opsgate(platform, tmp_path, "coverage", "--target", str(standin), "--max-age", "1s")
    assert aged.returncode == 0, aged.stdout[-3000:]
    rows, counts = table(aged.stdout)
    assert counts[0] == 0 and counts[3] == verified
    assert rows["seed-004.health.api-liveness"][0] == "STALE"


def test_coverage_fails_on_a_planted_defect(platform: LocalEnvironment, standin: Path, tmp_path: Path) -> None:
    """readiness-ignores-redis: /readyz no longer reports Redis, so the promotion readiness claim is failing."""
    platform.restart_platform(defects="readiness-ignores-redis")
    try:
        gate = opsgate(platform, tmp_path, "gate", "--target", str(standin), "--only", "smoke", "--match", "readyz")
    finally:
        platform.restart_platform(defects="", backup_interval_s=BACKUP_INTERVAL_S)
    assert gate.returncode == 1, gate.stdout[-3000:]

    result = opsgate(platform, tmp_path, "coverage", "--target", str(standin))
    assert result.returncode == 1, result.stdout[-3000:]
    rows, (verified, failing, untested, stale, out_of_scope) = table(result.stdout)
    state, detail = rows["seed-003.health-gates.ready"]
    assert state == "FAILING" and detail.startswith("003_101045f5a0f5861a.txt §Staging Promotion Flow")
    assert "health[api:/readyz] fail:" in detail and "redis" in detail
    assert rows["seed-002.deploy.worker-readyz"][0] == "VERIFIED"  # the worker's /readyz still passed
    assert (verified, failing, stale) == (1, 1, 0)
    assert verified + failing + untested + stale + out_of_scope == len(REGISTRY.claims)
    ordered = [m.group(1) for m in map(ROW.fullmatch, result.stdout.splitlines()) if m]
    assert ordered[0] == "FAILING"  # failures first


def test_a_target_without_a_registry_is_bad_input(tmp_path: Path) -> None:
    target = tmp_path / "plain.yaml"
    target.write_text("name: plain\nenvironment: staging\nprovider: external\n")
    result = run_opsgate(["coverage", "--target", str(target)], timeout_s=60,
                         env={"OPSGATE_REPORTS_DIR": str(tmp_path / "reports")})  # fmt: skip
    assert result.returncode == 2
    assert (
        result.stderr == (f"opsgate: {target}: claims: the target names no claims registry (add 'claims: <file>')\n")
        and result.stdout == ""
    )
    target.write_text("name: plain\nenvironment: staging\nprovider: external\nclaims: missing.yaml\n")
    result = run_opsgate(["coverage", "--target", str(target)], timeout_s=60,
                         env={"OPSGATE_REPORTS_DIR": str(tmp_path / "reports")})  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and f"{target}: claims: expected a claims registry file" in result.stderr
