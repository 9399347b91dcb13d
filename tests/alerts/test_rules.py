"""The reference rules against the documented thresholds: promtool at the boundaries, drift caught, lint."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

from opsgate.alerts import promtool
from opsgate.alerts.conformance import differences, normalise
from opsgate.alerts.rulefiles import AlertRule, read_rules, resolve, rule_paths
from opsgate.config import LOCAL_TARGET, AlertThreshold, Target
from opsgate.environments.launch import Launcher
from opsgate.suite.test_alerts import metric_names

SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"


@pytest.fixture(scope="module")
def target() -> Target:
    with tempfile.TemporaryDirectory() as scratch:
        return Launcher(LOCAL_TARGET, Path(scratch)).target


@pytest.fixture(scope="module")
def rules_text(target: Target) -> str:
    return rule_paths(target)[0].read_text()


def row(target: Target, alert: str) -> AlertThreshold:
    return next(r for r in target.alerts.thresholds if r.alert == alert)


def check(target: Target, rules_text: str, alert: str, tmp_path: Path) -> tuple[list[str], promtool.PromtoolRun]:
    """Conformance problems and the promtool run of one documented threshold against ``rules_text``."""
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(rules_text)
    rules = {r.alert: r for r in read_rules([rules_file])}
    documented = row(target, alert)
    run = promtool.run(promtool.test_document([rules_file], [documented]), tmp_path / "test.yml")
    return differences(documented, rules.get(alert)), run


def test_every_documented_threshold_holds_at_its_boundaries(target: Target, rules_text: str, tmp_path: Path) -> None:
    assert len(target.alerts.thresholds) >= 7
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(rules_text)
    rules = {r.alert: r for r in read_rules([rules_file])}
    for documented in target.alerts.thresholds:
        assert differences(documented, rules.get(documented.alert)) == [], documented.alert
    run = promtool.run(promtool.test_document([rules_file], list(target.alerts.thresholds)), tmp_path / "all.yml")
    assert run.passed, run.output
    assert run.version.startswith("2.")


def test_every_quote_occurs_in_its_runbook(target: Target) -> None:
    folder = resolve(target, target.alerts.runbooks or "")
    for documented in target.alerts.thresholds:
        assert documented.source.quote in (folder / documented.source.runbook).read_text(), documented.alert


def test_packaged_runbooks_are_verbatim_copies_of_the_seeds(target: Target) -> None:
    folder = resolve(target, target.alerts.runbooks or "")
    seeds = sorted(SEEDS.glob("*.txt")) if SEEDS.is_dir() else []
    if not seeds:
        pytest.skip(f"the seed runbooks are not beside this checkout ({SEEDS})")
    for seed in seeds:
        assert (folder / seed.name).read_bytes() == seed.read_bytes(), seed.name


@pytest.mark.parametrize(
    ("alert", "before", "after", "caught_by", "fails_at_boundary"),
    [
        ("ApiLatencyP95High", "[5m]))) > 0.75\n        for: 5m", "[5m]))) > 0.8\n        for: 5m",
         "rule threshold 0.8 differs from the documented 750ms (= 0.75)", True),
        ("ApiLatencyP95High", "> 0.75\n        for: 5m", "> 0.75\n        for: 10m",
         "rule 'for: 10m' (600s) differs from the documented 300s", True),
        # '>=' and '>' differ only exactly at the threshold, where floats are unreliable: the static check owns it.
        ("QueueActiveJobsHigh", "bull_queue_jobs_active > 200", "bull_queue_jobs_active >= 200",
         "rule compares with '>=', the runbook says '>'", False),
        ("OptOutRateHigh", "(sms_window_messages >= 100) > 0.03", "(sms_window_messages >= 100) > 0.05",
         "rule threshold 0.05 differs from the documented 3% (= 0.03)", True),
        # A count window holds whole counts: exactly 3 of 100 is the boundary, so '>=' fails there too.
        ("OptOutRateHigh", "(sms_window_messages >= 100) > 0.03", "(sms_window_messages >= 100) >= 0.03",
         "rule compares with '>=', the runbook says '>'", True),
        ("QueueBacklogCritical", "> 10000\n        for: 5m\n        labels: {severity: critical}",
         "> 10000\n        for: 5m\n        labels: {}", "severity label None, documented 'critical'", True),
        # "<" thresholds (delivery rate): a flipped comparator or a lower bar is caught, and fails at the boundary.
        ("DeliveryRateLow", "> 0) < 0.95\n", "> 0) > 0.95\n", "rule compares with '>', the runbook says '<'", True),
        ("DeliveryRateCritical", "> 0) < 0.9\n", "> 0) < 0.85\n",
         "rule threshold 0.85 differs from the documented 90% (= 0.9)", True),
        ("WebhookLagHigh", "[5m]))) > 30\n", "[5m]))) > 60\n",
         "rule threshold 60 differs from the documented 30s (= 30)", True),
        # Issue 9 coverage: each new rule's threshold drifted is caught statically and at its boundary.
        ("AllServicesDown", 'max(up{job="target"}) < 1', 'max(up{job="target"}) < 0.5',
         "rule threshold 0.5 differs from the documented 1.0 (= 1)", True),
        ("DatabaseConnectionFailures", "[5m]))) > 0\n        for: 0s\n        labels: {severity: critical}",
         "[5m]))) > 2\n        for: 0s\n        labels: {severity: critical}",
         "rule threshold 2 differs from the documented 0.0 (= 0)", True),
        ("BudgetApproaching90", "(tenant_budget_limit_cents > 0) >= 0.9", "(tenant_budget_limit_cents > 0) >= 0.95",
         "rule threshold 0.95 differs from the documented 90% (= 0.9)", True),
        ("TenantErrorRatioHigh", 'tenant!=""}[10m])) > 0.05', 'tenant!=""}[10m])) > 0.1',
         "rule threshold 0.1 differs from the documented 5% (= 0.05)", True),
        ("ProcessCpuHigh", "[5m]) > 0.8\n", "[5m]) > 0.9\n",
         "rule threshold 0.9 differs from the documented 80% (= 0.8)", True),
        ("ProcessMemoryHigh", "process_memory_limit_bytes > 0.85", "process_memory_limit_bytes > 0.95",
         "rule threshold 0.95 differs from the documented 85% (= 0.85)", True),
        ("DataDiskFull", "data_filesystem_size_bytes > 0.9", "data_filesystem_size_bytes > 0.95",
         "rule threshold 0.95 differs from the documented 90% (= 0.9)", True),
        # 2% of 99.9% spans 97.9..101.9%: a drift to 99% sits inside the generated margin; the static check owns it.
        ("ServiceAvailabilityBelowSlo", "/ 100 < 0.999", "/ 100 < 0.99",
         "rule threshold 0.99 differs from the documented 99.9% (= 0.999)", False),
    ],
)  # fmt: skip
def test_drift_is_caught_with_both_values(
    target: Target,
    rules_text: str,
    tmp_path: Path,
    alert: str,
    before: str,
    after: str,
    caught_by: str,
    fails_at_boundary: bool,
) -> None:
    assert rules_text.count(before) == 1
    problems, run = check(target, rules_text, alert, tmp_path)
    assert problems == [] and run.passed
    problems, run = check(target, rules_text.replace(before, after), alert, tmp_path)
    assert any(caught_by in p for p in problems), problems
    assert run.passed is not fails_at_boundary, run.output


@pytest.mark.parametrize(
    ("window", "failure"),
    [
        ("(sms_window_messages >= 50)", "expected none firing"),  # a window short of 100 fires
        ("(sms_window_messages >= 200)", "expected 1 firing"),  # 4 of 100 never fires
        ("(sms_window_messages)", "expected none firing"),  # no full-window condition: 4 of 99 fires
    ],
)
def test_a_count_window_of_another_size_is_caught_at_the_boundary(
    target: Target, rules_text: str, tmp_path: Path, window: str, failure: str
) -> None:
    """The window's size is not a threshold the static check sees; the generated whole-count tests do."""
    full = "(sms_window_messages >= 100)"
    assert rules_text.count(full) == 1
    problems, run = check(target, rules_text.replace(full, window), "OptOutRateHigh", tmp_path)
    assert problems == []
    assert not run.passed and failure in run.failure, run.failure


def test_a_deleted_rule_is_caught(target: Target, rules_text: str, tmp_path: Path) -> None:
    without = re.sub(r"      # seed 002: \{status=\"failed\"\}.*?(?=\n  - name: delivery)", "", rules_text, flags=re.S)
    assert "BillingWebhookFailed" not in without
    problems, run = check(target, without, "BillingWebhookFailed", tmp_path)
    assert problems and "no such alert rule" in problems[0]
    assert not run.passed  # the must-fire test fails: the must-not-fire one cannot pass alone


def test_event_counts_are_tested_off_the_scrape_grid(target: Target, rules_text: str, tmp_path: Path) -> None:
    """``increase(x[15m]) > 5`` fires at 5 events when evaluated between scrapes (~5.36): the test sees it."""
    robust = 'floor(sum(increase(billing_webhook_total{status="retrying"}[15m]))) > 5'
    naive = 'sum(increase(billing_webhook_total{status="retrying"}[15m])) > 5'
    assert robust in rules_text
    _, run = check(target, rules_text.replace(robust, naive), "BillingWebhookRetrying", tmp_path)
    assert not run.passed and re.search(r"at \d+m30s: expected none firing", run.failure), run.failure


def test_a_rule_glob_matching_nothing_fails(target: Target, tmp_path: Path) -> None:
    document = promtool.test_document([tmp_path / "no-such-*.yml"], [row(target, "QueueBacklogHigh")])
    assert not promtool.run(document, tmp_path / "t.yml").passed


@pytest.mark.parametrize(("text", "value"), [("750ms", 0.75), ("1500ms", 1.5), ("2%", 0.02), ("10,000", 10000),
                                             ("30 seconds", 30), ("80%", 0.8), (0.8, 0.8), ("5", 5)])  # fmt: skip
def test_runbook_units_are_normalised(text: str | float, value: float) -> None:
    assert normalise(text) == pytest.approx(value)


def test_normalise_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="cannot read the threshold 'five'"):
        normalise("five")


def test_metric_names_of_an_expression() -> None:
    expr = 'histogram_quantile(0.95, sum by (le) (rate(h_bucket{a="b"}[5m]))) > on() group_left max(g) * 2'
    assert metric_names(expr) == {"h_bucket", "g"}
    assert isinstance(AlertRule("a", "x", "5m"), AlertRule)


def uptime_document(rules_file: Path) -> dict[str, object]:
    """One scrape missed at minute 0, then up for 70 minutes: a 1-hour SLI stays below 99.9% until minute 60."""
    firing = 'count(ALERTS{alertname="ServiceAvailabilityBelowSlo",alertstate="firing"})'
    return {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": 'up{job="target",instance="api"}', "values": "0 1x70"}],
            "promql_expr_test": [
                # 30 of the 31 samples in the hour up: 96.77% (a float, so bracketed)
                {"expr": "count(service_uptime_percentage > 96.77 < 96.78)", "eval_time": "30m",
                 "exp_samples": [{"labels": "{}", "value": 1}]},
                {"expr": firing, "eval_time": "30m", "exp_samples": [{"labels": "{}", "value": 1}]},
                {"expr": firing, "eval_time": "65m", "exp_samples": []},
            ],
        }],
    }  # fmt: skip


def test_the_uptime_sli_window_is_tested_at_real_time(rules_text: str, tmp_path: Path) -> None:
    """service_uptime_percentage over 1h, not 5m: the static check cannot see a window, this real-time test does."""
    hour = 'avg_over_time(up{job="target"}[1h])'
    assert rules_text.count(hour) == 1
    for text, passes in ((rules_text, True), (rules_text.replace(hour, hour.replace("[1h]", "[5m]")), False)):
        rules_file = tmp_path / "rules.yml"
        rules_file.write_text(text)
        run = promtool.run(uptime_document(rules_file), tmp_path / "uptime.test.yml")
        assert run.passed is passes, run.output
