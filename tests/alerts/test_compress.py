"""Time-compressing rules: the transformation itself, and one compressed file run through the real promtool."""

from __future__ import annotations

import copy
import dataclasses
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from opsgate.alerts import compress
from opsgate.alerts.compress import (
    Clamp,
    _skeleton,
    _windows,
    compress_expr,
    compress_rules,
    format_duration,
)

FACTOR = 0.02  # a 5-minute `for:` becomes 6 s
FLOOR_S = 4.0  # 4 scrapes at 1 s
PROMTOOL = "/usr/bin/promtool"

# (original, compressed at FACTOR with a 4 s floor, clamps): every expression these tests use.
EXPRESSIONS: list[tuple[str, str, list[tuple[str, float, float, float]]]] = [
    ("rate(x[5m])", "rate(x[6s])", []),
    ("rate(x[5m]) > 1", "rate(x[6s]) > 1", []),
    ("increase(x[15m]) > 5", "increase(x[18s]) > 5", []),
    ("rate(x[1m])", "rate(x[4s])", [("expr range [1m]", 60.0, 1.2, 4.0)]),
    (
        "histogram_quantile(0.95, sum by (le) (rate(h_bucket[5m])))",
        "histogram_quantile(0.95, sum by (le) (rate(h_bucket[6s])))",
        [],
    ),
    (
        "max_over_time(rate(x[1m])[10m:30s])",
        "max_over_time(rate(x[4s])[12s:600ms])",
        [("expr range [1m]", 60.0, 1.2, 4.0)],
    ),
    ("max_over_time(rate(x[5m])[1h:])", "max_over_time(rate(x[6s])[1m12s:])", []),
    ("x offset 1h", "x offset 1m12s", []),
    ("rate(x[5m] offset -1h)", "rate(x[6s] offset -1m12s)", []),
    ("time() - x > 300", "time() - x > 300", []),
    ("rate(x[1h30m])", "rate(x[1m48s])", []),
    ("rate(x[ 90s ])", "rate(x[ 4s ])", [("expr range [ 90s ]", 90.0, 1.8, 4.0)]),
    ("rate(x[3s])", "rate(x[3s])", [("expr range [3s]", 3.0, 0.06, 3.0)]),
    (
        'sum(rate(http_requests_total{service="api",status=~"5.."}[5m]))'
        ' / sum(rate(http_requests_total{service="api"}[5m])) > 0.02',
        'sum(rate(http_requests_total{service="api",status=~"5.."}[6s]))'
        ' / sum(rate(http_requests_total{service="api"}[6s])) > 0.02',
        [],
    ),
    (
        'x{offset="5m", a="[5m] \\" offset 5m"} # rate(x[5m])\n  + on (offset) rate(offset[10m] OFFSET 5m)',
        'x{offset="5m", a="[5m] \\" offset 5m"} # rate(x[5m])\n  + on (offset) rate(offset[12s] OFFSET 6s)',
        [],
    ),
    ("x[5m:1m] @ 100 offset 2m", "x[6s:1s200ms] @ 100 offset 2s400ms", []),
    ("rate(offset5m[5m])", "rate(offset5m[6s])", []),
    ("x offset 10ms", "x offset 1ms", [("expr offset 10ms", 0.01, 0.0002, 0.001)]),
]


def rules(*rule: dict[str, Any], interval: str | None = None) -> dict[str, Any]:
    """A rules document with one group holding ``rule``."""
    group: dict[str, Any] = {"name": "drill", "rules": list(rule)}
    if interval is not None:
        group["interval"] = interval
    return {"groups": [group]}


def alert(expr: str, **fields: Any) -> dict[str, Any]:
    """An alerting rule named A."""
    return {"alert": "A", "expr": expr, **fields}


def rounded(clamps: list[Clamp]) -> list[Clamp]:
    """``clamps`` with wanted_s rounded to 1 ns, so float noise from ``window * factor`` compares equal."""
    return [dataclasses.replace(clamp, wanted_s=round(clamp.wanted_s, 9)) for clamp in clamps]


def compressed_rule(document: dict[str, Any], factor: float = FACTOR) -> dict[str, Any]:
    """The first rule of the compressed document."""
    rule: dict[str, Any] = compress_rules(document, factor).groups["groups"][0]["rules"][0]
    return rule


# --- expressions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("original", "expected", "clamps"), EXPRESSIONS, ids=[e[0][:50] for e in EXPRESSIONS])
def test_expression_windows_scale_by_the_factor(
    original: str, expected: str, clamps: list[tuple[str, float, float, float]]
) -> None:
    """Each window is scaled (not below 4 s); the author's text, thresholds and literal seconds stay."""
    result, got_clamps = compress_expr(original, FACTOR, floor_s=FLOOR_S)
    assert result == expected
    assert [(where, o, round(wanted, 9), used) for where, o, wanted, used in got_clamps] == clamps


@pytest.mark.parametrize("original", [e[0] for e in EXPRESSIONS], ids=[e[0][:50] for e in EXPRESSIONS])
@pytest.mark.parametrize("factor", [1.0, 0.5, FACTOR, 0.001])
def test_every_expression_round_trips(original: str, factor: float) -> None:
    """Compressed output parses to the original's tree with every window at max(window * factor, min(4 s, window))
    (1 ms for steps and offsets); the parser's own printout of each expression parses back to its printout."""
    tree = promql_parser.parse(original)
    printed = tree.prettify()  # normalised (matchers sorted, comments dropped), so compared with itself
    assert promql_parser.parse(printed).prettify() == printed
    result, _ = compress_expr(original, factor, floor_s=FLOOR_S)
    new_tree = promql_parser.parse(result)
    assert _skeleton(new_tree) == _skeleton(tree)
    floors = {"range": 4000, "subquery": 4000, "step": 1, "offset": 1}
    expected = [
        (kind, int(math.copysign(max(round(abs(ms) * factor), min(floors[kind], abs(ms))), ms)))
        for kind, ms in _windows(tree)
    ]
    assert _windows(new_tree) == expected
    if factor == 1.0:
        assert result == original


def test_count_thresholds_and_literal_seconds_are_not_windows() -> None:
    """`> 5` in 15m and `> 300` seconds of age keep their numbers; only the window shrinks."""
    assert compress_expr("increase(jobs_failed_total[15m]) > 5", FACTOR, floor_s=FLOOR_S)[0] == (
        "increase(jobs_failed_total[18s]) > 5"
    )
    assert compress_expr("time() - backup_last_success_timestamp_seconds > 300", FACTOR, floor_s=FLOOR_S) == (
        "time() - backup_last_success_timestamp_seconds > 300",
        [],
    )


def test_invalid_promql_names_the_rule_and_the_parser_message() -> None:
    """The error says where the rule is, which rule, and what the parser said."""
    with pytest.raises(ValueError, match=r"groups\[0\]\.rules\[0\] \(alert 'A'\)\.expr: .*unclosed left parenthesis"):
        compress_rules(rules(alert("rate(x[5m]")), FACTOR)
    with pytest.raises(ValueError, match=r"record 'job:x:rate5m'.*invalid PromQL 'sum\(x\) by'"):
        compress_rules(rules({"record": "job:x:rate5m", "expr": "sum(x) by"}), FACTOR)


def test_a_rewrite_that_changes_the_rule_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard: if the splicer missed a window, the re-parsed tree disagrees and compression fails loudly."""
    monkeypatch.setattr(compress, "_windows_in_text", lambda expr: [])
    with pytest.raises(ValueError, match=r"could not compress 'rate\(x\[5m\]\)' safely: got 'rate\(x\[5m\]\)'"):
        compress_expr("rate(x[5m])", FACTOR, floor_s=FLOOR_S)


def test_a_window_without_unit_is_refused_as_promtool_does() -> None:
    """promql-parser accepts `[300]`; promtool 2.42 does not ("missing unit character in duration")."""
    with pytest.raises(ValueError, match=r"'\[300\]' is not a window promtool 2.42 accepts"):
        compress_expr("rate(x[300])", FACTOR, floor_s=FLOOR_S)


# --- rules documents -----------------------------------------------------------------------------


def test_for_5m_becomes_6s_and_windows_compress_with_it() -> None:
    """`for: 5m` and `rate(x[5m])` at 0.02: 6 s each, no clamps."""
    result = compress_rules(rules(alert("rate(x[5m]) > 1", **{"for": "5m"})), FACTOR)
    assert result.groups["groups"][0]["rules"][0] == {"alert": "A", "expr": "rate(x[6s]) > 1", "for": "6s"}
    assert result.factor == FACTOR
    assert result.clamps == []


def test_a_short_range_is_floored_at_four_scrapes_and_recorded() -> None:
    """`rate(x[1m])` at 0.02 wants 1.2 s; 4 s is written and the clamp is evidence."""
    result = compress_rules(rules(alert("rate(x[1m]) > 1", **{"for": "5m"})), FACTOR)
    assert result.groups["groups"][0]["rules"][0]["expr"] == "rate(x[4s]) > 1"
    assert rounded(result.clamps) == [Clamp("A", "expr range [1m]", 60.0, 1.2, 4.0)]


def test_the_range_floor_follows_scrape_interval_and_samples() -> None:
    """Floor = min_samples_per_window * scrape_interval_s: 5 samples at 2 s → 10 s."""
    result = compress_rules(rules(alert("rate(x[5m]) > 1")), FACTOR, scrape_interval_s=2.0, min_samples_per_window=5)
    assert result.groups["groups"][0]["rules"][0]["expr"] == "rate(x[10s]) > 1"
    assert [(c.where, c.used_s) for c in result.clamps] == [("expr range [5m]", 10.0)]


@pytest.mark.parametrize(
    ("written", "expected", "clamp"),
    [
        ("5m", "6s", None),
        ("1h30m", "1m48s", None),
        ("90s", "1s800ms", None),
        ("30s", "1s", (30.0, 0.6, 1.0)),
        ("500ms", "500ms", (0.5, 0.01, 0.5)),
        ("0s", "0s", None),
        (0, 0, None),
    ],
)
def test_for_scales_and_stays_at_least_one_evaluation(
    written: str | int, expected: str | int, clamp: tuple[float, float, float] | None
) -> None:
    """`for:` is scaled, not below one 1 s evaluation (nor above itself); 0 stays 0."""
    result = compress_rules(rules(alert("up == 0", **{"for": written})), FACTOR)
    assert result.groups["groups"][0]["rules"][0]["for"] == expected
    if clamp is None:
        assert result.clamps == []
    else:
        original_s, wanted_s, used_s = clamp
        assert rounded(result.clamps) == [Clamp("A", "for", original_s, wanted_s, used_s)]


def test_keep_firing_for_and_group_interval_scale_too() -> None:
    """keep_firing_for and the group's evaluation interval follow the same factor and floor."""
    document = rules(alert("up == 0", keep_firing_for="10m"), interval="30s")
    result = compress_rules(document, FACTOR)
    group = result.groups["groups"][0]
    assert group["interval"] == "1s"
    assert group["rules"][0]["keep_firing_for"] == "12s"
    assert rounded(result.clamps) == [Clamp("drill", "interval", 30.0, 0.6, 1.0)]


def test_labels_and_annotations_are_untouched() -> None:
    """Text that looks like a window in labels or annotations is the author's words, not PromQL."""
    labels = {"severity": "critical", "window": "[5m]"}
    annotations = {"summary": "rate(x[5m]) above 1 for 5m", "runbook_url": "https://runbooks.example/x"}
    rule = compressed_rule(rules(alert("rate(x[5m]) > 1", labels=labels, annotations=annotations)))
    assert rule["labels"] == labels
    assert rule["annotations"] == annotations


def test_factor_1_returns_an_equal_deep_copy_without_clamps() -> None:
    """At factor 1 nothing changes, not even `90s` → `1m30s`, and the input is not shared."""
    document = rules(
        alert("max_over_time(rate(x[90s])[10m:30s]) > 1", **{"for": "90s"}, labels={"a": "b"}),
        {"record": "r", "expr": "rate(x[1s])"},
        interval="15s",
    )
    before = copy.deepcopy(document)
    result = compress_rules(document, 1.0)
    assert result.groups == before
    assert result.clamps == []
    assert result.groups is not document
    assert result.groups["groups"][0]["rules"][0]["labels"] is not document["groups"][0]["rules"][0]["labels"]
    assert document == before


def test_the_input_document_is_not_modified() -> None:
    """compress_rules works on a deep copy."""
    document = rules(alert("rate(x[5m]) > 1", **{"for": "5m"}))
    before = copy.deepcopy(document)
    compress_rules(document, FACTOR)
    assert document == before


@pytest.mark.parametrize("factor", [0, -0.5, 1.5, math.nan, math.inf])
def test_factor_must_be_in_0_exclusive_to_1(factor: float) -> None:
    """0 < factor <= 1."""
    with pytest.raises(ValueError, match="0 < factor <= 1"):
        compress_rules(rules(alert("up == 0")), factor)


@pytest.mark.parametrize("written", ["5 minutes", "300", "1.5m", "5M", 300])
def test_a_bad_rule_duration_names_the_field(written: object) -> None:
    """A `for:` promtool would refuse is refused here, with the rule and field named."""
    with pytest.raises(ValueError, match=r"groups\[0\]\.rules\[0\] \(alert 'A'\)\.for: expected a Prometheus duration"):
        compress_rules(rules(alert("up == 0", **{"for": written})), FACTOR)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(6, "6s"), (90, "1m30s"), (0.5, "500ms"), (0, "0s"), (1.2, "1s200ms"), (5400, "1h30m"), (86400 * 8, "8d")],
)
def test_format_duration_writes_prometheus_durations(seconds: float, text: str) -> None:
    """Prometheus' own duration text (model.Duration.String)."""
    assert format_duration(seconds) == text


# --- the real promtool ---------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which(PROMTOOL) is None, reason=f"{PROMTOOL} not installed (Debian package prometheus)")
def test_compressed_rule_passes_promtool_and_fires_at_the_compressed_time(tmp_path: Path) -> None:
    """`for: 5m` on `rate(x[5m]) > 1` at 0.02: promtool accepts the file; pending from 1 s, firing at 7 s, not at 6 s.

    rate needs two samples (t=0 and t=1 s at a 1 s interval) before pending starts, so firing comes one
    scrape after 6 s. The counter climbs 60/s: even the first, one-second-wide rate (60 / 6 s window)
    is far over 1, so the warm-up does not delay pending.
    """
    original = yaml.safe_load(
        """
        groups:
          - name: drill
            rules:
              - alert: XRateHigh
                expr: rate(x[5m]) > 1
                for: 5m
                labels: {severity: warning}
                annotations: {summary: "x above 1/s for 5 minutes"}
        """
    )
    result = compress_rules(original, FACTOR)
    assert result.groups["groups"][0]["rules"][0]["expr"] == "rate(x[6s]) > 1"
    rules_file = tmp_path / "compressed.yml"
    rules_file.write_text(yaml.safe_dump(result.groups, sort_keys=False))

    check = subprocess.run([PROMTOOL, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 1 rules found" in check.stdout + check.stderr

    pending = 'ALERTS{alertname="XRateHigh",alertstate="pending",severity="warning"}'
    firing = {"exp_labels": {"severity": "warning"}, "exp_annotations": {"summary": "x above 1/s for 5 minutes"}}
    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1s",
        "tests": [
            {
                "interval": "1s",
                "input_series": [{"series": "x", "values": "0+60x30"}],
                "promql_expr_test": [
                    {"expr": 'ALERTS{alertstate="pending"}', "eval_time": "0s", "exp_samples": []},
                    {
                        "expr": 'ALERTS{alertstate="pending"}',
                        "eval_time": "1s",
                        "exp_samples": [{"labels": pending, "value": 1}],
                    },
                    {
                        "expr": 'ALERTS{alertstate="pending"}',
                        "eval_time": "6s",
                        "exp_samples": [{"labels": pending, "value": 1}],
                    },
                ],
                "alert_rule_test": [
                    {"eval_time": "6s", "alertname": "XRateHigh", "exp_alerts": []},
                    {"eval_time": "7s", "alertname": "XRateHigh", "exp_alerts": [firing]},
                ],
            }
        ],
    }
    test_file = tmp_path / "compressed_test.yml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    run = subprocess.run([PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=30)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "SUCCESS" in output
    assert "WARNING" not in output.upper(), output  # e.g. a rule_files path matching nothing
