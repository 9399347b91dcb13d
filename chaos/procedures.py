"""Steps the reference platform's maintenance, release and kill-switch drills share.

Switches thrown by the service account (maintenance mode, a tenant's kill switch, the global kill switch), a
reversible release migration, the drill's looks at the platform (:class:`Window`), and the smoke tests the
runbooks run around a maintenance window: a write refused while in maintenance, reads served, a send delivered
exactly once by the provider's record, a billing webhook processed.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import redis.asyncio

from opsgate.config import FlowStep, Target
from opsgate.drills.drill import Check, Drill, DrillFailed, DrillInconclusive, Observation
from opsgate.faults.actions import Migration, ToggleFault
from opsgate.probes.base import ProbeError
from opsgate.probes.http import HttpObservation, request
from opsgate.probes.prometheus import instant_value
from opsgate.probes.sources import service_url
from opsgate.reference.signing import sign

HTTP_TIMEOUT_S = 10.0
SEND_QUEUE = "send-messages"
PAGING_RECEIVER = "paging"


def column_migration(target: Target, name: str, column: str, *, default: str | None = None) -> Migration:
    """A release migration: a column on ``messages`` (backfilled with ``default`` if given: a data change too) and
    its ``schema_migrations`` row; down drops both (idempotent), its proof is both being there."""
    if target.datastores.postgres is None:
        raise DrillInconclusive(f"migration {name} needs datastores.postgres in the target")
    backfill = f" NOT NULL DEFAULT '{default}'" if default is not None else ""
    return Migration(
        dsn=target.datastores.postgres.dsn,
        name=name,
        up=[
            f"ALTER TABLE messages ADD COLUMN {column} text{backfill}",
            f"INSERT INTO schema_migrations (name) VALUES ('{name}')",
        ],
        down=[
            f"ALTER TABLE messages DROP COLUMN IF EXISTS {column}",
            f"DELETE FROM schema_migrations WHERE name = '{name}'",
        ],
        applied=(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
            f" AND table_name = 'messages' AND column_name = '{column}')"
            f" AND EXISTS (SELECT 1 FROM schema_migrations WHERE name = '{name}')"
        ),
    )


def admin_toggle(target: Target, name: str, on: FlowStep, off: FlowStep, check: FlowStep) -> ToggleFault:
    """A switch thrown by the service account (login, then the step); ``check`` proves it is on."""
    auth = target.auth
    assert auth is not None
    credentials = {"username": auth.service_user, "password": auth.service_password}
    login = FlowStep.model_validate({"method": "POST", "path": "/auth/login", "save": {"token": "token"},
                                     "json": credentials})  # fmt: skip
    return ToggleFault(target, on=[login, on], off=[login, off], check=check, name=name)


def kill_switch_of(target: Target, tenant: str, tenant_headers: dict[str, str]) -> ToggleFault:
    """Pause the tenant (seed 001's kill switch); rollback: resume. Proof: the tenant reads ``paused: true``."""
    bearer = {"Authorization": "Bearer {token}"}
    return admin_toggle(
        target, f"kill switch of tenant {tenant}",
        on=FlowStep.model_validate({"method": "POST", "path": f"/tenants/{tenant}/pause", "headers": bearer}),
        off=FlowStep.model_validate({"method": "POST", "path": f"/tenants/{tenant}/resume", "headers": bearer}),
        check=FlowStep.model_validate({"path": f"/v1/tenants/{tenant}", "headers": tenant_headers,
                                       "expect": {"json": {"paused": True}}}),
    )  # fmt: skip


def maintenance_of(target: Target) -> ToggleFault:
    """Maintenance mode on (``PUT /admin/maintenance``); rollback: off. Proof: the setting reads ``enabled: true``."""
    bearer = {"Authorization": "Bearer {token}"}

    def put(enabled: bool) -> FlowStep:
        return FlowStep.model_validate({"method": "PUT", "path": "/admin/maintenance", "headers": bearer,
                                        "json": {"enabled": enabled}})  # fmt: skip

    check = FlowStep.model_validate({"path": "/admin/maintenance", "headers": bearer,
                                     "expect": {"json": {"enabled": True}}})  # fmt: skip
    return admin_toggle(target, "maintenance mode", on=put(True), off=put(False), check=check)


def paging_severities(target: Target) -> list[str]:
    """The severities ``alerts.routing`` sends to the paging receiver (critical, sev1, sev2 here)."""
    found = sorted(s for s, receiver in target.alerts.routing.items() if receiver == PAGING_RECEIVER)
    if not found:
        raise DrillInconclusive(f"no severity of alerts.routing goes to a {PAGING_RECEIVER!r} receiver: "
                                "nothing defines a page to watch for")  # fmt: skip
    return found


class Window:
    """The looks the drill takes: sends and reads as the tenant, queues, the provider's record, alerts."""

    def __init__(self, drill: Drill, target: Target) -> None:
        auth = target.auth
        if auth is None or not (auth.tenant_id and auth.api_token and auth.service_user and auth.service_password):
            raise DrillInconclusive("this drill needs auth.tenant_id, api_token, service_user, service_password")
        if target.metrics.prometheus is None:
            raise DrillInconclusive("this drill needs metrics.prometheus to watch for pages")
        self.drill, self.target = drill, target
        self.tenant = auth.tenant_id
        self.headers = {"Authorization": f"Bearer {auth.api_token}"}
        self.api = service_url(target, "api")
        self.provider = service_url(target, "provider")
        self.prometheus = target.metrics.prometheus
        self.paging = paging_severities(target)

    async def send(self, label: str) -> HttpObservation:
        """One email send of the tenant (a fresh recipient each time)."""
        body = {"channel": "email", "to": f"maintenance-{uuid.uuid4().hex[:12]}@example.test", "body": label}
        headers = {**self.headers, "Content-Type": "application/json"}
        return await request(self.drill.client, "POST", f"{self.api}/v1/tenants/{self.tenant}/messages",
                             timeout_s=HTTP_TIMEOUT_S, headers=headers, content=json.dumps(body).encode())  # fmt: skip

    async def get(self, path: str) -> HttpObservation:
        return await request(self.drill.client, "GET", self.api + path, timeout_s=HTTP_TIMEOUT_S, headers=self.headers)

    async def tenant_state(self) -> dict[str, Any]:
        seen = await self.get(f"/v1/tenants/{self.tenant}")
        if seen.status != 200 or not isinstance(seen.json, dict):
            raise ProbeError(f"GET /v1/tenants/{{id}} answered {seen.status}: {seen.text[:160]}")
        return {k: seen.json.get(k) for k in ("status", "paused", "sending_state")}

    async def statuses(self, ids: list[str]) -> dict[str, str]:
        found = {}
        for message_id in ids:
            seen = await self.get(f"/v1/messages/{message_id}")
            found[message_id] = str(seen.json.get("status")) if seen.status == 200 else f"HTTP {seen.status}"
        return found

    async def provider_json(self, path: str, query: str = "") -> dict[str, Any]:
        url = self.provider + path + (f"?{query}" if query else "")
        seen = await request(self.drill.client, "GET", url, timeout_s=HTTP_TIMEOUT_S)
        if seen.status != 200 or not isinstance(seen.json, dict):
            raise ProbeError(f"provider sandbox {path} answered {seen.status}")
        return seen.json

    async def deliveries(self, ids: list[str]) -> dict[str, int]:
        """Deliveries the provider sandbox recorded per message id (the ground truth)."""
        return {i: int((await self.provider_json("/deliveries", f"message_id={i}"))["count"]) for i in ids}

    async def tenant_deliveries_since(self, since: float) -> int:
        """Deliveries of the tenant the provider sandbox recorded since ``since`` (unix s)."""
        return int((await self.provider_json("/deliveries", f"tenant_id={self.tenant}&since={since}"))["count"])

    async def send_calls(self) -> int:
        """Every send call the provider sandbox has answered, whatever the outcome."""
        return int((await self.provider_json("/requests"))["total"])

    async def delayed(self, ids: list[str]) -> list[str]:
        """Which of ``ids`` have their job in BullMQ's delayed set (held by a worker, looked at again later)."""
        spec = next((q for q in self.target.queues if q.name == SEND_QUEUE), None)
        if spec is None or self.target.datastores.redis is None:
            raise ProbeError(f"the drill needs queue {SEND_QUEUE!r} and datastores.redis in the target")
        client = redis.asyncio.Redis.from_url(self.target.datastores.redis.url, socket_timeout=5.0,
                                              socket_connect_timeout=5.0)  # fmt: skip
        key = f"{spec.prefix or 'bull'}:{spec.name}:delayed"
        try:
            return [i for i in ids if await client.zscore(key, i) is not None]
        finally:
            await client.aclose()

    async def login(self) -> str:
        """A service-account session token (end it with :meth:`logout`)."""
        auth = self.target.auth
        assert auth is not None
        body = json.dumps({"username": auth.service_user, "password": auth.service_password}).encode()
        seen = await request(self.drill.client, "POST", f"{self.api}/auth/login", timeout_s=HTTP_TIMEOUT_S,
                             headers={"Content-Type": "application/json"}, content=body)  # fmt: skip
        if seen.status != 200 or not isinstance(seen.json, dict):
            raise DrillInconclusive(f"the service account cannot log in: POST /auth/login → {seen.status}")
        return str(seen.json["token"])

    async def logout(self, token: str) -> None:
        """End the session (a row left behind otherwise); a failure is on the timeline, never raised."""
        try:
            seen = await request(self.drill.client, "POST", f"{self.api}/auth/logout", timeout_s=HTTP_TIMEOUT_S,
                                 headers={"Cookie": f"session_id={token}"})  # fmt: skip
        except ProbeError as exc:
            self.drill.event("admin session NOT ended", str(exc))
            return
        if seen.status != 200:
            self.drill.event("admin session NOT ended", f"POST /auth/logout → {seen.status}")

    async def paging_alerts(self, states: tuple[str, ...] = ("firing",)) -> list[str]:
        """Alerts of a paging severity in one of ``states`` on Prometheus now: ``name (severity, state)``."""
        seen = await request(self.drill.client, "GET", f"{self.prometheus}/api/v1/alerts", timeout_s=5.0)
        if seen.status != 200 or not isinstance(seen.json, dict):
            raise ProbeError(f"Prometheus /api/v1/alerts at {self.prometheus} answered {seen.status}")
        return sorted({f"{a['labels'].get('alertname')} ({a['labels'].get('severity')}, {a['state']})"
                       for a in seen.json["data"]["alerts"]
                       if a["state"] in states and a["labels"].get("severity") in self.paging})  # fmt: skip

    async def pages_since(self, since: float) -> list[str]:
        """Firing notifications Alertmanager delivered to the paging receiver since ``since`` (unix s)."""
        receiver = self.target.alerts.receiver
        if not receiver:
            return []
        seen = await request(self.drill.client, "GET", f"{receiver}/notifications", timeout_s=5.0)
        if seen.status != 200 or not isinstance(seen.json, dict):
            raise ProbeError(f"the alert receiver's /notifications answered {seen.status}")
        return sorted({a.get("labels", {}).get("alertname", "?") for n in seen.json["notifications"]
                       if n["receiver"] == PAGING_RECEIVER and n["received_at"] >= since
                       for a in n["payload"]["alerts"] if a.get("status") == "firing"})  # fmt: skip

    async def most_paging_firing_over(self, seconds: float) -> float | None:
        """The most paging alerts firing at once over the last ``seconds`` (Prometheus' own record, 1 s steps)."""
        severities = "|".join(self.paging)
        promql = (f'max_over_time((count(ALERTS{{alertstate="firing",severity=~"{severities}"}}) or vector(0))'
                  f"[{max(1, int(seconds + 0.999))}s:1s])")  # fmt: skip
        return await instant_value(self.drill.client, self.prometheus, promql, timeout_s=5.0)


def short(ids: list[str]) -> str:
    return ", ".join(i[:8] for i in ids)


def global_kill_switch_of(target: Target) -> ToggleFault:
    """The global kill switch on (``PUT /admin/kill-switch``: every tenant); rollback: off. Proof: it reads on."""
    bearer = {"Authorization": "Bearer {token}"}

    def put(enabled: bool) -> FlowStep:
        return FlowStep.model_validate({"method": "PUT", "path": "/admin/kill-switch", "headers": bearer,
                                        "json": {"enabled": enabled}})  # fmt: skip

    check = FlowStep.model_validate({"path": "/admin/kill-switch", "headers": bearer,
                                     "expect": {"json": {"enabled": True}}})  # fmt: skip
    return admin_toggle(target, "global kill switch", on=put(True), off=put(False), check=check)


def delivered_once(statuses: dict[str, str], sent: dict[str, int]) -> Observation:
    """Each message ``delivered`` and recorded exactly once by the provider; the note names the others."""
    wrong = {i[:8]: f"{statuses.get(i)}, {n} deliveries" for i, n in sent.items()
             if n != 1 or statuses.get(i) != "delivered"}  # fmt: skip
    note = f"{len(sent) - len(wrong)} of {len(sent)} delivered exactly once"
    note += f"; others: {wrong}" if wrong else ""
    return Observation(not wrong, float(len(sent) - len(wrong)), note)


def write_refused(look: Window, ids: list[str]) -> Check:
    """Smoke test in maintenance: a send (a write) is refused with 503 ``MAINTENANCE``; one accepted anyway joins
    ``ids`` (it must not be lost either)."""

    async def check() -> Observation:
        seen = await look.send("maintenance smoke test: a write during maintenance")
        error = seen.json.get("error") if isinstance(seen.json, dict) else None
        if seen.status == 202:
            ids.append(str(seen.json["id"]))
        note = f"POST /v1/tenants/{{id}}/messages → {seen.status} {error or seen.text[:120]}"
        if error != "MAINTENANCE":
            note += " (the write got past maintenance mode)"
        return Observation(seen.status == 503 and error == "MAINTENANCE", float(seen.status), note)

    return check


def reads_served(look: Window, ids: list[str]) -> Check:
    """Smoke test: the tenant and each of ``ids`` (read when checked: it may grow) read back 200."""

    async def check() -> Observation:
        paths = [f"/v1/tenants/{look.tenant}", *(f"/v1/messages/{i}" for i in ids)]
        answers = {p: (await look.get(p)).status for p in paths}
        wrong = {p: s for p, s in answers.items() if s != 200}
        note = f"{len(paths) - len(wrong)} of {len(paths)} reads 200" + (f"; {wrong}" if wrong else "")
        return Observation(not wrong, float(len(wrong)), note)

    return check


async def expect_sends_delivered(drill: Drill, look: Window, ids: list[str], *, within_s: float) -> None:
    """Smoke test: a new send accepted (202), then it and every one of ``ids`` delivered exactly once (provider)."""
    seen = await look.send("maintenance smoke test: a send after maintenance")
    if seen.status != 202:
        raise DrillFailed(f"a smoke-test send is accepted (202): got {seen.status}: {seen.text[:160]}")
    ids.append(str(seen.json["id"]))

    async def once() -> Observation:
        return delivered_once(await look.statuses(ids), await look.deliveries(ids))

    await drill.expect("every send delivered exactly once (provider record)", once, within_s=within_s,
                       every_s=0.2, series="delivered once")  # fmt: skip


async def expect_billing_webhook_processed(drill: Drill, look: Window, secret: str, *, within_s: float) -> None:
    """Smoke test (invoice creation): a signed ``invoice.created`` billing webhook accepted (202) and processed.

    The event's status is read as the service account, whose session is ended afterwards.
    """
    event = f"evt_smoke_{uuid.uuid4().hex[:12]}"
    body = json.dumps({"id": event, "type": "invoice.created", "data": {"tenantId": look.tenant}}).encode()
    posted = await request(drill.client, "POST", f"{look.api}/billing/webhooks/sandbox", timeout_s=HTTP_TIMEOUT_S,
                           headers={"Content-Type": "application/json", "x-sandbox-signature": sign(secret, body)},
                           content=body)  # fmt: skip
    if posted.status != 202:
        raise DrillFailed(f"a billing webhook is accepted after maintenance (202): got {posted.status}: "
                          f"{posted.text[:160]}")  # fmt: skip
    token = await look.login()
    try:

        async def processed() -> Observation:
            seen = await request(drill.client, "GET", f"{look.api}/billing/webhooks/events/{event}",
                                 timeout_s=HTTP_TIMEOUT_S, headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            status = seen.json.get("status") if seen.status == 200 and isinstance(seen.json, dict) else None
            return Observation(status == "processed", None, f"billing event {event}: {status or seen.status}")

        await drill.expect("a billing webhook (invoice.created) processed", processed, within_s=within_s,
                           every_s=0.2)  # fmt: skip
    finally:
        await look.logout(token)
