"""SLO load gates: each row of the target's ``slos:`` under load, judged on exact percentiles.

``opsgate gate`` runs the short stage (the shortest honest run); ``opsgate load`` the full profile.
Locust runs as a child process; its JSON, HTML and log are attached to the evidence.
"""

from __future__ import annotations

import time

import pytest

from opsgate.config import Target
from opsgate.evidence.recorder import Recorder
from opsgate.plugin import OpsgateSession
from opsgate.slo.profile import honesty_of, limits_of, plan_for, window_s
from opsgate.slo.record import slo_record
from opsgate.slo.runner import run_load
from opsgate.slo.verdict import judge

pytestmark = pytest.mark.slo


def test_slo(slo_name: str, target: Target, evidence: Recorder, opsgate_session: OpsgateSession) -> None:
    """The row's latency percentiles and error rate stay under its limits, on a run that proves it."""
    spec = next(s for s in target.slos if s.name == slo_name)
    stage, workers = opsgate_session.load_stage, opsgate_session.load_workers
    plan = plan_for(target, spec, stage, workers=workers)
    out = opsgate_session.run_dir / "slo" / spec.name
    started = time.time()
    result = run_load(plan, out, journal=opsgate_session.launcher.journal)
    for path in result.files:
        evidence.attach(path)
    verdict = judge(result.run, limits_of(spec), honesty_of(spec), window_s=window_s(target, spec))
    record = slo_record(spec, stage, plan, verdict, result)
    record.started_at, record.finished_at = started, time.time()
    evidence.conclude(record)
