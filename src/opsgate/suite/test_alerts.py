"""Alert rules against the runbooks: each documented threshold proved at its boundaries, each rule linted."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import promql_parser
import pytest

from opsgate.alerts import promtool
from opsgate.alerts.conformance import differences, normalise, top_comparison
from opsgate.alerts.rulefiles import AlertRule, read_rules, resolve, rule_paths
from opsgate.config import Target
from opsgate.evidence.recorder import Recorder
from opsgate.evidence.records import CheckRecord
from opsgate.probes import metrics

pytestmark = pytest.mark.alerts
REQUIRED_ANNOTATIONS = ("summary", "runbook_url")


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
        missing = sorted(metric_names(rule.expr) - exposed)
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


async def test_alert_routing(severity: str, target: Target, evidence: Recorder) -> None:
    """Alertmanager routes each severity to its documented receiver (``amtool config routes test``)."""
    expected = target.alerts.routing[severity]
    record = CheckRecord(id=severity, kind="alert-routing", verdict="pass", threshold=expected, started_at=time.time(),
                         claim=target.alerts.routing_claims.get(severity))  # fmt: skip
    if target.alerts.alertmanager is None:
        record.verdict = "error"
        record.message = "alerts.routing needs alerts.alertmanager"
        evidence.conclude(record)
        return
    amtool = shutil.which("amtool")
    if amtool is None:
        record.verdict = "error"
        record.message = "amtool not found: apt-get install prometheus-alertmanager"
        evidence.conclude(record)
        return
    result = subprocess.run(
        [amtool, "config", "routes", "test", f"--alertmanager.url={target.alerts.alertmanager}", f"severity={severity}",
         "alertname=OpsgateRoutingProbe"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    got = result.stdout.strip()
    record.measured = got
    record.finished_at = time.time()
    if result.returncode != 0:
        record.verdict = "error"
        record.message = f"amtool failed: {(result.stderr or result.stdout).strip()[:300]}"
    elif got != expected:
        record.verdict = "fail"
        record.message = f"severity={severity} routes to {got!r}, documented {expected!r}"
    else:
        record.message = f"severity={severity} → {got}"
    evidence.conclude(record)


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
