"""The declared drills that judge health after an outage pass on the healthy reference platform.

``health-baseline`` (seed 004 "Validate service health via health checks and key metrics returning to baseline")
and the two outage drills that now also ask ``/api/health/db`` and ``/api/health/redis`` during the outage, run by
``opsgate drill`` on a local stack of their own. Their failures on a defect are rows of CAUGHT in
tests/chaos/test_drills_catch_defects.py (worker-throttled, health-db-always-connected,
health-redis-always-connected).
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_opsgate
from opsgate.evidence.drill_logs import read_front_matter

DRILLS = {
    "drill[health-baseline]": ("seed-004.incident.health-baseline", "send queue back to its baseline (empty)"),
    "drill[postgres-outage]": ("seed-004.drills.postgres-outage", "/api/health/db says disconnected"),
    "drill[redis-outage]": ("seed-004.drills.redis-outage", "/api/health/redis says disconnected"),
}


def test_the_drills_pass_healthy_and_log_each_expectation(tmp_path: Path) -> None:
    logs, state, empty = tmp_path / "drills", tmp_path / "state", tmp_path / "no-chaos"
    empty.mkdir()
    result = run_opsgate(
        ["drill", "--match", "health-baseline or postgres-outage or redis-outage", "--chaos", str(empty),
         "--drill-logs", str(logs)],
        timeout_s=600, env={"OPSGATE_DEFECTS": "", "OPSGATE_STATE_DIR": str(state)},
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    report = next(line for line in output.splitlines() if "report: " in line)
    summary = json.loads(Path(report.split("report: ", 1)[-1].strip()).with_name("summary.json").read_text())
    checks = {c["id"]: c for c in summary["checks"]}
    assert set(checks) == set(DRILLS), checks.keys()
    assert {c["verdict"] for c in checks.values()} == {"pass"}, {k: c["message"] for k, c in checks.items()}
    texts = [p.read_text() for p in sorted((logs / "local").glob("*.md"))]
    assert len(texts) == len(DRILLS)
    assert all(
        front is not None and front.outcome == "pass" for front in map(read_front_matter, (logs / "local").glob("*.md"))
    )
    for name, (claim, step) in DRILLS.items():
        assert checks[name]["claim"] == claim
        assert any(f"claim: {claim}" in text and step in text for text in texts), (name, step)
    assert not list(state.glob("*.jsonl")), "rolled back: nothing left in the journal"
