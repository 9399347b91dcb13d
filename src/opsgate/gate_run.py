"""Run one gate of a target file: its windowed or instant measure, with its synthetic traffic.

Used by the gate suite (one check per gate) and by drills (a gate whose verdict is a drill's expectation).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx

from opsgate.config import GateSpec, Target
from opsgate.evidence.records import CheckRecord
from opsgate.gates import Measure, Rule, judge, judge_delta
from opsgate.probes.delivery import delivered_share
from opsgate.probes.sources import instant_measure, metric_delta, metric_snapshot
from opsgate.traffic import drive

HEARTBEAT_FLOOR_S = 1.0


def gate_rule(target: Target, spec: GateSpec) -> Rule:
    """The gate's rule; a duration threshold (``scale_threshold``) is compressed like every other duration."""
    threshold = target.scaled(spec.threshold, floor_s=HEARTBEAT_FLOOR_S) if spec.scale_threshold else spec.threshold
    return Rule(spec.op, threshold, spec.unit)


def _measure(client: httpx.AsyncClient, target: Target, spec: GateSpec) -> Callable[[], Awaitable[Measure]]:
    """The gate's instant measure; a delivery gate sends its own messages (so it is judged once)."""
    delivery = spec.delivery
    if delivery is None:
        return instant_measure(client, target, spec)

    async def measure() -> Measure:
        return await delivered_share(client, target, delivery)

    return measure


async def run_gate(client: httpx.AsyncClient, target: Target, spec: GateSpec) -> CheckRecord:
    """Judge ``spec`` (sending its traffic during its window) and return the record; never raises on a verdict."""
    rule = gate_rule(target, spec)
    every = target.scaled(spec.every, floor_s=0.2)
    window = target.scaled(spec.window, floor_s=every) if spec.window is not None else None
    traffic = None
    if spec.traffic is not None and window is not None:
        traffic = asyncio.create_task(drive(client, target, spec.traffic, window))
    try:
        if spec.judged_on_delta:
            assert spec.metric is not None and window is not None
            record = await judge_delta(
                metric_snapshot(client, target, spec.scrape), metric_delta(spec.metric), rule,
                record_id=spec.name, kind="metric", window_s=window, every_s=every, claim=spec.claim,
                settle=traffic,
            )  # fmt: skip
        else:
            record = await judge(
                _measure(client, target, spec), rule,
                record_id=spec.name, kind="metric", claim=spec.claim,
                window_s=window, every_s=every, max_failures=spec.max_failures,
            )  # fmt: skip
    finally:
        if traffic is not None and not traffic.done():
            await asyncio.wait([traffic])
    if traffic is not None:
        record.message += f"; traffic: {traffic.result().describe()}"
    return record
