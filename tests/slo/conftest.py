"""Fixtures for SLO runs against the session platform: a sending tenant and the api's own raw timings."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from opsgate.environments.local import LocalEnvironment
from opsgate.slo.runner import Plan

MESSAGES_ROUTE = "/v1/tenants/{tenant_id}/messages"
ServerTimings = Callable[[str, int], dict[str, Any]]
MessagePlan = Callable[..., Plan]


@pytest.fixture
def server_timings(platform: LocalEnvironment) -> ServerTimings:
    """``(route template, since) -> {"next", "missed", "timings"}`` from the api's ``/debug/request-timings``."""

    def fetch(route: str, since: int) -> dict[str, Any]:
        response = httpx.get(
            f"{platform.api_url}/debug/request-timings", params={"route": route, "since": since}, timeout=10
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    return fetch


@pytest.fixture(scope="module")
def sending_tenant(platform: LocalEnvironment, admin_headers: dict[str, str]) -> dict[str, Any]:
    """A fresh tenant whose budget outlasts any SLO run: 1 cent an email, 10,000,000 cents a day, no quiet hours."""
    body = {"name": f"slo-{uuid.uuid4().hex[:8]}", "daily_budget_cents": 10_000_000, "email_cost_cents": 1}
    response = httpx.post(f"{platform.api_url}/admin/tenants", json=body, headers=admin_headers, timeout=10)
    assert response.status_code == 201, response.text
    tenant: dict[str, Any] = response.json()
    return tenant


@pytest.fixture
def message_plan(platform: LocalEnvironment, sending_tenant: dict[str, Any]) -> MessagePlan:
    """An open-model plan of ``POST /v1/tenants/{id}/messages`` (email, 202 expected) for ``sending_tenant``."""

    def plan(rate_per_s: float, duration_s: float, **options: Any) -> Plan:
        return Plan(
            platform.api_url,
            f"/v1/tenants/{sending_tenant['id']}/messages",
            rate_per_s=rate_per_s,
            duration_s=duration_s,
            method="POST",
            headers={"Authorization": f"Bearer {sending_tenant['api_token']}", "Content-Type": "application/json"},
            body={"channel": "email", "to": "slo-probe@example.com", "body": "opsgate SLO probe"},
            status=202,
            name="send-message",
            **options,
        )

    return plan
