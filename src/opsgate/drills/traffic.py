"""Requests a drill sends while its fault holds, each one kept for reconciliation (status, latency, saved ids)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import httpx

from opsgate.config import DrillTraffic, Target
from opsgate.flows import FlowFailed, send_step
from opsgate.probes.base import ProbeError
from opsgate.probes.http import json_field

DRAIN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Sent:
    """One request of the drill's traffic: its status (None = no answer), latency (ms), saved fields."""

    status: int | None
    latency_ms: float
    saved: dict[str, str]
    note: str = ""
    phase: str = "during"


@dataclass
class TrafficLog:
    """Every request the drill sent, in send order."""

    requests: list[Sent] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return len(self.requests)

    @property
    def accepted(self) -> int:
        """Answered 2xx: what the target took on and must not lose."""
        return sum(1 for r in self.requests if r.status is not None and 200 <= r.status < 300)

    def saved(self, name: str) -> list[str]:
        """Every value saved as ``name`` (e.g. the event ids accepted), in send order."""
        return [r.saved[name] for r in self.requests if name in r.saved]

    def describe(self) -> str:
        """``20 sent: 20x202`` style text."""
        counts: dict[str, int] = {}
        for r in self.requests:
            key = str(r.status) if r.status is not None else "no answer"
            counts[key] = counts.get(key, 0) + 1
        return f"{self.sent} sent: " + (", ".join(f"{n}x{k}" for k, n in sorted(counts.items())) or "none")


async def send_batch(client: httpx.AsyncClient, target: Target, traffic: DrillTraffic, log: TrafficLog) -> None:
    """Send ``traffic.count`` requests at ``rate_per_s`` (each on its schedule), appending each to ``log``."""
    interval = 1.0 / traffic.rate_per_s
    started = time.monotonic()

    async def one() -> None:
        began = time.perf_counter()
        try:
            seen = await send_step(client, target, traffic.step, {})
        except (ProbeError, FlowFailed) as exc:
            log.requests.append(Sent(None, (time.perf_counter() - began) * 1000, {}, str(exc), traffic.phase))
            return
        saved = {}
        if 200 <= seen.status < 300:
            for name, dotted in traffic.step.save.items():
                with contextlib.suppress(KeyError):  # reconciliation reports what is missing
                    saved[name] = str(json_field(seen.json, dotted))
        log.requests.append(Sent(seen.status, seen.latency_ms, saved, seen.text[:200], traffic.phase))

    tasks = []
    for index in range(traffic.count):
        await asyncio.sleep(max(0.0, started + index * interval - time.monotonic()))
        tasks.append(asyncio.create_task(one()))
    _, pending = await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT_S)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
