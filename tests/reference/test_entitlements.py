"""Plan entitlements through the real billing webhooks (seed 002): plan change, cancellation, admin overrides."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from helpers import NewTenant, defects_planted, poll
from opsgate.environments.local import LocalEnvironment
from opsgate.reference.signing import sign

pytestmark = pytest.mark.platform

PRO = "1ef168c5-66e9-4d11-8f51-32301dbce0d4"
"""Seed 002's Pro plan id (its manual plan change drill posts it)."""
CORE = {"modules": {"messaging", "do-not-contact"}, "flags": {"messaging.sms", "messaging.email"}}
PRO_ROWS = {
    "modules": {"messaging", "do-not-contact", "quiet-hours", "analytics"},
    "flags": {"messaging.sms", "messaging.email", "analytics.export", "billing.invoices"},
}


async def webhook(api: httpx.AsyncClient, platform: LocalEnvironment, event_type: str, data: dict[str, Any]) -> str:
    """Post one signed billing event and wait until the worker has processed (or failed) it; returns its status."""
    event_id = f"evt_ent_{uuid.uuid4().hex}"
    body = json.dumps({"id": event_id, "type": event_type, "data": data}).encode()
    headers = {"x-sandbox-signature": sign(platform.credentials.billing_webhook_secret, body)}
    assert (await api.post("/billing/webhooks/sandbox", content=body, headers=headers)).status_code == 202

    async def status() -> str:
        async with await psycopg.AsyncConnection.connect(platform.database_url) as conn:
            cur = await conn.execute("SELECT status FROM billing_webhook_events WHERE event_id = %s", (event_id,))
            row = await cur.fetchone()
            return str(row[0]) if row else "missing"

    return await poll(status, lambda s: s in ("processed", "failed"), what=f"{event_type} {event_id} processed")


async def rows(platform: LocalEnvironment, tenant_id: str) -> dict[str, set[str]]:
    """The tenant's entitlements by source: ``modules``/``flags`` (plan) and ``override modules``/``override flags``."""
    result: dict[str, set[str]] = {"modules": set(), "flags": set(), "override modules": set(), "override flags": set()}
    async with await psycopg.AsyncConnection.connect(platform.database_url) as conn:
        for table, column, key in (("tenant_modules", "module", "modules"), ("tenant_feature_flags", "flag", "flags")):
            cur = await conn.execute(f"SELECT {column}, source FROM {table} WHERE tenant_id = %s", (tenant_id,))
            for name, source in await cur.fetchall():
                result[key if source == "plan" else f"override {key}"].add(name)
    return result


async def audit_actions(platform: LocalEnvironment, tenant_id: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(platform.database_url) as conn:
        cur = await conn.execute(
            "SELECT action FROM audit_events WHERE tenant_id = %s AND module = 'billing' ORDER BY id", (tenant_id,)
        )
        return [str(r[0]) for r in await cur.fetchall()]


async def override(api: httpx.AsyncClient, headers: dict[str, str], tenant_id: str, kind: str, name: str) -> None:
    body = {"kind": kind, "name": name, "enabled": True}
    response = await api.put(f"/admin/tenants/{tenant_id}/overrides", json=body, headers=headers)
    assert response.status_code == 200, response.text


async def test_plans_are_seeded_as_the_runbook_queries_them(platform: LocalEnvironment) -> None:
    async with await psycopg.AsyncConnection.connect(platform.database_url) as conn:
        cur = await conn.execute("SELECT name, entitlements FROM plans ORDER BY created_at")
        plans = await cur.fetchall()
        cur = await conn.execute("SELECT id::text FROM plans WHERE code = 'pro'")
        assert await cur.fetchone() == (PRO,)
    assert [p[0] for p in plans] == ["Core", "Pro", "Enterprise"]
    assert set(plans[0][1]["modules"]) == CORE["modules"]


async def test_plan_change_replaces_plan_rows_and_keeps_overrides(
    api: httpx.AsyncClient, platform: LocalEnvironment, new_tenant: NewTenant, admin_headers: dict[str, str]
) -> None:
    tenant_id = (await new_tenant())["id"]
    assert await webhook(api, platform, "subscription.created", {"tenantId": tenant_id, "plan": "core"}) == "processed"
    await override(api, admin_headers, tenant_id, "module", "beta-inbox")
    await override(api, admin_headers, tenant_id, "feature_flag", "analytics.export")
    data = {"subscriptionId": str(uuid.uuid4()), "tenantId": tenant_id, "planId": PRO, "billingCycle": "monthly"}
    assert await webhook(api, platform, "subscription.plan_changed", data) == "processed"
    seen = await rows(platform, tenant_id)
    assert seen["modules"] == PRO_ROWS["modules"] and seen["flags"] == PRO_ROWS["flags"]
    assert seen["override modules"] == {"beta-inbox"} and seen["override flags"] == {"analytics.export"}

    assert await webhook(api, platform, "subscription.plan_changed", {"tenantId": tenant_id, "plan": "core"}) == (
        "processed"
    )
    seen = await rows(platform, tenant_id)
    assert seen["modules"] == CORE["modules"] and seen["flags"] == CORE["flags"]
    assert seen["override modules"] == {"beta-inbox"} and seen["override flags"] == {"analytics.export"}
    assert await audit_actions(platform, tenant_id) == [
        "billing.subscription.created",
        "billing.subscription.plan_changed",
        "billing.subscription.plan_changed",
    ]
    tenant = (await api.get(f"/tenants/{tenant_id}", headers=admin_headers)).json()
    assert tenant["plan"] == "core"


async def test_cancellation_removes_plan_rows_only(
    api: httpx.AsyncClient, platform: LocalEnvironment, new_tenant: NewTenant, admin_headers: dict[str, str]
) -> None:
    tenant_id = (await new_tenant())["id"]
    await webhook(api, platform, "subscription.created", {"tenantId": tenant_id, "planId": PRO})
    await override(api, admin_headers, tenant_id, "module", "beta-inbox")
    assert await webhook(api, platform, "subscription.canceled", {"tenantId": tenant_id}) == "processed"
    seen = await rows(platform, tenant_id)
    assert seen == {"modules": set(), "flags": set(), "override modules": {"beta-inbox"}, "override flags": set()}
    assert (await audit_actions(platform, tenant_id))[-1] == "billing.subscription.canceled"


async def test_unknown_plan_fails_the_event_and_changes_nothing(
    api: httpx.AsyncClient, platform: LocalEnvironment, new_tenant: NewTenant
) -> None:
    tenant_id = (await new_tenant())["id"]
    await webhook(api, platform, "subscription.created", {"tenantId": tenant_id, "plan": "core"})
    data = {"tenantId": tenant_id, "planId": str(uuid.uuid4())}
    assert await webhook(api, platform, "subscription.plan_changed", data) == "failed"
    assert (await rows(platform, tenant_id))["modules"] == CORE["modules"]


async def test_override_needs_an_admin_and_a_valid_body(
    api: httpx.AsyncClient, new_tenant: NewTenant, admin_headers: dict[str, str]
) -> None:
    tenant_id = (await new_tenant())["id"]
    url = f"/admin/tenants/{tenant_id}/overrides"
    assert (await api.put(url, json={"kind": "module", "name": "x"})).status_code == 401
    bad = await api.put(url, json={"kind": "plugin", "name": "x"}, headers=admin_headers)
    assert bad.status_code == 422 and "kind" in bad.json()["detail"]
    missing = await api.put(f"/admin/tenants/{uuid.uuid4()}/overrides", json={"kind": "module", "name": "x"},
                            headers=admin_headers)  # fmt: skip
    assert missing.status_code == 404


async def test_defects_keep_old_modules_and_drop_overrides(
    api: httpx.AsyncClient, platform: LocalEnvironment, new_tenant: NewTenant, admin_headers: dict[str, str]
) -> None:
    with defects_planted(platform, "plan-change-keeps-old-modules,cancellation-drops-overrides"):
        tenant_id = (await new_tenant())["id"]
        await webhook(api, platform, "subscription.created", {"tenantId": tenant_id, "planId": PRO})
        await override(api, admin_headers, tenant_id, "module", "beta-inbox")
        await webhook(api, platform, "subscription.plan_changed", {"tenantId": tenant_id, "plan": "core"})
        seen = await rows(platform, tenant_id)
        assert seen["modules"] == PRO_ROWS["modules"]  # Pro's modules left behind
        assert seen["flags"] == CORE["flags"]  # flags are replaced: only modules are kept
        await webhook(api, platform, "subscription.canceled", {"tenantId": tenant_id})
        assert await rows(platform, tenant_id) == {
            "modules": set(), "flags": set(), "override modules": set(), "override flags": set()
        }  # fmt: skip
