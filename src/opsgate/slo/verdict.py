"""SLO verdicts from raw request timings: exact percentiles, and the reasons a run proves nothing.

Locust rounds percentiles into buckets (a true 1545 ms p95 reports as 1500 and passes a 1.5 s SLO)
and reports 0 for an empty run; opsgate keeps every request's raw time and judges on those. A run
is **inconclusive** (the gate fails, with the reason) when it has too few samples for the
percentile asked (default fewer than 10/(1-q): 200 for p95), reached less than 95% of the planned
rate, skipped over 0.1% of its send slots, ended early, or its load generator was CPU-bound (over
90% of a core) or starved (waiting for a core over half of any second) — each threshold
configurable. Skipped slots (``max_in_flight`` requests still open: the server fell behind) hide
requests that would have been slower still, so a breach measured despite them is a fail, not
inconclusive. With a ``window_s``, every sub-window of that length must meet the limits too
("p95 < 1.5 s for 5 minutes"), not only the whole run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from opsgate.evidence.records import Verdict

QUANTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}


@dataclass(frozen=True)
class Timing:
    """One request: its intended send time (s from the run's start), latency from that time (ms), success."""

    at_s: float
    latency_ms: float
    ok: bool


@dataclass(frozen=True)
class Limits:
    """What an SLO row promises: percentile ceilings in ms and an error-rate ceiling (ratio); None = unchecked."""

    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    error_rate: float | None = None

    def percentiles(self) -> dict[str, float]:
        """``{"p95": 500.0}`` for each percentile limit given."""
        given = {"p50": self.p50_ms, "p95": self.p95_ms, "p99": self.p99_ms}
        return {name: value for name, value in given.items() if value is not None}


@dataclass(frozen=True)
class Honesty:
    """When a run proves nothing: each default as the issue states it, configurable per SLO row."""

    min_samples: int | None = None
    """Fewest samples to judge on (default: 10/(1-q) for the highest percentile asked)."""
    min_rate_ratio: float = 0.95
    max_skipped_ratio: float = 0.001
    max_cpu_ratio: float = 0.90
    max_wait_ratio: float = 0.50
    """A generator that waited for a core over half of any second (a busy machine) would time its own delays."""


@dataclass(frozen=True)
class Run:
    """What one load run did: every timing, the plan, the slots it could not send, how it ended."""

    timings: Sequence[Timing]
    planned: int
    """Requests the profile planned to send."""
    planned_duration_s: float
    actual_duration_s: float
    skipped: int = 0
    ended_early: str | None = None
    """Why the run stopped before its planned end (a crash, a timeout), or None."""
    cpu_ratio: float = 0.0
    """The busiest load-generator process's CPU demand in its busiest second of the run: time running or runnable
    but waiting for a core, as a share of one core (a generator starved by other work is as bound as a busy one)."""
    wait_ratio: float = 0.0
    """The longest a load-generator process waited for a core in any second of the run (share of that second)."""


@dataclass
class SloVerdict:
    """The verdict of one SLO row with everything it was based on."""

    verdict: Verdict
    message: str
    percentiles_ms: dict[str, float | None] = field(default_factory=dict)
    error_rate: float | None = None
    achieved_rate_per_s: float = 0.0
    planned_rate_per_s: float = 0.0
    count: int = 0
    problems: list[str] = field(default_factory=list)


def exact_percentile(latencies_ms: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile: the smallest value with at least ``q`` of the samples at or below it."""
    if not latencies_ms:
        return None
    ordered = sorted(latencies_ms)
    rank = max(1, math.ceil(q * len(ordered) - 1e-9))
    return ordered[rank - 1]


def needed_samples(limits: Limits, honesty: Honesty) -> int:
    """Fewest samples that can support the highest percentile asked (10/(1-q), e.g. 200 for p95)."""
    if honesty.min_samples is not None:
        return honesty.min_samples
    quantiles = [QUANTILES[name] for name in limits.percentiles()] or [0.0]
    return math.ceil(10 / (1 - max(quantiles)) - 1e-9)


def _breaches(timings: Sequence[Timing], limits: Limits) -> tuple[dict[str, float | None], float | None, list[str]]:
    latencies = [t.latency_ms for t in timings]
    percentiles = {name: exact_percentile(latencies, q) for name, q in QUANTILES.items()}
    errors = sum(1 for t in timings if not t.ok) / len(timings) if timings else None
    missed = []
    for name, ceiling in limits.percentiles().items():
        value = percentiles[name]
        if value is not None and value >= ceiling:
            missed.append(f"{name} {value:.1f} ms ≥ {ceiling:g} ms (by {value - ceiling:.1f} ms)")
    if limits.error_rate is not None and errors is not None and errors >= limits.error_rate:
        missed.append(f"error rate {errors:.2%} ≥ {limits.error_rate:.2%}")
    return percentiles, errors, missed


def judge(run: Run, limits: Limits, honesty: Honesty = Honesty(), *, window_s: float | None = None) -> SloVerdict:
    """Judge ``run`` against ``limits``: inconclusive first (not enough evidence), then pass or fail."""
    timings = list(run.timings)
    planned_rate = run.planned / run.planned_duration_s if run.planned_duration_s > 0 else 0.0
    achieved_rate = len(timings) / run.actual_duration_s if run.actual_duration_s > 0 else 0.0
    percentiles, errors, missed = _breaches(timings, limits)
    result = SloVerdict("pass", "", percentiles, errors, achieved_rate, planned_rate, len(timings))
    needed = needed_samples(limits, honesty)
    problems = result.problems
    saturated: list[str] = []
    """Problems caused only by the server falling behind (slots skipped with ``max_in_flight`` open): they
    hide requests that would have been slower still, so they cannot turn a measured breach into a pass."""
    if len(timings) < max(needed, 1):  # an empty run proves nothing, whatever min_samples says
        problems.append(f"{len(timings)} samples, fewer than the {max(needed, 1)} needed")
    if planned_rate > 0 and achieved_rate < honesty.min_rate_ratio * planned_rate:
        shortfall = (
            f"achieved {achieved_rate:.1f}/s, under {honesty.min_rate_ratio:.0%} of the planned {planned_rate:.1f}/s"
        )
        explained = run.skipped > 0 and len(timings) + run.skipped >= honesty.min_rate_ratio * run.planned
        (saturated if explained else problems).append(shortfall)
    if run.planned and run.skipped / run.planned > honesty.max_skipped_ratio:
        saturated.append(f"{run.skipped} of {run.planned} send slots skipped (over {honesty.max_skipped_ratio:.1%}):"
                         " that many requests were still open")  # fmt: skip
    if saturated and not missed:
        problems += saturated
    if run.ended_early:
        problems.append(f"the run ended early: {run.ended_early}")
    if run.cpu_ratio > honesty.max_cpu_ratio:
        problems.append(f"a load generator used {run.cpu_ratio:.0%} of a core, running or waiting to run (over "
                        f"{honesty.max_cpu_ratio:.0%}): its own delays would be measured")  # fmt: skip
    if run.wait_ratio > honesty.max_wait_ratio:
        problems.append(f"a load generator waited for a core {run.wait_ratio:.0%} of a second (over "
                        f"{honesty.max_wait_ratio:.0%}): the machine was too busy, its own delays would be "
                        "measured")  # fmt: skip
    if problems:
        result.verdict, result.message = "inconclusive", "; ".join(problems)
        return result
    if window_s is not None and window_s > 0:
        missed += _window_breaches(timings, limits, window_s, run.actual_duration_s)
    if missed:
        result.verdict, result.message = "fail", "; ".join(missed + saturated)
    else:
        shown = ", ".join(f"{name} {value:.1f} ms" for name, value in percentiles.items() if value is not None)
        result.message = f"{shown}; error rate {errors:.2%}" if errors is not None else shown
    return result


def _window_breaches(timings: Sequence[Timing], limits: Limits, window_s: float, duration_s: float) -> list[str]:
    """Limits broken inside any whole sub-window of ``window_s`` (a trailing partial window is not judged)."""
    missed = []
    for index in range(int(duration_s // window_s)):
        start, end = index * window_s, (index + 1) * window_s
        inside = [t for t in timings if start <= t.at_s < end]
        if not inside:
            missed.append(f"window {start:g}-{end:g}s: no requests")
            continue
        _, _, broken = _breaches(inside, limits)
        missed += [f"window {start:g}-{end:g}s: {what}" for what in broken]
    return missed
