"""Named pause points of a drill, for tests that interrupt a drill at an exact moment.

Off unless ``OPSGATE_BARRIER_DIR`` is set. At a point named in ``OPSGATE_BARRIER_AT`` (comma-separated),
the drill creates ``<dir>/<point>.reached`` and waits (at most ``WAIT_S``) for ``<dir>/<point>.release``.
Points: ``before-fault`` (undo journalled, fault not applied), ``fault-applied`` (applied and verified,
not judged), ``in-rollback`` (signals blocked, undo not yet run).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

WAIT_S = 60.0


def barrier(point: str) -> None:
    """Pause at ``point`` when a test asked for it; returns at once otherwise."""
    folder = os.environ.get("OPSGATE_BARRIER_DIR")
    if not folder or point not in os.environ.get("OPSGATE_BARRIER_AT", "").split(","):
        return
    (Path(folder) / f"{point}.reached").touch()
    release = Path(folder) / f"{point}.release"
    deadline = time.monotonic() + WAIT_S
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
