"""Drill logs on disk: ``<dir>/<environment>/<YYYYMMDD-HHMMSS>-<drill>.md`` with a YAML front matter."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from opsgate.evidence.records import CheckRecord


@dataclass(frozen=True)
class DrillLog:
    """One drill log's front matter: which drill, its outcome, when it finished (unix s)."""

    path: Path
    drill: str
    outcome: str
    finished_at: float


def read_front_matter(path: Path) -> DrillLog | None:
    """Parse a drill log's front matter; None when it has none or it lacks outcome/finished_at."""
    text = path.read_text(errors="replace")
    if not text.startswith("---\n"):
        return None
    end = text.find("\n---", 4)
    if end < 0:
        return None
    try:
        meta = yaml.safe_load(text[4:end]) or {}
        finished = meta["finished_at"]
        finished_at = (
            finished.timestamp()
            if isinstance(finished, datetime)
            else datetime.fromisoformat(str(finished)).timestamp()
        )
        return DrillLog(path, str(meta.get("drill", path.stem)), str(meta["outcome"]), finished_at)
    except (yaml.YAMLError, KeyError, ValueError, TypeError, AttributeError):
        return None


def newest_passing(folder: Path, environment: str) -> DrillLog | None:
    """The most recently finished drill log with outcome ``pass`` for ``environment``."""
    logs = [read_front_matter(p) for p in sorted((folder / environment).glob("*.md"))]
    passing = [log for log in logs if log is not None and log.outcome == "pass"]
    return max(passing, key=lambda log: log.finished_at, default=None)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).isoformat(timespec="seconds")


def render_drill_log(
    record: CheckRecord,
    *,
    target: str,
    environment: str,
    objective: str,
    snapshots: dict[str, dict[str, Any]],
    seeds: dict[str, int],
) -> str:
    """A drill log: front matter (drill, outcome, started/finished), objective, steps, snapshots, outcome."""
    started = record.started_at or time.time()
    finished = record.finished_at or started
    front = {
        "drill": record.id,
        "outcome": record.verdict,
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "target": target,
        "environment": environment,
        "claim": record.claim,
        "seeds": seeds or None,
    }
    lines = ["---", yaml.safe_dump({k: v for k, v in front.items() if v is not None}, sort_keys=False).strip(), "---"]
    lines += [f"# Drill `{record.id}` — {record.verdict.upper()}", "", "## Objective", "", objective or "(not stated)"]
    lines += ["", "## Preconditions", "", f"Target `{target}` ({environment}); the steady state is the first step."]
    lines += ["", "## Steps", "", "| at | +s | step | detail |", "|---|---|---|---|"]
    for event in record.timeline:
        detail = event.detail.replace("|", "\\|").replace("\n", " ")[:300]
        lines.append(f"| {_iso(event.at)[11:19]} | {event.at - started:.2f} | {event.what} | {detail} |")
    for when in ("before", "after"):
        if snapshots.get(when):
            shown = json.dumps(snapshots[when], indent=2, default=str)
            lines += ["", f"## Snapshot {when}", "", "```json", shown, "```"]
    if record.series:
        lines += ["", "## Samples", "", "| series | samples | min | max | last |", "|---|---|---|---|---|"]
        for name, samples in record.series.items():
            values = [s.value for s in samples if s.value is not None]
            stats = (f"{min(values):g} | {max(values):g} | {values[-1]:g}") if values else "- | - | -"
            lines.append(f"| {name} | {len(samples)} | {stats} |")
    lines += ["", "## Outcome", "", f"**{record.verdict.upper()}** in {finished - started:.1f}s: {record.message}"]
    if record.measured:
        lines += ["", f"Measured: {record.measured}"]
    lines += ["", "## Follow-ups", ""]
    lines.append("None." if record.verdict == "pass" else f"- Investigate: {record.message}")
    return "\n".join(lines) + "\n"


def drill_log_path(folder: Path, environment: str, drill: str, started_at: float) -> Path:
    """``<folder>/<environment>/<YYYYMMDD-HHMMSS>-<drill>.md`` (UTC), never overwriting an existing log."""
    stamp = datetime.fromtimestamp(started_at, tz=UTC).strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in drill).strip("-")
    path = folder / environment / f"{stamp}-{safe}.md"
    suffix = 1
    while path.exists():
        suffix += 1
        path = folder / environment / f"{stamp}-{safe}-{suffix}.md"
    return path
