"""SLO verdicts: exact percentiles, no rounding that passes a miss, and runs that prove nothing are inconclusive."""

from __future__ import annotations

import pytest

from opsgate.slo.verdict import Honesty, Limits, Run, Timing, exact_percentile, judge, needed_samples

P95_500 = Limits(p95_ms=500, error_rate=0.01)


def steady(count: int, latency_ms: float = 100.0, rate_per_s: float = 50.0, **run: object) -> Run:
    timings = [Timing(i / rate_per_s, latency_ms, True) for i in range(count)]
    duration = count / rate_per_s
    defaults: dict[str, object] = {"planned": count, "planned_duration_s": duration, "actual_duration_s": duration}
    return Run(timings, **{**defaults, **run})  # type: ignore[arg-type]


def test_exact_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100 ms
    assert exact_percentile(values, 0.95) == 95.0
    assert exact_percentile(values, 0.5) == 50.0
    assert exact_percentile([7.0], 0.99) == 7.0
    assert exact_percentile([], 0.95) is None


def test_a_true_1545_ms_p95_fails_a_1_5_s_slo_that_rounded_buckets_would_pass() -> None:
    timings = [Timing(i / 50, 1545.0 if i % 10 == 0 else 100.0, True) for i in range(400)]
    run = Run(timings, planned=400, planned_duration_s=8.0, actual_duration_s=8.0)
    result = judge(run, Limits(p95_ms=1500))
    assert result.verdict == "fail" and "p95 1545.0 ms ≥ 1500 ms (by 45.0 ms)" in result.message


def test_a_healthy_run_passes_and_reports_what_it_measured() -> None:
    result = judge(steady(400), P95_500)
    assert result.verdict == "pass", result.message
    assert result.percentiles_ms["p95"] == 100.0 and result.error_rate == 0.0 and result.count == 400


def test_errors_over_the_ceiling_fail() -> None:
    run = steady(400)
    timings = [Timing(t.at_s, t.latency_ms, i % 20 != 0) for i, t in enumerate(run.timings)]  # 5% errors
    result = judge(Run(timings, run.planned, run.planned_duration_s, run.actual_duration_s), P95_500)
    assert result.verdict == "fail" and "error rate 5.00% ≥ 1.00%" in result.message


@pytest.mark.parametrize(
    ("run", "reason"),
    [
        (steady(0), "0 samples, fewer than the 200 needed"),
        (steady(150), "150 samples, fewer than the 200 needed"),
        (steady(400, actual_duration_s=9.0), "achieved 44.4/s, under 95% of the planned 50.0/s"),
        (steady(400, skipped=2), "2 of 400 send slots skipped (over 0.1%)"),
        (steady(400, ended_early="locust exited with code 1"), "the run ended early: locust exited with code 1"),
        (steady(400, cpu_ratio=0.97), "a load generator used 97% of a core, running or waiting to run (over 90%)"),
        (steady(400, wait_ratio=0.6), "a load generator waited for a core 60% of a second (over 50%)"),
    ],
    ids=["empty", "too-few", "rate", "skipped", "ended-early", "cpu-bound", "starved"],
)
def test_a_run_that_proves_nothing_is_inconclusive_never_a_pass(run: Run, reason: str) -> None:
    result = judge(run, P95_500)
    assert result.verdict == "inconclusive" and reason in result.message


def test_the_sample_floor_follows_the_percentile_and_is_configurable() -> None:
    assert needed_samples(Limits(p95_ms=1), Honesty()) == 200
    assert needed_samples(Limits(p99_ms=1), Honesty()) == 1000
    assert needed_samples(Limits(p50_ms=1), Honesty()) == 20
    assert judge(steady(50), P95_500, Honesty(min_samples=50)).verdict == "pass"


def test_a_window_must_hold_in_every_sub_window_not_only_overall() -> None:
    # a 0.4 s stall inside a 20 s run: overall p95 passes, the 5 s window holding the stall does not.
    timings = [Timing(i / 50, 1800.0 if 250 <= i < 270 else 100.0, True) for i in range(1000)]
    run = Run(timings, planned=1000, planned_duration_s=20.0, actual_duration_s=20.0)
    assert judge(run, Limits(p95_ms=1500)).verdict == "pass"
    windowed = judge(run, Limits(p95_ms=1500), window_s=5.0)
    assert windowed.verdict == "fail" and windowed.message.startswith("window 5-10s: p95 1800.0 ms")


def test_skipped_slots_cannot_hide_a_breach_but_make_a_clean_run_inconclusive() -> None:
    """Slots skipped because max_in_flight requests were open hide slower requests: a breach despite them fails."""
    slow = steady(390, latency_ms=1900.0, planned=400, skipped=10)
    result = judge(slow, P95_500)
    assert result.verdict == "fail" and "p95 1900.0 ms ≥ 500 ms" in result.message
    assert "10 of 400 send slots skipped" in result.message
    quick = steady(390, latency_ms=100.0, planned=400, skipped=10)
    assert judge(quick, P95_500).verdict == "inconclusive"
    # A rate shortfall not explained by skipped slots (the generator fell behind) stays inconclusive, breach or not.
    behind = steady(300, latency_ms=1900.0, planned=400, actual_duration_s=8.0)
    assert judge(behind, P95_500).verdict == "inconclusive"


def test_an_empty_run_is_inconclusive_even_when_a_row_asks_for_no_samples() -> None:
    result = judge(steady(0), P95_500, Honesty(min_samples=0))
    assert result.verdict == "inconclusive" and "0 samples, fewer than the 1 needed" in result.message
