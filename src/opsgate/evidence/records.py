"""The evidence record of one check: verdict, measured value against threshold, samples, timestamps."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Verdict = Literal["pass", "fail", "error", "inconclusive", "aborted", "refused"]
VERDICTS: tuple[Verdict, ...] = ("pass", "fail", "error", "inconclusive", "aborted", "refused")


@dataclass(frozen=True)
class Sample:
    """One observation inside a window: when (unix s), the value (None = no data), whether it passed,
    and whether the target answered at all (``reached`` False: refused, timed out)."""

    at: float
    value: float | None
    ok: bool
    note: str = ""
    reached: bool = True


@dataclass(frozen=True)
class TimelineEvent:
    """One step of a drill: when (unix s), what happened, details."""

    at: float
    what: str
    detail: str = ""


@dataclass
class CheckRecord:
    """What one check found. ``verdict``: pass, fail (the system broke the claim), error (opsgate could
    not check), inconclusive (not enough evidence — never a pass), aborted, refused (a guard said no)."""

    id: str
    kind: str
    verdict: Verdict
    message: str = ""
    measured: float | str | None = None
    threshold: float | str | None = None
    op: str = ""
    unit: str = ""
    claim: str | None = None
    samples: list[Sample] = field(default_factory=list)
    started_at: float | None = None
    finished_at: float | None = None
    attachments: list[str] = field(default_factory=list)
    timeline: list[TimelineEvent] = field(default_factory=list)
    """A drill's steps in order (steady state, fault applied, alert firing, rollback, drained...)."""
    series: dict[str, list[Sample]] = field(default_factory=dict)
    """A drill's probe samples over time, per series (queue depth, error ratio...)."""
    figures: dict[str, float | int | str | None] = field(default_factory=dict)
    """Named figures behind the verdict (an SLO row's exact and Locust percentiles, rates, counts)."""

    def to_json(self) -> dict[str, Any]:
        """The record as summary.json lists it."""
        return asdict(self)


def overall(verdicts: list[Verdict]) -> Verdict:
    """The run's verdict: fail if any failed, else error, else inconclusive (or aborted), else refused, else pass."""
    present = set(verdicts)
    if "fail" in present:
        return "fail"
    if "error" in present:
        return "error"
    if present & {"inconclusive", "aborted"}:
        return "inconclusive"
    if "refused" in present:
        return "refused"
    return "pass"
