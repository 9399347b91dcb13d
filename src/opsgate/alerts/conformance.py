"""Does each rule implement the threshold its runbook documents? Units normalised, values compared.

Runbook units are normalised to the rule's: ``750ms`` → 0.75 (seconds), ``2%`` → 0.02,
``10,000`` → 10000; a counter's "delta ... in 15m" is an increase over the window.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import promql_parser

from opsgate.alerts.rulefiles import AlertRule
from opsgate.config import AlertThreshold, parse_duration

_MS = re.compile(r"^\s*([\d.,]+)\s*ms\s*$")
_SECONDS = re.compile(r"^\s*([\d.,]+)\s*(s|sec|secs|seconds?)\s*$")
_PERCENT = re.compile(r"^\s*([\d.,]+)\s*%\s*$")
_NUMBER = re.compile(r"^\s*([\d.,]+)\s*$")


def normalise(value: str | float) -> float:
    """A documented threshold in the rule's unit: seconds, a 0..1 ratio, or a plain number."""
    if isinstance(value, int | float):
        return float(value)
    for pattern, scale in ((_MS, 0.001), (_SECONDS, 1.0), (_PERCENT, 0.01), (_NUMBER, 1.0)):
        match = pattern.match(value)
        if match:
            return float(match.group(1).replace(",", "")) * scale
    raise ValueError(f"cannot read the threshold {value!r}: expected e.g. '750ms', '30s', '2%', '10,000' or 0.8")


@dataclass(frozen=True)
class Comparison:
    """The top-level comparison of a rule's expression: ``<expr> <op> <number>``."""

    op: str
    threshold: float


def top_comparison(expr: str) -> Comparison | None:
    """The rule's outermost ``op number`` (None when the expression has no such comparison)."""
    node = promql_parser.parse(expr)
    op = str(getattr(node, "op", ""))
    rhs = getattr(node, "rhs", None)
    if op in (">", ">=", "<", "<=", "==", "!=") and rhs is not None and type(rhs).__name__ == "NumberLiteral":
        return Comparison(op, float(rhs.val))
    return None


def _for_seconds(text: str) -> float:
    return parse_duration(text) if text else 0.0


def differences(row: AlertThreshold, rule: AlertRule | None) -> list[str]:
    """What differs between the documented threshold and the rule; empty when they agree."""
    where = f"{row.source.runbook} ({row.source.section})"
    if rule is None:
        return [f"{row.alert}: no such alert rule, but {where} documents it: {row.source.quote!r}"]
    problems = []
    documented = normalise(row.threshold)
    comparison = top_comparison(rule.expr)
    if comparison is None:
        problems.append(f"{row.alert}: the rule has no top-level '{row.comparator} number' comparison: {rule.expr}")
    else:
        if not math.isclose(comparison.threshold, documented, rel_tol=1e-9, abs_tol=1e-12):
            problems.append(
                f"{row.alert}: rule threshold {comparison.threshold:g} differs from the documented "
                f"{row.threshold} (= {documented:g}) in {where}"
            )
        if comparison.op != row.comparator:
            problems.append(
                f"{row.alert}: rule compares with '{comparison.op}', the runbook says '{row.comparator}' "
                f"({row.source.quote!r})"
            )
    rule_for = _for_seconds(rule.for_text)
    if not math.isclose(rule_for, row.for_):
        problems.append(
            f"{row.alert}: rule 'for: {rule.for_text or '0s'}' ({rule_for:g}s) differs from the documented "
            f"{row.for_:g}s in {where}"
        )
    if rule.labels.get("severity") != row.severity:
        problems.append(f"{row.alert}: severity label {rule.labels.get('severity')!r}, documented {row.severity!r}")
    return problems
