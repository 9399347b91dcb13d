"""Versions of the tools a run relies on, for the evidence: each looked up once per process, quickly.

A lookup never fails the run: a missing tool reads ``not installed``, one that does not answer within
:data:`TIMEOUT_S` (or prints nothing recognisable) reads ``unknown``. Executables are asked in parallel,
so the whole lookup costs about as long as the slowest one (~0.15 s here). Python packages are read
from their installed metadata: importing locust would gevent-patch this process.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata

from opsgate.environments import binaries

TIMEOUT_S = 3.0
"""Seconds one ``--version`` may take."""
NOT_INSTALLED = "not installed"
UNKNOWN = "unknown"
VERSION = re.compile(r"(\d+\.\d+(?:\.\d+)*)")


def _on_path(name: str, env_override: str = "") -> str:
    path = (os.environ.get(env_override) if env_override else None) or shutil.which(name)
    if not path:
        raise binaries.MissingBinary(name)
    return path


EXECUTABLES: dict[str, Callable[[], str]] = {
    "postgres": lambda: str(binaries.postgres_bin_dir() / "postgres"),
    "redis-server": binaries.redis_server,
    "prometheus": lambda: _on_path("prometheus", "OPSGATE_PROMETHEUS"),
    "promtool": lambda: _on_path("promtool"),
    "alertmanager": lambda: _on_path("prometheus-alertmanager", "OPSGATE_ALERTMANAGER"),
    "chromium": lambda: os.environ.get("OPSGATE_CHROMIUM") or "/usr/bin/chromium",
}
"""Tool name → how to find its executable (raises MissingBinary when absent)."""
PACKAGES = ("locust", "playwright", "testcontainers")
"""Python distributions whose installed version is recorded."""
TOOLS: tuple[str, ...] = (*EXECUTABLES, *PACKAGES)


def executable_version(find: Callable[[], str]) -> str:
    """The first ``N.N[.N]`` an executable prints for ``--version``, ``not installed`` or ``unknown``."""
    try:
        path = find()
    except binaries.MissingBinary:
        return NOT_INSTALLED
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return NOT_INSTALLED
    try:
        result = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    for line in (result.stdout + "\n" + result.stderr).splitlines():
        found = VERSION.search(line)
        if found and not line.startswith(path + ":"):  # Debian's chromium wrapper may complain first
            return found.group(1)
    return UNKNOWN


def package_version(name: str) -> str:
    """An installed Python distribution's version, or ``not installed``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return NOT_INSTALLED


def tool_versions() -> dict[str, str]:
    """``{tool: version}`` for every tool in :data:`TOOLS`, in that order; looked up once per process."""
    return dict(_looked_up())


@functools.cache
def _looked_up() -> tuple[tuple[str, str], ...]:
    with ThreadPoolExecutor(max_workers=len(EXECUTABLES)) as pool:
        found = list(zip(EXECUTABLES, pool.map(executable_version, EXECUTABLES.values()), strict=True))
    return (*found, *((name, package_version(name)) for name in PACKAGES))
