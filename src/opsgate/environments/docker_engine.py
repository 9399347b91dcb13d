"""The Docker engine the containers provider runs on, and the images it needs.

An engine that already answers is used and left alone. When none answers, opsgate starts its own
``dockerd --bridge=none --iptables=false`` (host networking only; no bridge or NAT is created) and
stops exactly that process, by PID, when done. Images are never pulled: the default dependency image
is built locally (``deps_image/build.sh``: debootstrap + ``docker import``) when it is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from opsgate.config import DEPS_IMAGE
from opsgate.environments.local import LocalEnvironmentError
from opsgate.environments.process import ManagedProcess
from opsgate.waits import wait_until

ENGINE_START_TIMEOUT_S = 60.0
ENGINE_STOP_TIMEOUT_S = 30.0
IMAGE_BUILD_TIMEOUT_S = 900.0
BUILD_SCRIPT = Path(__file__).with_name("deps_image") / "build.sh"


class DockerEngineError(LocalEnvironmentError):
    """No Docker engine could be used, or an image is missing (so the containers environment cannot start); the
    message says why and what to do."""


def engine_answers(timeout_s: float = 5.0) -> bool:
    """True when the engine at ``DOCKER_HOST`` (default: the local socket) answers a ping."""
    try:
        client = docker.from_env(timeout=int(max(1, timeout_s)))
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, OSError):
        return False
    finally:
        client.close()


@dataclass
class DockerEngine:
    """Use the running engine, or start ``dockerd`` (and later stop it) when none runs."""

    log_dir: Path
    process: ManagedProcess | None = None
    """The ``dockerd`` opsgate started; None when an engine was already running."""

    def start(self) -> None:
        """Make sure an engine answers; start one when none does (root only)."""
        if engine_answers():
            return
        if os.environ.get("DOCKER_HOST"):
            raise DockerEngineError(f"the Docker engine at DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer "
                                    "(opsgate starts a local dockerd only when DOCKER_HOST is unset)")  # fmt: skip
        dockerd = shutil.which("dockerd") or next((p for p in ("/usr/sbin/dockerd", "/usr/bin/dockerd")
                                                   if os.access(p, os.X_OK)), None)  # fmt: skip
        if dockerd is None:
            raise DockerEngineError("no Docker engine answers and dockerd is not installed "
                                    "(apt-get install docker.io, or set DOCKER_HOST to a running engine)")  # fmt: skip
        if os.geteuid() != 0:
            raise DockerEngineError("no Docker engine answers, and starting dockerd needs root "
                                    "(start one, or set DOCKER_HOST to a running engine)")  # fmt: skip
        if Path("/var/run/docker.pid").exists():
            raise DockerEngineError("no Docker engine answers but /var/run/docker.pid exists: another dockerd "
                                    "is starting or died uncleanly (check it; remove the file if stale)")  # fmt: skip
        argv = [dockerd, "--bridge=none", "--iptables=false", "--ip-masq=false"]
        # dockerd runs containerd and runc from PATH (Debian puts runc in /usr/sbin).
        env = {"PATH": os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin:/sbin:/bin"}
        self.process = ManagedProcess("dockerd", argv, env, self.log_dir / "dockerd.log")
        self.process.start()

        def exited() -> str | None:
            code = self.process.exit_code() if self.process else None
            return None if code is None else f"dockerd exited with code {code}"

        try:
            wait_until(lambda: True if engine_answers(1.0) else None, what="dockerd to answer",
                       timeout_s=ENGINE_START_TIMEOUT_S, interval_s=0.2, address="unix:///var/run/docker.sock",
                       log=self.process.log_path, give_up=exited)  # fmt: skip
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the ``dockerd`` opsgate started (SIGTERM, then SIGKILL), by its PID; an engine it found stays."""
        if self.process is not None:
            self.process.stop(ENGINE_STOP_TIMEOUT_S)
            self.process = None


def image_present(image: str) -> bool:
    """True when ``image`` is in the engine's local store (nothing is pulled)."""
    client = docker.from_env()
    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()


def ensure_image(image: str, log_path: Path) -> None:
    """Make sure ``image`` is present: build the default dependency image when missing; never pull."""
    if image_present(image):
        return
    if image != DEPS_IMAGE:
        raise DockerEngineError(
            f"image {image} is not in the local Docker store and opsgate never pulls: "
            f"`docker pull {image}` where a registry is reachable, or use {DEPS_IMAGE}"
        )
    build_image(image, log_path)


def build_image(image: str, log_path: Path) -> None:
    """Build the dependency image with ``deps_image/build.sh`` (about a minute); its output goes to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        # Its own session, so that a timeout stops debootstrap and docker import too (the group we created).
        build = subprocess.Popen(["bash", str(BUILD_SCRIPT), image], stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        try:
            build.wait(timeout=IMAGE_BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(build.pid, signal.SIGKILL)
            build.wait()
            raise DockerEngineError(f"building {image} took over {IMAGE_BUILD_TIMEOUT_S:g}s; see {log_path}") from None
        except BaseException:  # Ctrl-C: stop the build (debootstrap, docker import) too
            os.killpg(build.pid, signal.SIGKILL)
            build.wait()
            raise
    if build.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        raise DockerEngineError(f"building {image} failed (exit {build.returncode}): {tail[0]}; see {log_path}")
