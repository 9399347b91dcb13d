"""What a containers run left behind, asked of the Docker engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker

from opsgate.environments.containers import RUN_LABEL
from opsgate.environments.docker_engine import DockerEngine


def opsgate_containers(log_dir: Path, run_id: str | None = None) -> list[dict[str, Any]]:
    """Every container (running or not) with opsgate's run label (only ``run_id``'s when given).

    Asked of the running engine, or of one started for the question and stopped after it: a container left
    behind stays in the engine's store even when the engine that ran it was stopped.
    """
    engine = DockerEngine(log_dir)
    engine.start()
    client = docker.from_env()
    try:
        label = RUN_LABEL if run_id is None else f"{RUN_LABEL}={run_id}"
        return [c.attrs for c in client.containers.list(all=True, filters={"label": label})]
    finally:
        client.close()
        engine.stop()
