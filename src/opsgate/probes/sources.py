"""Measures built from the target file's sources: a metric, an HTTP JSON field, SQL or PromQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from opsgate.config import GateSpec, HttpSource, MetricSource, Target
from opsgate.gates import Measure
from opsgate.probes import datastores, metrics, prometheus
from opsgate.probes.base import ProbeError
from opsgate.probes.http import json_field, request

TIMEOUT_S = 10.0
SQL_DURATION_FLOOR_S = 1.0


def service_url(target: Target, service: str) -> str:
    """Base URL of a named service; a missing one is a ProbeError naming the known services."""
    if service not in target.services:
        raise ProbeError(f"no service {service!r} in the target (known: {', '.join(target.services) or 'none'})")
    return target.services[service].url.rstrip("/")


async def http_number(client: httpx.AsyncClient, target: Target, source: HttpSource) -> Measure:
    """The number at ``source.field`` of a GET's JSON answer."""
    url = service_url(target, source.service) + source.path
    observed = await request(client, "GET", url, timeout_s=TIMEOUT_S, headers=source.headers)
    if observed.status != 200:
        raise ProbeError(f"GET {url} answered {observed.status}")
    try:
        value = json_field(observed.json, source.field)
    except KeyError as exc:
        raise ProbeError(f"GET {url}: {exc.args[0]}") from None
    if value is None:
        return Measure(None, f"{source.field} is null")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProbeError(f"GET {url}: {source.field} is not a number: {value!r}")
    return Measure(float(value), f"{source.field} from {url}")


def metric_snapshot(
    client: httpx.AsyncClient, target: Target, urls: list[str] | None = None
) -> Callable[[], Awaitable[metrics.Snapshot]]:
    """A function scraping ``urls`` (default: every ``metrics.scrape`` endpoint) into one snapshot."""

    async def take() -> metrics.Snapshot:
        return await metrics.scrape(client, urls or target.metrics.scrape, timeout_s=TIMEOUT_S)

    return take


def metric_delta(source: MetricSource) -> Callable[[metrics.Snapshot, metrics.Snapshot], Measure]:
    """Compute ``source`` across two snapshots (deltas of counters and buckets)."""

    def compute(before: metrics.Snapshot, after: metrics.Snapshot) -> Measure:
        result = metrics.evaluate(source, after, before)
        return Measure(result.value, result.note)

    return compute


def sql_durations(target: Target, spec: GateSpec) -> dict[str, float]:
    """The gate's ``sql_durations`` in seconds, scaled by ``time_scale`` (not below 1 s), ready to bind."""
    return {name: target.scaled(seconds, floor_s=SQL_DURATION_FLOOR_S) for name, seconds in spec.sql_durations.items()}


def instant_measure(client: httpx.AsyncClient, target: Target, spec: GateSpec) -> Callable[[], Awaitable[Measure]]:
    """A function measuring ``spec``'s source at one instant."""

    async def measure() -> Measure:
        if spec.metric is not None:
            snapshot = await metrics.scrape(client, spec.scrape or target.metrics.scrape, timeout_s=TIMEOUT_S)
            result = metrics.evaluate(spec.metric, snapshot)
            return Measure(result.value, result.note)
        if spec.http is not None:
            return await http_number(client, target, spec.http)
        if spec.sql is not None:
            if target.datastores.postgres is None:
                raise ProbeError("an sql gate needs datastores.postgres")
            bound = sql_durations(target, spec)
            value = await datastores.postgres_scalar(
                target.datastores.postgres.dsn, spec.sql, timeout_s=TIMEOUT_S, params=bound
            )
            ages = ", ".join(f"{name}={seconds:g}s" for name, seconds in bound.items())
            note = "the query returned NULL" if value is None else ""
            return Measure(value, "; ".join(part for part in (note, ages and f"bound {ages}") if part))
        if spec.redis_key is not None:
            if target.datastores.redis is None:
                raise ProbeError("a redis_key gate needs datastores.redis")
            value = await datastores.redis_key_number(target.datastores.redis.url, spec.redis_key, timeout_s=TIMEOUT_S)
            return Measure(value, "" if value is not None else f"no key {spec.redis_key!r}")
        assert spec.promql is not None
        if target.metrics.prometheus is None:
            raise ProbeError("a promql gate needs metrics.prometheus")
        value = await prometheus.instant_value(client, target.metrics.prometheus, spec.promql, timeout_s=TIMEOUT_S)
        return Measure(value, "" if value is not None else "empty result")

    return measure
