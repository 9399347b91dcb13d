"""The metrics the issue-9 alert rules read: budgets, tenant-labelled requests, process and disk resources."""

from __future__ import annotations

import uuid

import httpx
import pytest

from helpers import NewTenant, metric_value
from opsgate.environments.local import LocalEnvironment

pytestmark = pytest.mark.platform


async def test_budget_spend_and_limit_per_tenant_and_the_budget_endpoint(
    api: httpx.AsyncClient, new_tenant: NewTenant, admin_headers: dict[str, str]
) -> None:
    tenant = await new_tenant(daily_budget_cents=100, email_cost_cents=9)
    sent = await api.post(f"/v1/tenants/{tenant['id']}/messages", headers=tenant["headers"],
                          json={"channel": "email", "to": "budget@example.test", "body": "hi"})  # fmt: skip
    assert sent.status_code == 202, sent.text
    text = (await api.get("/metrics")).text
    assert metric_value(text, "tenant_budget_spent_cents", {"tenant": tenant["id"]}) == 9
    assert metric_value(text, "tenant_budget_limit_cents", {"tenant": tenant["id"]}) == 100
    route = {"route": "/v1/tenants/{tenant_id}/messages", "status": "202", "tenant": tenant["id"]}
    assert metric_value(text, "http_requests_total", route) == 1
    raised = await api.put(f"/admin/tenants/{tenant['id']}/budget", headers=admin_headers,
                           json={"daily_budget_cents": 1000})  # fmt: skip
    assert raised.status_code == 200 and raised.json()["daily_budget_cents"] == 1000
    text = (await api.get("/metrics")).text
    assert metric_value(text, "tenant_budget_limit_cents", {"tenant": tenant["id"]}) == 1000
    unknown = await api.put(f"/admin/tenants/{uuid.uuid4()}/budget", headers=admin_headers,
                            json={"daily_budget_cents": 1})  # fmt: skip
    assert unknown.status_code == 404
    refused = await api.put(f"/admin/tenants/{tenant['id']}/budget", json={"daily_budget_cents": 1})
    assert refused.status_code == 401


async def test_process_memory_and_data_disk_are_exposed(api: httpx.AsyncClient, platform: LocalEnvironment) -> None:
    text = (await api.get("/metrics")).text
    assert metric_value(text, "process_cpu_seconds_total") > 0
    rss, limit = metric_value(text, "process_resident_memory_bytes"), metric_value(text, "process_memory_limit_bytes")
    assert 0 < rss < limit
    used, size = metric_value(text, "data_filesystem_used_bytes"), metric_value(text, "data_filesystem_size_bytes")
    assert 0 < used <= size
    worker = httpx.get(f"{platform.worker_urls[0]}/metrics").text
    assert metric_value(worker, "process_resident_memory_bytes") > 0
    assert 'status="' in worker and 'tenant=""' in worker
