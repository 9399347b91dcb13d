"""Prometheus metrics of the platform, named as the seed runbooks name them.

The api and the worker each own a :class:`PlatformMetrics`; a counter lives in the process that
does the counted thing (api: received/retrying webhooks; worker: processed/failed), and
Prometheus, or opsgate's scrape probe, sums the series across processes.

Besides the histograms, every request's own server-side duration is kept raw in a bounded
:class:`RequestTimings` (read at ``GET /debug/request-timings``), so a test can compare opsgate's
client-side percentiles with the server's exact ones for the same requests.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from opsgate.reference.errors import error_response

# Bucket edges sit on every latency threshold the seed runbooks state (300/500/750 ms, 1.5/2.5 s).
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
QUEUE_STATES = ("waiting", "active", "failed", "delayed")
TIMINGS_PATH = "/debug/request-timings"
"""The read-only route of the raw server-side timings; its own requests are never recorded."""
TIMINGS_KEPT = 200_000


class RequestTimings:
    """The newest ``maxlen`` requests as (route template, method, status, duration ms), numbered from 0."""

    def __init__(self, maxlen: int = TIMINGS_KEPT) -> None:
        self._entries: deque[tuple[str, str, int, float]] = deque(maxlen=maxlen)
        self.recorded = 0
        """How many requests were ever recorded: the number the next one gets."""

    def record(self, route: str, method: str, status: int, duration_ms: float) -> None:
        """Keep one request's timing (the oldest is dropped when full)."""
        self._entries.append((route, method, status, duration_ms))
        self.recorded += 1

    def since(self, seq: int, route: str) -> tuple[int, int, list[tuple[str, int, float]]]:
        """``(next, missed, [(method, status, ms), ...])`` of ``route`` from number ``seq`` on.

        ``missed`` counts the requests (of any route) from ``seq`` on that were already dropped.
        """
        first = self.recorded - len(self._entries)
        start = max(seq, first)
        missed = max(0, first - seq)
        rows = [(m, s, ms) for r, m, s, ms in itertools.islice(self._entries, start - first, None) if r == route]
        return self.recorded, missed, rows


def timings_route(timings: RequestTimings) -> Route:
    """``GET /debug/request-timings?route=<template>&since=<n>``: ``{"next", "missed", "timings"}``."""

    async def request_timings(request: Request) -> Response:
        route = request.query_params.get("route")
        since = request.query_params.get("since", "0")
        if not route or not (since.isascii() and since.isdigit()):
            return error_response(422, "INVALID_REQUEST", "route (a route template) and since (an integer >= 0)")
        following, missed, rows = timings.since(int(since), route)
        return JSONResponse({"next": following, "missed": missed, "timings": rows})

    return Route(TIMINGS_PATH, request_timings, methods=["GET"])


def memory_limit_bytes() -> float:
    """The process's memory limit: cgroup v2 ``memory.max`` when set, else the host's physical memory."""
    try:
        with open("/sys/fs/cgroup/memory.max") as limit:
            text = limit.read().strip()
        if text.isdigit():
            return float(text)
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


class PlatformMetrics:
    """The metric families one platform process exposes on ``/metrics``."""

    def __init__(self, service: str, *, queue_gauges: bool = False, drop_status_label: bool = False) -> None:
        """``queue_gauges``: declare the ``bull_queue_jobs_*`` families (the api, which reads the queues, fills them;
        a process declaring them empty would hide their absence from the api's /metrics)."""
        self.service = service
        self.drop_status_label = drop_status_label  # defect requests-unlabelled-status
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency in seconds.",
            ["service", "route", "method", "status"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.http_requests = Counter(
            "http_requests",
            "HTTP requests answered (tenant: the route's tenant id, '' when none).",
            ["service", "route", "method", "status", "tenant"],
            registry=r,
        )
        self.queue_jobs = {
            state: Gauge(f"bull_queue_jobs_{state}", f"BullMQ jobs {state}, per queue.", ["queue"], registry=r)
            for state in (QUEUE_STATES if queue_gauges else ())
        }
        self.billing_webhook = Counter("billing_webhook", "Billing webhooks by outcome.", ["status"], registry=r)
        self.billing_webhook_lag = Histogram(
            "billing_webhook_lag_seconds",
            "Seconds from webhook receipt to processing.",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.messages = Counter(
            "messages",
            "Messages by channel, outcome and tenant.",
            ["channel", "status", "tenant"],
            registry=r,
        )
        self.notification_failures = Counter(
            "notification_failures", "Failed provider sends, per channel.", ["channel"], registry=r
        )
        self.outbox_requeued = Counter(
            "outbox_requeued", "Overdue pending work re-enqueued by the outbox sweeper.", ["kind"], registry=r
        )
        self.db_active = Gauge("db_connections_active", "Database connections in use.", registry=r)
        self.db_max = Gauge("db_connections_max", "Database connection pool size limit.", registry=r)
        self.db_failures = Counter(
            "db_connection_failures", "Failed attempts to get a database connection.", registry=r
        )
        self.heartbeat_age = Gauge(
            "worker_heartbeat_age_seconds", "Seconds since the freshest worker heartbeat.", registry=r
        )
        self.optouts = Counter("optouts", "Opt-outs received (STOP replies).", ["tenant"], registry=r)
        self.sms_window_messages = Gauge(
            "sms_window_messages", "Delivered SMS in the tenant's rolling window (its newest, at most 100).",
            ["tenant"], registry=r,
        )  # fmt: skip
        self.sms_window_optouts = Gauge(
            "sms_window_optouts", "Recipients of the rolling window's SMS who replied STOP after it.",
            ["tenant"], registry=r,
        )  # fmt: skip
        self.backup_last_success = Gauge(
            "backup_last_success_timestamp", "Unix time of the newest successful backup.", registry=r
        )
        self.monitoring_failures = Counter(
            "monitoring_webhook_failures", "Monitoring webhook posts that failed.", registry=r
        )
        self.monitoring_pending = Gauge(
            "monitoring_events_pending", "Monitoring events stored but not yet accepted by the webhook.", registry=r
        )
        self.request_timings = RequestTimings()
        # Seed 003 "Resource: CPU > 80% or memory > 85% for 10 minutes; disk > 90%": the process's own CPU and
        # memory (process_cpu_seconds_total, process_resident_memory_bytes), the memory it may use, and the
        # filesystem of its data directory (set by the api at scrape time).
        ProcessCollector(registry=r)
        self.memory_limit = Gauge(
            "process_memory_limit_bytes", "Memory the process may use: its cgroup limit, else the host's RAM.",
            registry=r,
        )  # fmt: skip
        self.memory_limit.set(memory_limit_bytes())
        self.disk_size = Gauge("data_filesystem_size_bytes", "Size of the data directory's filesystem.", registry=r)
        self.disk_used = Gauge(
            "data_filesystem_used_bytes", "Bytes of the data directory's filesystem not available to the process.",
            registry=r,
        )  # fmt: skip
        # Seed 001 "Budget approaching 90%": today's spend and the daily budget per tenant (set by the api).
        self.budget_spent = Gauge(
            "tenant_budget_spent_cents", "Today's spend per tenant, cents.", ["tenant"], registry=r
        )
        self.budget_limit = Gauge(
            "tenant_budget_limit_cents", "Daily budget per tenant, cents.", ["tenant"], registry=r
        )

        # Series exist from the start at 0, so increase() sees the first event (a series born at 1 hides it).
        for status in ("received", "processed", "retrying", "failed"):
            self.billing_webhook.labels(status)
        for channel in ("sms", "email"):
            self.notification_failures.labels(channel)
        for kind in ("message", "billing_webhook"):
            self.outbox_requeued.labels(kind)

    def refresh_disk(self, path: str) -> None:
        """Set the data filesystem gauges from the filesystem holding ``path``."""
        usage = shutil.disk_usage(path)
        self.disk_size.set(usage.total)
        self.disk_used.set(usage.total - usage.free)

    def render(self) -> bytes:
        """The exposition text of every family."""
        return generate_latest(self.registry)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestMetricsMiddleware:
    """ASGI middleware timing every HTTP request by route template, method and status (histogram and raw)."""

    def __init__(self, app: ASGIApp, metrics: PlatformMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            elapsed_s = time.perf_counter() - started
            labels = (self.metrics.service, template, scope["method"], str(status))
            self.metrics.http_duration.labels(*labels).observe(elapsed_s)
            tenant = str((scope.get("path_params") or {}).get("tenant_id", ""))
            if self.metrics.drop_status_label:
                labels = (self.metrics.service, template, scope["method"], "")
            self.metrics.http_requests.labels(*labels, tenant).inc()
            if template != TIMINGS_PATH:
                self.metrics.request_timings.record(template, scope["method"], status, elapsed_s * 1000)
