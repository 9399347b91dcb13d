"""The local environment: the reference platform and its dependencies as child processes on 127.0.0.1.

Starts PostgreSQL (initdb into a temp dir, fsync off), redis-server (AOF on, so a restart keeps
queued jobs), the provider sandbox, the api and the worker(s) on free ports below the ephemeral
range; waits until each is ready; captures each log; and stops exactly what it started, by PID.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
import psycopg
import redis
import yaml

from opsgate.alerts import stack
from opsgate.alerts.compress import Clamp
from opsgate.environments import binaries
from opsgate.environments.ports import PortAllocator
from opsgate.environments.process import ManagedProcess, ServiceProcess
from opsgate.faults.journal import Journal
from opsgate.reference.db import DEMO_TENANTS
from opsgate.reference.defects import RULE_DRIFTS, drift_rules
from opsgate.waits import wait_until

ALERTING_DEFECTS = RULE_DRIFTS.keys() | {
    "deployed-rules-missing-billing",
    "alert-annotations-dropped",
    "alertmanager-info-unrouted",
}
"""Defects planted in the deployed alerting config (Prometheus rules, Alertmanager routes), not in the platform."""

DATABASE = "platform"
DB_USER = "opsgate"
READY_TIMEOUT_S = 60.0
PORT_RETRIES = 3


class LocalEnvironmentError(Exception):
    """The local environment could not start; the message says which part and why."""


@dataclass(frozen=True)
class Credentials:
    """Secrets generated for one local run; none of them is ever written to a report."""

    db_password: str
    redis_password: str
    api_token: str
    api_token_2: str
    service_user: str
    service_password: str
    billing_webhook_secret: str
    provider_webhook_secret: str
    provider_api_key: str
    billing_webhook_secret_next: str
    """The secret a rotation drill switches the api to (``BILLING_WEBHOOK_SECRET_NEXT``)."""

    @classmethod
    def generate(cls) -> Credentials:
        """Fresh random credentials."""

        def token(prefix: str) -> str:
            return prefix + secrets.token_urlsafe(24)

        return cls(
            db_password=token("pg-"),
            redis_password=token("rd-"),
            api_token=token("tok_"),
            api_token_2=token("tok_"),
            service_user="ops-bot",
            service_password=token("pw-"),
            billing_webhook_secret=token("whsec_"),
            provider_webhook_secret=token("pwsec_"),
            provider_api_key=token("pk_"),
            billing_webhook_secret_next=token("whsec_"),
        )


@dataclass
class Ports:
    """The port of every service of one local environment."""

    postgres: int
    redis: int
    provider: int
    api: int
    workers: list[int]
    prometheus: int
    alertmanager: int
    receiver: int
    postgres_proxy: int
    postgres_proxy_control: int


REDIS_SNAPSHOT_S = 30 * 60
"""Seed 002: "Redis snapshot (RDB) every 30m" (scaled by the time scale)."""


@dataclass
class LocalEnvironment:
    """Start, control and stop the reference platform locally. Use as a context manager."""

    log_dir: Path
    workers: int = 1
    time_scale: float = 1.0
    defects: str | None = None
    backup_interval_s: float | None = None
    ports_from: PortAllocator = field(default_factory=PortAllocator)
    credentials: Credentials = field(default_factory=Credentials.generate)
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    started_in_s: float | None = None
    alert_rules: list[Path] = field(default_factory=list)
    """Rule files to load, time-compressed, into a local Prometheus + Alertmanager (none: no alerting stack)."""
    clamps: list[Clamp] = field(default_factory=list)
    journal: Journal | None = None
    """Where every started process (PID + start time) is noted, so ``opsgate recover`` can stop it after a SIGKILL."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        pick = self.ports_from.pick
        workers = [pick() for _ in range(self.workers)]
        self.ports = Ports(pick(), pick(), pick(), pick(), workers, pick(), pick(), pick(), pick(), pick())
        self.root: Path | None = None
        self._recipes: dict[str, tuple[Callable[[], ServiceProcess], Callable[[], bool | None]]] = {}
        self._deployed_drifts: frozenset[str] = frozenset()

    # --- addresses ------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def provider_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.provider}"

    @property
    def worker_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports.workers]

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.prometheus}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.alertmanager}"

    @property
    def receiver_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.receiver}"

    @property
    def database_url(self) -> str:
        c = self.credentials
        return f"postgresql://{DB_USER}:{c.db_password}@127.0.0.1:{self.ports.postgres}/{DATABASE}"

    @property
    def platform_database_url(self) -> str:
        """The DSN the platform uses: through opsgate's fault proxy, so a drill can degrade the network."""
        return self.database_url.replace(f":{self.ports.postgres}/", f":{self.ports.postgres_proxy}/")

    @property
    def postgres_proxy_url(self) -> str:
        """Control endpoint of the fault proxy between the platform and PostgreSQL (``/faults``)."""
        return f"http://127.0.0.1:{self.ports.postgres_proxy_control}"

    @property
    def backup_dir(self) -> Path:
        """Where the platform's scheduled ``pg_dump`` files go (inside the scratch root)."""
        assert self.root is not None, "start the environment first"
        return self.root / "backups"

    @property
    def redis_url(self) -> str:
        return f"redis://:{self.credentials.redis_password}@127.0.0.1:{self.ports.redis}/0"

    @property
    def tenant_id(self) -> str:
        """The demo tenant the target's auth uses (seed 001's tenant id)."""
        return str(DEMO_TENANTS[0]["id"])

    def environ(self) -> dict[str, str]:
        """The variables ``targets/local.yaml`` interpolates."""
        c = self.credentials
        return {
            "API_URL": self.api_url,
            "WORKER_URL": self.worker_urls[0],
            "PROVIDER_URL": self.provider_url,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "API_TOKEN": c.api_token,
            "TENANT_ID": self.tenant_id,
            "SERVICE_USER": c.service_user,
            "SERVICE_PASSWORD": c.service_password,
            "BILLING_WEBHOOK_SECRET": c.billing_webhook_secret,
            "BILLING_WEBHOOK_SECRET_NEXT": c.billing_webhook_secret_next,
            "PROVIDER_WEBHOOK_SECRET": c.provider_webhook_secret,
            "PROVIDER_API_KEY": c.provider_api_key,
            "PROMETHEUS_URL": self.prometheus_url if self.alert_rules else "",
            "ALERTMANAGER_URL": self.alertmanager_url if self.alert_rules else "",
            "RECEIVER_URL": self.receiver_url if self.alert_rules else "",
            "POSTGRES_PROXY_URL": self.postgres_proxy_url,
        }

    def describe(self) -> list[tuple[str, str]]:
        """(name, address) of every service, for ``opsgate up``; passwords in DSNs are masked."""
        c = self.credentials
        rows = [("api", self.api_url)]
        rows += [(f"worker-{i + 1}", url) for i, url in enumerate(self.worker_urls)]
        rows += [
            ("provider sandbox", self.provider_url),
            ("postgres", self.database_url.replace(c.db_password, "***")),
            ("postgres via proxy", self.platform_database_url.replace(c.db_password, "***")),
            ("proxy control", self.postgres_proxy_url),
            ("redis", self.redis_url.replace(c.redis_password, "***")),
        ]
        if self.alert_rules:
            rows += [("prometheus", self.prometheus_url), ("alertmanager", self.alertmanager_url),
                     ("alert receiver", self.receiver_url)]  # fmt: skip
        return rows

    def write_credentials_file(self) -> Path:
        """Write the target's variables (secrets included) to a 0600 env file outside ``reports/``."""
        assert self.root is not None, "start the environment first"
        path = self.root / "credentials.env"
        path.touch(mode=0o600)
        path.write_text("".join(f"export {k}='{v}'\n" for k, v in self.environ().items()))
        return path

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start everything and wait until each part is ready; on any failure stop what was started."""
        started = time.monotonic()
        self._recipes |= self._datastore_recipes()
        self._recipes |= {
            "postgres-proxy": (self._postgres_proxy_process, self._http_ready("postgres-proxy")),
            "provider": (self._provider_process, self._http_ready("provider")),
            "api": (self._api_process, self._http_ready("api")),
        }
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="opsgate-local-"))
        self.root.chmod(0o755)
        if self.journal is not None:
            self.journal.record_scratch(self.root)
        try:
            # Redis and the sandbox boot while initdb runs; the platform needs PostgreSQL's database.
            self._spawn("redis")
            self._spawn("provider")
            self._init_postgres()
            self.start_service("postgres")
            self._spawn("postgres-proxy")
            self._create_database()
            self._wait_ready("postgres-proxy")
            self._wait_ready("redis")
            self._wait_ready("provider")
            if self.alert_rules:
                # Prometheus starts early: its ~5 s service-discovery throttle overlaps the platform's start.
                self._prepare_alerting()
                for name in ("receiver", "alertmanager", "prometheus"):
                    self._spawn(name)
            self.start_platform()
            if self.alert_rules:
                for name in ("receiver", "alertmanager", "prometheus"):
                    self._wait_ready(name)
                self._wait_alerting_wired()
        except BaseException:
            self.stop()
            raise
        self.started_in_s = time.monotonic() - started

    def start_platform(self) -> None:
        """Start the api and the worker(s) (dependencies must be up) and wait until they are ready."""
        while len(self.ports.workers) < self.workers:
            self.ports.workers.append(self.ports_from.pick())
        names = ["api"] + [f"worker-{i + 1}" for i in range(self.workers)]
        for index in range(self.workers):
            self._recipes[names[index + 1]] = (partial(self._worker_process, index), self._http_ready(names[index + 1]))
        for name in names:
            self._spawn(name)
        for name in names:
            self._wait_ready(name)
        self._write_process_list()

    def start_service(self, name: str) -> None:
        """Start one service (``postgres``, ``redis``, ``provider``, ``api``, ``worker-N``) and wait for it."""
        if name in self.processes and self.processes[name].is_running():
            raise LocalEnvironmentError(f"{name} is already running (pid {self.processes[name].pid})")
        self._spawn(name)
        self._wait_ready(name)
        self._write_process_list()

    def stop_service(self, name: str, *, timeout_s: float = 10.0) -> int | None:
        """Stop one service gracefully (by PID); returns its exit code."""
        process = self.processes.pop(name, None)
        code = process.stop(timeout_s) if process else None
        self._write_process_list()
        return code

    def kill_service(self, name: str) -> None:
        """SIGKILL one service now (a crash: no graceful shutdown), by its PID."""
        process = self.processes.pop(name, None)
        if process is not None:
            process.kill()
        self._write_process_list()

    def scale_workers(self, count: int) -> None:
        """Run exactly ``count`` worker replicas: start the missing ones (waiting until ready), stop extras."""
        if count < 1:
            raise ValueError("count must be >= 1")
        while len(self.ports.workers) < count:
            self.ports.workers.append(self.ports_from.pick())
        for index in range(count):
            name = f"worker-{index + 1}"
            self._recipes[name] = (partial(self._worker_process, index), self._http_ready(name))
            if name not in self.processes:
                self.start_service(name)
        for index in range(count, self.workers):
            self.stop_service(f"worker-{index + 1}")
        self.workers = count

    def stop_platform(self) -> None:
        """Stop the worker(s) and the api (gracefully, then by force)."""
        self._stop_together([n for n in self.processes if n.startswith("worker-")] + ["api"])

    def _stop_together(self, names: list[str]) -> None:
        """Stop these processes at once: each local process gets its stop signal, then each is waited for (SIGKILL
        after its timeout). One after the other cost 1.6 s per stack stop (bench/local_cold_start.py)."""
        group = [name for name in names if name in self.processes]
        for name in group:
            if isinstance(process := self.processes[name], ManagedProcess):
                process.request_stop()
        for name in group:  # each forgotten only once stopped: an interrupted stop leaves the rest to stop()
            self.processes[name].stop()
            del self.processes[name]

    def restart_platform(
        self, *, defects: str | None = None, backup_interval_s: float | None = None, new_database: bool = False
    ) -> None:
        """Restart only the api and worker(s) on the same ports, e.g. with another defect set; ``new_database``:
        on an empty database and Redis (the platform migrates and seeds it as on its first start)."""
        self.stop_platform()
        if new_database:
            self._drop_database()
            self._create_database()
            with redis.Redis.from_url(self.redis_url, socket_timeout=5) as client:
                client.flushall()
        self.defects = defects
        if backup_interval_s is not None:
            self.backup_interval_s = backup_interval_s
        self.start_platform()
        if "prometheus" in self.processes and self._rule_drifts() != self._deployed_drifts:
            # an alert-rule defect is in the deployed rules: rewrite them and reload (answers once loaded)
            self._write_rules()
            httpx.post(f"{self.prometheus_url}/-/reload", timeout=30).raise_for_status()
            httpx.post(f"{self.alertmanager_url}/-/reload", timeout=30).raise_for_status()

    def stop(self) -> None:
        """Stop every process this environment started, in reverse dependency order, and clean up."""
        self.stop_platform()  # first: a worker finishing its in-flight jobs still needs the datastores
        self._stop_together(
            ["prometheus", "alertmanager", "receiver", "provider", "postgres-proxy", "redis", "postgres"]
        )
        self._stop_together(list(self.processes))
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        self._write_process_list()

    def running_pids(self) -> dict[str, int]:
        """PID of every process still running."""
        return {name: p.pid for name, p in self.processes.items() if p.is_running() and p.pid is not None}

    # --- process definitions ----------------------------------------------------------------

    def _pg_user(self) -> str | None:
        """PostgreSQL refuses to run as root: run it as the ``postgres`` system user then."""
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise LocalEnvironmentError(
                "running as root, PostgreSQL needs an unprivileged user: install the Debian package postgresql"
                " (it creates the 'postgres' user) or run opsgate as a normal user"
            ) from None
        return "postgres"

    def _datastore_recipes(self) -> dict[str, tuple[Callable[[], ServiceProcess], Callable[[], bool | None]]]:
        """How PostgreSQL and Redis are started (here: host processes) and how their readiness is proven."""
        pg_bin = binaries.postgres_bin_dir()
        redis_bin = binaries.redis_server()
        return {
            "postgres": (partial(self._postgres_process, pg_bin), self._postgres_ready),
            "redis": (partial(self._redis_process, redis_bin), self._redis_ready),
        }

    def _init_postgres(self) -> None:
        """initdb a fresh data directory (as the ``postgres`` user when root), the password from a 0600 file."""
        assert self.root is not None
        pg_bin = binaries.postgres_bin_dir()
        user = self._pg_user()
        data = self.root / "pgdata"
        data.mkdir(mode=0o700)
        pwfile = self.root / "pgpass"
        pwfile.write_text(self.credentials.db_password + "\n")
        pwfile.chmod(0o600)
        if user:
            entry = pwd.getpwnam(user)
            for path in (data, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        log = self.log_dir / "postgres.log"
        with log.open("ab") as fh:
            result = subprocess.run(
                [
                    str(pg_bin / "initdb"),
                    "-D", str(data),
                    "-U", DB_USER,
                    "--pwfile", str(pwfile),
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--no-sync",
                    "-E", "UTF8",
                    "--locale=C",
                ],
                stdout=fh,
                stderr=subprocess.STDOUT,
                user=user,
                timeout=120,
                check=False,
            )  # fmt: skip
        pwfile.unlink()
        if result.returncode != 0:
            raise LocalEnvironmentError(f"initdb failed with exit code {result.returncode}; see {log}")

    def _postgres_process(self, pg_bin: Path) -> ManagedProcess:
        assert self.root is not None
        sockets = self.root / "pgsock"
        sockets.mkdir(exist_ok=True)
        user = self._pg_user()
        if user:
            entry = pwd.getpwnam(user)
            os.chown(sockets, entry.pw_uid, entry.pw_gid)
        argv = [
            str(pg_bin / "postgres"),
            "-D", str(self.root / "pgdata"),
            "-p", str(self.ports.postgres),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={sockets}",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=200",
        ]  # fmt: skip
        # SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, exit promptly.
        return ManagedProcess(
            "postgres", argv, _base_env(), self.log_dir / "postgres.log", stop_signal=signal.SIGINT, user=user
        )

    def _redis_process(self, redis_bin: str) -> ManagedProcess:
        assert self.root is not None
        folder = self.root / "redis"
        folder.mkdir(exist_ok=True)
        argv = [
            redis_bin,
            "--port", str(self.ports.redis),
            "--bind", "127.0.0.1",
            "--save", self.redis_save,
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--dir", str(folder),
            "--requirepass", self.credentials.redis_password,
            "--daemonize", "no",
        ]  # fmt: skip
        return ManagedProcess("redis", argv, _base_env(), self.log_dir / "redis.log")

    @property
    def redis_save(self) -> str:
        """redis-server's ``save`` rule: an RDB snapshot every 30 min (seed 002), scaled, at least every 2 s, when
        anything changed; ``""`` (snapshots off) with the ``redis-snapshots-off`` defect."""
        defects = self.defects if self.defects is not None else os.environ.get("OPSGATE_DEFECTS", "")
        if "redis-snapshots-off" in {d.strip() for d in defects.split(",")}:
            return ""
        return f"{max(2, round(REDIS_SNAPSHOT_S * self.time_scale))} 1"

    def _provider_process(self) -> ManagedProcess:
        c = self.credentials
        env = {
            **_base_env(),
            "PROVIDER_API_KEY": c.provider_api_key,
            "PROVIDER_WEBHOOK_SECRET": c.provider_webhook_secret,
            "INBOUND_WEBHOOK_URL": f"{self.api_url}/webhooks/provider/inbound",
        }
        argv = [sys.executable, "-m", "opsgate.reference.sandbox", "--port", str(self.ports.provider)]
        return ManagedProcess("provider", argv, env, self.log_dir / "provider.log")

    def _postgres_proxy_process(self) -> ManagedProcess:
        argv = [
            sys.executable, "-m", "opsgate.faults.proxy",
            "--listen-port", str(self.ports.postgres_proxy),
            "--upstream", f"127.0.0.1:{self.ports.postgres}",
            "--control-port", str(self.ports.postgres_proxy_control),
        ]  # fmt: skip
        return ManagedProcess("postgres-proxy", argv, _base_env(), self.log_dir / "postgres-proxy.log")

    def _platform_env(self) -> dict[str, str]:
        c = self.credentials
        assert self.root is not None
        defects = self.defects if self.defects is not None else os.environ.get("OPSGATE_DEFECTS", "")
        env = {
            **_base_env(),
            "DATABASE_URL": self.platform_database_url,
            "REDIS_URL": self.redis_url,
            "PROVIDER_URL": self.provider_url,
            "PROVIDER_API_KEY": c.provider_api_key,
            "BILLING_WEBHOOK_SECRET": c.billing_webhook_secret,
            "BILLING_WEBHOOK_SECRET_NEXT": c.billing_webhook_secret_next,
            "PROVIDER_WEBHOOK_SECRET": c.provider_webhook_secret,
            "SERVICE_USER": c.service_user,
            "SERVICE_PASSWORD": c.service_password,
            "MONITORING_WEBHOOK_URL": f"{self.provider_url}/monitoring/events",
            "TENANT_TOKENS": f"{DEMO_TENANTS[0]['id']}={c.api_token},{DEMO_TENANTS[1]['id']}={c.api_token_2}",
            "OPSGATE_TIME_SCALE": repr(self.time_scale),
            "OPSGATE_DEFECTS": defects,
            "BACKUP_DIR": str(self.backup_dir),
            "PG_BIN_DIR": str(binaries.postgres_bin_dir()),
        }
        if self.backup_interval_s is not None:
            env["BACKUP_INTERVAL_S"] = repr(self.backup_interval_s)
        return env

    def _api_process(self) -> ManagedProcess:
        argv = [sys.executable, "-m", "opsgate.reference.api", "--port", str(self.ports.api)]
        return ManagedProcess("api", argv, self._platform_env(), self.log_dir / "api.log")

    def _worker_process(self, index: int) -> ManagedProcess:
        env = {**self._platform_env(), "WORKER_ID": f"worker-{index + 1}"}
        argv = [sys.executable, "-m", "opsgate.reference.worker", "--port", str(self.ports.workers[index])]
        return ManagedProcess(f"worker-{index + 1}", argv, env, self.log_dir / f"worker-{index + 1}.log")

    def _prepare_alerting(self) -> None:
        assert self.root is not None
        folder = self.root / "alerting"
        folder.mkdir(exist_ok=True)
        self._write_rules()
        self._recipes |= {
            "receiver": (self._receiver_process, self._http_ready("receiver")),
            "alertmanager": (self._alertmanager_process, self._http_ready("alertmanager")),
            "prometheus": (self._prometheus_process, self._http_ready("prometheus")),
        }

    def _rule_drifts(self) -> frozenset[str]:
        """The defects of the current set that change the deployed alerting config (rules or routes)."""
        raw = self.defects if self.defects is not None else os.environ.get("OPSGATE_DEFECTS", "")
        return frozenset(n.strip() for n in raw.split(",")) & ALERTING_DEFECTS

    def _write_rules(self) -> None:
        """Write the time-compressed rules Prometheus loads; an alert-rule defect deploys a drifted copy."""
        assert self.root is not None
        folder = self.root / "alerting"
        planted = self._rule_drifts()
        drifts = planted & RULE_DRIFTS.keys()
        sources = self.alert_rules
        if drifts:
            sources = []
            for index, path in enumerate(self.alert_rules):
                drifted = folder / f"drifted-{index}-{path.name}"
                drifted.write_text(yaml.safe_dump(drift_rules(yaml.safe_load(path.read_text()) or {}, drifts)))
                sources.append(drifted)
        self.clamps = stack.compressed_rules(sources, self.time_scale, folder / "rules.yml", defects=planted)
        (folder / "alertmanager.yml").write_text(stack.alertmanager_config(self.receiver_url, defects=planted))
        self._deployed_drifts = planted

    def _receiver_process(self) -> ManagedProcess:
        argv = [sys.executable, "-m", "opsgate.alerts.receiver", "--port", str(self.ports.receiver)]
        return ManagedProcess("receiver", argv, _base_env(), self.log_dir / "receiver.log")

    def _alertmanager_process(self) -> ManagedProcess:
        assert self.root is not None
        folder = self.root / "alerting"
        argv = [
            binaries.executable("prometheus-alertmanager", "prometheus-alertmanager", "OPSGATE_ALERTMANAGER"),
            f"--config.file={folder / 'alertmanager.yml'}",
            f"--storage.path={folder / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{self.ports.alertmanager}",
            "--cluster.listen-address=",
        ]
        return ManagedProcess("alertmanager", argv, _base_env(), self.log_dir / "alertmanager.log")

    def _prometheus_process(self) -> ManagedProcess:
        assert self.root is not None
        folder = self.root / "alerting"
        scrape = [self.api_url, *self.worker_urls]
        (folder / "prometheus.yml").write_text(
            stack.prometheus_config(scrape, self.alertmanager_url, folder / "rules.yml")
        )
        argv = [
            binaries.executable("prometheus", "prometheus", "OPSGATE_PROMETHEUS"),
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{self.ports.prometheus}",
            "--web.enable-lifecycle",
        ]
        return ManagedProcess("prometheus", argv, _base_env(), self.log_dir / "prometheus.log")

    def _wait_alerting_wired(self) -> None:
        """Ready for a drill = Prometheus knows the Alertmanager, every scrape target is up (FACTS: ~5 s), and every
        rule group has been evaluated since then: a gate sampling a recording rule at once finds its series (before,
        ``min(service_uptime_percentage)`` was an empty result for up to a second, and a healthy gate failed)."""
        up_since: list[float] = []  # the end of the first scrape that found every target up

        def wired() -> bool | None:
            if not up_since:
                managers = httpx.get(f"{self.prometheus_url}/api/v1/alertmanagers", timeout=1).json()["data"]
                targets = httpx.get(f"{self.prometheus_url}/api/v1/targets", timeout=1).json()["data"]["activeTargets"]
                if not (managers["activeAlertmanagers"] and targets and all(t["health"] == "up" for t in targets)):
                    return None
                up_since.append(max(_instant(t["lastScrape"]) + t["lastScrapeDuration"] for t in targets))
            groups = httpx.get(f"{self.prometheus_url}/api/v1/rules", timeout=1).json()["data"]["groups"]
            return True if all(_instant(g["lastEvaluation"]) > up_since[0] for g in groups) else None

        wait_until(wired, what="Prometheus to discover Alertmanager and scrape every target", timeout_s=READY_TIMEOUT_S,
                   interval_s=0.2, address=self.prometheus_url, log=self.log_dir / "prometheus.log")  # fmt: skip

    # --- readiness --------------------------------------------------------------------------

    @property
    def _server_dsn(self) -> str:
        """The server's own ``postgres`` database (for server-level statements: CREATE/DROP DATABASE)."""
        return self.database_url.rsplit("/", 1)[0] + "/postgres"

    def _postgres_ready(self) -> bool | None:
        with psycopg.connect(self._server_dsn, connect_timeout=1) as conn:
            conn.execute("SELECT 1")
        return True

    def _drop_database(self) -> None:
        with psycopg.connect(self._server_dsn, connect_timeout=5, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")

    def _create_database(self) -> None:
        with psycopg.connect(self._server_dsn, connect_timeout=5, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")

    def _redis_ready(self) -> bool | None:
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return True if client.ping() else None
        finally:
            client.close()

    def _http_ready(self, name: str) -> Callable[[], bool | None]:
        def check() -> bool | None:
            path = {
                "provider": "/healthz",
                "receiver": "/healthz",
                "prometheus": "/-/ready",
                "alertmanager": "/-/ready",
                "postgres-proxy": "/healthz",
            }
            url = self._url_of(name) + path.get(name, "/readyz")
            response = httpx.get(url, timeout=1.0)
            return True if response.status_code == 200 else None

        return check

    def service_names(self, name: str) -> list[str]:
        """The processes behind a target service or datastore name (``worker`` → every worker replica)."""
        if name == "worker":
            return [f"worker-{i + 1}" for i in range(self.workers)]
        return [name]

    def host_port(self, name: str) -> tuple[str, int]:
        """Where ``name`` listens (PostgreSQL, Redis or an HTTP service)."""
        address = self._address_of(name).removeprefix("http://")
        host, port = address.rsplit(":", 1)
        return host, int(port)

    def _url_of(self, name: str) -> str:
        if name == "postgres-proxy":
            return self.postgres_proxy_url
        if name == "api":
            return self.api_url
        if name in ("provider", "prometheus", "alertmanager", "receiver"):
            return str(getattr(self, f"{name}_url"))
        return self.worker_urls[int(name.split("-")[1]) - 1]

    def _address_of(self, name: str) -> str:
        if name == "postgres":
            return f"127.0.0.1:{self.ports.postgres}"
        if name == "redis":
            return f"127.0.0.1:{self.ports.redis}"
        return self._url_of(name)

    # --- starting with port-conflict retries ------------------------------------------------

    def _spawn(self, name: str) -> None:
        process = self._recipes[name][0]()
        process.start()
        self.processes[name] = process
        self._journal_started(name, process)

    def _journal_started(self, name: str, process: ServiceProcess) -> None:
        """Note a started process (PID + start time) in the journal, so ``opsgate recover`` can stop it."""
        if self.journal is not None and process.pid is not None:
            self.journal.record_process(name, process.pid, process.start_ticks)

    def _wait_ready(self, name: str) -> None:
        """Wait until ``name`` is ready; a port taken meanwhile gets a new port and a new start."""
        ready = self._recipes[name][1]
        for attempt in range(PORT_RETRIES + 1):
            process = self.processes[name]

            def exited(p: ServiceProcess = process) -> str | None:
                code = p.exit_code()
                return None if code is None else f"{name} exited with code {code}"

            try:
                wait_until(
                    ready,
                    what=f"{name} to be ready",
                    timeout_s=READY_TIMEOUT_S,
                    interval_s=0.05,
                    address=self._address_of(name),
                    hint=f"see {process.log_path}",
                    log=process.log_path,
                    give_up=exited,
                )
                return
            except Exception:
                process.stop()
                if attempt < PORT_RETRIES and _port_conflict(process.log_path, process.log_offset):
                    self._move_port(name)
                    self._spawn(name)
                    continue
                raise

    def _move_port(self, name: str) -> None:
        new = self.ports_from.pick()
        if name == "postgres-proxy":  # either of its two ports may be the one taken
            self.ports.postgres_proxy, self.ports.postgres_proxy_control = new, self.ports_from.pick()
        elif name.startswith("worker-"):
            self.ports.workers[int(name.split("-")[1]) - 1] = new
        else:
            setattr(self.ports, name, new)

    def _write_process_list(self) -> None:
        """Record PID and start time of every running process (what a later recovery may stop)."""
        if not self.log_dir.is_dir():
            return  # never started: nothing to record
        rows = {name: p.record() for name, p in self.processes.items() if p.is_running()}
        (self.log_dir / "processes.json").write_text(json.dumps(rows, indent=2))


def _instant(rfc3339: str) -> float:
    """A Prometheus API timestamp (RFC 3339, nanoseconds, ``Z``) as Unix seconds."""
    head, _, fraction = rfc3339.rstrip("Z").partition(".")
    return datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp() + float(f"0.{fraction or 0}")


def _base_env() -> dict[str, str]:
    """The environment every child gets: ours, minus variables that would confuse the services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PG", "REDIS_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _port_conflict(log_path: Path, offset: int) -> bool:
    try:
        with log_path.open("rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace").lower()
    except OSError:
        return False
    return "address already in use" in text
