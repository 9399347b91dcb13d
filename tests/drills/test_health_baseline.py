"""The declared drills that judge health after an outage pass on the healthy reference platform.

``health-baseline`` (seed 004 "Validate service health via health checks and key metrics returning to baseline")
and the two outage drills that now also ask ``/api/health/db`` and ``/api/health/redis`` during the outage, judged in
the session's healthy ``opsgate drill`` run (tests/conftest.py). Their failures on a defect are rows of CAUGHT in
tests/chaos/test_drills_catch_defects.py (worker-throttled, health-db-always-connected,
health-redis-always-connected).
"""

from __future__ import annotations

from helpers import HealthyRun
from opsgate.evidence.drill_logs import read_front_matter

DRILLS = {
    "drill[health-baseline]": ("seed-004.incident.health-baseline", "send queue back to its baseline (empty)"),
    "drill[postgres-outage]": ("seed-004.drills.postgres-outage", "/api/health/db says disconnected"),
    "drill[redis-outage]": ("seed-004.drills.redis-outage", "/api/health/redis says disconnected"),
}


def test_the_drills_pass_healthy_and_log_each_expectation(healthy_drill: HealthyRun) -> None:
    """Read from the session's healthy drill run (every short drill on a local stack of its own)."""
    checks = healthy_drill.checks
    assert {c["verdict"] for n, c in checks.items() if n in DRILLS} == {"pass"}, {n: checks.get(n) for n in DRILLS}
    logs = {p: p.read_text() for p in sorted((healthy_drill.folder / "drills" / "local").glob("*.md"))}
    for name, (claim, step) in DRILLS.items():
        assert checks[name]["claim"] == claim
        log = [p for p, text in logs.items() if f"claim: {claim}" in text]
        assert len(log) == 1 and step in logs[log[0]], (name, step, list(logs))
        front = read_front_matter(log[0])
        assert front is not None and front.outcome == "pass", log[0]
    assert not list((healthy_drill.folder / "state").glob("*.jsonl")), "rolled back: nothing left in the journal"
