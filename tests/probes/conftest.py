"""Fixtures for the probe tests: one real redis-server per session, a fresh database per test, Bull's npm install."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from opsgate.environments.binaries import redis_server
from opsgate.environments.ports import PortAllocator
from opsgate.environments.process import ManagedProcess
from opsgate.waits import wait_until

NODE_DIR = Path(__file__).parent / "node"
NPM_INSTALL_TIMEOUT_S = 180.0
DATABASES = 16  # redis-server's default; tests take them in turn
_next_db = itertools.cycle(range(1, DATABASES))


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real redis-server on a free port of 127.0.0.1 for the whole session; stopped, and checked gone, after."""
    port = PortAllocator().pick()
    log = tmp_path_factory.mktemp("redis") / "redis.log"
    argv = [redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = ManagedProcess("redis", argv, {"PATH": os.environ.get("PATH", "")}, log)
    process.start()
    try:
        client = redis.Redis(port=port, socket_connect_timeout=1.0, socket_timeout=1.0)
        wait_until(
            lambda: client.ping() or None,
            what="redis-server to answer PING",
            timeout_s=10.0,
            address=f"127.0.0.1:{port}",
            log=log,
            give_up=lambda: None if process.is_running() else f"redis-server exited ({process.exit_code()})",
        )
        client.close()
        yield port
    finally:
        pid = process.pid
        process.stop()
        assert not process.is_running()
        assert pid is not None and not Path(f"/proc/{pid}").exists(), f"redis-server (pid {pid}) is still there"


@pytest.fixture
def redis_url(redis_port: int) -> str:
    """A URL of a Redis database of its own for this test, emptied first."""
    url = f"redis://127.0.0.1:{redis_port}/{next(_next_db)}"
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[tuple[redis.asyncio.Redis, redis.asyncio.Redis]]:
    """Two asyncio clients on the test's database: ``decode_responses`` False, then True."""
    raw = redis.asyncio.Redis.from_url(redis_url, decode_responses=False)
    text = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    yield raw, text
    await raw.aclose()
    await text.aclose()


@pytest.fixture(scope="session")
def bull_helper() -> Path:
    """``node/bull_jobs.js`` with Bull installed next to it (``npm install`` once, when node_modules is missing)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "the Bull tests need Node.js and npm on PATH (node v18+); install them, e.g. `apt-get install nodejs npm`"
        )
    if not (NODE_DIR / "node_modules" / "bull").is_dir():
        argv = [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"]
        try:
            done = subprocess.run(argv, cwd=NODE_DIR, capture_output=True, text=True, timeout=NPM_INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"`npm install` in {NODE_DIR} did not finish within {NPM_INSTALL_TIMEOUT_S:.0f}s (registry reachable?)"
            )
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
            pytest.fail(f"`npm install` in {NODE_DIR} failed with exit code {done.returncode}:\n{tail}")
    return NODE_DIR / "bull_jobs.js"
