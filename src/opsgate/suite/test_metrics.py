"""Metrics every service must expose: the family present on each scrape endpoint, each sample fully labelled."""

from __future__ import annotations

import time

import httpx
import pytest

from opsgate.config import Target
from opsgate.evidence.recorder import Recorder
from opsgate.evidence.records import CheckRecord
from opsgate.probes import metrics
from opsgate.probes.base import ProbeError

pytestmark = pytest.mark.health


async def test_metric_labels(required_metric: str, target: Target, evidence: Recorder) -> None:
    """Each ``metrics.scrape`` endpoint exposes the metric, every sample with each required label non-empty."""
    spec = next(m for m in target.metrics.required if m.name == required_metric)
    record = CheckRecord(id=spec.name, kind="metric-labels", verdict="pass", claim=spec.claim,
                         threshold=", ".join(spec.labels), started_at=time.time())  # fmt: skip
    problems = []
    async with httpx.AsyncClient() as client:
        for url in target.metrics.scrape:
            try:
                snapshot = await metrics.scrape(client, [url])
            except ProbeError as exc:
                problems.append(str(exc))
                continue
            samples = [dict(labels) for (name, labels) in snapshot.series if name == spec.name]
            if not samples:
                problems.append(f"{url}: no {spec.name} samples")
                continue
            for label in spec.labels:
                bare = sum(1 for s in samples if not s.get(label))
                if bare:
                    problems.append(f"{url}: {bare} of {len(samples)} {spec.name} samples without a {label} label")
    record.finished_at = time.time()
    if problems:
        record.verdict = "fail"
        record.message = "; ".join(problems)
    else:
        record.message = f"{spec.name} with {', '.join(spec.labels)} on {len(target.metrics.scrape)} endpoint(s)"
    evidence.conclude(record)
