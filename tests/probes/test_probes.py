"""HTTP, datastore, metrics and PromQL probes against real services."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from helpers import alive
from opsgate.config import MetricSource
from opsgate.environments.binaries import executable
from opsgate.environments.local import LocalEnvironment
from opsgate.environments.ports import PortAllocator
from opsgate.environments.process import ManagedProcess
from opsgate.probes import datastores, metrics, prometheus
from opsgate.probes.base import ProbeError
from opsgate.probes.http import json_field, request, subset_mismatch
from opsgate.waits import wait_until


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def dead_port() -> int:
    return PortAllocator().pick()  # free right now: nothing listens there


async def test_http_probe_observes_status_body_and_latency(
    platform: LocalEnvironment, client: httpx.AsyncClient
) -> None:
    seen = await request(client, "GET", f"{platform.api_url}/readyz", timeout_s=5)
    assert seen.status == 200 and seen.json["ready"] is True and 0 < seen.latency_ms < 5000
    assert json_field(seen.json, "checks.postgres.ok") is True
    assert subset_mismatch({"ready": True, "checks": {"redis": {"ok": True}}}, seen.json) is None
    assert subset_mismatch({"checks": {"kafka": {}}}, seen.json) == "checks.kafka: missing"
    assert subset_mismatch({"ready": False}, seen.json) == "ready: expected False, got True"
    with pytest.raises(KeyError, match="no 'nope'"):
        json_field(seen.json, "checks.nope")


async def test_http_probe_names_the_url_it_could_not_reach(client: httpx.AsyncClient) -> None:
    url = f"http://127.0.0.1:{dead_port()}/healthz"
    with pytest.raises(ProbeError, match=f"^connection refused to {url}$"):
        await request(client, "GET", url, timeout_s=2)


async def test_postgres_probes(platform: LocalEnvironment) -> None:
    assert await datastores.postgres_ready(platform.database_url) is True
    assert await datastores.postgres_scalar(platform.database_url, "SELECT count(*) FROM tenants") >= 2
    used = await datastores.postgres_connections(platform.database_url)
    assert 1 <= used.used < used.max == 200 and 0 < used.ratio < 1
    with pytest.raises(ProbeError, match="query failed"):
        await datastores.postgres_scalar(platform.database_url, "SELECT nope FROM nowhere")
    refused = platform.database_url.replace(str(platform.ports.postgres), str(dead_port()))
    with pytest.raises(ProbeError, match="does not accept connections"):
        await datastores.postgres_ready(refused, timeout_s=2)
    assert platform.credentials.db_password not in refused.replace(platform.credentials.db_password, "")


async def test_redis_probe(platform: LocalEnvironment) -> None:
    assert await datastores.redis_ping(platform.redis_url) == "PONG"
    with pytest.raises(ProbeError, match="does not answer PING"):
        await datastores.redis_ping(f"redis://127.0.0.1:{dead_port()}/0", timeout_s=1)
    wrong_password = platform.redis_url.replace(platform.credentials.redis_password, "wrong")
    with pytest.raises(ProbeError):
        await datastores.redis_ping(wrong_password, timeout_s=1)


async def test_metrics_scrape_counter_gauge_ratio_and_quantile(
    platform: LocalEnvironment, client: httpx.AsyncClient
) -> None:
    urls = [f"{platform.api_url}/metrics", f"{platform.worker_urls[0]}/metrics"]
    before = await metrics.scrape(client, urls)
    for _ in range(20):
        await client.get(f"{platform.api_url}/health")
    after = await metrics.scrape(client, urls)

    health = {"service": "api", "route": "/health"}
    counted = metrics.evaluate(MetricSource(name="http_requests_total", labels=health), after, before)
    assert counted.value == 20  # exactly the requests sent between the snapshots, not the total since start
    gauge = metrics.evaluate(MetricSource(name="db_connections_max"), after)
    assert gauge.value == 10 + 8  # api pool + worker pool: summed across endpoints, as sum() in PromQL
    ratio = metrics.evaluate(
        MetricSource.model_validate(
            {
                "numerator": {"name": "http_requests_total", "labels": {**health, "status": "=~2.."}},
                "denominator": {"name": "http_requests_total", "labels": health},
            }
        ),
        after,
        before,
    )
    assert ratio.value == 1.0 and ratio.basis == 20
    p95 = metrics.evaluate(
        MetricSource(histogram="http_request_duration_seconds", quantile=0.95, labels=health), after, before
    )
    assert p95.value is not None and 0 < p95.value <= 0.1 and p95.basis == 20
    nothing = metrics.evaluate(
        MetricSource(histogram="http_request_duration_seconds", quantile=0.95, labels={"route": "/none"}), after, before
    )
    assert nothing.value is None  # no observations: no quantile, never a pass by default


def test_histogram_quantile_matches_prometheus_interpolation() -> None:
    buckets = [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert metrics.histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert metrics.histogram_quantile(0.7, buckets) == pytest.approx(0.3)
    assert metrics.histogram_quantile(0.95, buckets) == pytest.approx(0.75)
    assert metrics.histogram_quantile(0.99, [(1.0, 1.0), (float("inf"), 100.0)]) == 1.0  # in +Inf: last bound
    assert metrics.histogram_quantile(0.5, [(1.0, 0.0), (float("inf"), 0.0)]) is None


def test_counter_reset_counts_from_zero() -> None:
    before = metrics.Snapshot(0.0, metrics.parse("c_total 100\n"))
    after = metrics.Snapshot(1.0, metrics.parse("c_total 7\n"))  # the process restarted
    assert metrics.evaluate(MetricSource(name="c_total"), after, before).value == 7
    with pytest.raises(ProbeError, match="not Prometheus exposition"):
        metrics.parse("this is { not metrics", "http://x/metrics")


@pytest.fixture(scope="module")
def prometheus_url(platform: LocalEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus (Debian's) scraping the platform's api every second."""
    folder = tmp_path_factory.mktemp("prometheus")
    api = platform.api_url.removeprefix("http://")
    (folder / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: api\n    static_configs: [{{targets: ['{api}']}}]\n"
    )
    port = PortAllocator().pick()
    argv = [
        executable("prometheus", "prometheus", "OPSGATE_PROMETHEUS"),
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    process = ManagedProcess("prometheus", argv, dict(os.environ), folder / "prometheus.log")
    process.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/-/ready").status_code == 200 or None, what="prometheus ready",
                   timeout_s=30, address=url, log=Path(process.log_path))  # fmt: skip
        yield url
    finally:
        process.stop()
        assert process.pid is not None and not alive(process.pid)


async def test_promql_probe(prometheus_url: str, client: httpx.AsyncClient) -> None:
    assert await prometheus.instant_value(client, prometheus_url, "scalar(vector(42))") == 42
    assert await prometheus.instant_value(client, prometheus_url, "vector(1)") == 1
    assert await prometheus.instant_value(client, prometheus_url, 'up{job="no-such-job"}') is None
    with pytest.raises(ProbeError, match="returned 2 series"):
        await prometheus.instant_value(
            client, prometheus_url, 'vector(1) or label_replace(vector(2), "a", "b", "", "")'
        )
    with pytest.raises(ProbeError, match="failed at"):
        await prometheus.instant_value(client, prometheus_url, "sum(")

    async def scraped() -> float | None:
        return await prometheus.instant_value(client, prometheus_url, 'up{job="api"}')

    value = None
    for _ in range(60):  # the first scrape comes after Prometheus's ~5 s discovery throttle
        value = await scraped()
        if value == 1:
            break
        await asyncio.sleep(0.5)
    assert value == 1


async def test_redis_key_probe(platform: LocalEnvironment) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(platform.redis_url)
    key = "rate:tenant:probe-test"
    try:
        await client.set(f"{key}:string", "42")
        await client.rpush(f"{key}:list", "a", "b", "c")
        await client.set(f"{key}:text", "not a number")
        assert await datastores.redis_key_number(platform.redis_url, f"{key}:string") == 42
        assert await datastores.redis_key_number(platform.redis_url, f"{key}:list") == 3
        assert await datastores.redis_key_number(platform.redis_url, f"{key}:absent") is None
        with pytest.raises(ProbeError, match="not a number"):
            await datastores.redis_key_number(platform.redis_url, f"{key}:text")
    finally:
        await client.delete(f"{key}:string", f"{key}:list", f"{key}:text")
        await client.aclose()
