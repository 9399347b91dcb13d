"""Gate logic: once and windowed verdicts, tolerated failures, deltas, no data is never a pass."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from opsgate.gates import Measure, Rule, judge, judge_delta
from opsgate.probes.base import ProbeError


def values(*seq: float | None) -> itertools.cycle[float | None]:
    return itertools.cycle(seq)


def measure_from(seq: itertools.cycle[float | None]):  # type: ignore[no-untyped-def]
    async def measure() -> Measure:
        return Measure(next(seq))

    return measure


async def test_once_pass_fail_and_no_data() -> None:
    rule = Rule("<", 1.5, "s")
    passed = await judge(measure_from(values(0.2)), rule, record_id="g", kind="metric")
    assert (passed.verdict, passed.measured) == ("pass", 0.2)
    failed = await judge(measure_from(values(1.5)), rule, record_id="g", kind="metric")
    assert failed.verdict == "fail" and failed.message == "measured 1.5 s, expected < 1.5 s"
    empty = await judge(measure_from(values(None)), rule, record_id="g", kind="metric")
    assert empty.verdict == "inconclusive"


async def test_unreachable_is_a_failure_naming_the_address() -> None:
    async def refused() -> Measure:
        raise ProbeError("connection refused to http://127.0.0.1:9/readyz")

    record = await judge(refused, Rule("==", 0.0), record_id="h", kind="health")
    assert record.verdict == "fail" and "connection refused to http://127.0.0.1:9/readyz" in record.message


async def test_window_tolerates_max_failures_and_reports_the_worst() -> None:
    rule = Rule("==", 0.0, "failed probes")
    once = await judge(measure_from(values(0, 1, 0, 0)), rule, record_id="h", kind="health",
                       window_s=0.3, every_s=0.1, max_failures=1)  # fmt: skip
    assert once.verdict == "pass" and len(once.samples) == 4
    twice = await judge(measure_from(values(0, 1, 1, 0)), rule, record_id="h", kind="health",
                        window_s=0.3, every_s=0.1, max_failures=1)  # fmt: skip
    assert twice.verdict == "fail" and twice.message.startswith("2 of 4 samples broke == 0 failed probes")
    assert twice.measured == 1


async def test_delta_judges_the_window_and_waits_for_traffic_to_settle() -> None:
    counter = {"n": 100.0}

    async def snapshot() -> float:
        return counter["n"]

    async def traffic() -> None:
        await asyncio.sleep(0.3)
        counter["n"] += 5  # arrives after the window's last regular sample

    rule = Rule("<", 3.0, "events")
    record = await judge_delta(snapshot, lambda a, b: Measure(b - a), rule, record_id="d", kind="metric",
                               window_s=0.2, every_s=0.1, settle=asyncio.ensure_future(traffic()))  # fmt: skip
    assert record.verdict == "fail" and record.measured == 5  # the total since start (105) is never used
    quiet = await judge_delta(snapshot, lambda a, b: Measure(b - a), rule, record_id="d", kind="metric",
                              window_s=0.2, every_s=0.1)  # fmt: skip
    assert quiet.verdict == "pass" and quiet.measured == 0


async def test_delta_without_data_is_inconclusive() -> None:
    async def snapshot() -> int:
        return 0

    record = await judge_delta(snapshot, lambda a, b: Measure(None, "no observations"), Rule("<", 1.0),
                               record_id="d", kind="metric", window_s=0.1, every_s=0.1)  # fmt: skip
    assert record.verdict == "inconclusive" and "no observations" in record.message


@pytest.mark.parametrize(("op", "value", "holds"), [("<", 1, True), ("<=", 2, True), (">", 2, False),
                                                    (">=", 2, True), ("==", 2, True), ("!=", 2, False)])  # fmt: skip
def test_rule_comparators(op: str, value: float, holds: bool) -> None:
    assert Rule(op, 2.0).holds(value) is holds
