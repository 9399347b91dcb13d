"""Drill logs on disk: ``<dir>/<environment>/<YYYYMMDD-HHMMSS>-<drill>.md`` with a YAML front matter."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml


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
