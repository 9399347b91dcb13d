"""Boundary tests for each documented threshold, generated for and run by the real ``promtool test rules``.

Per threshold, two test groups in one file (so a must-not-fire test never passes alone):

- **under**: the input held just under the threshold (2% below; for event counts, exactly the
  count) never fires — evaluated every 30 s on a 1-minute scrape grid, so off-grid evaluation
  (where ``increase`` extrapolates, 5 events → ~5.36) is tested too;
- **over**: held just over (2% above; one event more): pending and not firing before ``for``,
  firing with its severity after it, then back under: resolved.

promtool 2.42's traps are handled: every group has ``interval``; pending is read from
``ALERTS{alertstate="pending"}``; a warning such as a rule file matching nothing fails the run.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from opsgate.alerts.conformance import normalise
from opsgate.config import AlertInput, AlertThreshold

MARGIN = 0.02  # "just" over/under: 2% of the threshold
SCRAPE_S = 60
EVALUATION = "30s"
OBSERVATIONS_PER_MIN = 1000
SETTLE_MIN = 20  # longest rate/increase window in the rules (15m) plus margin
TIMEOUT_S = 60.0


def minutes(seconds: float) -> int:
    """Whole minutes covering ``seconds``."""
    return math.ceil(seconds / 60)


def _labels(metric: str, labels: dict[str, str], extra: dict[str, str] | None = None) -> str:
    merged = {**labels, **(extra or {})}
    inner = ",".join(f'{k}="{v}"' for k, v in merged.items())
    return f"{metric}{{{inner}}}"


def _values(levels: Sequence[float]) -> str:
    return " ".join(f"{v:.6g}" for v in levels)


def _cumulative(increments: list[float]) -> list[float]:
    total, out = 0.0, []
    for step in increments:
        out.append(total)
        total += step
    return out


def quantile_fractions(q: float, value: float, buckets: list[float]) -> dict[float, float]:
    """Share of observations per bucket upper bound so that ``histogram_quantile(q)`` gives ``value``."""
    bounds = sorted(buckets)
    upper = next((b for b in bounds if b >= value), None)
    if upper is None:
        raise ValueError(f"{value} is above the highest bucket {bounds[-1]}: histogram_quantile cannot reach it")
    index = bounds.index(upper)
    lower = bounds[index - 1] if index else 0.0
    f = (value - lower) / (upper - lower)
    shares: dict[float, float] = {}
    if f <= q:
        below = (q - f) / (1 - f)
        if below > 0:
            shares[lower if index else bounds[0]] = below
        shares[upper] = shares.get(upper, 0.0) + (1 - below)
    else:
        inside = q / f
        shares[upper] = inside
        above = bounds[index + 1] if index + 1 < len(bounds) else math.inf
        shares[above] = 1 - inside
    return shares


def _series(spec: AlertInput, levels: list[float]) -> list[dict[str, str]]:
    """Input series for ``levels`` (one level per minute: gauge value, ratio, quantile value, events)."""
    if spec.kind == "gauge":
        return [{"series": _labels(spec.metric, spec.labels), "values": _values(levels)}]
    if spec.kind == "gauge_ratio":
        assert spec.denominator is not None
        pool = 10.0
        return [
            {"series": _labels(spec.metric, spec.labels), "values": _values([r * pool for r in levels])},
            {
                "series": _labels(spec.denominator.name, spec.denominator.labels),
                "values": _values([pool] * len(levels)),
            },
        ]
    if spec.kind == "ratio":
        assert spec.denominator is not None
        hits = _cumulative([r * OBSERVATIONS_PER_MIN for r in levels])
        rest = _cumulative([(1 - r) * OBSERVATIONS_PER_MIN for r in levels])
        return [
            {"series": _labels(spec.metric, spec.labels), "values": _values(hits)},
            {"series": _labels(spec.denominator.name, spec.denominator.labels), "values": _values(rest)},
        ]
    if spec.kind == "events":
        return [{"series": _labels(spec.metric, spec.labels), "values": _values(_cumulative(levels))}]
    if spec.kind == "rate":
        counts = [r * SCRAPE_S for r in levels]
        return [{"series": _labels(spec.metric, spec.labels), "values": _values(_cumulative(counts))}]
    assert spec.quantile is not None and spec.buckets is not None
    bounds = [*sorted(spec.buckets), math.inf]
    per_minute = [quantile_fractions(spec.quantile, v, spec.buckets) for v in levels]
    series = []
    for bound in bounds:
        increments = [sum(n for b, n in shares.items() if b <= bound) * OBSERVATIONS_PER_MIN for shares in per_minute]
        le = "+Inf" if math.isinf(bound) else f"{bound:g}"
        series.append(
            {
                "series": _labels(spec.metric + "_bucket", spec.labels, {"le": le}),
                "values": _values(_cumulative(increments)),
            }
        )
    return series


def _count(alert: str, state: str, severity: str | None = None) -> str:
    extra = f',severity="{severity}"' if severity else ""
    return f'count(ALERTS{{alertname="{alert}",alertstate="{state}"{extra}}})'


def _at(minute: float) -> str:
    whole = int(minute)
    return f"{whole}m" + ("30s" if minute != whole else "")


def _window_series(spec: AlertInput, hits: Sequence[float], held: Sequence[float]) -> list[dict[str, str]]:
    assert spec.denominator is not None
    return [
        {"series": _labels(spec.metric, spec.labels), "values": _values(hits)},
        {"series": _labels(spec.denominator.name, spec.denominator.labels), "values": _values(held)},
    ]


def _count_window_groups(
    row: AlertThreshold, threshold: float, for_min: int, fire_min: int, total: int
) -> list[dict[str, Any]]:
    """A window of the last ``size`` events: whole counts, so the boundary is exact ("3 of 100" vs "4 of 100").

    under: the most hits that do not break the threshold in a full window, then one more hit in a window one
    event short of full (not yet "100 messages"): never fires. over: one hit more in a full window.
    """
    spec = row.input
    assert spec.size is not None
    if row.comparator not in (">", ">="):
        raise ValueError(f"{row.alert}: a count_window input needs a '>' or '>=' threshold, got {row.comparator!r}")
    exact = threshold * spec.size
    most = math.floor(exact + 1e-9) if row.comparator == ">" else math.ceil(exact - 1e-9) - 1
    half = total // 2
    switch = fire_min + 1
    under = _window_series(
        spec, [most] * half + [most + 1] * (total + 1 - half), [spec.size] * half + [spec.size - 1] * (total + 1 - half)
    )
    over = _window_series(spec, [most + 1] * switch + [most] * (total + 1 - switch), [spec.size] * (total + 1))
    never = [{"expr": _count(row.alert, "firing"), "eval_time": _at(m / 2), "exp_samples": []}
             for m in range(2, 2 * total)]  # fmt: skip
    checks: list[dict[str, Any]] = []
    if for_min >= 2:
        pending_at = 1 + for_min / 2
        checks += [
            {"expr": _count(row.alert, "pending"), "eval_time": _at(pending_at),
             "exp_samples": [{"labels": "{}", "value": 1}]},
            {"expr": _count(row.alert, "firing"), "eval_time": _at(pending_at), "exp_samples": []},
        ]  # fmt: skip
    checks += [
        {"expr": _count(row.alert, "firing", row.severity), "eval_time": _at(fire_min),
         "exp_samples": [{"labels": "{}", "value": 1}]},
        {"expr": _count(row.alert, "firing"), "eval_time": _at(switch + 2), "exp_samples": []},
    ]  # fmt: skip
    size = spec.size
    return [
        {"name": f"{row.alert}: {most} of {size} never fires, nor {most + 1} of {size - 1} (window not full)",
         "interval": "1m", "input_series": under, "promql_expr_test": never},
        {"name": f"{row.alert}: {most + 1} of {size} fires with its severity, back to {most} of {size} resolves",
         "interval": "1m", "input_series": over, "promql_expr_test": checks},
    ]  # fmt: skip


def generate(row: AlertThreshold) -> list[dict[str, Any]]:
    """The two promtool test groups (under, over) for one documented threshold."""
    threshold = normalise(row.threshold)
    higher_is_worse = row.comparator in (">", ">=")
    spec = row.input
    for_min = minutes(row.for_)
    # A bare rate() of a series born at 0 climbs to its level across its window: pending starts a window late.
    lead = minutes(row.window or 0) if spec.kind == "rate" else 0
    fire_min = for_min + 2 + lead  # rate() needs two samples before pending starts, plus a margin
    total = fire_min + 1 + SETTLE_MIN + 2
    if spec.kind == "count_window":
        return _count_window_groups(row, threshold, for_min, fire_min, total)
    if spec.kind == "events":
        count = int(threshold)
        window_min = minutes(row.window or 60)
        under_levels = [0.0] + [1.0] * count + [0.0] * (total - count)
        over_levels = [0.0] + [1.0] * (count + 1) + [0.0] * (total - count - 1)
        under_checks = [m / 2 for m in range(2, 2 * min(total - 1, count + window_min + 2))]
        fire_at: float = count + 2
        resolve_at = count + 1 + window_min + 2
        pending_at = None
    else:
        delta = (threshold or 1.0) * MARGIN
        under = threshold - delta if higher_is_worse else threshold + delta
        over = threshold + delta if higher_is_worse else threshold - delta
        switch = fire_min + 1
        under_levels = [under] * (total + 1)
        over_levels = [over] * switch + [under] * (total + 1 - switch)
        under_checks = [m / 2 for m in range(2, 2 * (fire_min + 4))]
        fire_at = fire_min
        resolve_at = switch + SETTLE_MIN
        pending_at = 1 + lead + for_min / 2 if for_min >= 2 else None
    name = row.alert
    never = [{"expr": _count(name, "firing"), "eval_time": _at(t), "exp_samples": []} for t in under_checks]
    over_checks: list[dict[str, Any]] = []
    if pending_at is not None:
        over_checks += [
            {
                "expr": _count(name, "pending"),
                "eval_time": _at(pending_at),
                "exp_samples": [{"labels": "{}", "value": 1}],
            },
            {"expr": _count(name, "firing"), "eval_time": _at(pending_at), "exp_samples": []},
        ]
    over_checks += [
        {"expr": _count(name, "firing", row.severity), "eval_time": _at(fire_at),
         "exp_samples": [{"labels": "{}", "value": 1}]},
        {"expr": _count(name, "firing"), "eval_time": _at(resolve_at), "exp_samples": []},
    ]  # fmt: skip
    return [
        {"name": f"{name}: just under the documented threshold never fires", "interval": "1m",
         "input_series": _series(spec, under_levels), "promql_expr_test": never},
        {"name": f"{name}: just over is pending before 'for', fires after it with its severity, resolves after",
         "interval": "1m", "input_series": _series(spec, over_levels), "promql_expr_test": over_checks},
    ]  # fmt: skip


def test_document(rule_files: list[Path], rows: list[AlertThreshold]) -> dict[str, Any]:
    """A whole promtool test file for ``rows`` against ``rule_files``."""
    tests = [group for row in rows for group in generate(row)]
    return {"rule_files": [str(p) for p in rule_files], "evaluation_interval": EVALUATION, "tests": tests}


@dataclass(frozen=True)
class PromtoolRun:
    """One promtool run: passed, the first failure in a sentence, its whole output, the promtool version."""

    passed: bool
    failure: str
    output: str
    version: str


def promtool() -> str:
    """The promtool executable (Debian package ``prometheus``)."""
    path = shutil.which("promtool")
    if path is None:
        raise FileNotFoundError("promtool not found: install it with `apt-get install prometheus`")
    return path


def version() -> str:
    """``promtool, version 2.42.0+ds ...`` → ``2.42.0+ds``."""
    out = subprocess.run([promtool(), "--version"], capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    match = re.search(r"version (\S+)", out.stdout + out.stderr)
    return match.group(1) if match else "unknown"


_FAILED = re.compile(r'expr: "(?P<expr>.+?)", time: (?P<time>\S+?),?\s+exp: (?P<exp>.+?)\s+got: (?P<got>.+?)\n', re.S)


def first_failure(output: str) -> str:
    """The first failed expectation of a promtool output, as one sentence."""
    match = _FAILED.search(output + "\n")
    if match is None:
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        return lines[-1] if lines else "promtool failed without output"
    expr = match["expr"].replace('\\"', '"')
    state = "firing" if "firing" in expr else "pending"
    expected = "none" if match["exp"].strip() in ("nil", "[]") else "1"
    got = "none" if match["got"].strip() in ("nil", "[]") else f"{float(match['got'].split()[-1]):g}"
    return f"at {match['time']}: expected {expected} {state} alert(s), got {got} ({expr})"


def run(document: dict[str, Any], test_file: Path) -> PromtoolRun:
    """Write ``document`` to ``test_file`` and run ``promtool test rules`` on it; any warning fails the run."""
    test_file.write_text(yaml.safe_dump(document, sort_keys=False, width=200))
    result = subprocess.run(
        [promtool(), "test", "rules", str(test_file)], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    output = (result.stdout + result.stderr).strip()
    warned = "warning" in output.lower()
    passed = result.returncode == 0 and not warned
    failure = (
        "" if passed else ("promtool warned: " + output if warned and result.returncode == 0 else first_failure(output))
    )
    return PromtoolRun(passed, failure, output, version())
