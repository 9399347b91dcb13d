"""A Locust master and workers: the merged timings add up, and no worker outlives its master."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from opsgate.environments.local import LocalEnvironment
from opsgate.environments.process import stat_fields
from opsgate.faults.journal import Journal
from opsgate.slo.runner import LoadResult, Plan, merge_problem, run_load
from opsgate.slo.verdict import Limits, judge

STOP_WITHIN_S = 10.0
"""The workers must be gone this long after their master is killed (the watchdog needs ~3 s)."""
ROUTE = "/health"
"""A route no other SLO test loads, so the api's counter of it moves only with these runs."""


def alive(pid: int, start_ticks: int) -> bool:
    """The very process (PID *and* start time) still runs; a zombie sends nothing and counts as gone."""
    fields = stat_fields(pid)
    return fields is not None and int(fields[19]) == start_ticks and fields[0] != "Z"


def journaled(folder: Path) -> dict[str, tuple[int, int]]:
    """``name -> (pid, start ticks)`` of every process noted in the journal(s) under ``folder``."""
    found = {}
    for path in folder.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written
            if entry.get("type") == "process":
                found[entry["name"]] = (int(entry["pid"]), int(entry["start_ticks"]))
    return found


def route_requests(platform: LocalEnvironment) -> int:
    """How many ``ROUTE`` requests the api has answered (its ``http_requests_total`` counter)."""
    text = httpx.get(f"{platform.api_url}/metrics", timeout=5).text
    pattern = r'^http_requests_total\{[^}]*route="' + re.escape(ROUTE) + r'"[^}]*\} ([0-9.e+]+)$'
    return int(sum(float(value) for value in re.findall(pattern, text, re.MULTILINE)))


def wait_for(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    """Poll ``check()`` every 0.1 s until true, at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g}s waiting for {what}"
        time.sleep(0.1)


def kill_leftovers(processes: dict[str, tuple[int, int]]) -> list[str]:
    """SIGKILL (by PID, after a start-time check) whatever of ``processes`` still runs; returns their names."""
    left = [name for name, (pid, ticks) in processes.items() if alive(pid, ticks)]
    for name in left:
        os.kill(processes[name][0], signal.SIGKILL)
    return left


def test_two_workers_merge_exactly_what_they_recorded(platform: LocalEnvironment, tmp_path: Path) -> None:
    journal = Journal.create(tmp_path / "journal")
    started = time.monotonic()
    result = run_load(Plan(platform.api_url, ROUTE, rate_per_s=100, duration_s=4, workers=2), tmp_path / "out",
                      journal=journal)  # fmt: skip
    took = time.monotonic() - started
    print(f"\n2 workers: merged {len(result.run.timings)} = {result.worker_counts}, planned {result.run.planned}, "
          f"skipped {result.run.skipped}, in {took:.1f}s")  # fmt: skip
    assert result.run.ended_early is None, result.run.ended_early
    assert len(result.worker_counts) == 2 and all(count > 0 for count in result.worker_counts)
    assert len(result.run.timings) == sum(result.worker_counts)
    assert result.run.planned == 400 and len(result.run.timings) + result.run.skipped == result.run.planned
    assert judge(result.run, Limits(p95_ms=500)).verdict == "pass"
    assert result.locust.get("num_requests") == len(result.run.timings)  # the master's own stats are complete too
    assert sorted(journaled(journal.path.parent)) == ["locust-master", "locust-worker-1", "locust-worker-2"]


def test_closed_model_workers_ship_their_final_chunks_when_the_master_stops(
    platform: LocalEnvironment, tmp_path: Path
) -> None:
    """The master ends a closed-model run at its duration and asks each worker for its final chunk."""
    plan = Plan(platform.api_url, ROUTE, rate_per_s=40, duration_s=3, model="closed", users=4, workers=2)
    result = run_load(plan, tmp_path)
    print(f"\nclosed, 2 workers: merged {len(result.run.timings)} = {result.worker_counts}, "
          f"planned {result.run.planned}, sending window {result.run.actual_duration_s:.2f}s")  # fmt: skip
    assert result.run.ended_early is None, result.run.ended_early
    assert len(result.worker_counts) == 2 and len(result.run.timings) == sum(result.worker_counts) > 0
    assert result.locust.get("num_requests") == len(result.run.timings)


def _wait_until_sending(platform: LocalEnvironment, journal_dir: Path) -> dict[str, tuple[int, int]]:
    """The master and both workers are journaled, and requests to ``ROUTE`` are arriving at the api."""
    wait_for("master and 2 workers", lambda: len(journaled(journal_dir)) == 3, 30)
    before = route_requests(platform)
    wait_for("the workers to send", lambda: route_requests(platform) >= before + 20, 30)
    return journaled(journal_dir)


def _workers_gone_after(workers: dict[str, tuple[int, int]], killed: float) -> float:
    """Seconds from ``killed`` until none of ``workers`` runs (fails after ``STOP_WITHIN_S``)."""
    wait_for("the workers to exit on their own", lambda: not any(alive(*w) for w in workers.values()), STOP_WITHIN_S)
    return time.monotonic() - killed


def _watchdog_lines(out: Path) -> list[str]:
    """What each worker's watchdog said before it exited (one line per worker log)."""
    lines = []
    for log in sorted(out.glob("locust-worker-*.log")):
        said = [line for line in log.read_text().splitlines() if line.startswith("opsgate watchdog:")]
        lines.append(f"{log.name}: {said[0] if said else 'no watchdog line'}")
    return lines


def _no_more_requests(platform: LocalEnvironment) -> tuple[int, int]:
    """The api's ``ROUTE`` counter, read 0.5 s and 2 s after the workers are gone (it must not move)."""
    time.sleep(0.5)
    first = route_requests(platform)
    time.sleep(1.5)
    return first, route_requests(platform)


RUNNER = """
import sys
from pathlib import Path
from opsgate.faults.journal import Journal
from opsgate.slo.runner import Plan, run_load
journal = Journal.create(Path(sys.argv[2]))
run_load(Plan(sys.argv[1], sys.argv[4], rate_per_s=40, duration_s=60, workers=2), Path(sys.argv[3]), journal=journal)
"""


def test_workers_stop_on_their_own_when_the_master_and_the_runner_are_killed(
    platform: LocalEnvironment, tmp_path: Path
) -> None:
    """SIGKILL the runner and the master (by PID); the workers, each in its own session, must stop by themselves."""
    journal_dir, out = tmp_path / "journal", tmp_path / "out"
    with (tmp_path / "runner.log").open("wb") as log:
        runner = subprocess.Popen([sys.executable, "-c", RUNNER, platform.api_url, str(journal_dir), str(out), ROUTE],
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    processes: dict[str, tuple[int, int]] = {}
    try:
        processes = _wait_until_sending(platform, journal_dir)
        workers = {name: p for name, p in processes.items() if name.startswith("locust-worker-")}
        assert len(workers) == 2
        os.kill(processes["locust-master"][0], signal.SIGKILL)
        os.kill(runner.pid, signal.SIGKILL)
        killed = time.monotonic()
        gone_after = _workers_gone_after(workers, killed)
        first, then = _no_more_requests(platform)
        said = _watchdog_lines(out)
        print(f"\nworkers gone {gone_after:.1f}s after the master and runner were killed; "
              f"{ROUTE} requests at the api: {first} then {then}; " + "; ".join(said))  # fmt: skip
        assert then == first, f"{then - first} requests arrived after the workers were gone"
        assert len(said) == 2 and all("opsgate watchdog:" in line for line in said), said
    finally:
        left = kill_leftovers(processes)
        if runner.poll() is None:
            runner.kill()
        runner.wait(timeout=10)
    assert not left, f"still running {STOP_WITHIN_S:g}s after the kill (killed now): {left}"


def test_workers_stop_on_their_own_when_only_the_master_dies(platform: LocalEnvironment, tmp_path: Path) -> None:
    """The heartbeat watchdog alone: the runner (this process, the workers' parent) lives on; only the master dies.

    The run then ends early with the reason, and the runner finds nothing left behind.
    """
    journal_dir = tmp_path / "journal"
    journal = Journal.create(journal_dir)
    outcome: list[LoadResult | BaseException] = []
    plan = Plan(platform.api_url, ROUTE, rate_per_s=40, duration_s=60, workers=2)

    def run() -> None:
        try:
            outcome.append(run_load(plan, tmp_path / "out", journal=journal))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    processes: dict[str, tuple[int, int]] = {}
    try:
        processes = _wait_until_sending(platform, journal_dir)
        workers = {name: p for name, p in processes.items() if name.startswith("locust-worker-")}
        os.kill(processes["locust-master"][0], signal.SIGKILL)
        gone_after = _workers_gone_after(workers, time.monotonic())
        first, then = _no_more_requests(platform)
        said = _watchdog_lines(tmp_path / "out")
        print(f"\nworkers gone {gone_after:.1f}s after only the master was killed; {ROUTE} requests: {first}, {then}; "
              + "; ".join(said))  # fmt: skip
        assert then == first, f"{then - first} requests arrived after the workers were gone"
        assert len(said) == 2 and all("no heartbeat from the master" in line for line in said), said
        thread.join(timeout=30)
        assert outcome and isinstance(outcome[0], LoadResult), outcome
        ended = outcome[0].run.ended_early or ""
        assert "locust-master exited with code -9" in ended and "exited with code 75" in ended, ended
        assert judge(outcome[0].run, Limits(p95_ms=500)).verdict == "inconclusive"
    finally:
        left = kill_leftovers(processes)
    assert not left, f"still running {STOP_WITHIN_S:g}s after the kill (killed now): {left}"


def test_a_merge_that_does_not_add_up_is_named() -> None:
    """The runner's check of the master's merged file: every worker's final count must be in it."""
    row = {"id": "w1", "count": 200, "received": 200, "final": True}
    both = [row, {**row, "id": "w2"}]
    assert merge_problem(2, both, 400) is None
    assert "only 1 of 2 workers" in (merge_problem(2, [row], 200) or "")
    assert "no final report from worker(s) w2 (150 received)" in (
        merge_problem(2, [row, {**row, "id": "w2", "count": None, "received": 150, "final": False}], 350) or ""
    )
    assert "merged 399 timings but the workers recorded 400" in (merge_problem(2, both, 399) or "")
