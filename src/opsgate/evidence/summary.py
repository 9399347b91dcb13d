"""``summary.json``: the run's verdict and one entry per check, for machines and for sign-off."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opsgate.evidence.records import CheckRecord, overall


def iso(ts: float | None) -> str | None:
    """A unix time as ISO 8601 UTC."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


@dataclass
class RunSummary:
    """Everything summary.json and report.html show about a run."""

    target: str
    environment: str
    started_at: float
    finished_at: float | None = None
    checks: list[CheckRecord] = field(default_factory=list)
    info: dict[str, str] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """The top-level verdict (see :func:`opsgate.evidence.records.overall`)."""
        return overall([c.verdict for c in self.checks]) if self.checks else "inconclusive"

    def counts(self) -> dict[str, int]:
        """How many checks had each verdict."""
        result: dict[str, int] = {}
        for check in self.checks:
            result[check.verdict] = result.get(check.verdict, 0) + 1
        return result

    def to_json(self) -> dict[str, Any]:
        """The summary.json document."""
        return {
            "verdict": self.verdict,
            "target": self.target,
            "environment": self.environment,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "counts": self.counts(),
            "info": self.info,
            "checks": [c.to_json() for c in self.checks],
        }

    def write(self, path: Path) -> None:
        """Write summary.json."""
        path.write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n")
