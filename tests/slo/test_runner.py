"""Locust runs as a child in its own group; verdicts come from raw timings, and a stalled server shows in them."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
from pathlib import Path

from opsgate.environments.local import LocalEnvironment
from opsgate.environments.process import process_start_time
from opsgate.faults.journal import Journal
from opsgate.slo.runner import LoadResult, Plan, fill_uuids, planned_count, run_load, send_offsets
from opsgate.slo.verdict import Limits, SloVerdict, judge


def test_a_healthy_open_model_run_passes_on_exact_percentiles(platform: LocalEnvironment, tmp_path: Path) -> None:
    result = run_load(Plan(platform.api_url, "/healthz", rate_per_s=100, duration_s=4), tmp_path)
    verdict = judge(result.run, Limits(p95_ms=500, error_rate=0.01))
    assert verdict.verdict == "pass", verdict.message
    assert verdict.count == 400 and result.run.skipped == 0
    assert result.locust.get("num_requests") == 400  # Locust's own count agrees with the raw timings
    assert (tmp_path / "locust.html").exists()


def _frozen_run(platform: LocalEnvironment, plan: Plan, out: Path) -> tuple[LoadResult, SloVerdict]:
    """``plan`` with the api frozen (SIGSTOP) for 2 s, starting 4 s after the call (Locust starts in ~1.5 s)."""
    api = platform.processes["api"]
    assert api.pid is not None

    def freeze() -> None:
        os.kill(api.pid, signal.SIGSTOP)  # type: ignore[arg-type]
        try:
            threading.Event().wait(2.0)
        finally:
            os.kill(api.pid, signal.SIGCONT)  # type: ignore[arg-type]

    timer = threading.Timer(4.0, freeze)
    timer.start()
    try:
        result = run_load(plan, out)
    finally:
        timer.join()
    return result, judge(result.run, Limits(p95_ms=1000))


def test_a_frozen_server_shows_in_the_open_model_percentiles(platform: LocalEnvironment, tmp_path: Path) -> None:
    """Coordinated omission: the api is frozen (SIGSTOP) for 2 s of a 10 s constant-rate run.

    The open model (each latency from the intended send time) shows the freeze in p95; the closed model on the same
    plan (users waiting for answers, each latency from the actual send) shows it only as requests it never sent.
    """
    plan = Plan(platform.api_url, "/healthz", rate_per_s=50, duration_s=10)
    _, open_verdict = _frozen_run(platform, plan, tmp_path / "open")
    closed_plan = Plan(platform.api_url, "/healthz", rate_per_s=50, duration_s=10, model="closed", users=10)
    _, closed_verdict = _frozen_run(platform, closed_plan, tmp_path / "closed")
    for label, verdict in (("open model  ", open_verdict), ("closed model", closed_verdict)):
        p95, p99 = verdict.percentiles_ms["p95"], verdict.percentiles_ms["p99"]
        print(f"\n{label}: p95 {p95 or 0:.0f} ms, p99 {p99 or 0:.0f} ms over {verdict.count} requests "
              f"({verdict.achieved_rate_per_s:.1f}/s of {verdict.planned_rate_per_s:.1f}/s) → {verdict.verdict}: "
              f"{verdict.message}")  # fmt: skip
    p95 = open_verdict.percentiles_ms["p95"]
    assert open_verdict.verdict == "fail" and p95 is not None and p95 >= 1000, open_verdict.message
    shortfall = any("achieved" in problem and "of the planned" in problem for problem in closed_verdict.problems)
    assert closed_verdict.count < open_verdict.count or shortfall, closed_verdict.message


def test_an_open_model_ramp_plans_along_the_curve(platform: LocalEnvironment, tmp_path: Path) -> None:
    """A 2 s linear ramp to 100/s within 4 s plans 100 + 200 = 300 requests, sent no faster than the curve."""
    assert planned_count(100, 4, 2) == 300 and planned_count(100, 4) == 400 and planned_count(0, 4) == 0
    offsets = send_offsets(100, 4, 2)
    assert len(offsets) == 300 and offsets == sorted(offsets) and offsets[-1] < 4
    assert sum(1 for at in offsets if at < 1) == 25  # a quarter of the ramp's 100 in its first half
    result = run_load(Plan(platform.api_url, "/healthz", rate_per_s=100, duration_s=4, ramp_s=2), tmp_path)
    verdict = judge(result.run, Limits(p95_ms=500))
    assert result.run.planned == 300 and verdict.count == 300, verdict.message
    assert verdict.verdict == "pass", verdict.message
    first_second = [t for t in result.run.timings if t.at_s < 1]
    assert len(first_second) == 25


def test_uuid_placeholders_are_filled_fresh_for_every_occurrence() -> None:
    counter = itertools.count()
    filled = fill_uuids(
        {"to": "slo-{uuid}@example.test", "tags": ["{uuid}", "{other}", 3], "n": None, "p": "{uuid}-{uuid}"},
        lambda: f"u{next(counter)}",
    )
    assert filled == {"to": "slo-u0@example.test", "tags": ["u1", "{other}", 3], "n": None, "p": "u2-u3"}
    assert fill_uuids("/v1/{uuid}") != fill_uuids("/v1/{uuid}")


def test_signed_bodies_with_fresh_uuids_are_each_accepted_once(platform: LocalEnvironment, tmp_path: Path) -> None:
    """The billing webhook checks the HMAC signature (401 when wrong) and answers 202 only for a new event id
    (200 ``duplicate`` for a repeat): every request accepted means every body was signed and unique."""
    plan = Plan(
        platform.api_url, "/billing/webhooks/sandbox", rate_per_s=20, duration_s=2, method="POST",
        body={"id": "evt-slo-{uuid}", "type": "invoice.created", "data": {}}, status=202,
        sign_header="X-Sandbox-Signature", sign_secret=platform.credentials.billing_webhook_secret,
    )  # fmt: skip
    assert platform.credentials.billing_webhook_secret not in repr(plan)
    result = run_load(plan, tmp_path)
    assert len(result.run.timings) == 40 and all(t.ok for t in result.run.timings), result.locust
    for path in result.files:
        assert platform.credentials.billing_webhook_secret not in path.read_text(errors="replace"), path


def test_every_locust_process_is_journaled_with_its_start_time(platform: LocalEnvironment, tmp_path: Path) -> None:
    journal = Journal.create(tmp_path / "journal")
    plan = Plan(platform.api_url, "/healthz", rate_per_s=20, duration_s=1)
    result = run_load(plan, tmp_path / "out", journal=journal)
    assert len(result.run.timings) == 20, result.run.ended_early
    entries = [json.loads(line) for line in journal.path.read_text().splitlines()]
    processes = [e for e in entries if e["type"] == "process"]
    assert [e["name"] for e in processes] == ["locust"]
    assert isinstance(processes[0]["start_ticks"], int) and processes[0]["start_ticks"] > 0
    assert process_start_time(processes[0]["pid"]) != processes[0]["start_ticks"]  # and it is gone now
