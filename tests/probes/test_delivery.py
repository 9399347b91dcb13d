"""The delivery probe's arithmetic: acceptance → provider record, judged against the scaled limit."""

from __future__ import annotations

import pytest

from opsgate.probes.delivery import DeliveryRun


def run_of(latencies: dict[str, float | None], sent: int | None = None) -> DeliveryRun:
    """A run whose messages were accepted at t=100 and recorded ``latency`` seconds later (None: never)."""
    run = DeliveryRun(limit_s=6.0, sent=len(latencies) if sent is None else sent)
    for message_id, latency in latencies.items():
        run.accepted[message_id] = 100.0
        if latency is not None:
            run.recorded[message_id] = 100.0 + latency
    return run


def test_on_time_late_and_missing_are_told_apart() -> None:
    run = run_of({"a": 0.1, "b": 6.0, "c": 6.01, "d": None})
    assert run.in_time() == 2  # the limit itself is within it
    assert run.share() == pytest.approx(0.5)
    assert run.describe().startswith("2/4 delivered within 6s of acceptance (provider's record); 1 late, 1 never")


def test_a_refused_send_counts_as_undelivered() -> None:
    run = run_of({"a": 0.2, "b": 0.3}, sent=4)
    run.refused["status 503"] = 2
    assert run.share() == pytest.approx(0.5)
    assert "2 accepted, refused: 2x status 503" in run.describe()


def test_a_record_before_the_answer_arrived_is_zero_latency() -> None:
    """The worker can reach the provider before the 202 reaches opsgate: never a negative latency."""
    run = run_of({"a": -0.05})
    assert run.latencies_s() == [0.0] and run.share() == 1.0


def test_nothing_sent_is_no_data() -> None:
    assert DeliveryRun(limit_s=6.0).share() is None
