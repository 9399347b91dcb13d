"""Make a target exist: start the local or containers environment, or use what is running (``external``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from opsgate.alerts.rulefiles import rule_paths
from opsgate.config import Target, load_target
from opsgate.environments.local import LocalEnvironment
from opsgate.faults.journal import Journal


@dataclass
class Provisioned:
    """A target ready to be checked, and the local environment behind it when opsgate started one."""

    target: Target
    environment: LocalEnvironment | None


class Launcher:
    """Loads a target file and, for a local or containers target, prepares and starts its environment."""

    def __init__(self, target_path: Path, log_dir: Path, *, defects: str | None = None) -> None:
        self.target_path = target_path
        self.environment: LocalEnvironment | None = None
        self.journal: Journal | None = None
        """This run's rollback journal (faults' undos, started processes), created by :meth:`start`."""
        self.target = self._load_first(log_dir, defects)

    def _load_first(self, log_dir: Path, defects: str | None) -> Target:
        environment = LocalEnvironment(log_dir, defects=defects)
        target = load_target(self.target_path, {**os.environ, **environment.environ()})
        if target.provider == "external":
            return load_target(self.target_path, os.environ)
        if target.provider == "containers":
            # Imported here: testcontainers and docker would cost every other run's start-up about 0.3 s.
            from opsgate.environments.containers import ContainersEnvironment

            # (:meth:`start` reloads the target with the addresses of the environment it starts.)
            images = target.containers
            environment = ContainersEnvironment(log_dir, defects=defects, postgres_image=images.postgres_image,
                                                redis_image=images.redis_image)  # fmt: skip
        environment.workers = target.platform.workers if target.platform else 1
        environment.alert_rules = rule_paths(target)
        environment.time_scale = target.time_scale
        if target.platform and target.platform.defects and defects is None:
            environment.defects = ",".join(target.platform.defects)
        self.environment = environment
        return target

    def start(self, *, alerting: bool = True) -> Provisioned:
        """Start the local environment (if any) and return the target with its final addresses.

        ``alerting=False``: without its alerting stack (the target then names no Prometheus, Alertmanager or
        receiver). Every process it starts is noted in a rollback journal first, so that if this run is killed
        with SIGKILL, ``opsgate recover`` stops them.
        """
        self.journal = Journal.create()
        if self.environment is None:
            return Provisioned(self.target, None)
        if not alerting:
            self.environment.alert_rules = []
        self.environment.journal = self.journal
        self.environment.start()
        self.target = load_target(self.target_path, {**os.environ, **self.environment.environ()})
        return Provisioned(self.target, self.environment)

    def stop(self) -> None:
        """Stop whatever :meth:`start` started, then close its journal (rolling back anything still pending)."""
        if self.environment is not None:
            self.environment.stop()
            self.environment.journal = None
        if self.journal is not None:
            self.journal.close()
            self.journal = None


@contextmanager
def provision(target_path: Path, log_dir: Path, *, defects: str | None = None) -> Iterator[Provisioned]:
    """Context manager around :class:`Launcher`: started on entry, stopped on every exit path."""
    launcher = Launcher(target_path, log_dir, defects=defects)
    try:
        yield launcher.start()
    finally:
        launcher.stop()
