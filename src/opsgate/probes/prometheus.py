"""PromQL probe: one instant query against a Prometheus server."""

from __future__ import annotations

import httpx

from opsgate.probes.base import ProbeError
from opsgate.probes.http import fetch


async def instant_value(
    client: httpx.AsyncClient, base_url: str, promql: str, *, timeout_s: float = 10.0
) -> float | None:
    """The single value of an instant query; None for an empty result; more than one series is an error."""
    url = base_url.rstrip("/") + "/api/v1/query"
    response = await fetch(client, "GET", url, timeout_s=timeout_s, params={"query": promql})
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code != 200 or body.get("status") != "success":
        raise ProbeError(f"PromQL {promql!r} failed at {url}: {body.get('error') or response.status_code}")
    result = body["data"]["result"]
    kind = body["data"]["resultType"]
    if kind == "scalar":
        return float(result[1])
    if not result:
        return None
    if len(result) > 1:
        raise ProbeError(f"PromQL {promql!r} returned {len(result)} series; aggregate it to one (e.g. sum(...))")
    return float(result[0]["value"][1])
