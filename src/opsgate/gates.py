"""Gates: a probe compared with a threshold, once or over a window, producing a :class:`CheckRecord`.

Shared by checks and drills. A window samples every ``every_s`` seconds for ``window_s`` seconds
(both already scaled by the caller); the number of samples is bounded by the window, and the
whole evaluation by a deadline.
"""

from __future__ import annotations

import asyncio
import math
import operator
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from opsgate.evidence.records import CheckRecord, Sample
from opsgate.probes.base import ProbeError

OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
MAX_SAMPLES = 10_000
S = TypeVar("S")


@dataclass(frozen=True)
class Measure:
    """A measured value (None = no data to judge) with a note for the evidence."""

    value: float | None
    note: str = ""


@dataclass(frozen=True)
class Rule:
    """What a value must satisfy: ``value <op> threshold`` in ``unit``."""

    op: str
    threshold: float
    unit: str = ""

    def holds(self, value: float) -> bool:
        """True when ``value`` satisfies the rule."""
        return OPS[self.op](value, self.threshold)

    def worst(self, values: list[float]) -> float:
        """The value furthest on the failing side (max for '<', min for '>')."""
        return min(values) if self.op in (">", ">=") else max(values)

    def describe(self) -> str:
        """``< 1.5 s`` style text."""
        return f"{self.op} {self.threshold:g}{(' ' + self.unit) if self.unit else ''}"


def _fmt(value: float, unit: str) -> str:
    return f"{value:.4g}{(' ' + unit) if unit else ''}"


def _record(record_id: str, kind: str, rule: Rule, claim: str | None, started: float) -> CheckRecord:
    return CheckRecord(
        id=record_id, kind=kind, verdict="inconclusive", op=rule.op, threshold=rule.threshold, unit=rule.unit,
        claim=claim, started_at=started,
    )  # fmt: skip


async def _sample(measure: Callable[[], Awaitable[Measure]], rule: Rule) -> Sample:
    at = time.time()
    try:
        result = await measure()
    except ProbeError as exc:
        return Sample(at, None, False, str(exc), reached=False)
    if result.value is None:
        return Sample(at, None, False, result.note or "no data")
    return Sample(at, result.value, rule.holds(result.value), result.note)


async def judge(
    measure: Callable[[], Awaitable[Measure]],
    rule: Rule,
    *,
    record_id: str,
    kind: str,
    claim: str | None = None,
    window_s: float | None = None,
    every_s: float = 1.0,
    max_failures: int = 0,
) -> CheckRecord:
    """Judge ``measure`` once, or every ``every_s`` over ``window_s`` allowing ``max_failures`` failing samples.

    Unreachable (a :class:`ProbeError`) is a failing sample; no data at all is inconclusive.
    """
    record = _record(record_id, kind, rule, claim, time.time())
    count = 1 if window_s is None else min(MAX_SAMPLES, max(2, math.floor(window_s / every_s + 1e-9) + 1))
    started = time.monotonic()
    for index in range(count):
        if index:
            await asyncio.sleep(max(0.0, started + index * every_s - time.monotonic()))
        record.samples.append(await _sample(measure, rule))
    record.finished_at = time.time()
    samples = record.samples
    values = [s.value for s in samples if s.value is not None]
    failures = [s for s in samples if not s.ok]
    if values:
        record.measured = rule.worst(values)
    span = f" over {window_s:g}s ({len(samples)} samples)" if window_s is not None else ""
    if not values and all(s.reached for s in samples):
        record.verdict = "inconclusive"
        record.message = f"no data to judge{span}: {samples[-1].note}"
    elif len(failures) > max_failures:
        record.verdict = "fail"
        first = failures[0]
        what = _fmt(first.value, rule.unit) if first.value is not None else first.note
        allowed = f" (at most {max_failures} allowed)" if window_s is not None else ""
        record.message = (
            f"{len(failures)} of {len(samples)} samples broke {rule.describe()}{allowed}; first: {what}"
            if window_s is not None
            else f"measured {what}, expected {rule.describe()}"
        )
    else:
        record.verdict = "pass"
        record.message = f"worst {_fmt(rule.worst(values), rule.unit)}{span}"
        if failures:
            record.message += f"; {len(failures)} sample(s) broke {rule.describe()}, {max_failures} allowed"
        else:
            record.message += f", within {rule.describe()}"
    return record


async def judge_delta(
    snapshot: Callable[[], Awaitable[S]],
    compute: Callable[[S, S], Measure],
    rule: Rule,
    *,
    record_id: str,
    kind: str,
    window_s: float,
    every_s: float,
    claim: str | None = None,
    settle: Awaitable[object] | None = None,
) -> CheckRecord:
    """Judge the change across a window: snapshot at the start, then every ``every_s``; the verdict uses the last.

    Intermediate values (start → each sample) are kept as samples for the evidence. ``settle`` (e.g.
    synthetic traffic still in flight) is awaited before one final snapshot, so slow requests count.
    """
    record = _record(record_id, kind, rule, claim, time.time())
    try:
        first = await snapshot()
        count = min(MAX_SAMPLES, max(1, math.floor(window_s / every_s + 1e-9)))
        started = time.monotonic()
        result = Measure(None, "window not sampled")
        for index in range(1, count + 1):
            await asyncio.sleep(max(0.0, started + index * every_s - time.monotonic()))
            result = compute(first, await snapshot())
            ok = result.value is not None and rule.holds(result.value)
            record.samples.append(Sample(time.time(), result.value, ok, result.note))
        if settle is not None:
            await settle
            result = compute(first, await snapshot())
            ok = result.value is not None and rule.holds(result.value)
            record.samples.append(Sample(time.time(), result.value, ok, result.note))
    except ProbeError as exc:
        record.finished_at = time.time()
        record.verdict = "fail"
        record.message = str(exc)
        return record
    record.finished_at = time.time()
    span = f"over {window_s:g}s"
    if result.value is None:
        record.verdict = "inconclusive"
        record.message = f"no data to judge {span}: {result.note}"
        return record
    record.measured = result.value
    passed = rule.holds(result.value)
    record.verdict = "pass" if passed else "fail"
    basis = f" ({result.note})" if result.note else ""
    relation = "within" if passed else "expected"
    record.message = f"{_fmt(result.value, rule.unit)} {span}{basis}, {relation} {rule.describe()}"
    return record
