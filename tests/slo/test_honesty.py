"""Each reason a run proves nothing, forced through a real Locust run against the platform: inconclusive.

Each case is judged twice: with the default :class:`Honesty` (inconclusive, the case's reason among the
problems) and with every *other* check switched off (the case's check alone makes it inconclusive), so a
test cannot pass because some neighbouring check happened to fire.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opsgate.environments.local import LocalEnvironment
from opsgate.slo.runner import LoadResult, Plan, run_load
from opsgate.slo.verdict import Honesty, Limits, SloVerdict, judge

pytestmark = pytest.mark.platform

SLO = Limits(p95_ms=500, error_rate=0.01)
NOTHING_ELSE = Honesty(
    **{f.name: 0 if f.name.startswith("min_") else float("inf") for f in dataclasses.fields(Honesty)}
)
"""Every check off (each ``min_*`` at 0, each ``max_*`` unbounded); a case turns its own back on with :func:`only`."""


def only(**check: Any) -> Honesty:
    """Honesty with only ``check`` (a field of :class:`Honesty` at its value) applied."""
    return dataclasses.replace(NOTHING_ELSE, **check)


def reason(verdict: SloVerdict, start: str) -> str:
    """The one problem of an inconclusive ``verdict`` that starts with ``start`` (however its wording goes on)."""
    found = [problem for problem in verdict.problems if problem.startswith(start)]
    assert verdict.verdict == "inconclusive" and len(found) == 1, f"{start!r} not in: {verdict.message}"
    return found[0]


def sole_reason(verdict: SloVerdict, start: str) -> None:
    """``verdict`` is inconclusive for that one reason and no other."""
    reason(verdict, start)
    assert len(verdict.problems) == 1, verdict.message


def served(platform: LocalEnvironment, route: str, since: int) -> int:
    """Requests to ``route`` the api has answered since its timing number ``since``."""
    response = httpx.get(
        f"{platform.api_url}/debug/request-timings", params={"route": route, "since": since}, timeout=10
    )
    response.raise_for_status()
    return len(response.json()["timings"])


def timing_mark(platform: LocalEnvironment) -> int:
    """The api's current request-timing number (what ``since`` counts from)."""
    response = httpx.get(
        f"{platform.api_url}/debug/request-timings", params={"route": "/healthz", "since": 10**12}, timeout=10
    )
    response.raise_for_status()
    next_seq: int = response.json()["next"]
    return next_seq


def when_served(platform: LocalEnvironment, route: str, count: int, action: Callable[[], None]) -> threading.Thread:
    """A started thread that runs ``action`` once the api has answered ``count`` requests to ``route`` (≤ 20 s)."""
    since = timing_mark(platform)

    def wait_then_act() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if served(platform, route, since) >= count:
                action()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=wait_then_act, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def healthy(platform: LocalEnvironment, tmp_path_factory: pytest.TempPathFactory) -> LoadResult:
    """One modest real run: /healthz at 100/s for 3 s (300 requests)."""
    return run_load(Plan(platform.api_url, "/healthz", rate_per_s=100, duration_s=3), tmp_path_factory.mktemp("ok"))


def test_control_a_healthy_run_passes(healthy: LoadResult) -> None:
    verdict = judge(healthy.run, SLO)
    print(f"control: {verdict.count} samples, cpu {healthy.run.cpu_ratio:.0%}: {verdict.verdict}: {verdict.message}")
    assert verdict.verdict == "pass", verdict.message
    assert verdict.problems == [] and verdict.count == 300 and healthy.run.skipped == 0


def test_too_few_samples_for_the_percentile(platform: LocalEnvironment, tmp_path: Path) -> None:
    """150 requests cannot support a p95 (200 needed), though they support a p50 (20 needed)."""
    result = run_load(Plan(platform.api_url, "/healthz", rate_per_s=50, duration_s=3), tmp_path)
    verdict = judge(result.run, SLO)
    print(f"too few: {verdict.message}")
    reason(verdict, "150 samples, fewer than the 200 needed")
    sole_reason(judge(result.run, SLO, only(min_samples=None)), "150 samples, fewer than the 200 needed")
    on_p50 = judge(result.run, Limits(p50_ms=500, error_rate=0.01))
    assert on_p50.verdict == "pass", on_p50.message  # the same evidence suffices for a lower percentile


def test_an_empty_run_never_passes(platform: LocalEnvironment, tmp_path: Path) -> None:
    """0.5/s for 1 s plans no request: Locust runs, sends nothing, and would report percentiles of 0."""
    result = run_load(Plan(platform.api_url, "/healthz", rate_per_s=0.5, duration_s=1), tmp_path)
    assert result.run.planned == 0 and list(result.run.timings) == []
    for limits, needed in ((SLO, 200), (Limits(p99_ms=500), 1000), (Limits(error_rate=0.01), 10), (Limits(), 10)):
        verdict = judge(result.run, limits)
        print(f"empty, {limits}: {verdict.message}")
        reason(verdict, f"0 samples, fewer than the {needed} needed")


def test_a_rate_the_generator_cannot_reach(platform: LocalEnvironment, tmp_path: Path) -> None:
    """2000/s of /readyz (Postgres + Redis checks) with at most 4 in flight: the api answers a fraction of that."""
    result = run_load(Plan(platform.api_url, "/readyz", rate_per_s=2000, duration_s=2, max_in_flight=4), tmp_path)
    verdict = judge(result.run, SLO)
    shortfall = f"achieved {verdict.achieved_rate_per_s:.1f}/s, under 95% of the planned 2000.0/s"
    print(f"unreachable rate: {verdict.message}")
    reason(verdict, shortfall)
    assert verdict.achieved_rate_per_s < 0.95 * 2000
    sole_reason(judge(result.run, SLO, only(min_rate_ratio=0.95)), shortfall)


def test_skipped_slots_over_a_tenth_of_a_percent(platform: LocalEnvironment, tmp_path: Path) -> None:
    """/healthz at 100/s, at most 2 in flight, and the api frozen (SIGSTOP) for 0.1 s one second in.

    Two slots fill the in-flight limit in 20 ms; the next ~8 slots of the freeze are skipped: over 0.1% of
    600, yet the achieved rate stays above 95%, so only the skipped-slot check can tell.
    """
    api = platform.processes["api"].pid
    assert api is not None

    def freeze() -> None:
        os.kill(api, signal.SIGSTOP)
        try:
            time.sleep(0.1)
        finally:
            os.kill(api, signal.SIGCONT)

    freezer = when_served(platform, "/healthz", 100, freeze)
    try:
        result = run_load(Plan(platform.api_url, "/healthz", rate_per_s=100, duration_s=6, max_in_flight=2), tmp_path)
    finally:
        freezer.join(timeout=25)
        os.kill(api, signal.SIGCONT)
    run = result.run
    verdict = judge(run, SLO)
    skipped = f"{run.skipped} of 600 send slots skipped (over 0.1%)"
    print(f"skipped: {verdict.message} (achieved {verdict.achieved_rate_per_s:.1f}/s)")
    assert run.skipped > 0.001 * 600
    sole_reason(verdict, skipped)  # the achieved rate alone would have passed
    sole_reason(judge(run, SLO, only(max_skipped_ratio=0.001)), skipped)


def locust_children() -> Iterator[int]:
    """PIDs of this process's children that run Locust (read from /proc; by PID, never by name)."""
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"locust" in argv[:3]:
                yield int(pid)


def test_a_run_that_ended_early(platform: LocalEnvironment, tmp_path: Path) -> None:
    """A 10 s run whose Locust process is SIGKILLed once the api has answered 50 of its requests."""
    killed: list[int] = []

    def kill_locust() -> None:
        for pid in locust_children():
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killer = when_served(platform, "/healthz", 50, kill_locust)
    started = time.monotonic()
    try:
        result = run_load(Plan(platform.api_url, "/healthz", rate_per_s=50, duration_s=10), tmp_path)
    finally:
        killer.join(timeout=25)
    took = time.monotonic() - started
    verdict = judge(result.run, SLO)
    print(f"ended early after {took:.1f}s (killed {killed}): {verdict.message}")
    assert len(killed) == 1 and took < 10, f"killed {killed} after {took:.1f}s"
    assert result.run.ended_early is not None and "exited with code -9" in result.run.ended_early
    reason(verdict, f"the run ended early: {result.run.ended_early}")
    alone = judge(result.run, SLO, NOTHING_ELSE)  # no other check switches it off (but an empty run never passes)
    reason(alone, "the run ended early: ")
    assert all(p.startswith(("the run ended early: ", "0 samples")) for p in alone.problems), alone.message


def test_a_cpu_bound_load_generator(healthy: LoadResult) -> None:
    """The CPU check judges the figure the runner measured, against each ceiling a row may set.

    A real CPU-bound generator is not reliable on this shared 2-core machine: /healthz at 5,000-20,000/s with
    1,000 in flight measured 96-100% of a core on a quiet machine (4 of 4 runs), but 66-72% (and a run-queue
    wait of 33-44%, under its 50% check) with one busy loop competing. So the control run's measured figure
    (12-15% of a core at 100/s) is judged against a ceiling just under it (inconclusive, naming the figure),
    just over it (pass), and a low one of 2%.
    """
    measured = healthy.run.cpu_ratio
    print(f"measured load-generator CPU: {measured:.1%} of a core")
    assert 0.02 < measured < 1.5  # measured at all, and a share of one core
    verdict = judge(healthy.run, SLO, Honesty(max_cpu_ratio=measured - 0.01))
    print(f"cpu: {verdict.message}")
    sole_reason(verdict, f"a load generator used {measured:.0%} of a core, running or waiting to run (over "
                         f"{measured - 0.01:.0%})")  # fmt: skip
    assert judge(healthy.run, SLO, Honesty(max_cpu_ratio=measured + 0.01)).verdict == "pass"
    low = judge(healthy.run, SLO, Honesty(max_cpu_ratio=0.02))
    sole_reason(low, f"a load generator used {measured:.0%} of a core, running or waiting to run (over 2%)")
