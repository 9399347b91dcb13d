"""The opsgate pytest plugin: ``--target``, markers, and the session fixtures the suite runs on.

Loaded through the ``pytest11`` entry point. Nothing starts unless a test asks for the target:
the first such fixture starts the local environment (for ``provider: local``) once per session,
and the session's end stops it, also on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from opsgate.config import LOCAL_TARGET, HealthCheck, Target, TargetError
from opsgate.environments.launch import Launcher, Provisioned
from opsgate.environments.local import LocalEnvironment
from opsgate.evidence.rundir import new_run_dir

MARKERS = {
    "smoke": "fast read-only checks that the target is up and answering",
    "health": "health gates from the target file's health, datastore, queue and metric sections",
    "destructive": "changes the target's state; refused on production, needs --allow-destructive on staging",
}


class OpsgateSession:
    """Per-pytest-session state: the run directory, the launcher, the provisioned target."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._run_dir: Path | None = None
        self._launcher: Launcher | None = None
        self._provisioned: Provisioned | None = None
        self._previous_sigterm: object = None

    @property
    def target_path(self) -> Path:
        """``--target``, else the ``opsgate_target`` ini key, else the embedded reference platform."""
        option = self.config.getoption("opsgate_target") or self.config.getini("opsgate_target")
        return Path(option) if option else LOCAL_TARGET

    @property
    def run_dir(self) -> Path:
        """The run's evidence directory (``--opsgate-run-dir`` or a new ``reports/<run-id>``)."""
        if self._run_dir is None:
            given = self.config.getoption("opsgate_run_dir")
            self._run_dir = Path(given) if given else new_run_dir()
            self._run_dir.mkdir(parents=True, exist_ok=True)
        return self._run_dir

    @property
    def launcher(self) -> Launcher:
        """The launcher, loading (and validating) the target file on first use."""
        if self._launcher is None:
            try:
                self._launcher = Launcher(self.target_path, self.run_dir / "logs")
            except TargetError as exc:
                raise pytest.UsageError(exc.message) from None
        return self._launcher

    def provisioned(self) -> Provisioned:
        """The target, started once per session when it is local."""
        if self._provisioned is None:
            if self.launcher.environment is not None:
                self._previous_sigterm = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
            self._provisioned = self.launcher.start()
        return self._provisioned

    def close(self) -> None:
        """Stop what this session started."""
        if self._launcher is not None:
            self._launcher.stop()
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)  # type: ignore[arg-type]


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends the run like Ctrl-C, so pytest's teardown stops every started process."""
    raise KeyboardInterrupt(f"signal {signum}")


SESSION_KEY = pytest.StashKey[OpsgateSession]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("opsgate", "opsgate: executable runbooks")
    group.addoption(
        "--target",
        dest="opsgate_target",
        default=None,
        metavar="FILE",
        help="target file to verify (default: start and verify the embedded reference platform)",
    )
    group.addoption(
        "--opsgate-run-dir",
        dest="opsgate_run_dir",
        default=None,
        metavar="DIR",
        help="evidence directory of this run (default: a new reports/<run-id>/)",
    )
    parser.addini("opsgate_target", "target file used when --target is not given", default="")


def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    config.stash[SESSION_KEY] = OpsgateSession(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None:
        session.close()


def health_checks(target: Target) -> list[tuple[str, str, HealthCheck]]:
    """(id, service url, check) for every health check of every service, in file order."""
    return [
        (f"{name}:{check.path}", service.url, check)
        for name, service in target.services.items()
        for check in service.health
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise target-driven tests from the target file, with readable ids."""
    if "health_check" in metafunc.fixturenames:
        session = metafunc.config.stash[SESSION_KEY]
        rows = health_checks(session.launcher.target)
        metafunc.parametrize("health_check", [row[0] for row in rows], ids=[row[0] for row in rows])
    if "queue_name" in metafunc.fixturenames:
        session = metafunc.config.stash[SESSION_KEY]
        names = [queue.name for queue in session.launcher.target.queues]
        metafunc.parametrize("queue_name", names, ids=names)


@pytest.fixture(scope="session")
def opsgate_session(pytestconfig: pytest.Config) -> OpsgateSession:
    """The plugin's session state."""
    return pytestconfig.stash[SESSION_KEY]


@pytest.fixture(scope="session")
def opsgate_run_dir(opsgate_session: OpsgateSession) -> Path:
    """This run's evidence directory."""
    return opsgate_session.run_dir


@pytest.fixture(scope="session")
def target(opsgate_session: OpsgateSession) -> Iterator[Target]:
    """The target under test, started first when it is the local reference platform."""
    yield opsgate_session.provisioned().target


@pytest.fixture(scope="session")
def local_environment(opsgate_session: OpsgateSession, target: Target) -> LocalEnvironment:
    """The local environment opsgate started for this target (only for ``provider: local``)."""
    environment = opsgate_session.provisioned().environment
    if environment is None:
        pytest.skip(f"target {target.name!r} is not started by opsgate (provider {target.provider})")
    return environment
