"""One directory per run, ``reports/<run-id>/``, and the ``reports/latest`` link to the newest."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from opsgate.evidence.summary import RunSummary, read_summary

DEFAULT_REPORTS_DIR = Path("reports")


def reports_dir() -> Path:
    """Where runs are written: ``$OPSGATE_REPORTS_DIR`` or ``./reports``."""
    return Path(os.environ.get("OPSGATE_REPORTS_DIR") or DEFAULT_REPORTS_DIR)


def new_run_dir(base: Path | None = None) -> Path:
    """Create ``<base>/<UTC time>-<suffix>/`` and point ``<base>/latest`` at it."""
    base = base or reports_dir()
    base.mkdir(parents=True, exist_ok=True)
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)
    run_dir = base / run_id
    run_dir.mkdir()
    latest = base / "latest"
    temporary = base / f".latest-{run_id}"
    temporary.symlink_to(run_id)
    try:
        os.replace(temporary, latest)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()
    return run_dir


RUN_KINDS = ("gate", "drill", "load")


@dataclass(frozen=True)
class Run:
    """One finished run on disk: its directory and its summary."""

    path: Path
    summary: RunSummary

    @property
    def kind(self) -> str:
        """``gate``, ``drill``, ``load`` (from ``opsgate gate|drill|load``) or ``pytest`` (plain pytest)."""
        return self.summary.info.get("run kind", "pytest")


def runs(base: Path | None = None, *, target: str | None = None) -> list[Run]:
    """Every run under ``base`` (default :func:`reports_dir`) with a readable summary.json, oldest first.

    ``target``: only runs of the target with that name. Folders without a summary (a run that judged
    nothing, a sign-off bundle) are not runs and are left out.
    """
    base = base or reports_dir()
    found = []
    for summary in sorted(base.glob("*/summary.json")):
        if summary.parent.is_symlink():
            continue
        try:
            run = Run(summary.parent, read_summary(summary))
        except ValueError:
            continue
        if target is None or run.summary.target == target:
            found.append(run)
    return sorted(found, key=lambda run: run.summary.started_at)


def newest_runs(base: Path | None = None, *, target: str) -> dict[str, Run]:
    """The newest run of each kind (gate, drill, load) of ``target``; a kind never run is absent."""
    newest: dict[str, Run] = {}
    for run in runs(base, target=target):
        if run.kind in RUN_KINDS:
            newest[run.kind] = run
    return newest
