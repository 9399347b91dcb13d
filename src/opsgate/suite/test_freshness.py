"""Freshness: the newest backup, the newest passing drill log, not older than allowed (wall-clock)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from opsgate.config import Target
from opsgate.evidence.drill_logs import newest_passing
from opsgate.evidence.recorder import Recorder
from opsgate.gates import Measure, Rule, judge
from opsgate.probes import metrics
from opsgate.probes.sources import http_number

pytestmark = pytest.mark.health


async def test_freshness(freshness_name: str, target: Target, evidence: Recorder) -> None:
    """Age of the newest evidence (seconds since its timestamp) is under ``max_age``; ages are never scaled."""
    spec = next(f for f in target.freshness if f.name == freshness_name)

    async def measure() -> Measure:
        if spec.drill_logs is not None:
            log = newest_passing(Path(spec.drill_logs.dir), spec.drill_logs.environment)
            if log is None:
                return Measure(None, f"no passing drill log in {spec.drill_logs.dir}/{spec.drill_logs.environment}")
            return Measure(time.time() - log.finished_at, f"newest passing: {log.path.name}")
        async with httpx.AsyncClient() as client:
            if spec.http is not None:
                stamp = await http_number(client, target, spec.http)
            else:
                assert spec.metric is not None
                snapshot = await metrics.scrape(client, target.metrics.scrape)
                result = metrics.evaluate(spec.metric, snapshot)
                stamp = Measure(result.value, result.note)
        if stamp.value is None or stamp.value <= 0:
            return Measure(None, f"no timestamp yet ({stamp.note or 'none recorded'})")
        return Measure(time.time() - stamp.value, stamp.note)

    record = await judge(measure, Rule("<", spec.max_age, "s"), record_id=freshness_name, kind="freshness",
                         claim=spec.claim)  # fmt: skip
    if record.verdict == "inconclusive":
        record.verdict = "fail"  # no evidence at all is older than any limit: a failed freshness gate
    evidence.conclude(record)
