"""Seed 002 "Billing Plan Entitlement Drills": a plan change and a cancellation, judged on the entitlement tables.

"POST a webhook to the API ... planId ... Confirm `tenant_modules` / `tenant_feature_flags` updated to match
the Pro plan entries (`source='plan'` rows) and audit log contains `billing.subscription.plan_changed`."
"**Cancellation drill**: POST `subscription.canceled` webhook and confirm plan-sourced
`tenant_modules`/`tenant_feature_flags` are removed while overrides remain intact."

Each drill works on a sandbox tenant it creates (seed 002 step 1: "Create a sandbox tenant + subscription using
the Core plan"), so no other tenant's entitlements change on any way out. A plan's entitlements are read from
``plans`` (what the platform promises), a tenant's from its rows (what it got); the drill log keeps the
before/after snapshots and the audit entries.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from opsgate.config import Target
from opsgate.drills.drill import Drill, DrillFailed, DrillInconclusive, Observation
from opsgate.environments.local import LocalEnvironment
from opsgate.reference.client import Reference
from opsgate.reference.signing import sign

pytestmark = [pytest.mark.drill, pytest.mark.destructive]

PRO_PLAN_ID = "1ef168c5-66e9-4d11-8f51-32301dbce0d4"
"""Seed 002's manual drill posts this Pro plan id."""
OVERRIDES = {"modules": ["beta-inbox"], "feature_flags": ["analytics.export"]}
"""What an admin sets by hand on the drill's tenant; the flag is one Pro also grants, so a plan change must not
take it (the override row is its own row)."""
SQL_TIMEOUT_S = 10
Entitlements = dict[str, list[str]]


@dataclass
class SandboxTenant:
    """The drill's own tenant, its billing events and the clients to reach the platform."""

    drill: Drill
    target: Target
    reference: Reference
    secret: str
    admin: dict[str, str]
    id: str = ""
    subscription: str = ""

    @classmethod
    async def create(cls, drill: Drill, target: Target, reference: Reference, secret: str) -> SandboxTenant:
        """Register a new tenant through the admin API (the drill changes nobody else's entitlements)."""
        admin = {"Authorization": f"Bearer {await reference.admin_token()}"}
        tenant = cls(drill, target, reference, secret, admin, subscription=f"sub_drill_{uuid.uuid4().hex[:12]}")
        body = {"name": f"entitlement-drill-{uuid.uuid4().hex[:8]}"}
        response = await reference.api.post("/admin/tenants", json=body, headers=admin)
        if response.status_code != 201:
            raise DrillInconclusive(f"no sandbox tenant: POST /admin/tenants → {response.status_code} {response.text}")
        tenant.id = str(response.json()["id"])
        drill.event("sandbox tenant created", tenant.id)
        return tenant

    async def post(self, event_type: str, **data: str) -> str:
        """Post one signed billing event about this tenant; it must be accepted (202). Returns its event id."""
        event_id = f"evt_drill_{uuid.uuid4().hex}"
        payload = {"subscriptionId": self.subscription, "tenantId": self.id, **data}
        body = json.dumps({"id": event_id, "type": event_type, "data": payload}).encode()
        headers = {"x-sandbox-signature": sign(self.secret, body), "content-type": "application/json"}
        response = await self.reference.api.post("/billing/webhooks/sandbox", content=body, headers=headers)
        self.drill.event(f"{event_type} posted", f"{event_id} {payload} → {response.status_code}")
        if response.status_code != 202:
            raise DrillFailed(f"{event_type} webhook accepted: POST /billing/webhooks/sandbox → "
                              f"{response.status_code} {response.text[:200]}")  # fmt: skip
        return event_id

    async def override(self, kind: str, name: str) -> None:
        body = {"kind": kind, "name": name, "enabled": True}
        response = await self.reference.api.put(f"/admin/tenants/{self.id}/overrides", json=body, headers=self.admin)
        if response.status_code != 200:
            raise DrillInconclusive(f"override not set: PUT /admin/tenants/{{id}}/overrides → {response.status_code}")
        self.drill.event("override set", f"{kind} {name}")

    async def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self.target.datastores.postgres is None:
            raise DrillInconclusive("the entitlement drills read the tables: they need datastores.postgres")
        async with await psycopg.AsyncConnection.connect(self.target.datastores.postgres.dsn,
                                                         connect_timeout=SQL_TIMEOUT_S) as conn:  # fmt: skip
            return list(await (await conn.execute(sql, args)).fetchall())

    async def rows(self, source: str) -> Entitlements:
        """This tenant's enabled modules and feature flags from ``source`` ('plan' or 'override'), sorted."""
        modules = await self.query("SELECT module FROM tenant_modules WHERE tenant_id = %s AND source = %s"
                                   " AND enabled ORDER BY 1", self.id, source)  # fmt: skip
        flags = await self.query("SELECT flag FROM tenant_feature_flags WHERE tenant_id = %s AND source = %s"
                                 " AND enabled ORDER BY 1", self.id, source)  # fmt: skip
        return {"modules": [r[0] for r in modules], "feature_flags": [r[0] for r in flags]}

    async def plan(self, ref: str) -> tuple[str, str, Entitlements]:
        """A plan's id, name and entitlements as ``plans`` defines them (looked up by id or code)."""
        found = await self.query("SELECT id::text, name, entitlements FROM plans WHERE id::text = %s OR code = %s",
                                 ref, ref)  # fmt: skip
        if not found:
            raise DrillInconclusive(f"no plan {ref!r} in plans: is migration 003_plans_and_entitlements applied?")
        plan_id, name, entitlements = found[0]
        return str(plan_id), str(name), {k: sorted(entitlements.get(k, [])) for k in ("modules", "feature_flags")}

    async def audit(self) -> list[str]:
        """This tenant's billing audit entries, oldest first: ``action (event id)``."""
        found = await self.query("SELECT action, entity_id FROM audit_events WHERE tenant_id = %s"
                                 " AND module = 'billing' ORDER BY id", self.id)  # fmt: skip
        return [f"{action} ({entity})" for action, entity in found]

    async def snapshot(self) -> dict[str, Any]:
        """What seed 002's helper prints: the tenant's plan, its modules and flags by source, the audit entries."""
        plan = await self.query("SELECT plan FROM tenants WHERE id = %s", self.id)
        return {"tenant": self.id, "plan": plan[0][0] if plan else None, "plan-sourced": await self.rows("plan"),
                "overrides": await self.rows("override"), "billing audit": await self.audit()}  # fmt: skip

    # --- what the drill expects -------------------------------------------------------------------

    async def processed(self, event_id: str) -> Observation:
        found = await self.query("SELECT status, last_error FROM billing_webhook_events WHERE event_id = %s", event_id)
        status, error = found[0] if found else ("not stored", None)
        return Observation(status == "processed", None, f"{event_id} is {status}" + (f": {error}" if error else ""))

    async def matches(self, plan_ref: str) -> Observation:
        """The plan-sourced rows are exactly the plan's entitlements: nothing missing, nothing left behind."""
        _, name, wanted = await self.plan(plan_ref)
        seen = await self.rows("plan")
        problems = []
        for kind in ("modules", "feature_flags"):
            missing = sorted(set(wanted[kind]) - set(seen[kind]))
            extra = sorted(set(seen[kind]) - set(wanted[kind]))
            if missing:
                problems.append(f"{kind} missing {missing}")
            if extra:
                problems.append(f"{kind} not in {name} left behind: {extra}")
        note = "; ".join(problems) or f"plan-sourced rows = {name}'s {wanted}"
        return Observation(not problems, float(len(problems)), note)

    async def none_from_plan(self) -> Observation:
        seen = await self.rows("plan")
        left = seen["modules"] + seen["feature_flags"]
        return Observation(not left, float(len(left)), f"plan-sourced rows left: {seen}" if left else "none left")

    async def overrides_intact(self) -> Observation:
        seen = await self.rows("override")
        ok = seen == {k: sorted(v) for k, v in OVERRIDES.items()}
        return Observation(ok, None, f"overrides {seen}, set {OVERRIDES}")

    async def audited(self, action: str, event_id: str) -> Observation:
        entries = await self.audit()
        entry = f"{action} ({event_id})"
        return Observation(entry in entries, None, f"billing audit: {entries}")


async def _set_up(drill: Drill, target: Target, reference: Reference, secret: str, plan: str) -> SandboxTenant:
    """A sandbox tenant subscribed to ``plan`` with the admin overrides set, checked."""
    tenant = await SandboxTenant.create(drill, target, reference, secret)
    plan_id, _, _ = await tenant.plan(plan)
    event = await tenant.post("subscription.created", planId=plan_id, billingCycle="monthly")
    await drill.expect("subscription.created processed", lambda: tenant.processed(event), within_s=_within(target))
    await drill.expect(f"tenant entitled to plan {plan}", lambda: tenant.matches(plan))
    for module in OVERRIDES["modules"]:
        await tenant.override("module", module)
    for flag in OVERRIDES["feature_flags"]:
        await tenant.override("feature_flag", flag)
    await drill.expect("overrides set", tenant.overrides_intact)
    return tenant


async def _change_plan(drill: Drill, target: Target, tenant: SandboxTenant, plan: str, label: str) -> None:
    """Post subscription.plan_changed to ``plan``; judge the plan-sourced rows, the overrides, the audit entry."""
    plan_id, _, _ = await tenant.plan(plan)
    event = await tenant.post("subscription.plan_changed", planId=plan_id, billingCycle="monthly")
    await drill.expect(f"plan change to {label} processed", lambda: tenant.processed(event), within_s=_within(target))
    drill.snapshot("after", {f"on {label}": await tenant.snapshot()})
    await drill.expect(f"plan-sourced modules and flags match {label}", lambda: tenant.matches(plan))
    await drill.expect(f"overrides intact on {label}", tenant.overrides_intact)
    await drill.expect(f"audit billing.subscription.plan_changed for the change to {label}",
                       lambda: tenant.audited("billing.subscription.plan_changed", event))  # fmt: skip


def _within(target: Target) -> float:
    """How long a billing event may take to be applied: seconds, scaled (the worker takes milliseconds)."""
    return target.scaled(300, floor_s=15.0)


def _secret(local_environment: LocalEnvironment) -> str:
    return local_environment.credentials.billing_webhook_secret


async def test_plan_change_entitlements(
    drill: Drill, target: Target, local_environment: LocalEnvironment, reference: Reference
) -> None:
    drill.claim = "seed-002.billing.plan-change-drill"
    drill.objective = (
        "A sandbox tenant on Core with admin overrides: subscription.plan_changed to Pro (by seed 002's plan id)"
        " leaves exactly Pro's plan-sourced modules and feature flags and a billing.subscription.plan_changed"
        " audit entry; changed back to Core, exactly Core's (nothing of Pro left behind); the overrides intact"
        " throughout."
    )
    async with drill.running():
        await drill.steady_state()
        tenant = await _set_up(drill, target, reference, _secret(local_environment), "core")
        drill.snapshot("before", {"on Core": await tenant.snapshot()})
        await _change_plan(drill, target, tenant, PRO_PLAN_ID, "Pro")
        await _change_plan(drill, target, tenant, "core", "Core")
        await drill.steady_state(after=True, within_s=target.scaled(300, floor_s=5.0))


async def test_cancellation_entitlements(
    drill: Drill, target: Target, local_environment: LocalEnvironment, reference: Reference
) -> None:
    drill.claim = "seed-002.billing.cancellation-drill"
    drill.objective = (
        "A sandbox tenant on Pro with admin overrides: subscription.canceled removes every plan-sourced module"
        " and feature flag, keeps the overrides, and writes a billing.subscription.canceled audit entry."
    )
    async with drill.running():
        await drill.steady_state()
        tenant = await _set_up(drill, target, reference, _secret(local_environment), PRO_PLAN_ID)
        drill.snapshot("before", await tenant.snapshot())
        event = await tenant.post("subscription.canceled")
        await drill.expect("subscription.canceled processed", lambda: tenant.processed(event),
                           within_s=_within(target))  # fmt: skip
        drill.snapshot("after", await tenant.snapshot())
        await drill.expect("plan-sourced modules and flags removed", tenant.none_from_plan)
        await drill.expect("overrides intact after the cancellation", tenant.overrides_intact)
        await drill.expect("audit billing.subscription.canceled",
                           lambda: tenant.audited("billing.subscription.canceled", event))  # fmt: skip
        await drill.steady_state(after=True, within_s=target.scaled(300, floor_s=5.0))
