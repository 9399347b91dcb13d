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
    "flow[stop-blocks-next-send]": "worker-acks-without-send",  # the provider records no delivery before STOP
    "flow[activate-restores-sends]": "worker-acks-without-send",  # the provider records no delivery after it
    "flow[resume-restores-sends]": "worker-acks-without-send",  # ... nor after a resume
    "flow[post-deploy-verification]": "worker-acks-without-send",  # its test send is never delivered
    "flow[smoke]": "worker-acks-without-send",  # nor is the smoke send
    "health[api:/readyz]": "readiness-ignores-redis",
    "gate[send-message-p95]": "slow-messages-route",
    "gate[api-p95]": "slow-messages-route",  # the api's p95 over all routes: the slow sends are in it
    "gate[delivered-within-5m]": "worker-acks-without-send",  # 0 of its sends in the provider's record
    "slo[send-message]": "slow-messages-route",
}
MAY_ALSO_CATCH = {"gate[no-paging-alert-firing]", "gate[no-paging-alert-30m]", "gate[no-active-incidents]"}
"""Caught too when they sample while a paging alert fires: with these defects one fires for a few seconds during
the run (seen in 2 of the watch's 31 samples on a quiet machine, 1 of 31 on a busy one; which rule is still to be
named), so whether they fail varies."""


@pytest.fixture(scope="module")
def failing_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    reports = tmp_path_factory.mktemp("reports")
    result = run_opsgate(["gate"], timeout_s=400, env={"OPSGATE_REPORTS_DIR": str(reports), "OPSGATE_DEFECTS": DEFECTS})
    return result, (reports / "latest").resolve()


@pytest.mark.timeout(520)  # with the module's gate run (up to 400 s) in its setup
def test_gate_fails_and_names_each_defects_check(failing_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, run_dir = failing_run
    assert result.returncode == 1, result.stdout[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["verdict"] == "fail"
    failed = {c["id"]: c for c in summary["checks"] if c["verdict"] == "fail"}
    assert set(CAUGHT_BY) <= set(failed) <= set(CAUGHT_BY) | MAY_ALSO_CATCH, failed.keys()
    assert "checks.redis: missing" in failed["health[api:/readyz]"]["message"]
    assert "count: expected 1, got 0" in failed["flow[send-sms-delivered]"]["message"]
    assert failed["gate[send-message-p95]"]["measured"] > 0.5
    assert failed["slo[send-message]"]["measured"] >= 1500  # the exact client-side p95, in ms
    html = (run_dir / "report.html").read_text()
    for check_id in failed:
        assert f"id='{check_id}' data-verdict='fail'" in html
    # Failures come first in the report.
    assert html.index("data-verdict='fail'>") < html.index("data-verdict='pass'>")


@pytest.mark.timeout(520)
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


@pytest.mark.timeout(520)
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
