"""Synthetic traffic: one declared request sent on a fixed schedule (bounded in count and time)."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

import httpx

from opsgate.config import Target, Traffic
from opsgate.flows import FlowFailed, send_step
from opsgate.probes.base import ProbeError

DRAIN_TIMEOUT_S = 15.0


@dataclass
class TrafficStats:
    """What the traffic did: requests planned, sent, answered per status, failed to connect."""

    planned: int = 0
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failed: int = 0

    def describe(self) -> str:
        """``40 sent: 40x202`` style text."""
        by_status = ", ".join(f"{n}x{code}" for code, n in sorted(self.statuses.items()))
        return f"{self.sent}/{self.planned} requests sent: {by_status or 'none answered'}" + (
            f", {self.failed} failed" if self.failed else ""
        )


async def drive(
    client: httpx.AsyncClient, target: Target, traffic: Traffic, duration_s: float, stop: asyncio.Event | None = None
) -> TrafficStats:
    """Send ``rate_per_s`` requests per second for ``duration_s`` (or until ``stop`` is set); each on its schedule."""
    stats = TrafficStats(planned=max(1, math.floor(traffic.rate_per_s * duration_s)))
    interval = 1.0 / traffic.rate_per_s
    started = time.monotonic()

    async def one() -> None:
        try:
            observed = await send_step(client, target, traffic.step, {})
            stats.statuses[observed.status] = stats.statuses.get(observed.status, 0) + 1
        except (ProbeError, FlowFailed):
            stats.failed += 1

    tasks = []
    for index in range(stats.planned):
        await asyncio.sleep(max(0.0, started + index * interval - time.monotonic()))
        if stop is not None and stop.is_set():
            break
        tasks.append(asyncio.create_task(one()))
        stats.sent += 1
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return stats
