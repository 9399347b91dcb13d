"""Locust runs as a child in its own group; verdicts come from raw timings, and a stalled server shows in them."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from opsgate.environments.local import LocalEnvironment
from opsgate.slo.runner import Plan, run_load
from opsgate.slo.verdict import Limits, judge


def test_a_healthy_open_model_run_passes_on_exact_percentiles(platform: LocalEnvironment, tmp_path: Path) -> None:
    result = run_load(Plan(platform.api_url, "/healthz", rate_per_s=100, duration_s=4), tmp_path)
    verdict = judge(result.run, Limits(p95_ms=500, error_rate=0.01))
    assert verdict.verdict == "pass", verdict.message
    assert verdict.count == 400 and result.run.skipped == 0
    assert result.locust.get("num_requests") == 400  # Locust's own count agrees with the raw timings
    assert (tmp_path / "locust.html").exists()


def test_a_frozen_server_shows_in_the_open_model_percentiles(platform: LocalEnvironment, tmp_path: Path) -> None:
    """Coordinated omission: the api is frozen (SIGSTOP) for 2 s of a 10 s constant-rate run."""
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
        result = run_load(Plan(platform.api_url, "/healthz", rate_per_s=50, duration_s=10), tmp_path)
    finally:
        timer.join()
    verdict = judge(result.run, Limits(p95_ms=1000))
    p95, p99 = verdict.percentiles_ms["p95"], verdict.percentiles_ms["p99"]
    print(f"open model: p95 {p95:.0f} ms, p99 {p99:.0f} ms over {verdict.count} requests")
    assert verdict.verdict == "fail" and p95 is not None and p95 >= 1000, verdict.message
