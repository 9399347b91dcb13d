"""Seed 001 kill switch through the admin page: Pause Sending blocks new sends and holds queued jobs; Resume drains.

Seed 001, "Kill Switch (Emergency Stop)": "Or via admin UI: Settings → Kill Switch → Pause Sending.
**Effect:** All new sends blocked within 60 seconds. Queued jobs remain queued but will not process."

The worker is stopped first so that messages really are queued when the switch is pulled (else it
would send them before the click). The switch is pulled on the admin page in headless Chromium,
logged in as the service account, and it is the fault of the drill: journalled before the click,
always resumed (on the page, through the API if the page fails). The provider sandbox is the
ground truth of what was sent: ``GET /deliveries?message_id=``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis.asyncio
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Route
from procedures import delivered_once, global_kill_switch_of

from opsgate.config import FlowStep, Target
from opsgate.drills import observe
from opsgate.drills.drill import Drill, DrillFailed, DrillInconclusive, Observation
from opsgate.environments.local import LocalEnvironment
from opsgate.faults.actions import FaultNotEffective, LocalServiceFault, ToggleFault, run_blocking
from opsgate.faults.journal import Undo
from opsgate.probes.base import ProbeError
from opsgate.probes.browser import chromium
from opsgate.probes.http import HttpObservation, request
from opsgate.probes.sources import service_url
from opsgate.reference.db import DEMO_TENANTS

pytestmark = [pytest.mark.drill, pytest.mark.destructive]

QUEUED = 3
"""Messages queued before the switch is pulled."""
HTTP_TIMEOUT_S = 10.0
PAGE_TIMEOUT_S = 20.0
"""Seconds one page action (load, click, read) may take."""
SEND_QUEUE = "send-messages"


@dataclass(frozen=True)
class Account:
    """The tenant the drill pauses and the credentials it needs (``target.auth``)."""

    tenant_id: str
    api_token: str
    service_user: str
    service_password: str


def account_of(target: Target) -> Account:
    auth = target.auth
    if auth is None or not (auth.tenant_id and auth.api_token and auth.service_user and auth.service_password):
        raise DrillInconclusive("the kill-switch drill needs auth.tenant_id, api_token, service_user, service_password")
    return Account(auth.tenant_id, auth.api_token, auth.service_user, auth.service_password)


@dataclass
class AdminPageKillSwitch:
    """Settings → Kill Switch → Pause Sending on the admin page; rollback: Resume Sending (API if the page fails).

    The journalled undo is the API's resume (login + ``POST /tenants/{id}/resume``), as a toggle's.
    """

    target: Target
    account: Account
    clicked_at: float = 0.0
    """When the Pause Sending click came back (unix s): the start of the propagation measurement."""
    resumed_at: float = 0.0
    """When the Resume Sending click came back (unix s): the start of the drain measurement."""
    page_notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        login = FlowStep(
            method="POST",
            path="/auth/login",
            json={"username": self.account.service_user, "password": self.account.service_password},
            save={"token": "token"},
        )
        tenant = self.account.tenant_id
        bearer = {"Authorization": "Bearer {token}"}
        self.api = ToggleFault(
            self.target,
            on=[login, FlowStep(method="POST", path=f"/tenants/{tenant}/pause", headers=bearer)],
            off=[login, FlowStep(method="POST", path=f"/tenants/{tenant}/resume", headers=bearer)],
            name=f"kill switch of tenant {tenant}",
        )

    def describe(self) -> str:
        return f"kill switch: Pause Sending for tenant {self.account.tenant_id} on the admin page (/admin)"

    def undo(self) -> Undo:
        return self.api.undo()

    def apply(self) -> None:
        self.page_notes.append(run_blocking(lambda: self._click("pause")))

    def verify(self) -> None:
        state = self.state()
        if not state.get("paused") or state.get("sending_state") != "paused":
            raise FaultNotEffective(f"the API does not show the tenant paused after the click: {state}")

    def rollback(self) -> str:
        if not self.state().get("paused"):
            return "nothing to undo: the API shows the tenant sending"
        try:
            detail = run_blocking(lambda: self._click("resume"))
        except Exception as exc:  # the page failed: the switch must still come off
            detail = f"admin page failed ({type(exc).__name__}: {exc}); through the API: {self.api.rollback()}"
        state = self.state()
        if state.get("paused"):
            raise RuntimeError(f"the tenant is still paused after Resume Sending: {state}")
        return f"{detail}; the API shows sending_state {state.get('sending_state')!r}"

    def state(self) -> dict[str, Any]:
        """The tenant as the API reports it (its own token): ``paused``, ``sending_state``..."""
        url = f"{service_url(self.target, 'api')}/v1/tenants/{self.account.tenant_id}"
        response = httpx.get(url, headers={"Authorization": f"Bearer {self.account.api_token}"}, timeout=HTTP_TIMEOUT_S)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    async def _click(self, action: str) -> str:
        """Log in on /admin/login, click the tenant's Pause/Resume Sending control, read the state shown."""
        base = service_url(self.target, "api")
        origin = urlsplit(base)[:2]
        tenant = self.account.tenant_id
        label, wanted = ("Pause Sending", "paused") if action == "pause" else ("Resume Sending", "sending")
        blocked: list[str] = []

        async def same_origin_only(route: Route) -> None:
            with suppress(PlaywrightError):
                if urlsplit(route.request.url)[:2] == origin:
                    await route.continue_()
                else:
                    blocked.append(route.request.url)
                    await route.abort("blockedbyclient")

        async with chromium() as browser:
            context = await browser.new_context(base_url=base, service_workers="block", accept_downloads=False)
            try:
                await context.route("**/*", same_origin_only)
                page = await context.new_page()
                page.set_default_timeout(PAGE_TIMEOUT_S * 1000)
                await page.goto("/admin/login")
                await page.locator("input[name=username]").fill(self.account.service_user)
                await page.locator("input[name=password]").fill(self.account.service_password)
                await page.locator("button[type=submit]").click()
                await page.wait_for_load_state("load")
                if urlsplit(page.url).path != "/admin":
                    raise RuntimeError(f"login on /admin/login did not reach /admin (at {urlsplit(page.url).path})")
                control = page.get_by_test_id(f"kill-switch-{tenant}")
                shown = (await control.inner_text()).strip()
                if shown != label:
                    raise RuntimeError(f"the tenant's kill switch control reads {shown!r}, expected {label!r}")
                await control.click()
                await page.wait_for_load_state("load")
                if action == "pause":
                    self.clicked_at = time.time()
                else:
                    self.resumed_at = time.time()
                state = (await page.get_by_test_id(f"sending-state-{tenant}").inner_text()).strip()
                if state != wanted:
                    raise RuntimeError(f"after {label!r} the admin page shows sending state {state!r}, not {wanted!r}")
                with suppress(PlaywrightError):  # tidy: end the admin session the page opened
                    await page.request.post(f"{base}/auth/logout")
            finally:
                with suppress(PlaywrightError):
                    await context.close()
        if blocked:
            raise RuntimeError(f"the admin page requested another origin: {blocked[0]}")
        return f"clicked {label!r} on /admin: the page shows {state!r}"


async def hold(drill: Drill, what: str, check: Callable[[], Awaitable[Observation]], *, for_s: float,
               every_s: float) -> Observation:  # fmt: skip
    """``check`` must hold at every look for ``for_s`` seconds; the first look that breaks it fails the drill."""
    started = time.monotonic()
    polls = 0
    while True:
        polls += 1
        try:
            seen = await check()
        except ProbeError as exc:
            seen = Observation(False, None, str(exc))
        elapsed = time.monotonic() - started
        if not seen.ok:
            raise DrillFailed(f"{what}: broken after {elapsed:.2f}s of {for_s:.2f}s ({polls} checks); "
                              f"last seen: {seen.note}")  # fmt: skip
        if elapsed >= for_s:
            break
        await asyncio.sleep(min(every_s, for_s - elapsed))
    drill.event(what, f"held for {elapsed:.2f}s ({polls} checks): {seen.note}")
    return seen


class Platform:
    """The looks the drill takes: sends, message status, the sandbox's deliveries, BullMQ's delayed set."""

    def __init__(self, drill: Drill, account: Account) -> None:
        self.drill = drill
        self.target = drill.target
        self.account = account
        self.tenant_headers = {"Authorization": f"Bearer {account.api_token}"}

    async def send(self, label: str) -> HttpObservation:
        to = f"kill-switch-{uuid.uuid4().hex[:12]}@example.test"
        body = json.dumps({"channel": "email", "to": to, "body": label})
        url = f"{service_url(self.target, 'api')}/v1/tenants/{self.account.tenant_id}/messages"
        headers = {**self.tenant_headers, "Content-Type": "application/json"}
        return await request(self.drill.client, "POST", url, timeout_s=HTTP_TIMEOUT_S, headers=headers,
                             content=body.encode())  # fmt: skip

    async def statuses(self, ids: list[str]) -> dict[str, str]:
        found = {}
        for message_id in ids:
            url = f"{service_url(self.target, 'api')}/v1/messages/{message_id}"
            seen = await request(self.drill.client, "GET", url, timeout_s=HTTP_TIMEOUT_S, headers=self.tenant_headers)
            found[message_id] = str(seen.json.get("status")) if seen.status == 200 else f"HTTP {seen.status}"
        return found

    async def deliveries(self, ids: list[str]) -> dict[str, int]:
        """Deliveries the provider sandbox recorded per message id (the ground truth)."""
        found = {}
        for message_id in ids:
            url = f"{service_url(self.target, 'provider')}/deliveries?message_id={message_id}"
            seen = await request(self.drill.client, "GET", url, timeout_s=HTTP_TIMEOUT_S)
            if seen.status != 200:
                raise ProbeError(f"provider sandbox /deliveries answered {seen.status}")
            found[message_id] = int(seen.json["count"])
        return found

    async def delayed(self, ids: list[str]) -> list[str]:
        """Which of ``ids`` have their job in BullMQ's delayed set (held by a worker, to be looked at again)."""
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


def _tenant(state: dict[str, Any]) -> dict[str, Any]:
    return {k: state.get(k) for k in ("id", "status", "paused", "sending_state")}


def _short(ids: list[str]) -> str:
    return ", ".join(i[:8] for i in ids)


async def test_kill_switch_admin_page(drill: Drill, target: Target, local_environment: LocalEnvironment) -> None:
    """Pause on the admin page: new sends refused within 60 s, queued jobs held unsent; Resume: each sent once."""
    drill.claim = "seed-001.kill-switch.pause-sending"
    drill.objective = (
        "Settings → Kill Switch → Pause Sending on the admin page (seed 001): new sends are refused within 60 s "
        "(scaled), messages queued before the click stay queued and unsent even with a worker running; "
        "Resume Sending releases them and each is delivered exactly once (provider sandbox), new sends are "
        "accepted again, and the tenant is left sending."
    )
    drill.timeout_s = target.scaled(1800.0, floor_s=60.0)
    propagation_s = target.scaled(60.0)  # seed 001: "All new sends blocked within 60 seconds"
    paused_hold_s = target.scaled(60.0, floor_s=2.0)  # held unsent for (at least) one propagation window
    drain_s = target.scaled(300.0, floor_s=5.0)  # seed 001: "≥95% delivered within 5 minutes" -- here all of them
    every_s = target.scaled(5.0, floor_s=0.1)
    async with drill.running():
        account = account_of(target)
        looks = Platform(drill, account)
        kill_switch = AdminPageKillSwitch(target, account)
        await drill.steady_state()
        before = await asyncio.to_thread(kill_switch.state)
        if before.get("paused") or before.get("sending_state") != "sending":
            raise DrillInconclusive(f"tenant {account.tenant_id} is not sending before the drill ({before}): "
                                    "pausing and resuming it would not leave it as found")  # fmt: skip
        waiting = await observe.queue_waiting(target, SEND_QUEUE)
        drill.snapshot("before", {"tenant": _tenant(before), "queue send-messages waiting": waiting})
        drill.watch("queue send-messages waiting", lambda: observe.queue_waiting(target, SEND_QUEUE), every_s)
        ids: list[str] = []

        async def queued_and_unsent() -> Observation:
            statuses, sent = await looks.statuses(ids), await looks.deliveries(ids)
            moved = {i[:8]: s for i, s in statuses.items() if s != "queued"}
            leaked = {i[:8]: n for i, n in sent.items() if n}
            note = f"{len(ids)} messages: status {sorted(set(statuses.values()))}, deliveries {sum(sent.values())}"
            if moved or leaked:
                note += f"; not queued: {moved or 'none'}; sent: {leaked or 'none'}"
            return Observation(not moved and not leaked, float(sum(sent.values())), note)

        async with AsyncExitStack() as paused:
            workers = local_environment.service_names("worker")
            async with drill.fault(LocalServiceFault(local_environment, workers)):
                for number in range(QUEUED):
                    seen = await looks.send(f"kill switch drill: queued before the pause ({number + 1}/{QUEUED})")
                    if seen.status != 202:
                        raise DrillFailed(f"a send with the worker down is accepted (202): got {seen.status}: "
                                          f"{seen.text[:160]}")  # fmt: skip
                    ids.append(str(seen.json["id"]))
                drill.event("messages queued", f"{QUEUED} sends accepted with the worker down: {_short(ids)}")
                await drill.expect("messages queued, none sent yet", queued_and_unsent)

                await paused.enter_async_context(drill.fault(kill_switch))

                async def new_send_refused() -> Observation:
                    seen = await looks.send("kill switch drill: sent while paused")
                    error = seen.json.get("error") if isinstance(seen.json, dict) else None
                    if seen.status == 202:
                        ids.append(str(seen.json["id"]))  # accepted anyway: it must not be lost either
                    note = f"POST /v1/tenants/{{id}}/messages → {seen.status} {error or seen.text[:120]}"
                    return Observation(seen.status == 409 and error == "SENDING_PAUSED", float(seen.status), note)

                await drill.expect("new sends refused (409 SENDING_PAUSED) within 60 s of Pause Sending (scaled)",
                                   new_send_refused, within_s=propagation_s, every_s=max(every_s, 0.2))  # fmt: skip
                propagated = time.time() - kill_switch.clicked_at
                drill.measured["kill switch propagation (click → new send refused)"] = propagated
            # The worker is back (its rollback waited until it was ready) while the switch stays on.

            async def held_by_worker() -> Observation:
                delayed = await looks.delayed(ids)
                note = f"{len(delayed)} of {len(ids)} jobs in the delayed set: {_short(delayed) or 'none'}"
                return Observation(len(delayed) == len(ids), float(len(delayed)), note)

            started = time.monotonic()
            await drill.expect("the restarted worker took the queued jobs and held them (delayed, not sent)",
                               held_by_worker, within_s=target.scaled(60.0, floor_s=5.0), every_s=0.1)  # fmt: skip
            drill.measured["worker ready → queued jobs held"] = time.monotonic() - started
            started = time.monotonic()
            await hold(drill, "queued messages stay queued and unsent while paused (worker running)",
                       queued_and_unsent, for_s=paused_hold_s, every_s=every_s)  # fmt: skip
            drill.measured["held unsent while paused, worker running"] = time.monotonic() - started
            started = time.monotonic()
            await paused.aclose()  # the fault's rollback: Resume Sending on the admin page
            drill.measured["resume on the admin page (browser start to verified)"] = time.monotonic() - started
        resumed_at = kill_switch.resumed_at or time.time()  # the page failed: resumed through the API just now

        after_resume = await looks.send("kill switch drill: sent after resume")
        if after_resume.status != 202:
            raise DrillFailed(f"a new send is accepted again after Resume Sending: got {after_resume.status}: "
                              f"{after_resume.text[:160]}")  # fmt: skip
        ids.append(str(after_resume.json["id"]))
        drill.event("new send accepted after Resume", f"202 {_short(ids[-1:])}")

        async def delivered_once() -> Observation:
            statuses, sent = await looks.statuses(ids), await looks.deliveries(ids)
            wrong = {i[:8]: f"{statuses[i]}, {n} deliveries" for i, n in sent.items()
                     if n != 1 or statuses[i] != "delivered"}  # fmt: skip
            note = f"{len(ids) - len(wrong)} of {len(ids)} delivered exactly once"
            if wrong:
                note += f"; others: {wrong}"
            return Observation(not wrong, float(len(ids) - len(wrong)), note)

        await drill.expect("every queued message delivered exactly once after Resume (within 5 min, scaled)",
                           delivered_once, within_s=drain_s, every_s=every_s, series="delivered once")  # fmt: skip
        drill.measured["drain (Resume click → all delivered once)"] = time.time() - resumed_at
        await drill.sleep(target.scaled(30.0, floor_s=1.0), "a duplicate send would show up by now")
        await drill.expect("still exactly one delivery per message (no duplicate after Resume)", delivered_once)

        await drill.steady_state(after=True, within_s=target.scaled(300.0, floor_s=5.0))
        after = await asyncio.to_thread(kill_switch.state)
        if after.get("paused"):
            raise DrillFailed(f"the tenant is left sending after the drill: the API shows {after}")
        waiting = await observe.queue_waiting(target, SEND_QUEUE)
        drill.snapshot("after", {"tenant": _tenant(after), "queue send-messages waiting": waiting})
        drill.snapshot("after", {"messages": await looks.statuses(ids), "deliveries": await looks.deliveries(ids)})


async def test_breach_kill_switch_all_tenants(
    drill: Drill, target: Target, local_environment: LocalEnvironment
) -> None:
    """Global kill switch: both tenants' new sends refused within 60 s, queued jobs held; off: each sent once."""
    drill.claim = "seed-001.security.kill-switch-first"
    drill.objective = (
        "Seed 001 suspected breach, immediate step: the global kill switch (PUT /admin/kill-switch, audited) stops "
        "all sending: with two tenants' sends queued, new sends of both are refused (409) within 60 s (scaled), the "
        "queued jobs are held by the running workers and nothing of either tenant reaches the provider; switched off, "
        "every held send (and a new one of each tenant) is delivered exactly once (provider record)."
    )
    drill.timeout_s = target.scaled(1800.0, floor_s=60.0)
    propagation_s = target.scaled(60.0)  # seed 001: "All new sends blocked within 60 seconds"
    paused_hold_s = target.scaled(60.0, floor_s=2.0)
    drain_s = target.scaled(300.0, floor_s=5.0)
    every_s = target.scaled(5.0, floor_s=0.1)
    async with drill.running():
        first = account_of(target)
        second = Account(str(DEMO_TENANTS[1]["id"]), local_environment.credentials.api_token_2, first.service_user,
                         first.service_password)  # fmt: skip
        tenants = [Platform(drill, first), Platform(drill, second)]
        switch = global_kill_switch_of(target)
        await drill.steady_state()
        ids: dict[str, list[str]] = {t.account.tenant_id: [] for t in tenants}

        def all_ids() -> list[str]:
            return [i for found in ids.values() for i in found]

        async def held_unsent() -> Observation:
            queued = all_ids()
            statuses: dict[str, str] = {}
            sent: dict[str, int] = {}
            for t in tenants:
                statuses.update(await t.statuses(ids[t.account.tenant_id]))
                sent.update(await t.deliveries(ids[t.account.tenant_id]))
            moved = {i[:8]: s for i, s in statuses.items() if s != "queued"}
            leaked = {i[:8]: n for i, n in sent.items() if n}
            note = f"{len(queued)} sends of 2 tenants: status {sorted(set(statuses.values()))}, provider deliveries " \
                   f"{sum(sent.values())}"  # fmt: skip
            if moved or leaked:
                note += f"; not queued: {moved or 'none'}; sent: {leaked or 'none'}"
            return Observation(not moved and not leaked, float(sum(sent.values())), note)

        audited = "SELECT count(*) FROM audit_events WHERE action = 'kill_switch.enabled'"
        audits_before = await observe.sql_value(target, audited) or 0.0
        async with AsyncExitStack() as switched:
            async with drill.fault(LocalServiceFault(local_environment, local_environment.service_names("worker"))):
                for t in tenants:
                    for number in range(QUEUED):
                        seen = await t.send(f"breach drill: queued before the switch ({number + 1}/{QUEUED})")
                        if seen.status != 202:
                            raise DrillFailed(f"a send of tenant {t.account.tenant_id} with the workers down is "
                                              f"accepted (202): got {seen.status}: {seen.text[:160]}")  # fmt: skip
                        ids[t.account.tenant_id].append(str(seen.json["id"]))
                drill.event("sends queued", f"{QUEUED} per tenant, 2 tenants, workers down: {_short(all_ids())}")
                await switched.enter_async_context(drill.fault(switch))
                switched_at = time.monotonic()

                async def every_tenant_refused() -> Observation:
                    notes, ok = [], True
                    for t in tenants:
                        seen = await t.send("breach drill: sent with the global kill switch on")
                        if seen.status == 202:
                            ids[t.account.tenant_id].append(str(seen.json["id"]))  # accepted: must not be lost
                        ok = ok and seen.status == 409
                        notes.append(f"tenant {t.account.tenant_id[-4:]} → {seen.status}")
                    return Observation(ok, None, "; ".join(notes))

                await drill.expect("new sends of every tenant refused (409) within 60 s of the global kill switch",
                                   every_tenant_refused, within_s=propagation_s, every_s=0.2)  # fmt: skip
                drill.measured["global kill switch → every tenant refused"] = time.monotonic() - switched_at

                async def audited_once_more() -> Observation:
                    now = await observe.sql_value(target, audited) or 0.0
                    return Observation(
                        now == audits_before + 1,
                        now - audits_before,
                        f"{now - audits_before:g} kill_switch.enabled audit events since the drill began",
                    )

                await drill.expect(
                    "the global kill switch audited (audit_events kill_switch.enabled)", audited_once_more
                )
            # The workers are back (their rollback waited until ready) while the global switch stays on.

            async def held_by_workers() -> Observation:
                queued = all_ids()
                delayed = await tenants[0].delayed(queued)
                note = f"{len(delayed)} of {len(queued)} jobs in the delayed set: {_short(delayed) or 'none'}"
                return Observation(len(delayed) == len(queued), float(len(delayed)), note)

            await drill.expect("queued sends of both tenants held by the workers (delayed, not sent)", held_by_workers,
                               within_s=target.scaled(60.0, floor_s=5.0), every_s=0.1)  # fmt: skip
            await hold(drill, "nothing of either tenant sent while the global kill switch is on (provider record)",
                       held_unsent, for_s=paused_hold_s, every_s=every_s)  # fmt: skip
        for t in tenants:  # the switch is off (its rollback): each tenant sends again
            seen = await t.send("breach drill: sent after the global kill switch")
            if seen.status != 202:
                raise DrillFailed(f"a send of tenant {t.account.tenant_id} is accepted after the global kill switch "
                                  f"is off: got {seen.status}: {seen.text[:160]}")  # fmt: skip
            ids[t.account.tenant_id].append(str(seen.json["id"]))

        async def each_once() -> Observation:
            statuses: dict[str, str] = {}
            sent: dict[str, int] = {}
            for t in tenants:
                statuses.update(await t.statuses(ids[t.account.tenant_id]))
                sent.update(await t.deliveries(ids[t.account.tenant_id]))
            return delivered_once(statuses, sent)

        await drill.expect("every held send of both tenants delivered exactly once after the switch is off",
                           each_once, within_s=drain_s, every_s=every_s, series="delivered once")  # fmt: skip
        await drill.sleep(target.scaled(30.0, floor_s=1.0), "a duplicate send would show up by now")
        await drill.expect("still exactly one delivery per message (no duplicate)", each_once)
        await drill.steady_state(after=True, within_s=target.scaled(300.0, floor_s=5.0))
