"""A team's own locustfile (load/reference_journey.py), judged on one request name from opsgate's raw timings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from opsgate.environments.local import LocalEnvironment
from opsgate.slo.runner import Plan, run_load

JOURNEY = Path(__file__).parents[2] / "load" / "reference_journey.py"


def test_the_reference_journey_is_recorded_for_the_judged_request(
    platform: LocalEnvironment, sending_tenant: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = platform.credentials
    monkeypatch.setenv("OPSGATE_TENANT_ID", sending_tenant["id"])
    monkeypatch.setenv("OPSGATE_API_TOKEN", sending_tenant["api_token"])
    monkeypatch.setenv("OPSGATE_SERVICE_USER", credentials.service_user)
    monkeypatch.setenv("OPSGATE_SERVICE_PASSWORD", credentials.service_password)
    plan = Plan(platform.api_url, "/", rate_per_s=0, duration_s=5, model="closed", users=4, locustfile=JOURNEY,
                judge_name="send message")  # fmt: skip
    result = run_load(plan, tmp_path)
    assert result.run.ended_early is None, result.run.ended_early
    assert result.run.planned == 0  # no rate given: a team's own pace, nothing planned
    stats = {(e["method"], e["name"]): e for e in json.loads((tmp_path / "locust.json").read_text())}
    sent = stats[("POST", "send message")]
    timings = result.run.timings
    print(f"\njourney: {len(timings)} 'send message' timings; Locust: "
          + ", ".join(f"{name} {e['num_requests']}" for (_, name), e in sorted(stats.items())))  # fmt: skip
    assert len(timings) > 20 and all(t.ok for t in timings)
    assert len(timings) == sent["num_requests"] and sent["num_failures"] == 0
    assert {("POST", "login"), ("GET", "read message"), ("GET", "read tenant"), ("GET", "readyz")} <= set(stats)
    assert all(e["num_failures"] == 0 for e in stats.values()), stats
    every = [entry for path in tmp_path.glob("timings-*.json") for entry in json.loads(path.read_text())["timings"]]
    assert len(every) == sum(e["num_requests"] for e in stats.values())  # every request recorded, with its name
