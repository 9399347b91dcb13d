"""Defect switches plant real bugs, and a healthy platform does not show them."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml

from helpers import (
    NewTenant,
    backup_tables,
    defects_planted,
    deliveries,
    fixed_offset_zone,
    message_status,
    poll,
)
from opsgate.config import LOCAL_TARGET
from opsgate.environments.local import LocalEnvironment
from opsgate.reference.defects import CATALOGUE, RULE_DRIFTS, drift_rules
from opsgate.reference.settings import SettingsError, from_environ
from opsgate.reference.signing import sign

pytestmark = pytest.mark.platform
RULES = Path(__file__).resolve().parents[2] / "src" / "opsgate" / "reference" / "rules" / "platform.yml"


def redis_outage_readiness(platform: LocalEnvironment) -> tuple[httpx.Response, httpx.Response]:
    platform.stop_service("redis")
    try:
        return httpx.get(f"{platform.api_url}/readyz", timeout=10), httpx.get(f"{platform.api_url}/healthz")
    finally:
        platform.start_service("redis")


def test_readiness_names_redis_when_it_is_down(platform: LocalEnvironment) -> None:
    ready, live = redis_outage_readiness(platform)
    assert ready.status_code == 503
    assert ready.json()["failing"] == ["redis"] and ready.json()["ready"] is False
    assert live.status_code == 200
    assert httpx.get(f"{platform.api_url}/readyz").status_code == 200


def test_defect_readiness_ignores_redis_lies(platform: LocalEnvironment) -> None:
    with defects_planted(platform, "readiness-ignores-redis"):
        ready, _live = redis_outage_readiness(platform)
        assert ready.status_code == 200 and ready.json()["ready"] is True
        assert "redis" not in ready.json()["checks"]


async def test_defect_worker_acks_without_send(
    platform: LocalEnvironment, api: httpx.AsyncClient, sandbox: httpx.AsyncClient, new_tenant: NewTenant
) -> None:
    with defects_planted(platform, "worker-acks-without-send"):
        tenant = await new_tenant()
        response = await api.post(
            f"/v1/tenants/{tenant['id']}/messages",
            json={"channel": "sms", "to": "+61412345678", "body": "x"},
            headers=tenant["headers"],
        )
        message_id = response.json()["id"]
        await poll(
            lambda: message_status(api, tenant["headers"], message_id),
            lambda m: m["status"] == "delivered",
            what="the platform to claim delivery",
        )
        assert await deliveries(sandbox, message_id) == 0  # ground truth: nothing was sent


def test_unknown_defect_is_refused_with_the_known_names() -> None:
    env = {
        "DATABASE_URL": "postgresql://x",
        "REDIS_URL": "redis://x",
        "PROVIDER_URL": "http://x",
        "PROVIDER_API_KEY": "k",
        "BILLING_WEBHOOK_SECRET": "s",
        "PROVIDER_WEBHOOK_SECRET": "s",
        "SERVICE_PASSWORD": "p",
        "OPSGATE_DEFECTS": "readiness-ignores-redis,no-such-bug",
    }
    with pytest.raises(SettingsError, match=r"unknown defect 'no-such-bug'; known: .*worker-acks-without-send"):
        from_environ(env)
    assert from_environ({**env, "OPSGATE_DEFECTS": ""}).defects.names == frozenset()


def test_every_defect_names_what_must_catch_it() -> None:
    assert len(CATALOGUE) >= 15
    assert all(d.breaks and d.caught_by for d in CATALOGUE.values())


def declared_check_ids() -> set[str]:
    """Every check id a run of targets/local.yaml and chaos/ can report in summary.json, as the matrix reads them."""
    document = yaml.safe_load(LOCAL_TARGET.read_text())
    ids = {f"{kind}[{row['name']}]" for kind, section in (("flow", "flows"), ("gate", "gates"), ("slo", "slos"),
           ("drill", "drills")) for row in document[section]}  # fmt: skip
    ids |= {f"health[{service}:{check['path']}]" for service, body in document["services"].items()
            for check in body.get("health", [])}  # fmt: skip
    ids |= {f"diagnosis[{name}/{step['id']}]" for name, steps in document["diagnoses"].items() for step in steps}
    alerts = document["alerts"]["thresholds"]
    ids |= {f"{kind}[{row['alert']}]" for kind in ("alert_rule", "alert_lint") for row in alerts}
    ids |= {f"alert_live[{row.get('name') or row['alert']}]" for row in document["alerts"]["live"]}
    ids |= {f"rules_applied[{row['group']}]" for row in document["alerts"]["applied"]}
    ids |= {f"alert_route[{row['name']}]" for row in document["alerts"]["routes"]}
    ids |= {"alert_severities[levels]"} if document["alerts"].get("severities") else set()
    ids |= {f"metric_labels[{row['name']}]" for row in document["metrics"]["required"]}
    ids |= {f"browser[{row['name']}]" for row in document["browser"]}
    chaos = Path(__file__).resolve().parents[2] / "chaos"
    drills = r"^async def test_(\w+)\("
    ids |= {name for path in chaos.glob("test_*.py") for name in re.findall(drills, path.read_text(), re.M)}
    return ids


def test_every_defect_pre_declares_the_check_that_must_catch_it() -> None:
    """``Defect.check`` is the id of a check that exists (the detection matrix counts only that check's failure)."""
    known = declared_check_ids()
    undeclared = sorted(name for name, d in CATALOGUE.items() if not d.check)
    assert not undeclared, f"defects without a pre-declared check: {undeclared}"
    unknown = {name: d.check for name, d in CATALOGUE.items() if d.check not in known}
    assert not unknown, f"pre-declared checks that no run reports: {unknown}"


def test_alert_rule_defects_drift_only_their_rule() -> None:
    """Each alert-rule defect changes one field of one rule of the deployed copy; the healthy copy is the file."""
    document = yaml.safe_load(RULES.read_text())
    rules = {r["alert"]: r for g in document["groups"] for r in g["rules"] if "alert" in r}
    assert drift_rules(document, frozenset()) == document
    for name, (alert, key, value) in RULE_DRIFTS.items():
        assert name in CATALOGUE
        drifted = {r["alert"]: r for g in drift_rules(document, frozenset({name}))["groups"] for r in g["rules"]
                   if "alert" in r}  # fmt: skip
        changed = {a for a in rules if drifted[a] != rules[a]}
        assert changed == {alert}, (name, changed)
        assert [k for k in rules[alert] if drifted[alert][k] != rules[alert][k]] == [key]
        assert str(drifted[alert][key]).endswith(value)


API_DEFECTS = (
    "kill-switch-ignored,dnc-skips-unnormalised,budget-not-enforced,quiet-hours-server-time,"
    "webhook-signature-unchecked,duplicate-webhook-processed,maintenance-allows-writes,queue-gauge-missing,"
    "slow-messages-route,retries-drop-messages,monitoring-webhook-silent,backup-omits-table"
)


async def test_planted_defects_break_what_they_name(
    platform: LocalEnvironment,
    api: httpx.AsyncClient,
    sandbox: httpx.AsyncClient,
    new_tenant: NewTenant,
    admin_headers: dict[str, str],
) -> None:
    """Each defect, planted together with the others, shows exactly the bug it names."""
    with defects_planted(platform, API_DEFECTS):
        h = dt.datetime.now(dt.UTC).hour
        tenant = await new_tenant(
            daily_budget_cents=5, sms_cost_cents=5, quiet_hours_start=(h + 2) % 24, quiet_hours_end=(h + 8) % 24
        )
        url = f"/v1/tenants/{tenant['id']}/messages"

        async def send(body: dict[str, object]) -> httpx.Response:
            return await api.post(url, json={"channel": "sms", "body": "x", **body}, headers=tenant["headers"])

        started = time.monotonic()
        assert (await send({"to": "+61412345678"})).status_code == 202
        assert time.monotonic() - started >= 1.5  # slow-messages-route
        assert (await send({"to": "+61412345679"})).status_code == 202  # budget-not-enforced (5 of 5 spent)
        await api.post(
            f"/v1/tenants/{tenant['id']}/do-not-contact", json={"phone": "+61412000222"}, headers=tenant["headers"]
        )
        assert (await send({"to": "0412 000 222"})).status_code == 202  # dnc-skips-unnormalised
        assert (await send({"to": "+61412345670", "timezone": fixed_offset_zone(h + 5)})).status_code == 202
        await api.post(f"/tenants/{tenant['id']}/pause", headers=admin_headers)
        assert (await send({"to": "+61412345671"})).status_code == 202  # kill-switch-ignored
        await api.post(f"/tenants/{tenant['id']}/resume", headers=admin_headers)
        await api.put("/admin/maintenance", json={"enabled": True}, headers=admin_headers)
        try:
            assert (await send({"to": "+61412345672"})).status_code == 202  # maintenance-allows-writes
        finally:
            await api.put("/admin/maintenance", json={"enabled": False}, headers=admin_headers)

        event_id = f"evt_{uuid.uuid4().hex}"
        body = json.dumps({"id": event_id, "type": "invoice.paid", "data": {"tenantId": tenant["id"]}}).encode()
        forged = {"x-sandbox-signature": sign("not-the-secret", body)}
        assert (await api.post("/billing/webhooks/sandbox", content=body, headers=forged)).status_code == 202
        assert (await api.post("/billing/webhooks/sandbox", content=body, headers=forged)).status_code == 202

        async def audit_rows() -> int:
            async with await psycopg.AsyncConnection.connect(platform.database_url) as conn:
                cur = await conn.execute("SELECT count(*) FROM audit_events WHERE entity_id = %s", (event_id,))
                row = await cur.fetchone()
                return int(row[0]) if row else 0

        await poll(audit_rows, lambda n: n == 2, what="the duplicate webhook processed twice")

        backup = (await api.post("/admin/backups", headers=admin_headers)).json()
        assert platform.root is not None
        assert "audit_events" not in backup_tables(str(platform.root / "backups" / backup["file"]))

        assert "bull_queue_jobs_waiting" not in (await api.get("/metrics")).text  # queue-gauge-missing

        await sandbox.put("/control/faults", json={"error_rate": 1.0, "status": 503, "seed": 3})
        lost = (await send({"to": "+61412345673"})).json()["id"]
        await poll(
            lambda: message_status(api, tenant["headers"], lost),
            lambda m: m["status"] == "failed",
            what="the first failed attempt",
        )
        await sandbox.delete("/control/faults")
        await asyncio.sleep(1.0)  # several backoff periods: a healthy platform would have retried by now
        assert (await message_status(api, tenant["headers"], lost))["status"] == "failed"  # retries-drop-messages
        events = (await sandbox.get("/monitoring/events", params={"type": "notification.failure"})).json()
        assert not [e for e in events["events"] if e.get("tenant_id") == tenant["id"]]
