"""Inline SVG charts for report.html, computed in Python: no JavaScript, nothing fetched.

Three charts: :func:`sparkline` (a windowed check's samples against its threshold), :func:`series_chart`
(a drill's probe series over time, with its timeline events as markers, the fault shaded and the alert
state as a lane) and :func:`percentile_chart` (an SLO row's exact p50/p95/p99 against its limits). Each
returns one ``<svg class='chart ...'>`` element; every text in it is escaped. Coordinates are pixels.
Empty input, a single point and all-equal values draw without dividing by zero.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

from opsgate.evidence.records import Sample, TimelineEvent

SPARK_POINTS = 60
"""Most points a sparkline draws; longer windows are down-sampled (see :func:`downsample`)."""
SERIES_POINTS = 240
"""Most points per series in a drill chart."""

PASS, FAIL, WARN, MUTED, INK, LINE = "#1a7f37", "#cf222e", "#bf8700", "#8c959f", "#1f2328", "#0969da"

EventKind = str
"""``fault``, ``rollback``, ``alert-pending|firing|resolved``, ``abort``, ``verdict`` (drill start/end), ``step``."""
EVENT_STYLE: dict[EventKind, tuple[str, str, str]] = {
    "fault": (FAIL, "", "fault applied"),
    "rollback": (PASS, "", "rollback"),
    "alert-pending": (WARN, "4 3", "alert pending"),
    "alert-firing": (FAIL, "4 3", "alert firing"),
    "alert-resolved": (PASS, "4 3", "alert resolved"),
    "abort": ("#8250df", "", "abort"),
}
"""Marked event kinds: (colour, dash pattern, legend label). Other steps get a faint grey line."""
_ALERT_STATE = re.compile(r"^(?:alert )?(\S+) (pending|firing|resolved|inactive)\b")
"""``alert X firing`` (declared drills) or ``X firing`` (Python drills): the alert's name and the state seen."""


def event_kind(what: str) -> EventKind:
    """The kind of a drill timeline event, from the names :mod:`opsgate.drills.drill` records."""
    if what.startswith("fault applied"):
        return "fault"
    if what.startswith("rollback"):  # "rollback applied", "rollback FAILED"
        return "rollback"
    if what.startswith("abort"):
        return "abort"
    if what.startswith("drill "):  # "drill started", "drill pass", ...
        return "verdict"
    state = _ALERT_STATE.match(what)
    if state is not None:
        return "alert-" + ("resolved" if state.group(2) == "inactive" else state.group(2))
    return "step"


def _f(value: float) -> str:
    """A coordinate, one decimal (keeps the page small)."""
    return f"{value:.1f}".rstrip("0").rstrip(".") or "0"


def _label(value: float) -> str:
    """A value for a reader: 3 significant digits, whole numbers from 1000 on (no exponents)."""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _span(values: Iterable[float]) -> tuple[float, float]:
    """(low, high) of ``values``, widened when all equal so a scale never divides by zero; (0, 1) when empty."""
    seen = [v for v in values if math.isfinite(v)]
    if not seen:
        return 0.0, 1.0
    low, high = min(seen), max(seen)
    if high - low < 1e-12:
        pad = abs(high) * 0.1 or 1.0
        return low - pad, high + pad
    return low, high


def _scale(low: float, high: float, out_low: float, out_high: float) -> tuple[float, float]:
    """(factor, offset) mapping [low, high] onto [out_low, out_high]; the middle when low == high."""
    if high - low < 1e-12:
        return 0.0, (out_low + out_high) / 2
    factor = (out_high - out_low) / (high - low)
    return factor, out_low - low * factor


def downsample(samples: Sequence[Sample], max_points: int) -> list[Sample]:
    """At most ``max_points`` samples, one per equal bucket in order: a failing or no-data sample of the bucket
    if there is one (so failures stay visible), else its highest value (so peaks do)."""
    if len(samples) <= max_points:
        return list(samples)
    chosen = []
    for bucket in range(max_points):
        part = samples[bucket * len(samples) // max_points : (bucket + 1) * len(samples) // max_points]
        bad = [s for s in part if not s.ok or _value(s) is None]
        chosen.append(bad[0] if bad else max(part, key=lambda s: _value(s) or 0.0))
    return chosen


def _value(sample: Sample) -> float | None:
    """The sample's value; None for no data (and for NaN or infinity, which cannot be drawn)."""
    value = sample.value
    return value if value is not None and math.isfinite(value) else None


def _y(sample: Sample, factor: float, offset: float) -> float | None:
    value = _value(sample)
    return None if value is None else value * factor + offset


def _nodata(css: str, width: int, height: int, text: str = "no data") -> str:
    return (
        f"<svg class='chart {css} nodata' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
        f"role='img'><title>{escape(text)}</title><text x='4' y='{_f(height / 2 + 4)}' font-size='11' "
        f"fill='{MUTED}'>{escape(text)}</text></svg>"
    )


def _polylines(points: Sequence[tuple[float, float | None]], colour: str, width: float = 1.5) -> str:
    """Lines through consecutive points; a None y (no data) breaks the line."""
    runs: list[list[str]] = [[]]
    for x, y in points:
        if y is None:
            runs.append([])
        else:
            runs[-1].append(f"{_f(x)},{_f(y)}")
    return "".join(
        f"<polyline points='{' '.join(run)}' fill='none' stroke='{colour}' stroke-width='{width}' "
        "stroke-linejoin='round'/>"
        for run in runs
        if len(run) > 1
    )


def _numeric(value: float | str | None) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _sample_marks(
    points: Sequence[tuple[float, float | None]], samples: Sequence[Sample], *, bottom: float, tick: float
) -> list[str]:
    """Marks on a sample line: a grey tick (``tick`` px up from ``bottom``) where the target did not answer,
    a red dot on each failing sample, and a dot on a lone sample (a line of one point is invisible)."""
    marks = []
    for (x, y), sample in zip(points, samples, strict=True):
        if y is None:
            marks.append(f"<line class='gap' x1='{_f(x)}' x2='{_f(x)}' y1='{_f(bottom - tick)}' y2='{_f(bottom)}' "
                         f"stroke='{MUTED}' stroke-width='1.5'/>")  # fmt: skip
        elif not sample.ok:
            marks.append(f"<circle class='failing' cx='{_f(x)}' cy='{_f(y)}' r='2.5' fill='{FAIL}'/>")
        elif len(samples) == 1:
            marks.append(f"<circle cx='{_f(x)}' cy='{_f(y)}' r='2.5' fill='{LINE}'/>")
    return marks


def sparkline(samples: Sequence[Sample], threshold: float | str | None, *, width: int = 150, height: int = 30) -> str:
    """A windowed check's samples left to right (by time): value per sample, failing ones as red dots, no-data
    ones as grey ticks at the bottom, the threshold as a dashed line."""
    if not samples:
        return _nodata("spark", width, height, "no samples")
    limit = _numeric(threshold)
    shown = downsample(samples, SPARK_POINTS)
    values = [v for v in map(_value, shown) if v is not None]
    failing = sum(1 for s in samples if not s.ok)
    summary = f"{len(samples)} samples, {failing} failing"
    if values:
        summary += f", {_label(min(values))} to {_label(max(values))}"
    if limit is not None:
        summary += f", threshold {_label(limit)}"
    low, high = _span([*values, *([limit] if limit is not None else [])])
    pad = 3.0
    times = [s.at for s in shown]
    by_time = max(times) - min(times) > 1e-9
    xs = times if by_time else list(range(len(shown)))
    xk, xo = _scale(min(xs), max(xs), pad, width - pad)
    yk, yo = _scale(low, high, height - pad, pad)
    points = [(x * xk + xo, _y(s, yk, yo)) for x, s in zip(xs, shown, strict=True)]
    parts = [
        f"<svg class='chart spark' width='{width}' height='{height}' viewBox='0 0 {width} {height}' role='img' "
        f"data-points='{len(shown)}'><title>{escape(summary)}</title>"
    ]
    if limit is not None:
        at = _f(limit * yk + yo)
        parts.append(f"<line class='threshold' x1='0' x2='{width}' y1='{at}' y2='{at}' stroke='{MUTED}' "
                     "stroke-dasharray='3 2'/>")  # fmt: skip
    parts.append(_polylines(points, LINE))
    parts += _sample_marks(points, shown, bottom=height, tick=5)
    parts.append("</svg>")
    return "".join(parts)


def _ticks(duration_s: float, most: int = 7) -> list[float]:
    """Round tick positions (seconds) from 0 over ``duration_s``: steps of 1, 2 or 5 times a power of 10."""
    if duration_s <= 0:
        return [0.0]
    raw = duration_s / most
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(int(duration_s / step) + 1)]


def _alert_lane(events: Sequence[tuple[int, TimelineEvent, EventKind]], end: float) -> list[tuple[float, float, str]]:
    """(from, to, state) spans of pending/firing alert state, each lasting until the alert's next state event."""
    spans: list[tuple[float, float, str]] = []
    open_since: dict[str, tuple[float, str]] = {}
    for _, event, kind in events:
        if not kind.startswith("alert-"):
            continue
        found = _ALERT_STATE.match(event.what)
        name = found.group(1) if found else event.what
        if name in open_since:
            since, state = open_since.pop(name)
            spans.append((since, event.at, state))
        if kind != "alert-resolved":
            open_since[name] = (event.at, kind.removeprefix("alert-"))
    spans += [(since, end, state) for since, state in open_since.values()]
    return spans


def _fault_spans(events: Sequence[tuple[int, TimelineEvent, EventKind]], end: float) -> list[tuple[float, float]]:
    """(from, to) of each fault: from ``fault applied`` to the next rollback (or the chart's end)."""
    spans, since = [], None
    for _, event, kind in events:
        if kind == "fault" and since is None:
            since = event.at
        elif kind == "rollback" and since is not None:
            spans.append((since, event.at))
            since = None
    if since is not None:
        spans.append((since, end))
    return spans


def series_chart(
    series: Mapping[str, Sequence[Sample]],
    events: Sequence[TimelineEvent],
    *,
    start: float | None = None,
    end: float | None = None,
    width: int = 960,
    panel_height: int = 80,
) -> str:
    """A drill over time (seconds from ``start``): one panel per probe series (its own y scale), the fault(s)
    shaded, timeline events as vertical markers numbered as in the timeline table (fault, rollback and alert
    states in their own colours), and a lane of the alert state (pending, firing) the drill observed."""
    times = [s.at for samples in series.values() for s in samples] + [e.at for e in events]
    if not times:
        return _nodata("series", width, 40)
    t0 = start if start is not None else min(times)
    t1 = end if end is not None else max(times)
    t1 = max(t1, max(times), t0 + 1e-3)
    t0 = min(t0, min(times))
    numbered = [(i + 1, e, event_kind(e.what)) for i, e in enumerate(events)]
    lane = _alert_lane(numbered, t1)
    left, right, top, gap, lane_h, axis_h, legend_h = 56, 12, 16, 10, 14, 18, 18
    panels = [(name, samples) for name, samples in series.items()]
    plot_h = len(panels) * (panel_height + gap) + (lane_h + gap if lane else 0)
    if not panels and not lane:
        plot_h = 24
    height = top + plot_h + axis_h + legend_h
    xk, xo = _scale(t0, t1, left, width - right)

    def x(t: float) -> str:
        return _f(t * xk + xo)

    parts = [
        f"<svg class='chart series' width='{width}' height='{height}' viewBox='0 0 {width} {height}' role='img' "
        f"data-series='{len(panels)}' data-events='{len(events)}'>"
        f"<title>{escape(', '.join(series) or 'timeline')} over {_label(t1 - t0)} s, {len(events)} events</title>"
    ]
    bottom = top + plot_h
    for since, until in _fault_spans(numbered, t1):
        parts.append(f"<rect class='fault-span' x='{x(since)}' y='{top}' width='{_f(max((until - since) * xk, 1))}' "
                     f"height='{plot_h}' fill='{FAIL}' fill-opacity='.08'/>")  # fmt: skip
    y = top
    for name, samples in panels:
        parts.append(_panel(name, downsample(samples, SERIES_POINTS), x, y, panel_height, left, width - right))
        y += panel_height + gap
    if lane:
        parts.append(
            f"<text x='{left - 4}' y='{y + 11}' font-size='10' text-anchor='end' fill='{INK}'>alert</text>"
            f"<rect x='{left}' y='{y}' width='{width - right - left}' height='{lane_h}' fill='#f6f8fa'/>"
        )
        for since, until, state in lane:
            colour = FAIL if state == "firing" else WARN
            parts.append(
                f"<rect class='alert-{state}' x='{x(since)}' y='{y}' width='{_f(max((until - since) * xk, 1))}'"
                f" height='{lane_h}' fill='{colour}' fill-opacity='.75'><title>{state}</title></rect>"
            )
    parts.append(f"<line x1='{left}' x2='{width - right}' y1='{bottom}' y2='{bottom}' stroke='{MUTED}'/>")
    for tick in _ticks(t1 - t0):
        parts.append(f"<text x='{x(t0 + tick)}' y='{bottom + 13}' font-size='10' text-anchor='middle' "
                     f"fill='{MUTED}'>+{_label(tick)}s</text>")  # fmt: skip
    for number, event, kind in numbered:
        parts.append(_marker(number, event, kind, x(event.at), top, bottom, t0))
    parts.append(_legend(sorted({k for _, _, k in numbered if k in EVENT_STYLE}, key=list(EVENT_STYLE).index),
                         left, height - 5, bool(_fault_spans(numbered, t1))))  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _panel(
    name: str, samples: Sequence[Sample], x: Callable[[float], str], y: float, h: float, left: float, right: float
) -> str:
    """One series in the band [y, y+h]: its name, its low/high labels, its line, failing and no-data points."""
    values = [v for v in map(_value, samples) if v is not None]
    low, high = _span([0.0, *values]) if values and min(values) >= 0 else _span(values)
    yk, yo = _scale(low, high, y + h - 2, y + 2)
    parts = [
        f"<g class='panel' data-series='{escape(name, quote=True)}'>"
        f"<rect x='{left}' y='{_f(y)}' width='{_f(right - left)}' height='{_f(h)}' fill='none' stroke='#eaeef2'/>"
        f"<text x='{left + 4}' y='{_f(y + 11)}' font-size='10' fill='{INK}'>{escape(name)}</text>"
        f"<text x='{left - 4}' y='{_f(y + 9)}' font-size='10' text-anchor='end' fill='{MUTED}'>{_label(high)}</text>"
        f"<text x='{left - 4}' y='{_f(y + h)}' font-size='10' text-anchor='end' fill='{MUTED}'>{_label(low)}</text>"
    ]
    if not values:
        parts.append(f"<text x='{left + 4}' y='{_f(y + h / 2 + 4)}' font-size='11' fill='{MUTED}'>no data</text>")
    points = [(float(x(s.at)), _y(s, yk, yo)) for s in samples]
    parts.append(_polylines(points, LINE))
    parts += _sample_marks(points, samples, bottom=y + h, tick=6)
    parts.append("</g>")
    return "".join(parts)


def _marker(number: int, event: TimelineEvent, kind: EventKind, x: str, top: float, bottom: float, t0: float) -> str:
    """A vertical line at an event; marked kinds get their colour, dash and number, other steps a faint line."""
    title = f"#{number} +{event.at - t0:.2f}s {event.what}" + (f": {event.detail}" if event.detail else "")
    title = escape(title if len(title) <= 300 else title[:297] + "...")
    if kind not in EVENT_STYLE:
        return (f"<line class='event ev-{kind}' data-kind='{kind}' x1='{x}' x2='{x}' y1='{top}' y2='{_f(bottom)}' "
                f"stroke='{MUTED}' stroke-opacity='.35'><title>{title}</title></line>")  # fmt: skip
    colour, dash, _ = EVENT_STYLE[kind]
    dashed = f" stroke-dasharray='{dash}'" if dash else ""
    return (
        f"<g class='event ev-{kind}' data-kind='{kind}'><title>{title}</title>"
        f"<line x1='{x}' x2='{x}' y1='{top}' y2='{_f(bottom)}' stroke='{colour}' stroke-width='1.5'{dashed}/>"
        f"<text x='{x}' y='{top - 4}' font-size='10' text-anchor='middle' fill='{colour}'>{number}</text></g>"
    )


def _legend(kinds: Sequence[EventKind], left: float, y: float, fault_span: bool) -> str:
    parts, x = ["<g class='legend' font-size='10'>"], left
    if fault_span:
        parts.append(f"<rect x='{x}' y='{_f(y - 8)}' width='10' height='10' fill='{FAIL}' fill-opacity='.15'/>"
                     f"<text x='{x + 14}' y='{_f(y)}' fill='{INK}'>fault holds</text>")  # fmt: skip
        x += 84
    for kind in kinds:
        colour, dash, label = EVENT_STYLE[kind]
        dashed = f" stroke-dasharray='{dash}'" if dash else ""
        parts.append(
            f"<line x1='{x}' x2='{x + 12}' y1='{_f(y - 3)}' y2='{_f(y - 3)}' stroke='{colour}' "
            f"stroke-width='2'{dashed}/><text x='{x + 16}' y='{_f(y)}' fill='{INK}'>{label}</text>"
        )
        x += 22 + 6 * len(label)
    parts.append("</g>")
    return "".join(parts)


@dataclass(frozen=True)
class Percentile:
    """One bar of :func:`percentile_chart`: the exact value, its limit and Locust's rounded figure (ms)."""

    name: str
    exact_ms: float | None
    limit_ms: float | None = None
    locust_ms: float | None = None


def percentile_chart(rows: Sequence[Percentile], *, width: int = 240) -> str:
    """Horizontal bars of exact percentiles from 0 ms: red when over its limit, the limit as a black tick,
    Locust's rounded figure as a hollow diamond."""
    values = [v for r in rows for v in (r.exact_ms, r.limit_ms, r.locust_ms) if v is not None and math.isfinite(v)]
    if not rows or not values:
        return _nodata("percentiles", width, 24, "no percentiles")
    row_h, left, right, axis_h = 18, 34, 52, 14
    height = len(rows) * row_h + axis_h
    top = max(values) * 1.08 or 1.0
    xk, xo = _scale(0.0, top, left, width - right)
    parts = [
        f"<svg class='chart percentiles' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
        f"role='img'><title>exact percentiles (ms) against limits</title>"
    ]
    for i, row in enumerate(rows):
        y = i * row_h
        parts.append(f"<text x='0' y='{y + 12}' font-size='11' fill='{INK}'>{escape(row.name)}</text>")
        if row.exact_ms is None:
            parts.append(f"<text x='{left}' y='{y + 12}' font-size='11' fill='{MUTED}'>no data</text>")
        else:
            over = row.limit_ms is not None and row.exact_ms >= row.limit_ms
            bar = max(row.exact_ms * xk, 1.0)
            parts.append(
                f"<rect class='bar{' over' if over else ''}' x='{left}' y='{y + 3}' width='{_f(bar)}' height='11' "
                f"fill='{FAIL if over else LINE}'><title>{escape(row.name)} {row.exact_ms:.1f} ms</title></rect>"
                f"<text x='{_f(left + bar + 4)}' y='{y + 12}' font-size='10' fill='{INK}'>{_label(row.exact_ms)}</text>"
            )
        if row.limit_ms is not None:
            lx = _f(row.limit_ms * xk + xo)
            parts.append(f"<line class='limit' x1='{lx}' x2='{lx}' y1='{y + 1}' y2='{y + 16}' stroke='{INK}' "
                         f"stroke-width='2'><title>limit {_label(row.limit_ms)} ms</title></line>")  # fmt: skip
        if row.locust_ms is not None:
            cx, cy = row.locust_ms * xk + xo, y + 8.5
            parts.append(
                f"<path class='locust' d='M{_f(cx)} {_f(cy - 4)}l4 4-4 4-4-4z' fill='#fff' stroke='{WARN}' "
                f"stroke-width='1.5'><title>Locust (rounded) {_label(row.locust_ms)} ms</title></path>"
            )
    axis_y = len(rows) * row_h + 11
    parts.append(f"<text x='{left}' y='{axis_y}' font-size='10' fill='{MUTED}'>0</text>"
                 f"<text x='{width - right}' y='{axis_y}' font-size='10' text-anchor='end' fill='{MUTED}'>"
                 f"{_label(top)} ms</text></svg>")  # fmt: skip
    return "".join(parts)
