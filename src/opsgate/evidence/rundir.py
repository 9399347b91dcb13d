"""One directory per run, ``reports/<run-id>/``, and the ``reports/latest`` link to the newest."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

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
