"""The containers environment: PostgreSQL and Redis in containers (testcontainers), the platform on the host.

Everything else is the local environment's: the reference platform's api, workers and sandbox, the
fault proxy and the alerting stack stay host processes. They are opsgate's own Python code, run
from the same venv as the suite, so a container for them would only add an image to build and keep
in step; what a CI runner with Docker usually supplies, and what teams run in containers, is the
datastores. Every container uses host networking on ports opsgate picks (no bridge exists here);
readiness is proven by a real login (PostgreSQL query, Redis PING with the password), not a log line.

An outage is ``docker stop`` and the restore ``docker start`` of the same container, so data
(PGDATA, Redis's AOF) survives like a restarted server's. Teardown removes every container this
environment created, and stops ``dockerd`` if opsgate had to start it. Ryuk (testcontainers' reaper)
is disabled: its image cannot be pulled; the journal lets ``opsgate recover`` remove the containers
of a run that was killed.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker.errors
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer

from opsgate.config import DEPS_IMAGE
from opsgate.environments.docker_engine import DockerEngine, ensure_image
from opsgate.environments.local import DATABASE, DB_USER, LocalEnvironment
from opsgate.environments.process import STOP_TIMEOUT_S, ServiceProcess, process_start_time

testcontainers_config.ryuk_disabled = True

RUN_LABEL = "org.opsgate.run"
"""Label on every container opsgate creates: the environment's id (``docker ps -a --filter label=...``)."""


@dataclass
class ContainerProcess:
    """A service in a container, with the interface of a host process (see ``ServiceProcess``).

    ``stop`` keeps the container (and its data); ``start`` again starts the same one. ``remove`` deletes it.
    Its log is appended to ``log_path`` while it runs.
    """

    name: str
    image: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    labels: dict[str, str]
    stop_signal: str = "SIGTERM"
    container: DockerContainer | None = field(default=None, repr=False)
    start_ticks: int | None = None
    log_offset: int = 0
    _pid: int | None = field(default=None, repr=False)

    @property
    def container_id(self) -> str | None:
        return self.container.get_container_id() if self.container is not None else None

    def start(self) -> None:
        """Create and start the container (first time), or start it again after ``stop``."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {self.name} ({self.image}) ---\n".encode())
        since = int(time.time())
        if self.container is None:
            self.container = DockerContainer(self.image, env=self.env, network_mode="host", labels=self.labels,
                                             stop_signal=self.stop_signal).with_command(self.command)  # fmt: skip
            try:
                self.container.start()
            except BaseException:
                self.remove()  # created but not started: never left behind
                raise
        else:
            self.container.get_wrapped_container().start()
        state = self._state()
        self._pid = int(state.get("Pid") or 0) or None
        self.start_ticks = process_start_time(self._pid) if self._pid else None
        threading.Thread(target=self._copy_logs, args=(since,), name=f"logs-{self.name}", daemon=True).start()

    def _copy_logs(self, since: int) -> None:
        """Append the container's output to ``log_path`` until it stops (the stream ends then)."""
        if self.container is None:
            return
        try:
            stream = self.container.get_wrapped_container().logs(stream=True, follow=True, since=since)
            with self.log_path.open("ab") as log:
                for chunk in stream:
                    log.write(chunk)
                    log.flush()
        except (docker.errors.DockerException, OSError):
            return  # removed meanwhile: the log so far is kept

    def _state(self) -> dict[str, Any]:
        if self.container is None:
            return {}
        try:
            wrapped = self.container.get_wrapped_container()
            wrapped.reload()
        except docker.errors.NotFound:
            return {}
        return dict(wrapped.attrs.get("State", {}))

    @property
    def pid(self) -> int | None:
        """The host PID of the container's main process while started."""
        return self._pid

    def exit_code(self) -> int | None:
        """The exit code once the container has stopped, else None."""
        state = self._state()
        if not state or state.get("Running"):
            return None
        return int(state.get("ExitCode", 0))

    def is_running(self) -> bool:
        return bool(self._state().get("Running"))

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the container's main process (``docker kill --signal``)."""
        if self.container is not None and self.is_running():
            self.container.get_wrapped_container().kill(signal=signal.Signals(signum).name)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """``docker stop``: the stop signal, SIGKILL after ``timeout_s``; the container and its data stay."""
        if self.container is None:
            return None
        if self.is_running():
            self.container.get_wrapped_container().stop(timeout=int(max(1, timeout_s)))
        return self.exit_code()

    def kill(self) -> None:
        """SIGKILL the container's main process now (a crash)."""
        if self.container is not None and self.is_running():
            self.container.get_wrapped_container().kill()

    def remove(self) -> None:
        """Delete the container (force) and its anonymous volumes."""
        if self.container is not None:
            with contextlib.suppress(docker.errors.NotFound):
                self.container.stop(force=True, delete_volume=True)
            self.container = None

    def record(self) -> dict[str, Any]:
        """What ``processes.json`` notes: host PID, start time, container id and image."""
        return {"pid": self.pid, "start_ticks": self.start_ticks, "container": self.container_id, "image": self.image}


@dataclass
class ContainersEnvironment(LocalEnvironment):
    """The local environment with PostgreSQL and Redis in containers. Use as a context manager."""

    postgres_image: str = DEPS_IMAGE
    redis_image: str = DEPS_IMAGE
    run_id: str = field(default_factory=lambda: "opsgate-" + secrets.token_hex(4))
    """Value of the ``org.opsgate.run`` label on this environment's containers."""
    engine: DockerEngine | None = None
    containers: dict[str, ContainerProcess] = field(default_factory=dict)

    def start(self) -> None:
        """Make sure an engine runs and the images exist, then start everything like the local environment."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.engine = DockerEngine(self.log_dir)
        self.engine.start()
        try:
            if self.journal is not None and self.engine.process is not None and self.engine.process.pid:
                self.journal.record_process("dockerd", self.engine.process.pid, self.engine.process.start_ticks)
            for image in dict.fromkeys((self.postgres_image, self.redis_image)):
                ensure_image(image, self.log_dir / "image-build.log")
            super().start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the platform and the containers, remove the containers, stop a ``dockerd`` opsgate started."""
        try:
            super().stop()
        finally:
            for container in self.containers.values():
                container.remove()
            self.containers.clear()
            if self.engine is not None:
                self.engine.stop()

    def describe(self) -> list[tuple[str, str]]:
        rows = super().describe()
        images = {"postgres": self.postgres_image, "redis": self.redis_image}
        return [(name + (f" (container {images[name]})" if name in images else ""), address)
                for name, address in rows]  # fmt: skip

    # --- the datastores as containers ----------------------------------------------------------

    def _datastore_recipes(self) -> dict[str, tuple[Callable[[], ServiceProcess], Callable[[], bool | None]]]:
        return {
            "postgres": (self._postgres_container, self._postgres_ready),
            "redis": (self._redis_container, self._redis_ready),
        }

    def _init_postgres(self) -> None:
        """Nothing to do: the image initialises PGDATA and creates the database on its first start."""

    def _create_database(self) -> None:
        """Nothing to do: ``POSTGRES_DB`` made the image create it."""

    def _container(self, name: str, make: Callable[[], ContainerProcess]) -> ContainerProcess:
        """The container of ``name``: the one created before (stopped by an outage), or a new one."""
        if name not in self.containers:
            self.containers[name] = make()
        return self.containers[name]

    def _postgres_container(self) -> ContainerProcess:
        def make() -> ContainerProcess:
            command = [
                "postgres",
                "-p", str(self.ports.postgres),
                "-c", "listen_addresses=127.0.0.1",
                "-c", "fsync=off",
                "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off",
                "-c", "max_connections=200",
            ]  # fmt: skip
            env = {"POSTGRES_USER": DB_USER, "POSTGRES_PASSWORD": self.credentials.db_password,
                   "POSTGRES_DB": DATABASE}  # fmt: skip
            # SIGINT is PostgreSQL's "fast" shutdown (the official image's STOPSIGNAL too).
            return ContainerProcess("postgres", self.postgres_image, command, env, self.log_dir / "postgres.log",
                                    self._labels("postgres"), stop_signal="SIGINT")  # fmt: skip

        return self._container("postgres", make)

    def _redis_container(self) -> ContainerProcess:
        def make() -> ContainerProcess:
            command = [
                "redis-server",
                "--port", str(self.ports.redis),
                "--bind", "127.0.0.1",
                "--save", self.redis_save,
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--dir", "/data",
                "--requirepass", self.credentials.redis_password,
            ]  # fmt: skip
            return ContainerProcess("redis", self.redis_image, command, {}, self.log_dir / "redis.log",
                                    self._labels("redis"))  # fmt: skip

        return self._container("redis", make)

    def _labels(self, name: str) -> dict[str, str]:
        return {RUN_LABEL: self.run_id, "org.opsgate.service": name}

    def _journal_started(self, name: str, process: ServiceProcess) -> None:
        """A container is journalled by id (``opsgate recover`` removes it); a host process by PID."""
        if isinstance(process, ContainerProcess):
            if self.journal is not None and process.container_id is not None:
                self.journal.record_container(name, process.container_id)
            return
        super()._journal_started(name, process)

    def _move_port(self, name: str) -> None:
        """A port taken before the container bound it: drop the container, so the next start uses the new port."""
        old = self.containers.pop(name, None)
        if old is not None:
            old.remove()
        super()._move_port(name)
