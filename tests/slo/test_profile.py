"""SLO rows → load plans: scaled durations with an honest floor, limits, and Locust's rounded percentile."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsgate.config import SloSpec, load_target, parse_target
from opsgate.slo.profile import duration_s, endpoint, floor_s, limits_of, plan_for
from opsgate.slo.record import locust_entry, locust_percentile
from test_config import ENVIRON

ROOT = Path(__file__).resolve().parents[2]


def row(target_text: str) -> tuple[object, SloSpec]:
    target = parse_target("name: t\nenvironment: staging\ntime_scale: 0.02\n"
                          "services: {api: {url: 'http://127.0.0.1:9'}}\nslos:\n" + target_text)  # fmt: skip
    return target, target.slos[0]


def test_local_rows_short_stage_is_the_shortest_honest_run_and_full_is_scaled() -> None:
    target = load_target(ROOT / "targets" / "local.yaml", environ=ENVIRON)
    send = target.slos[0]
    # p95 needs 200 samples: 2.5 s at 100/s with a quarter to spare (over min_duration 2 s); 10m x 0.02 = 12 s.
    assert floor_s(target, send) == pytest.approx(2.5)
    assert duration_s(target, send, "short") == pytest.approx(2.5)
    assert duration_s(target, send, "full") == pytest.approx(12.0)
    plan = plan_for(target, send, "short")
    assert (plan.host, plan.method, plan.status) == ("http://127.0.0.1:8001", "POST", 202)
    assert plan.path == "/v1/tenants/00000000-0000-0000-0000-000000000001/messages"
    assert plan.headers == {"Authorization": "Bearer token-abc"}
    assert plan.body == {"channel": "email", "to": "slo-{uuid}@example.test", "body": "SLO load"}
    assert (plan.rate_per_s, plan.model, plan.workers) == (100, "open", 0)
    assert plan_for(target, send, "full", workers=2).workers == 2
    assert endpoint(send) == "POST /v1/tenants/00000000-0000-0000-0000-000000000001/messages"


def test_the_floor_follows_the_highest_percentile_and_the_ramp() -> None:
    target, spec = row("  - {name: s, request: {path: /x}, p99_ms: 50, load: {rate_per_s: 100, duration: 1m}}\n")
    assert floor_s(target, spec) == pytest.approx(12.5)  # p99 needs 1000 samples: 10 s at 100/s, x1.25
    assert duration_s(target, spec, "full") == pytest.approx(12.5)  # 1m x 0.02 = 1.2 s is too short to judge
    target, spec = row("  - {name: s, request: {path: /x}, p95_ms: 50, load: {rate_per_s: 100, duration: 10m, "
                       "ramp: 1m}}\n")  # fmt: skip
    assert floor_s(target, spec) == pytest.approx(2.5 + 0.6)  # a linear 1.2 s ramp loses 0.6 s of its requests
    target, spec = row("  - {name: s, request: {path: /x}, p95_ms: 50, honesty: {min_samples: 50},"
                       " load: {rate_per_s: 100, duration: 10m, short_duration: 8s}}\n")  # fmt: skip
    assert duration_s(target, spec, "short") == pytest.approx(8.0)
    assert limits_of(spec).p95_ms == 50


def test_a_closed_model_without_rate_runs_its_min_duration() -> None:
    target, spec = row("  - {name: s, request: {path: /x}, p50_ms: 50, load: {model: closed, users: 4, duration: 1m,"
                       " min_duration: 5s}}\n")  # fmt: skip
    assert duration_s(target, spec, "short") == pytest.approx(5.0)
    assert plan_for(target, spec, "short").users == 4


def test_locust_percentiles_are_its_rounded_buckets() -> None:
    # Locust stores 1545 ms as the 1500 bucket: its p95 of a run whose true p95 is 1545 ms reads 1500.
    buckets = {"10": 90, "1500": 10}
    assert locust_percentile(buckets, 100, 0.95) == 1500
    assert locust_percentile(buckets, 100, 0.50) == 10
    assert locust_percentile({}, 0, 0.95) == 0  # Locust's figure for an empty run: passes any ceiling
    entries = [{"name": "a", "num_requests": 1}, {"name": "b", "num_requests": 2}]
    assert locust_entry(entries, "b") == entries[1] and locust_entry(entries, None) is None
