"""Alert rules against the runbooks: each documented threshold proved at its boundaries, each rule linted."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import promql_parser
import pytest
import yaml

from opsgate.alerts import promtool
from opsgate.alerts.conformance import differences, normalise, top_comparison
from opsgate.alerts.rulefiles import AlertRule, read_rules, recorded_names, resolve, rule_paths
from opsgate.config import Target, parse_duration
from opsgate.evidence.recorder import Recorder
from opsgate.evidence.records import CheckRecord
from opsgate.probes import metrics

pytestmark = pytest.mark.alerts
REQUIRED_ANNOTATIONS = ("summary", "runbook_url")
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS"})
"""Series Prometheus writes itself, per scrape or rule: no target exposes them."""


def _rules(target: Target) -> dict[str, AlertRule]:
    return {rule.alert: rule for rule in read_rules(rule_paths(target))}


async def test_alert_rule(alert_name: str, target: Target, evidence: Recorder) -> None:
    """The rule implements the documented threshold, ``for`` and severity, and behaves so at the boundaries."""
    row = next(r for r in target.alerts.thresholds if r.alert == alert_name)
    record = CheckRecord(id=alert_name, kind="alert-rule", verdict="pass", claim=row.claim, started_at=time.time(),
                         threshold=normalise(row.threshold), op=row.comparator)  # fmt: skip
    runbook = resolve(target, target.alerts.runbooks or ".") / row.source.runbook
    problems: list[str] = []
    if not runbook.is_file():
        problems.append(f"runbook {runbook} not found")
    elif row.source.quote not in runbook.read_text():
        problems.append(f"the quoted sentence does not occur in {row.source.runbook}: {row.source.quote!r}")
    rule = _rules(target).get(alert_name)
    problems += differences(row, rule)
    if rule is not None:
        comparison = top_comparison(rule.expr)
        record.measured = comparison.threshold if comparison else None
        folder = evidence.run_dir / "alerts"
        folder.mkdir(exist_ok=True)
        result = promtool.run(promtool.test_document(rule_paths(target), [row]), folder / f"{alert_name}.test.yml")
        evidence.attach(folder / f"{alert_name}.test.yml")
        if not result.passed:
            problems.append(f"promtool {result.version} boundary tests failed {result.failure}")
        record.message = f"promtool {result.version}: under never fires, over pends then fires, resolves"
        if target.metrics.prometheus is not None:
            problems += await deployed_differences(target, alert_name, comparison.threshold if comparison else None)
            record.message += "; loaded in Prometheus as documented"
    record.finished_at = time.time()
    if problems:
        record.verdict = "fail"
        record.message = "; ".join(problems)
    evidence.conclude(record)


async def test_alert_lint(rule_name: str, target: Target, evidence: Recorder) -> None:
    """Severity label, summary and runbook_url annotations, an explicit ``for``, and metrics the target exposes."""
    rule = _rules(target)[rule_name]
    record = CheckRecord(id=rule_name, kind="alert-lint", verdict="pass", started_at=time.time())
    problems = []
    if "severity" not in rule.labels:
        problems.append("no severity label")
    problems += [f"no {name} annotation" for name in REQUIRED_ANNOTATIONS if not rule.annotations.get(name)]
    if not rule.for_text:
        problems.append("no explicit 'for:' (write 'for: 0s' when it fires at once)")
    if target.metrics.scrape:
        async with httpx.AsyncClient() as client:
            exposed = (await metrics.scrape(client, target.metrics.scrape)).names
        missing = sorted(metric_names(rule.expr) - exposed - PROMETHEUS_SERIES - recorded_names(rule_paths(target)))
        if missing:
            problems.append(f"uses metrics the target does not expose: {', '.join(missing)}")
    record.finished_at = time.time()
    if problems:
        record.verdict = "fail"
        record.message = f"{Path(rule.file).name}: " + "; ".join(problems)
    else:
        record.message = "labels, annotations, for and metrics in order"
    evidence.conclude(record)


def metric_names(expr: str) -> set[str]:
    """Names of every metric a PromQL expression selects."""
    names: set[str] = set()

    def walk(node: object) -> None:
        name = getattr(node, "name", None)
        if type(node).__name__ == "VectorSelector" and name:
            names.add(str(name))
        for attr in ("lhs", "rhs", "expr", "param", "vector_selector"):
            child = getattr(node, attr, None)
            if child is not None:
                walk(child)
        for child in getattr(node, "args", None) or []:
            walk(child)

    walk(promql_parser.parse(expr))
    return names


class RoutingUnavailable(Exception):
    """amtool or the Alertmanager URL is missing, or amtool failed: the check errs, it does not fail."""


def routed_receiver(target: Target, labels: dict[str, str]) -> str:
    """The receiver Alertmanager routes an alert with ``labels`` to (``amtool config routes test``)."""
    if target.alerts.alertmanager is None:
        raise RoutingUnavailable("alert routing checks need alerts.alertmanager")
    amtool = shutil.which("amtool")
    if amtool is None:
        raise RoutingUnavailable("amtool not found: apt-get install prometheus-alertmanager")
    result = subprocess.run(
        [amtool, "config", "routes", "test", f"--alertmanager.url={target.alerts.alertmanager}",
         *(f"{k}={v}" for k, v in sorted(labels.items()))],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RoutingUnavailable(f"amtool failed: {(result.stderr or result.stdout).strip()[:300]}")
    return result.stdout.strip()


async def test_alert_routing(severity: str, target: Target, evidence: Recorder) -> None:
    """Alertmanager routes each severity to its documented receiver (``amtool config routes test``)."""
    expected = target.alerts.routing[severity]
    record = CheckRecord(id=severity, kind="alert-routing", verdict="pass", threshold=expected, started_at=time.time(),
                         claim=target.alerts.routing_claims.get(severity))  # fmt: skip
    try:
        got = routed_receiver(target, {"severity": severity, "alertname": "OpsgateRoutingProbe"})
    except RoutingUnavailable as exc:
        record.verdict = "error"
        record.message = str(exc)
        evidence.conclude(record)
        return
    record.measured = got
    record.finished_at = time.time()
    if got != expected:
        record.verdict = "fail"
        record.message = f"severity={severity} routes to {got!r}, documented {expected!r}"
    else:
        record.message = f"severity={severity} → {got}"
    evidence.conclude(record)


async def test_alert_route(alert_route_name: str, target: Target, evidence: Recorder) -> None:
    """Each listed alert carries the documented severity, and its own labels route to the documented receiver."""
    spec = next(r for r in target.alerts.routes if r.name == alert_route_name)
    record = CheckRecord(id=spec.name, kind="alert-route", verdict="pass", threshold=spec.receiver, claim=spec.claim,
                         started_at=time.time())  # fmt: skip
    rules = _rules(target)
    problems, routed = [], []
    try:
        for alert in spec.alerts:
            rule = rules.get(alert)
            if rule is None:
                problems.append(f"{alert}: no such alert rule in {', '.join(target.alerts.rules)}")
                continue
            severity = rule.labels.get("severity")
            if spec.severity is not None and severity != spec.severity:
                problems.append(f"{alert}: severity {severity!r}, documented {spec.severity!r}")
            got = routed_receiver(target, {**rule.labels, "alertname": alert})
            routed.append(f"{alert} → {got}")
            if got != spec.receiver:
                problems.append(f"{alert} (severity {severity!r}) routes to {got!r}, documented {spec.receiver!r}")
    except RoutingUnavailable as exc:
        record.verdict = "error"
        record.message = str(exc)
        evidence.conclude(record)
        return
    record.measured = ", ".join(routed)
    record.finished_at = time.time()
    if problems:
        record.verdict = "fail"
        record.message = "; ".join(problems)
    else:
        record.message = f"{len(spec.alerts)} alert(s), each severity={spec.severity} and routed to {spec.receiver}"
    evidence.conclude(record)


async def test_alert_severities(severity_levels: str, target: Target, evidence: Recorder) -> None:
    """Each documented severity level is routed by Alertmanager as documented; no rule uses an undocumented one."""
    spec = target.alerts.severities
    assert spec is not None
    record = CheckRecord(id=severity_levels, kind="alert-severities", verdict="pass", claim=spec.claim,
                         threshold=", ".join(spec.levels), started_at=time.time())  # fmt: skip
    problems = []
    documented = set(target.alerts.routing)
    for rule in _rules(target).values():
        severity = rule.labels.get("severity")
        if severity not in documented:
            problems.append(f"{rule.alert}: severity {severity!r} is none of {', '.join(sorted(documented))}")
    routed = []
    try:
        for level in spec.levels:
            got = routed_receiver(target, {"severity": level, "alertname": "OpsgateSeverityProbe"})
            routed.append(f"{level} → {got}")
            if got != target.alerts.routing[level]:
                problems.append(f"severity={level} routes to {got!r}, documented {target.alerts.routing[level]!r}")
    except RoutingUnavailable as exc:
        record.verdict = "error"
        record.message = str(exc)
        evidence.conclude(record)
        return
    record.measured = ", ".join(routed)
    record.finished_at = time.time()
    if problems:
        record.verdict = "fail"
        record.message = "; ".join(problems)
    else:
        record.message = f"routed: {record.measured}; every rule's severity documented"
    evidence.conclude(record)


async def test_rules_applied(applied_group: str, target: Target, evidence: Recorder) -> None:
    """Every alerting rule of the group is loaded in the running Prometheus, with the file's threshold and ``for``."""
    spec = next(a for a in target.alerts.applied if a.group == applied_group)
    record = CheckRecord(id=spec.group, kind="rules-applied", verdict="pass", claim=spec.claim, started_at=time.time())
    written = group_rules(target, spec.group)
    problems = [] if written else [f"no alerting rule group {spec.group!r} in {', '.join(target.alerts.rules)}"]
    if target.metrics.prometheus is None:
        record.verdict = "error"
        record.message = "alerts.applied needs metrics.prometheus"
        evidence.conclude(record)
        return
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{target.metrics.prometheus}/api/v1/rules", params={"type": "alert"}, timeout=10)
    loaded = {r["name"]: r for g in response.json()["data"]["groups"] for r in g["rules"]}
    for rule in written:
        running = loaded.get(rule.alert)
        if running is None:
            problems.append(f"{rule.alert} is not loaded in Prometheus at {target.metrics.prometheus}")
            continue
        want, got = top_comparison(rule.expr), top_comparison(running["query"])
        if want != got:
            problems.append(f"{rule.alert}: Prometheus runs {got}, the rule file says {want}")
        wanted_for = target.scaled(promtool_for_s(rule.for_text))
        got_for = float(running.get("duration", 0))
        if not (wanted_for * 0.5 <= got_for <= max(wanted_for * 1.5, 1.0)):
            problems.append(f"{rule.alert}: Prometheus runs for {got_for:g}s, the file's {rule.for_text or '0s'} "
                            f"x {target.time_scale:g} is {wanted_for:g}s")  # fmt: skip
    record.measured = len([r for r in written if r.alert in loaded])
    record.threshold = len(written)
    record.finished_at = time.time()
    if problems:
        record.verdict = "fail"
        record.message = "; ".join(problems)
    else:
        record.message = (
            f"{len(written)} rule(s) of group {spec.group} loaded as written: {', '.join(r.alert for r in written)}"
        )
    evidence.conclude(record)


def promtool_for_s(text: str) -> float:
    """A rule's ``for`` text in seconds (0 when absent)."""
    return parse_duration(text) if text else 0.0


def group_rules(target: Target, group: str) -> list[AlertRule]:
    """The alerting rules of the named group in the target's rule files."""
    rules = []
    for path in rule_paths(target):
        document = yaml.safe_load(path.read_text()) or {}
        names = [r["alert"] for g in document.get("groups", []) if g.get("name") == group for r in g.get("rules", [])
                 if "alert" in r]  # fmt: skip
        rules += [r for r in read_rules([path]) if r.alert in names]
    return rules


async def deployed_differences(target: Target, alert: str, threshold: float | None) -> list[str]:
    """Is the rule *loaded* (``/api/v1/rules``) as documented? Its ``for`` is compared scaled by ``time_scale``."""
    assert target.metrics.prometheus is not None
    row = next(r for r in target.alerts.thresholds if r.alert == alert)
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{target.metrics.prometheus}/api/v1/rules", params={"type": "alert"}, timeout=10)
    loaded = [r for g in response.json()["data"]["groups"] for r in g["rules"] if r.get("name") == alert]
    if not loaded:
        return [
            f"{alert} is not loaded in Prometheus at {target.metrics.prometheus} (seed 002: ensure the rule is applied)"
        ]
    problems = []
    deployed = top_comparison(loaded[0]["query"])
    if deployed is None or threshold is None or deployed.threshold != threshold:
        problems.append(
            f"{alert}: Prometheus runs threshold {deployed.threshold if deployed else None}, the file says {threshold}"
        )
    wanted_for = target.scaled(row.for_)
    got_for = float(loaded[0].get("duration", 0))
    if row.for_ and not (wanted_for * 0.5 <= got_for <= max(wanted_for * 1.5, 1.0)):
        problems.append(f"{alert}: Prometheus runs for {got_for:g}s, documented {row.for_:g}s x {target.time_scale:g}")
    return problems
