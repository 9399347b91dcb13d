"""Metrics probe: scrape ``/metrics`` endpoints and compute values, ratios and histogram quantiles.

A windowed ratio or quantile is computed from the *deltas* of counters and buckets between two
snapshots, never from totals since process start. A counter that went down between snapshots
(a restarted process) counts from zero, as Prometheus's ``increase`` does.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from opsgate.config import MetricSelector, MetricSource
from opsgate.probes.base import ProbeError
from opsgate.probes.http import fetch

SeriesKey = tuple[str, frozenset[tuple[str, str]]]


@dataclass(frozen=True)
class Snapshot:
    """Every sample of the scraped endpoints at one instant (unix seconds), keyed by name and labels."""

    at: float
    series: dict[SeriesKey, float]
    names: frozenset[str] = frozenset()
    """Every sample name a scraped endpoint declares, also of families with no sample yet."""

    def matching(self, name: str, labels: dict[str, str]) -> dict[SeriesKey, float]:
        """Samples named ``name`` whose labels match ``labels`` (a value ``=~RE`` is a full-match regex)."""
        matchers = [(k, _matcher(v)) for k, v in labels.items()]
        return {
            key: value
            for key, value in self.series.items()
            if key[0] == name and all(match(dict(key[1]).get(k)) for k, match in matchers)
        }


def _matcher(wanted: str) -> Callable[[str | None], bool]:
    """Exact match, or a full-match regular expression when written ``=~RE`` (as in PromQL)."""
    if wanted.startswith("=~"):
        pattern = re.compile(wanted[2:])
        return lambda value: value is not None and pattern.fullmatch(value) is not None
    return lambda value: value == wanted


SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created"), "gauge": ("",), "untyped": ("",)}  # fmt: skip


def parse(text: str, source: str = "") -> dict[SeriesKey, float]:
    """Samples of one exposition text; series of the same name and labels from several sources are summed."""
    return _parse(text, source)[0]


def _parse(text: str, source: str) -> tuple[dict[SeriesKey, float], set[str]]:
    series: dict[SeriesKey, float] = defaultdict(float)
    names: set[str] = set()
    try:
        for family in text_string_to_metric_families(text):
            names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
            for sample in family.samples:
                series[(sample.name, frozenset(sample.labels.items()))] += sample.value
                names.add(sample.name)
    except ValueError as exc:
        raise ProbeError(f"{source or 'metrics'}: not Prometheus exposition text ({exc})") from None
    return dict(series), names


async def scrape(
    client: httpx.AsyncClient, urls: Sequence[str], *, timeout_s: float = 5.0, skip_unreachable: bool = False
) -> Snapshot:
    """Scrape every URL (concurrently) into one snapshot; any endpoint failing raises :class:`ProbeError`.

    With ``skip_unreachable`` (a drill that stopped a scraped process), refused endpoints are left out,
    unless every one is.
    """

    async def one(url: str) -> tuple[dict[SeriesKey, float], set[str]]:
        try:
            response = await fetch(client, "GET", url, timeout_s=timeout_s)
        except ProbeError:
            if skip_unreachable and len(urls) > 1:
                return {}, set()
            raise
        if response.status_code != 200:
            raise ProbeError(f"{url} answered {response.status_code}")
        return _parse(response.text, url)

    if not urls:
        raise ProbeError("the target lists no metrics.scrape endpoints")
    at = time.time()
    merged: dict[SeriesKey, float] = defaultdict(float)
    names: set[str] = set()
    for part, part_names in await asyncio.gather(*(one(url) for url in urls)):
        names |= part_names
        for key, value in part.items():
            merged[key] += value
    return Snapshot(at, dict(merged), frozenset(names))


def _total(snapshot: Snapshot, selector: MetricSelector) -> float | None:
    found = snapshot.matching(selector.name, selector.labels)
    return sum(found.values()) if found else None


def _increase(before: Snapshot, after: Snapshot, name: str, labels: dict[str, str]) -> float | None:
    """Sum of per-series increases; a series that went down (reset) counts from zero."""
    now = after.matching(name, labels)
    if not now:
        return None
    then = before.series
    return sum(v - then.get(k, 0.0) if v >= then.get(k, 0.0) else v for k, v in now.items())


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus's ``histogram_quantile`` over (upper bound, cumulative count) pairs; None without observations.

    Linear interpolation inside the bucket holding the rank; a rank in the ``+Inf`` bucket gives the
    highest finite bound (the true value is unknown above it).
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                finite = [b for b, _ in ordered if not math.isinf(b)]
                return finite[-1] if finite else None
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return ordered[-1][0]


def _buckets(snapshot: Snapshot, histogram: str, labels: dict[str, str]) -> dict[float, float]:
    by_bound: dict[float, float] = defaultdict(float)
    for (_, key_labels), value in snapshot.matching(f"{histogram}_bucket", labels).items():
        bound = dict(key_labels)["le"]
        by_bound[float(bound)] += value
    return dict(by_bound)


@dataclass(frozen=True)
class MetricValue:
    """A computed value and how much data it rests on (observations or counter increase)."""

    value: float | None
    basis: float
    note: str


def evaluate(source: MetricSource, after: Snapshot, before: Snapshot | None = None) -> MetricValue:
    """The source's value at ``after``, or across ``before``→``after`` when ``before`` is given."""
    if source.shape == "value":
        assert source.name is not None
        if before is None:
            total = _total(after, MetricSelector(name=source.name, labels=source.labels))
            return MetricValue(total, 1.0 if total is not None else 0.0, "" if total is not None else "no sample")
        inc = _increase(before, after, source.name, source.labels)
        return MetricValue(inc, inc or 0.0, "" if inc is not None else "no sample")
    if source.shape == "ratio":
        assert source.numerator is not None and source.denominator is not None
        num_sel, den_sel = source.numerator, source.denominator
        if before is None:
            num, den = _total(after, num_sel), _total(after, den_sel)
        else:
            num = _increase(before, after, num_sel.name, num_sel.labels)
            den = _increase(before, after, den_sel.name, den_sel.labels)
        if not den:
            return MetricValue(None, 0.0, f"no {den_sel.name} in the window: ratio undefined")
        return MetricValue((num or 0.0) / den, den, f"{num or 0:g}/{den:g}")
    assert source.histogram is not None and source.quantile is not None
    now = _buckets(after, source.histogram, source.labels)
    if before is not None:
        then = _buckets(before, source.histogram, source.labels)
        now = {b: (c - then.get(b, 0.0) if c >= then.get(b, 0.0) else c) for b, c in now.items()}
    count = now.get(math.inf, 0.0)
    value = histogram_quantile(source.quantile, now.items())
    note = f"{count:g} observations" if value is not None else f"no {source.histogram} observations"
    return MetricValue(value, count, note)
