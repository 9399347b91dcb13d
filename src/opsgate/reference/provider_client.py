"""The worker's client for the SMS/email provider (the provider sandbox locally)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class SendResult:
    """Outcome of one provider call: ``ok`` with a provider id, or a reason and a retry hint (s)."""

    ok: bool
    provider_id: str | None = None
    reason: str | None = None
    retry_after_s: float | None = None


async def send(
    client: httpx.AsyncClient,
    *,
    message_id: str,
    attempt: int,
    channel: str,
    to: str,
    body: str,
    tenant_id: str,
    timeout_s: float,
) -> SendResult:
    """Hand one message to the provider; transport errors and non-2xx answers become failures."""
    payload = {
        "message_id": message_id,
        "attempt": attempt,
        "channel": channel,
        "to": to,
        "body": body,
        "tenant_id": tenant_id,
    }
    try:
        response = await client.post("/v1/messages", json=payload, timeout=timeout_s)
    except httpx.TimeoutException:
        return SendResult(ok=False, reason=f"provider timeout after {timeout_s:.1f}s")
    except httpx.HTTPError as exc:
        return SendResult(ok=False, reason=f"provider unreachable: {type(exc).__name__}")
    if response.status_code // 100 == 2:
        return SendResult(ok=True, provider_id=str(response.json().get("provider_id")))
    retry_after: float | None = None
    header = response.headers.get("retry-after")
    if header:
        try:
            retry_after = max(0.0, float(header))
        except ValueError:
            retry_after = None
    return SendResult(ok=False, reason=f"provider error {response.status_code}", retry_after_s=retry_after)
