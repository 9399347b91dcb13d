"""The live alert harness: read an alert's state from Prometheus and the notifications a receiver got.

Drills and the alert-live check wait on these: pending, firing, notified, resolved — each with a
deadline, saying what was awaited and what was last seen when it runs out.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from opsgate.probes.base import ProbeError

POLL_S = 0.2


class AlertTimeout(Exception):
    """An alert did not reach the awaited state within its deadline; the message says which, how long, last seen."""


@dataclass
class LiveAlerts:
    """Alert state on ``prometheus_url``; notifications at ``receiver_url`` (opsgate's webhook receiver)."""

    client: httpx.AsyncClient
    prometheus_url: str
    receiver_url: str | None = None

    async def state(self, alert: str) -> str:
        """``firing``, ``pending`` or ``inactive`` (the most advanced state of any series of ``alert``)."""
        try:
            response = await self.client.get(f"{self.prometheus_url}/api/v1/alerts", timeout=5)
        except httpx.HTTPError as exc:
            raise ProbeError(f"Prometheus at {self.prometheus_url} unreachable: {type(exc).__name__}") from None
        states = {a["state"] for a in response.json()["data"]["alerts"] if a["labels"].get("alertname") == alert}
        return "firing" if "firing" in states else ("pending" if "pending" in states else "inactive")

    async def wait_state(self, alert: str, wanted: str, *, within_s: float) -> float:
        """Wait until ``alert`` is in ``wanted`` state; returns the unix time it was seen."""
        deadline = time.monotonic() + within_s
        last = "unknown"
        for _ in range(int(within_s / POLL_S) + 2):
            last = await self.state(alert)
            if last == wanted or (wanted == "pending" and last == "firing"):
                return time.time()
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(POLL_S)
        raise AlertTimeout(f"{alert} not {wanted} within {within_s:.1f}s at {self.prometheus_url}; last state: {last}")

    async def notifications(self, alert: str) -> list[dict[str, Any]]:
        """What the receiver got for ``alert``: ``{receiver, received_at, status, alerts}`` per notification;
        ``alerts`` are the notified alerts of that name, each with its ``labels`` and ``annotations``."""
        if self.receiver_url is None:
            raise ProbeError("no alerts.receiver in the target: notifications cannot be read")
        response = await self.client.get(f"{self.receiver_url}/notifications", params={"alert": alert}, timeout=5)
        rows = response.json()["notifications"]
        return [{"receiver": r["receiver"], "received_at": r["received_at"], "status": r["payload"]["status"],
                 "alerts": [a for a in r["payload"].get("alerts", []) if a.get("labels", {}).get("alertname") == alert]}
                for r in rows]  # fmt: skip

    async def wait_notified(self, alert: str, status: str, *, since: float, within_s: float) -> dict[str, Any]:
        """Wait for a ``status`` (firing/resolved) notification of ``alert`` received after ``since`` (unix s)."""
        deadline = time.monotonic() + within_s
        seen: list[dict[str, Any]] = []
        for _ in range(int(within_s / POLL_S) + 2):
            seen = await self.notifications(alert)
            match = next((n for n in seen if n["status"] == status and n["received_at"] >= since), None)
            if match is not None:
                return match
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(POLL_S)
        raise AlertTimeout(
            f"no {status} notification of {alert} at {self.receiver_url} within {within_s:.1f}s; "
            f"got {len(seen)} notification(s) for it"
        )

    async def active(self) -> set[str]:
        """Names of every alert pending or firing now."""
        response = await self.client.get(f"{self.prometheus_url}/api/v1/alerts", timeout=5)
        return {a["labels"].get("alertname", "") for a in response.json()["data"]["alerts"]}

    async def wait_active_within(self, allowed: set[str], *, within_s: float) -> float:
        """Wait until no alert outside ``allowed`` is pending or firing; returns when that was seen."""
        deadline = time.monotonic() + within_s
        extra: set[str] = set()
        for _ in range(int(within_s / POLL_S) + 2):
            extra = await self.active() - allowed
            if not extra:
                return time.time()
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(POLL_S)
        raise AlertTimeout(f"still active {within_s:.1f}s after the restore: {', '.join(sorted(extra))}")


def missing_diagnostics(notification: dict[str, Any], wanted: list[str]) -> list[str]:
    """Which of ``wanted`` (annotation or label names) a notified alert lacks or leaves empty."""
    alerts = notification.get("alerts") or [{}]
    missing = []
    for name in wanted:
        if not all(a.get("annotations", {}).get(name) or a.get("labels", {}).get(name) for a in alerts):
            missing.append(name)
    return missing
