"""Defect switches plant real bugs, and a healthy platform does not show them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from conftest import BACKUP_INTERVAL_S, NewTenant
from helpers import deliveries, message_status, poll
from opsgate.environments.local import LocalEnvironment
from opsgate.reference.defects import CATALOGUE
from opsgate.reference.settings import SettingsError, from_environ

pytestmark = pytest.mark.platform


@contextmanager
def defects_planted(platform: LocalEnvironment, defects: str) -> Iterator[LocalEnvironment]:
    """Restart the api and worker with ``defects``; restart them healthy afterwards."""
    platform.restart_platform(defects=defects)
    try:
        yield platform
    finally:
        platform.restart_platform(defects="", backup_interval_s=BACKUP_INTERVAL_S)


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
        assert ready.json()["checks"]["redis"]["ok"] is False


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
