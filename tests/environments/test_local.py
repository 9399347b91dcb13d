"""The local environment: start/stop by PID, port conflicts, missing binaries, restarts on a new database."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from helpers import alive
from opsgate.environments.binaries import MissingBinary
from opsgate.environments.local import LocalEnvironment
from opsgate.environments.ports import PortAllocator, ephemeral_range, is_free


def test_ports_are_below_the_ephemeral_range_and_free() -> None:
    low, _high = ephemeral_range()
    allocator = PortAllocator(seed=1)
    ports = [allocator.pick() for _ in range(20)]
    assert len(set(ports)) == 20
    assert all(p < low and is_free(p) for p in ports)


def test_a_port_in_use_is_skipped() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        spare = PortAllocator(seed=2).pick()
        assert PortAllocator(candidates=[taken, spare]).pick() == spare


def test_two_workers_start_stop_leaves_nothing_and_a_port_taken_meanwhile_is_moved(tmp_path: Path) -> None:
    environment = LocalEnvironment(tmp_path / "logs", workers=2, time_scale=0.02, defects="")
    planned_redis = environment.ports.redis
    with socket.socket() as squatter:  # someone takes the port between allocation and start
        squatter.bind(("127.0.0.1", planned_redis))
        squatter.listen()
        with environment:
            assert environment.ports.redis != planned_redis
            assert redis.Redis.from_url(environment.redis_url).ping()
            assert httpx.get(f"{environment.api_url}/readyz").json()["ready"] is True
            pids = environment.running_pids()
            assert set(pids) == {"postgres", "postgres-proxy", "redis", "provider", "api", "worker-1", "worker-2"}
            assert all(httpx.get(f"{url}/readyz").status_code == 200 for url in environment.worker_urls)
            assert (tmp_path / "logs" / "processes.json").exists()
            root = environment.root
            assert root is not None and root.exists()
    assert [name for name, pid in pids.items() if alive(pid)] == []
    assert not root.exists()
    assert "Address already in use" in (tmp_path / "logs" / "redis.log").read_text()


def test_a_missing_binary_names_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSGATE_PG_BIN_DIR", str(tmp_path / "no-such-dir"))
    environment = LocalEnvironment(tmp_path / "logs")
    with pytest.raises(MissingBinary) as caught:
        environment.start()
    message = str(caught.value)
    assert "initdb not found" in message and "apt-get install postgresql" in message and "\n" not in message
    assert environment.processes == {}
    monkeypatch.delenv("OPSGATE_PG_BIN_DIR")
    monkeypatch.setenv("OPSGATE_REDIS_SERVER", str(tmp_path / "redis-server"))
    with pytest.raises(MissingBinary, match="apt-get install redis-server"):
        LocalEnvironment(tmp_path / "logs").start()


def test_a_restart_on_a_new_database_keeps_nothing_of_the_old_one(tmp_path: Path) -> None:
    """What the detection matrix relies on between defect rows: a plain restart keeps the data, a restart on a
    new database leaves none of it, and the platform comes back migrated and ready on the same ports."""
    with LocalEnvironment(tmp_path / "logs", time_scale=0.02, defects="") as environment:
        ports = environment.ports

        def plant_marker() -> None:
            with psycopg.connect(environment.database_url, autocommit=True) as conn:
                conn.execute("create table matrix_marker (id int)")
            with redis.Redis.from_url(environment.redis_url) as client:
                client.set("matrix-marker", "1")

        def marker_left() -> tuple[bool, bool]:
            with psycopg.connect(environment.database_url, autocommit=True) as conn:
                row = conn.execute("select to_regclass('matrix_marker') is not null").fetchone()
            with redis.Redis.from_url(environment.redis_url) as client:
                return bool(row and row[0]), bool(client.exists("matrix-marker"))

        plant_marker()
        environment.restart_platform(defects="")
        assert marker_left() == (True, True)
        environment.restart_platform(defects="", new_database=True)
        assert marker_left() == (False, False)
        assert environment.ports == ports
        assert httpx.get(f"{environment.api_url}/readyz").json()["ready"] is True
        with psycopg.connect(environment.database_url) as conn:
            row = conn.execute("select count(*) from schema_migrations").fetchone()
        assert row is not None and row[0] > 0
