"""The "Messages Not Sending" diagnosis (seed 001): its steps as checks, and in a failing send flow's message.

Against the session platform through targets/local.yaml as an external stand-in; every outage is real (the
worker or Redis stopped) and undone in ``finally``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import defects_planted, local_target_as_external, poll, run_opsgate
from opsgate.config import Target, load_target
from opsgate.diagnosis import diagnose, explain
from opsgate.environments.local import LocalEnvironment

DIAGNOSIS = "messages-not-sending"
STEPS = ("worker-running", "redis-ping", "send-queue")
STEP_IDS = [f"diagnosis[{DIAGNOSIS}/{step}]" for step in STEPS]
FLOW = "flow[send-sms-delivered]"
QUEUE_STEP = "      queue: send-messages\n      claim: seed-001.diagnosis.send-queue\n"


@pytest.fixture(scope="module")
def external_target(platform: LocalEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """targets/local.yaml, pointed at the session's already-running platform (nothing started)."""
    return local_target_as_external(tmp_path_factory.mktemp("target") / "standin.yaml")


def loaded(platform: LocalEnvironment, path: Path) -> Target:
    """The stand-in target file, loaded in this process with the session platform's addresses."""
    return load_target(path, environ={**os.environ, **platform.environ()})


def gate(platform: LocalEnvironment, target: Path, reports: Path, match: str) -> dict[str, dict[str, Any]]:
    """Run ``opsgate gate --match`` on the stand-in; returns the checks of its summary by id."""
    reports.mkdir(parents=True, exist_ok=True)
    result = run_opsgate(
        ["gate", "--target", str(target), "--match", match], timeout_s=180,
        env={**platform.environ(), "OPSGATE_REPORTS_DIR": str(reports)},
    )  # fmt: skip
    summary = json.loads(((reports / "latest").resolve() / "summary.json").read_text())
    assert result.returncode == (0 if summary["verdict"] == "pass" else 1), result.stdout[-2000:]
    return {c["id"]: c for c in summary["checks"]}


async def recovered(platform: LocalEnvironment) -> None:
    """Wait until the api and the worker are ready again (after an outage this module caused)."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        for url in (f"{platform.api_url}/readyz", f"{platform.worker_urls[0]}/readyz"):

            async def ready(url: str = url) -> int:
                try:
                    return (await client.get(url)).status_code
                except httpx.HTTPError:
                    return 0

            await poll(ready, lambda status: status == 200, what=f"{url} after the outage", timeout_s=60)


async def test_healthy_every_step_is_ok(platform: LocalEnvironment, external_target: Path) -> None:
    target = loaded(platform, external_target)
    async with httpx.AsyncClient() as client:
        findings = await diagnose(client, target, DIAGNOSIS)
        text = await explain(client, target, DIAGNOSIS)

    assert [(f.step, f.ok) for f in findings] == [(step, True) for step in STEPS], findings
    assert re.fullmatch(r"200 in \d+ ms", findings[0].detail)
    assert findings[1].line() == "redis-ping ok (PONG)"
    assert re.fullmatch(r"depth \d+ < 100", findings[2].detail) and findings[2].threshold == 100
    assert all(f.duration_s < 6.0 for f in findings)
    assert re.fullmatch(
        rf"diagnosis {DIAGNOSIS}: worker-running ok \(200 in \d+ ms\); redis-ping ok \(PONG\); "
        r"send-queue ok \(depth \d+ < 100\)",
        text,
    )


def test_healthy_gate_passes_every_step_and_the_flow(
    platform: LocalEnvironment, external_target: Path, tmp_path: Path
) -> None:
    checks = gate(platform, external_target, tmp_path, f"{DIAGNOSIS} or send-sms-delivered")

    assert {c["verdict"] for c in checks.values()} == {"pass"}, checks
    assert [checks[i]["kind"] for i in STEP_IDS] == ["diagnosis"] * 3
    assert [checks[i]["claim"] for i in STEP_IDS] == [f"seed-001.diagnosis.{step}" for step in STEPS]
    assert "diagnosis" not in checks[FLOW]["message"]  # run only when the flow fails


async def test_worker_stopped_the_send_flow_says_why(
    platform: LocalEnvironment, external_target: Path, tmp_path: Path
) -> None:
    no_backlog = external_target.with_name("no-backlog.yaml")  # the send queue may hold nothing at all
    text = external_target.read_text()
    assert QUEUE_STEP in text
    no_backlog.write_text(text.replace(QUEUE_STEP, QUEUE_STEP + "      max_depth: 0\n"))
    platform.stop_service("worker-1")
    try:
        checks = gate(platform, external_target, tmp_path / "default", f"{DIAGNOSIS} or send-sms-delivered")
        strict = gate(platform, no_backlog, tmp_path / "strict", "send-queue")  # the flow's send still waits
    finally:
        platform.start_service("worker-1")
        await recovered(platform)

    flow = checks[FLOW]
    assert flow["verdict"] == "fail" and "still not met" in flow["message"], flow
    assert f"worker-running FAILED (connection refused to {platform.worker_urls[0]}/health)" in flow["message"]
    assert "; redis-ping ok (PONG); send-queue ok (depth " in flow["message"]
    worker, ping, queue = (checks[i] for i in STEP_IDS)
    assert worker["verdict"] == "fail" and "connection refused" in worker["message"]
    assert (ping["verdict"], queue["verdict"]) == ("pass", "pass")
    backlog = strict[STEP_IDS[2]]
    assert backlog["verdict"] == "fail" and backlog["measured"] >= 1 and backlog["threshold"] == 0, backlog
    assert re.fullmatch(r"send-queue FAILED \(depth \d+ > 0\)", backlog["message"])


async def test_redis_stopped_redis_ping_fails(
    platform: LocalEnvironment, external_target: Path, tmp_path: Path
) -> None:
    target = loaded(platform, external_target)
    platform.stop_service("redis")
    try:
        async with httpx.AsyncClient() as client:
            findings = await diagnose(client, target, DIAGNOSIS)
        checks = gate(platform, external_target, tmp_path, f"{DIAGNOSIS} or send-sms-delivered")
    finally:
        platform.start_service("redis")
        await recovered(platform)

    worker, ping, queue = findings
    assert worker.ok and not ping.ok and not queue.ok, findings
    assert ping.line().startswith("redis-ping FAILED (Redis does not answer PING: ")
    assert queue.line().startswith("send-queue FAILED (could not read the depth of bullmq queue 'send-messages' ")
    assert all(f.duration_s < 7.0 for f in findings)  # each step bounded by its 6 s timeout (+1 s grace)
    assert [checks[i]["verdict"] for i in STEP_IDS] == ["pass", "fail", "fail"]
    assert checks[STEP_IDS[1]]["message"].startswith("redis-ping FAILED (Redis does not answer PING: ")
    flow = checks[FLOW]
    assert flow["verdict"] == "fail" and "worker-running ok (" in flow["message"], flow
    assert "; redis-ping FAILED (Redis does not answer PING: " in flow["message"]


def test_defect_worker_health_route_missing_fails_worker_running(
    platform: LocalEnvironment, external_target: Path, tmp_path: Path
) -> None:
    """The worker runs and its probes pass, but the runbook's ``curl .../health`` answers 404: only this catches it."""
    with defects_planted(platform, "worker-health-route-missing"):
        checks = gate(platform, external_target, tmp_path, f"{DIAGNOSIS} or worker:/")

    worker, ping, queue = (checks[i] for i in STEP_IDS)
    assert worker["verdict"] == "fail", worker
    url = f"{platform.worker_urls[0]}/health"
    assert worker["message"].startswith(f"worker-running FAILED (GET {url}: expected status 200, got 404: "), worker
    assert (ping["verdict"], queue["verdict"]) == ("pass", "pass")
    assert [checks[f"health[worker:{path}]"]["verdict"] for path in ("/healthz", "/readyz")] == ["pass", "pass"]
