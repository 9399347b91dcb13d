"""``summary.json``: the run's verdict and one entry per check, for machines and for sign-off."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opsgate.evidence.coverage import CoverageReport
from opsgate.evidence.records import CheckRecord, Sample, TimelineEvent, overall


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
    coverage: CoverageReport | None = None
    """Runbook coverage of this run's checks over the target's claims registry (None: no registry)."""

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
            **({"coverage": asdict(self.coverage)} if self.coverage is not None else {}),
        }

    def write(self, path: Path) -> None:
        """Write summary.json."""
        path.write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n")


def _unix(value: object) -> float | None:
    return None if value in (None, "") else datetime.fromisoformat(str(value)).timestamp()


def record_from_json(data: dict[str, Any]) -> CheckRecord:
    """A check record as summary.json lists it, read back."""
    fields = dict(data)
    fields["samples"] = [Sample(**s) for s in data.get("samples") or []]
    fields["timeline"] = [TimelineEvent(**e) for e in data.get("timeline") or []]
    fields["series"] = {k: [Sample(**s) for s in v] for k, v in (data.get("series") or {}).items()}
    return CheckRecord(**fields)


def read_summary(path: Path) -> RunSummary:
    """A run's summary.json read back (its coverage, derived from the checks, is not kept).

    Raises ValueError naming the file when it is not a summary opsgate wrote.
    """
    try:
        data = json.loads(path.read_text())
        started = _unix(data["started_at"])
        assert started is not None
        return RunSummary(
            target=str(data["target"]),
            environment=str(data["environment"]),
            started_at=started,
            finished_at=_unix(data.get("finished_at")),
            checks=[record_from_json(c) for c in data["checks"]],
            info={str(k): str(v) for k, v in (data.get("info") or {}).items()},
        )
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
        raise ValueError(f"{path}: not an opsgate summary.json ({type(exc).__name__}: {exc})") from None
