"""Delivery probe: the share of messages the provider itself recorded within a limit of their acceptance.

Seed 001: "≥95% delivered within 5 minutes". The probe sends ``count`` messages on a fixed schedule
(``rate_per_s``), notes when each was accepted (the send's answer arrived), then reads the provider's own
record of deliveries (ground truth: the platform's status columns can lie) until every accepted message is
there or the limit has passed for the last one. A message counts as delivered in time when the provider
received it no later than ``within`` (scaled) after its acceptance. Both clocks are read on their own hosts:
on a remote target, clock skew adds to (or hides) latency.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

import httpx

from opsgate.config import DeliverySource, Target
from opsgate.flows import FlowFailed, fill, problem_of, send_step
from opsgate.gates import Measure
from opsgate.probes.base import ProbeError
from opsgate.probes.http import json_field, request
from opsgate.probes.sources import TIMEOUT_S, service_url

LIMIT_FLOOR_S = 1.0
"""The scaled limit is never below this: a send's path (api, queue, worker, provider) takes ~0.1 s here."""
POLL_EVERY_S = 0.2
SEND_DRAIN_S = 15.0


@dataclass
class DeliveryRun:
    """What one run saw: sends, acceptances (message id → unix s), provider records (id → unix s), refusals."""

    limit_s: float
    sent: int = 0
    accepted: dict[str, float] = field(default_factory=dict)
    recorded: dict[str, float] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    reads: int = 0

    def latencies_s(self) -> list[float]:
        """Acceptance → provider record, seconds, of every accepted message the provider recorded (never < 0)."""
        return sorted(max(0.0, self.recorded[m] - at) for m, at in self.accepted.items() if m in self.recorded)

    def in_time(self) -> int:
        """Messages the provider recorded within the limit of their acceptance."""
        return sum(1 for latency in self.latencies_s() if latency <= self.limit_s)

    def share(self) -> float | None:
        """Delivered in time over every message sent (a refused send is undelivered); None if none was sent."""
        return self.in_time() / self.sent if self.sent else None

    def describe(self) -> str:
        """``58/60 delivered within 6s; 1 late, 1 never recorded; 60 accepted; p95 0.12s`` style text."""
        latencies = self.latencies_s()
        late = len(latencies) - self.in_time()
        missing = len(self.accepted) - len(latencies)
        refused = ", ".join(f"{n}x {why}" for why, n in sorted(self.refused.items()))
        p95 = latencies[max(0, math.ceil(0.95 * len(latencies)) - 1)] if latencies else None
        parts = [
            f"{self.in_time()}/{self.sent} delivered within {self.limit_s:g}s of acceptance (provider's record)",
            f"{late} late, {missing} never recorded",
            f"{len(self.accepted)} accepted" + (f", refused: {refused}" if refused else ""),
        ]
        if p95 is not None:
            parts.append(f"p95 {p95:.3g}s, max {latencies[-1]:.3g}s")
        return "; ".join(parts) + f" ({self.reads} reads of the record)"


async def _send_all(client: httpx.AsyncClient, target: Target, source: DeliverySource, run: DeliveryRun) -> None:
    """Send ``count`` messages on a fixed schedule; each acceptance is timed when its answer arrives."""
    interval = 1.0 / source.rate_per_s
    started = time.monotonic()

    def refused(why: str) -> None:
        run.refused[why] = run.refused.get(why, 0) + 1

    async def one() -> None:
        try:
            observed = await send_step(client, target, source.send, {})
        except (ProbeError, FlowFailed):
            refused("unreachable")
            return
        accepted_at = observed.at + observed.latency_ms / 1000
        if problem_of(source.send, observed) is not None:
            refused(f"status {observed.status}")
            return
        try:
            message_id = str(json_field(observed.json, source.id_field))
        except KeyError:
            refused(f"no {source.id_field} in the answer")
            return
        run.accepted[message_id] = accepted_at

    tasks = []
    for index in range(source.count):
        await asyncio.sleep(max(0.0, started + index * interval - time.monotonic()))
        tasks.append(asyncio.create_task(one()))
        run.sent += 1
    _, pending = await asyncio.wait(tasks, timeout=SEND_DRAIN_S)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if pending:
        run.refused["no answer"] = len(pending)


async def _read_record(
    client: httpx.AsyncClient, target: Target, source: DeliverySource, since: float
) -> dict[str, float]:
    """The provider's record: message id → earliest time it was received (unix s)."""
    record = source.record
    url = service_url(target, record.service) + fill(record.path, {"since": f"{since:.3f}"})
    observed = await request(client, "GET", url, timeout_s=TIMEOUT_S, headers=record.headers)
    if observed.status != 200:
        raise ProbeError(f"GET {url} answered {observed.status}: {observed.text[:200]}")
    try:
        items = json_field(observed.json, record.items)
    except KeyError as exc:
        raise ProbeError(f"GET {url}: {exc.args[0]}") from None
    if not isinstance(items, list):
        raise ProbeError(f"GET {url}: {record.items} is not a list")
    seen: dict[str, float] = {}
    for item in items:
        try:
            message_id, at = str(json_field(item, record.id)), float(json_field(item, record.at))
        except (KeyError, TypeError, ValueError):
            raise ProbeError(f"GET {url}: a delivery without {record.id} and a numeric {record.at}: {item!r}") from None
        seen[message_id] = min(at, seen.get(message_id, at))
    return seen


async def delivery_run(client: httpx.AsyncClient, target: Target, source: DeliverySource) -> DeliveryRun:
    """Send the messages and read the provider's record until all are there or the limit passed for the last one.

    Bounded: ``count`` sends (each at most 10 s), then reads every 0.2 s for at most the scaled limit.
    """
    run = DeliveryRun(limit_s=target.scaled(source.within, floor_s=LIMIT_FLOOR_S))
    since = time.time() - 1.0  # a margin for the provider's clock
    await _send_all(client, target, source, run)
    deadline = max(run.accepted.values(), default=time.time()) + run.limit_s
    for _ in range(math.ceil(run.limit_s / POLL_EVERY_S) + 2):
        run.recorded = await _read_record(client, target, source, since)
        run.reads += 1
        if all(m in run.recorded for m in run.accepted) or time.time() >= deadline:
            break
        await asyncio.sleep(POLL_EVERY_S)
    return run


async def delivered_share(client: httpx.AsyncClient, target: Target, source: DeliverySource) -> Measure:
    """The share (0..1) of the messages sent that the provider recorded within the scaled limit."""
    run = await delivery_run(client, target, source)
    return Measure(run.share(), run.describe())
