"""The containers environment itself: PostgreSQL and Redis in containers on the host network, an outage as a
container stop that keeps the data, one-line errors, and a teardown that leaves no container and no process."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import psycopg
import pytest
import redis
from leftovers import opsgate_containers

from helpers import TIME_SCALE, alive
from opsgate.config import DEPS_IMAGE
from opsgate.environments.containers import ContainersEnvironment
from opsgate.environments.docker_engine import DockerEngineError, engine_answers
from opsgate.faults.actions import FaultNotEffective, LocalServiceFault

pytestmark = pytest.mark.containers


def wait_for(check: object, what: str, timeout_s: float = 30.0) -> None:
    """Poll ``check()`` until true (bounded in time and count)."""
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / 0.1) + 1):
        if check():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def readyz(env: ContainersEnvironment) -> httpx.Response:
    return httpx.get(f"{env.api_url}/readyz", timeout=5)


def refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


@pytest.fixture
def environment(tmp_path: Path) -> Iterator[ContainersEnvironment]:
    env = ContainersEnvironment(tmp_path / "logs", time_scale=TIME_SCALE, defects="")
    with env:
        yield env


def test_datastores_run_in_containers_and_teardown_leaves_nothing(tmp_path: Path) -> None:
    engine_before = engine_answers()
    env = ContainersEnvironment(tmp_path / "logs", time_scale=TIME_SCALE, defects="")
    with env:
        containers = {c["Config"]["Labels"]["org.opsgate.service"]: c for c in opsgate_containers(tmp_path, env.run_id)}
        assert set(containers) == {"postgres", "redis"}
        for name, info in containers.items():
            assert info["HostConfig"]["NetworkMode"] == "host", name
            assert info["Config"]["Image"] == DEPS_IMAGE
            assert info["State"]["Running"] and info["State"]["Pid"] == env.processes[name].pid
        with psycopg.connect(env.database_url, connect_timeout=5) as conn:
            assert conn.execute("select current_user, current_database()").fetchone() == ("opsgate", "platform")
        assert redis.Redis.from_url(env.redis_url, socket_timeout=5).ping()
        body = readyz(env).json()
        assert body["ready"] is True and body["checks"]["postgres"]["ok"] and body["checks"]["redis"]["ok"], body
        pids = env.running_pids()
        assert {"postgres", "redis", "api", "worker-1", "provider"} <= set(pids)
        dockerd = env.engine.process.pid if env.engine and env.engine.process else None
        assert (dockerd is None) == engine_before  # opsgate starts an engine only when none answers
    assert [f"{name} (pid {pid})" for name, pid in pids.items() if alive(pid)] == []
    if dockerd is not None:
        assert not alive(dockerd) and not engine_answers(), "the dockerd opsgate started is still running"
    else:
        assert engine_answers(), "an engine opsgate found running was stopped"
    assert opsgate_containers(tmp_path, env.run_id) == []


def test_redis_outage_is_a_container_stop_that_keeps_its_data(environment: ContainersEnvironment) -> None:
    env = environment
    client = redis.Redis.from_url(env.redis_url, socket_timeout=5)
    client.set("opsgate:before-outage", "kept")
    container_id = env.containers["redis"].container_id
    fault = LocalServiceFault(env, ["redis"])
    fault.apply()
    try:
        fault.verify()
        assert refuses(env.ports.redis)
        state = docker.from_env().containers.get(container_id).attrs["State"]
        assert not state["Running"], state  # stopped, not removed
        wait_for(lambda: readyz(env).status_code == 503, "readiness 503 while redis is down")
        assert readyz(env).json()["failing"] == ["redis"]
    finally:
        fault.rollback()
    assert env.containers["redis"].container_id == container_id  # the same container started again
    wait_for(lambda: readyz(env).status_code == 200, "readiness back after redis restarted")
    assert client.get("opsgate:before-outage") == b"kept"


def test_a_stop_that_did_not_happen_is_caught(environment: ContainersEnvironment) -> None:
    env = environment
    fault = LocalServiceFault(env, ["postgres"])
    # Not applied: the container still runs, so the proof must refuse it.
    with pytest.raises(FaultNotEffective, match="postgres still runs"):
        fault.verify()


def test_a_missing_image_is_one_line_and_starts_nothing(tmp_path: Path) -> None:
    env = ContainersEnvironment(tmp_path / "logs", time_scale=TIME_SCALE, redis_image="opsgate-no-such-image:1")
    with pytest.raises(DockerEngineError) as caught:
        env.start()
    message = str(caught.value)
    assert "\n" not in message
    assert "opsgate-no-such-image:1" in message and "never pulls" in message
    assert env.running_pids() == {} and env.containers == {}
    assert opsgate_containers(tmp_path, env.run_id) == []
