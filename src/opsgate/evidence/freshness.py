"""``opsgate freshness``: is the newest passing drill log of an environment younger than a maximum age?

The same rule as the target file's ``freshness: [{drill_logs: ...}]`` gate
(:func:`opsgate.evidence.drill_logs.newest_passing`): only a log whose front matter says ``outcome: pass``
counts, however recent a failing one is. Ages are wall-clock seconds since the log's ``finished_at``.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from opsgate.evidence.drill_logs import DrillLog, newest_passing, read_front_matter

EXIT_FRESH, EXIT_STALE, EXIT_USAGE = 0, 1, 2


def age_text(seconds: float) -> str:
    """A wall-clock age (s) as ``9.0d``, ``5.5h``, ``12.0m`` or ``40.0s``."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def read_logs(folder: Path, environment: str) -> list[DrillLog]:
    """Every drill log of ``folder/environment`` with a readable front matter; warns (one line) about the rest."""
    logs = []
    for path in sorted((folder / environment).glob("*.md")):
        try:
            log = read_front_matter(path)
        except OSError as exc:
            reason = exc.strerror or exc
            click.echo(f"opsgate: warning: {path}: cannot read the drill log ({reason}); skipped", err=True)
            continue
        if log is None:
            click.echo(f"opsgate: warning: {path}: no readable front matter (expected '---' YAML with outcome and "
                       "finished_at); skipped", err=True)  # fmt: skip
            continue
        logs.append(log)
    return logs


def freshness_command(drill_logs: Path, environment: str, max_age_s: float) -> int:
    """Print the verdict on the newest passing drill log of ``environment`` under ``drill_logs``; the exit code.

    0: it finished at most ``max_age_s`` seconds ago. 1: it is older, or there is none (no folder, no log,
    only non-passing logs — the newest of those is named). 2: ``environment`` is not a folder name.
    """
    if not environment or environment in (".", "..") or "/" in environment or "\\" in environment:
        click.echo(f"opsgate: --env: expected an environment name like 'staging', got {environment!r}", err=True)
        return EXIT_USAGE
    now = time.time()
    folder = drill_logs / environment
    logs = read_logs(drill_logs, environment)
    try:
        newest = newest_passing(drill_logs, environment)
    except OSError:  # a log it cannot read (already warned about): the same rule over the logs that were read
        newest = max((log for log in logs if log.outcome == "pass"), key=lambda log: log.finished_at, default=None)
    others = [log for log in logs if log.outcome != "pass"]
    latest_other = max(others, key=lambda log: log.finished_at, default=None)
    limit = f"max {age_text(max_age_s)}"
    if newest is None:
        where = f"{folder} does not exist" if not folder.is_dir() else f"{len(logs)} readable log(s) in {folder}"
        line = f"opsgate: freshness: missing: no passing drill log for {environment} ({where})"
        if latest_other is not None:
            line += (f"; newest log: {latest_other.path} (drill {latest_other.drill}, outcome {latest_other.outcome}, "
                     f"{age_text(now - latest_other.finished_at)} old)")  # fmt: skip
        click.echo(line)
        return EXIT_STALE
    age_s = now - newest.finished_at
    verdict = "stale" if age_s > max_age_s else "fresh"
    line = (f"opsgate: freshness: {verdict}: newest passing drill log for {environment} is {age_text(age_s)} old "
            f"({limit}): {newest.path}")  # fmt: skip
    if latest_other is not None and latest_other.finished_at > newest.finished_at:
        line += (f"; a newer log did not pass: {latest_other.path} (outcome {latest_other.outcome}, "
                 f"{age_text(now - latest_other.finished_at)} old)")  # fmt: skip
    click.echo(line)
    return EXIT_STALE if verdict == "stale" else EXIT_FRESH
