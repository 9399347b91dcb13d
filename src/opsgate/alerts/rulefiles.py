"""Rule files and runbooks named by a target: resolve paths (``opsgate:`` = packaged) and read rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from opsgate.config import Target

PACKAGED = "opsgate:"


def resolve(target: Target, name: str) -> Path:
    """A path from the target file: ``opsgate:reference/...`` inside the package, else relative to the file."""
    if name.startswith(PACKAGED):
        return Path(str(resources.files("opsgate").joinpath(name.removeprefix(PACKAGED))))
    path = Path(name)
    if not path.is_absolute() and target.source is not None:
        path = target.source.parent / path
    return path


@dataclass(frozen=True)
class AlertRule:
    """One alerting rule as written: name, expression, ``for`` (text), labels, annotations, file."""

    alert: str
    expr: str
    for_text: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    file: str = ""


def read_rules(paths: list[Path]) -> list[AlertRule]:
    """Every alerting rule in these files (recording rules are skipped); a missing file is an error."""
    rules: list[AlertRule] = []
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"rule file not found: {path}")
        document: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
        for group in document.get("groups", []):
            for rule in group.get("rules", []):
                if "alert" in rule:
                    rules.append(
                        AlertRule(
                            alert=str(rule["alert"]),
                            expr=str(rule["expr"]),
                            for_text=str(rule.get("for", "")),
                            labels={k: str(v) for k, v in (rule.get("labels") or {}).items()},
                            annotations={k: str(v) for k, v in (rule.get("annotations") or {}).items()},
                            file=str(path),
                        )
                    )
    return rules


def recorded_names(paths: list[Path]) -> set[str]:
    """Names of the series the recording rules of these files write (missing files are skipped)."""
    names: set[str] = set()
    for path in paths:
        if path.is_file():
            document: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
            names |= {str(r["record"]) for g in document.get("groups", []) for r in g.get("rules", []) if "record" in r}
    return names


def rule_paths(target: Target) -> list[Path]:
    """The target's rule files, resolved."""
    return [resolve(target, name) for name in target.alerts.rules]
