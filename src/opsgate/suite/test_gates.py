"""Metric gates: a probe against a threshold, once or over a window ("p95 < 1.5s for 5 minutes")."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from opsgate.config import Target
from opsgate.evidence.recorder import Recorder
from opsgate.gates import Rule, judge, judge_delta
from opsgate.probes.sources import instant_measure, metric_delta, metric_snapshot
from opsgate.traffic import drive

pytestmark = pytest.mark.health


async def test_gate(gate_name: str, target: Target, evidence: Recorder) -> None:
    """The gate's measured value satisfies its threshold."""
    spec = next(g for g in target.gates if g.name == gate_name)
    rule = Rule(spec.op, spec.threshold, spec.unit)
    every = target.scaled(spec.every, floor_s=0.2)
    window = target.scaled(spec.window, floor_s=every) if spec.window is not None else None
    async with httpx.AsyncClient() as client:
        traffic = None
        if spec.traffic is not None and window is not None:
            traffic = asyncio.create_task(drive(client, target, spec.traffic, window))
        if spec.judged_on_delta:
            assert spec.metric is not None and window is not None
            record = await judge_delta(
                metric_snapshot(client, target), metric_delta(spec.metric), rule,
                record_id=gate_name, kind="metric", window_s=window, every_s=every, claim=spec.claim,
                settle=traffic,
            )  # fmt: skip
        else:
            record = await judge(
                instant_measure(client, target, spec), rule,
                record_id=gate_name, kind="metric", claim=spec.claim,
                window_s=window, every_s=every, max_failures=spec.max_failures,
            )  # fmt: skip
        if traffic is not None:
            stats = await traffic
            record.message += f"; traffic: {stats.describe()}"
    evidence.conclude(record)
