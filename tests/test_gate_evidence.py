"""``opsgate gate`` catches planted defects, names them in summary.json and report.html, and the report
opens in a real browser with no console errors and no request leaving the file."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from helpers import run_opsgate
from opsgate.probes.browser import inspect_file

DEFECTS = "worker-acks-without-send,readiness-ignores-redis,slow-messages-route"
CAUGHT_BY = {
    "flow[send-sms-delivered]": "worker-acks-without-send",
    "flow[smoke]": "worker-acks-without-send",  # nor is the smoke send delivered
    "health[api:/readyz]": "readiness-ignores-redis",
    "gate[send-message-p95]": "slow-messages-route",
    "gate[api-p95]": "slow-messages-route",  # the api's p95 over all routes: the slow sends are in it
    "gate[delivered-within-5m]": "worker-acks-without-send",  # 0 of its sends in the provider's record
    "slo[send-message]": "slow-messages-route",
}
MATCH = " or ".join([*CAUGHT_BY, "health[worker:/readyz]"])
"""The checks each defect must fail, and the passing health checks beside them (the full gate on a healthy
platform is test_cli's; each defect against the whole gate is ``make matrix``'s)."""


@pytest.fixture(scope="module")
def failing_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """``opsgate gate`` on its own local stack (its logs are evidence too) with the three defects planted."""
    reports = tmp_path_factory.mktemp("reports")
    env = {"OPSGATE_REPORTS_DIR": str(reports), "OPSGATE_DEFECTS": DEFECTS}
    result = run_opsgate(["gate", "--match", MATCH], timeout_s=300, env=env)
    return result, (reports / "latest").resolve()


@pytest.mark.timeout(420)  # with the module's gate run (up to 300 s) in its setup
def test_gate_fails_and_names_each_defects_check(failing_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, run_dir = failing_run
    assert result.returncode == 1, result.stdout[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["verdict"] == "fail"
    failed = {c["id"]: c for c in summary["checks"] if c["verdict"] == "fail"}
    assert set(failed) == set(CAUGHT_BY), failed.keys()
    assert any(c["verdict"] == "pass" for c in summary["checks"])  # the worker's readiness: the defects leave it alone
    assert "checks.redis: missing" in failed["health[api:/readyz]"]["message"]
    assert "count: expected 1, got 0" in failed["flow[send-sms-delivered]"]["message"]
    assert failed["gate[send-message-p95]"]["measured"] > 0.5
    assert failed["slo[send-message]"]["measured"] >= 1500  # the exact client-side p95, in ms
    html = (run_dir / "report.html").read_text()
    for check_id in failed:
        assert f"id='{check_id}' data-verdict='fail'" in html
    # Failures come first in the report.
    assert html.index("data-verdict='fail'>") < html.index("data-verdict='pass'>")


@pytest.mark.timeout(420)
async def test_report_renders_in_chromium_without_errors_or_requests(
    failing_run: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path
) -> None:
    _, run_dir = failing_run
    summary = json.loads((run_dir / "summary.json").read_text())
    seen = await inspect_file(run_dir / "report.html", screenshot=tmp_path / "report.png")
    assert seen.problems == [] and seen.console_errors == [] and seen.blocked_requests == []
    text = " ".join(seen.observed.values())
    assert "FAIL" in text
    for check in summary["checks"]:
        assert check["id"] in text
    assert (tmp_path / "report.png").stat().st_size > 1000


@pytest.mark.timeout(420)
def test_no_secret_reaches_the_evidence(failing_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """The local environment's generated secrets have recognisable shapes; none may appear in any artifact."""
    _, run_dir = failing_run
    shapes = re.compile(r"(tok_|pw-|whsec_|pwsec_|pk_|pg-|rd-)[A-Za-z0-9_-]{24,}")
    leaks = {
        str(path.relative_to(run_dir)): shapes.findall(path.read_text(errors="replace"))
        for path in run_dir.rglob("*")
        if path.is_file() and path.suffix != ".png"
    }
    assert {name: found for name, found in leaks.items() if found} == {}
    assert any(path.suffix == ".log" for path in run_dir.rglob("*"))  # the process logs were scanned too
