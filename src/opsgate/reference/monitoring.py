"""Failure events (``notification.failure`` and friends) posted to the monitoring webhook."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from opsgate.reference.metrics import PlatformMetrics

log = logging.getLogger("opsgate.reference.monitoring")


async def post_event(
    client: httpx.AsyncClient, url: str | None, metrics: PlatformMetrics, event: dict[str, Any]
) -> bool:
    """Post one event; a failing sink is counted and logged, never raised into the caller."""
    if not url:
        return False
    body = {**event, "emitted_at": time.time()}
    try:
        response = await client.post(url, json=body, timeout=2.0)
    except httpx.HTTPError as exc:
        metrics.monitoring_failures.inc()
        log.warning("monitoring webhook unreachable: %s", type(exc).__name__)
        return False
    if response.status_code >= 300:
        metrics.monitoring_failures.inc()
        log.warning("monitoring webhook answered %s", response.status_code)
        return False
    return True
