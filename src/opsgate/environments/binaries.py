"""Finding the server binaries the local environment runs, with the package to install when missing."""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path


class MissingBinary(Exception):
    """A needed executable is not installed; the message names it, where we looked and what to install."""


def _first_executable(paths: list[str]) -> str | None:
    for path in paths:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def postgres_bin_dir() -> Path:
    """Directory holding initdb/postgres/pg_dump: ``$OPSGATE_PG_BIN_DIR`` or Debian's newest version."""
    override = os.environ.get("OPSGATE_PG_BIN_DIR")
    dirs = [override] if override else sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for folder in dirs:
        if _first_executable([os.path.join(folder, "initdb")]) and _first_executable(
            [os.path.join(folder, "postgres")]
        ):
            return Path(folder)
    if not override:
        found = shutil.which("initdb")
        if found:
            return Path(os.path.realpath(found)).parent
    looked = override or "/usr/lib/postgresql/*/bin and PATH"
    raise MissingBinary(
        f"initdb not found (looked in {looked}): install PostgreSQL's server, e.g. `apt-get install postgresql`"
        " (or run `make .venv`, which installs it)"
    )


def _version_key(folder: str) -> float:
    try:
        return float(Path(folder).parent.name)
    except ValueError:
        return 0.0


def executable(name: str, package: str, env_override: str) -> str:
    """An executable from ``$env_override`` or PATH; :class:`MissingBinary` names the Debian package."""
    override = os.environ.get(env_override)
    found = _first_executable([override]) if override else shutil.which(name)
    if found:
        return found
    looked = override or "PATH"
    raise MissingBinary(f"{name} not found (looked in {looked}): install it with `apt-get install {package}`")


def redis_server() -> str:
    """The redis-server executable."""
    return executable("redis-server", "redis-server", "OPSGATE_REDIS_SERVER")
