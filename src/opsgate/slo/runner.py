"""Run Locust as a child process in its own process group, with a hard time limit, and read its raw timings.

The pytest process never imports locust (it gevent-patches its importer). Locust's exit code only
detects a crash; the verdict is computed from the raw timings (:mod:`opsgate.slo.verdict`). On the
time limit the whole group is killed, and the run checks that nothing of the group is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsgate.environments.process import default_signal_mask, stat_fields
from opsgate.slo.verdict import Run, Timing

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
CLK_TCK = os.sysconf("SC_CLK_TCK")
GRACE_S = 30.0
"""Beyond the planned duration: start-up and the drain of requests still open."""


class LoadRunError(Exception):
    """Locust could not be run (or left something behind); the message says what and where its log is."""


@dataclass(frozen=True)
class Plan:
    """One open-model run: a request sent ``rate_per_s`` times a second for ``duration_s`` seconds."""

    host: str
    path: str
    rate_per_s: float
    duration_s: float
    method: str = "GET"
    headers: dict[str, str] | None = None
    body: Any = None
    status: int = 200
    max_in_flight: int = 200
    name: str | None = None


@dataclass(frozen=True)
class LoadResult:
    """The run for the verdict, plus Locust's own (rounded) figures and the files it wrote."""

    run: Run
    locust: dict[str, Any]
    files: list[Path]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` so far (seconds), or None when it is gone."""
    fields = stat_fields(pid)  # utime and stime are fields 14 and 15
    return None if fields is None else (int(fields[11]) + int(fields[12])) / CLK_TCK


def run_load(plan: Plan, out_dir: Path) -> LoadResult:
    """Run ``plan`` with Locust (headless, one process) and return its timings; bounded by duration + grace."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = {k: v for k, v in plan.__dict__.items() if k != "host"}
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "1", "-r", "1",
        "--host", plan.host, "--run-time", f"{int(plan.duration_s + GRACE_S)}s", "--stop-timeout", "5",
        "--json-file", str(out_dir / "locust"), "--html", str(out_dir / "locust.html"),
        "--only-summary", "--loglevel", "WARNING",
    ]  # fmt: skip
    env = {**os.environ, "OPSGATE_SLO_SPEC": json.dumps(spec), "OPSGATE_SLO_OUT": str(out_dir)}
    log = out_dir / "locust.log"
    limit_s = plan.duration_s + 2 * GRACE_S
    started = time.monotonic()
    with log.open("wb") as fh:
        process = subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, preexec_fn=default_signal_mask)  # fmt: skip
    busiest = 0.0
    previous = (time.monotonic(), cpu_seconds(process.pid) or 0.0)
    ended_early = None
    while process.poll() is None:
        if time.monotonic() - started > limit_s:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            ended_early = f"killed at the hard limit of {limit_s:g}s"
            break
        time.sleep(0.5)
        now, cpu = time.monotonic(), cpu_seconds(process.pid)
        if cpu is not None and now - previous[0] >= 1.0:
            busiest = max(busiest, (cpu - previous[1]) / (now - previous[0]))
            previous = (now, cpu)
    _check_group_gone(process.pid, log)
    return _collect(plan, out_dir, process.returncode, ended_early, busiest, log)


def _check_group_gone(pgid: int, log: Path) -> None:
    """Nothing of Locust's process group may outlive the run (no orphan load)."""
    for _ in range(50):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(pgid, signal.SIGKILL)
    raise LoadRunError(f"Locust's process group {pgid} was still running after the run; killed (log: {log})")


def _collect(plan: Plan, out_dir: Path, code: int | None, ended_early: str | None, busiest: float,
             log: Path) -> LoadResult:  # fmt: skip
    parts = [json.loads(p.read_text()) for p in sorted(out_dir.glob("timings-*.json"))]
    if code not in (0, None) and ended_early is None:
        ended_early = f"locust exited with code {code} (log: {log})"
    if not parts and ended_early is None:
        ended_early = f"no timings were written (log: {log})"
    timings = [Timing(at, ms, ok) for part in parts for at, ms, ok in part["timings"]]
    planned = sum(int(part["planned"]) for part in parts) or int(plan.rate_per_s * plan.duration_s)
    elapsed = max((float(part["elapsed_s"]) for part in parts), default=0.0)
    skipped = sum(int(part["skipped"]) for part in parts)
    duration = elapsed or plan.duration_s
    run = Run(timings, planned=planned, planned_duration_s=plan.duration_s, actual_duration_s=duration,
              skipped=skipped, ended_early=ended_early, cpu_ratio=busiest)  # fmt: skip
    locust_json = out_dir / "locust.json"
    figures: dict[str, Any] = {}
    if locust_json.exists():
        stats = json.loads(locust_json.read_text())
        figures = stats[0] if isinstance(stats, list) and stats else {}
    files = [p for p in (locust_json, out_dir / "locust.html", log) if p.exists()]
    return LoadResult(run, figures, files)
