"""HTTP probe: status, JSON body, headers and latency of one request."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from opsgate.probes.base import ProbeError

TEXT_LIMIT = 2000
BODY_LIMIT = 1_000_000
"""Characters of a response body kept to search with ``expect.contains``."""


@dataclass(frozen=True)
class HttpObservation:
    """One response: status, parsed JSON (None if not JSON), text (truncated), latency (ms), when (unix s)."""

    method: str
    url: str
    status: int
    json: Any
    text: str
    headers: dict[str, str]
    latency_ms: float
    at: float
    body: str = field(default="", repr=False)
    """The body's text up to BODY_LIMIT characters (``text`` is the short form for messages and evidence)."""


async def fetch(client: httpx.AsyncClient, method: str, url: str, *, timeout_s: float, **kwargs: Any) -> httpx.Response:
    """One request; a refused connection or a timeout raises :class:`ProbeError` naming the URL."""
    try:
        return await client.request(method, url, timeout=timeout_s, **kwargs)
    except httpx.ConnectError:
        raise ProbeError(f"connection refused to {url}") from None
    except httpx.TimeoutException:
        raise ProbeError(f"no answer from {url} within {timeout_s:g}s") from None
    except httpx.HTTPError as exc:
        raise ProbeError(f"{method} {url} failed: {type(exc).__name__}") from None


async def request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    timeout_s: float,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
) -> HttpObservation:
    """Send one request and observe it; a refused connection or a timeout raises :class:`ProbeError`."""
    at = time.time()
    started = time.perf_counter()
    response = await fetch(client, method, url, timeout_s=timeout_s, headers=headers, content=content)
    latency_ms = (time.perf_counter() - started) * 1000
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    return HttpObservation(
        method, url, response.status_code, body, response.text[:TEXT_LIMIT], dict(response.headers), latency_ms, at,
        response.text[:BODY_LIMIT],
    )  # fmt: skip


def contains_mismatch(expected: str | None, observed: HttpObservation) -> str | None:
    """Why the body lacks ``expected`` text (None when it has it, or nothing is expected)."""
    if expected is None or expected in observed.body:
        return None
    return f"body: expected to contain {expected!r}, not found in {len(observed.body)} characters"


def json_field(body: Any, dotted: str) -> Any:
    """The value at ``a.b.0.c`` in a JSON document; raises KeyError naming the missing part."""
    value = body
    for part in dotted.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(f"{dotted}: no '{part}' in the response")
    return value


def subset_mismatch(expected: Any, actual: Any, path: str = "") -> str | None:
    """Where ``actual`` does not contain ``expected`` (mappings by subset, other values by equality)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path.rstrip('.') or 'body'}: expected an object, got {actual!r}"
        for key, value in expected.items():
            if key not in actual:
                return f"{path}{key}: missing"
            problem = subset_mismatch(value, actual[key], f"{path}{key}.")
            if problem:
                return problem
        return None
    if expected == actual:
        return None
    return f"{path.rstrip('.') or 'body'}: expected {expected!r}, got {actual!r}"
