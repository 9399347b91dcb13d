"""A child process opsgate started: its own session, its log file, and a stop that is by PID only."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

STOP_TIMEOUT_S = 10.0


def stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` from field 3 (state) on, or None when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after it start past the last ')'.
    return stat[stat.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` so far (seconds), or None when it is gone."""
    fields = stat_fields(pid)  # utime and stime are fields 14 and 15
    return None if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None.

    A PID and its start time together name a process unambiguously, even after PID reuse.
    """
    fields = stat_fields(pid)
    return None if fields is None else int(fields[19])


def default_signal_mask() -> None:
    """In the child before exec: no signal blocked. A service restarted during a rollback (when opsgate holds
    SIGINT/SIGTERM) would otherwise inherit the blocked mask and ignore its own graceful stop."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


class ServiceProcess(Protocol):
    """What an environment needs of one started service: a host process, or a container."""

    name: str
    log_path: Path
    log_offset: int
    """Size of ``log_path`` before the latest start: what this start wrote begins there."""
    start_ticks: int | None

    @property
    def pid(self) -> int | None: ...
    def start(self) -> None: ...
    def exit_code(self) -> int | None: ...
    def is_running(self) -> bool: ...
    def signal(self, signum: int) -> None: ...
    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None: ...
    def kill(self) -> None: ...
    def record(self) -> dict[str, Any]: ...


@dataclass
class ManagedProcess:
    """One started service process; ``stop`` signals exactly this PID, then waits, then kills."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    stop_signal: int = signal.SIGTERM
    user: str | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    start_ticks: int | None = None
    log_offset: int = 0
    stop_requested: bool = field(default=False, init=False)

    def start(self) -> None:
        """Spawn the process in its own session with stdout and stderr appended to ``log_path``."""
        self.stop_requested = False
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {self.name} ---\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                list(self.argv),
                env=dict(self.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=self.user,
                close_fds=True,
                preexec_fn=default_signal_mask,
            )
        self.start_ticks = process_start_time(self.popen.pid)

    @property
    def pid(self) -> int | None:
        """The PID while started (even after exit, until the next start)."""
        return self.popen.pid if self.popen else None

    def exit_code(self) -> int | None:
        """The exit code if the process has ended, else None."""
        return None if self.popen is None else self.popen.poll()

    def is_running(self) -> bool:
        """True while the process is alive."""
        return self.popen is not None and self.popen.poll() is None

    def signal(self, signum: int) -> None:
        """Send ``signum`` to this process only (never by name, never to a group we did not create)."""
        if self.is_running():
            assert self.popen is not None
            os.kill(self.popen.pid, signum)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """Stop gracefully with ``stop_signal``; SIGKILL after ``timeout_s``. Returns the exit code."""
        self.request_stop()
        return self.wait_stopped(timeout_s)

    def request_stop(self) -> None:
        """Send ``stop_signal`` once per start, without waiting: stopping several processes together."""
        if self.is_running() and not self.stop_requested:
            self.signal(self.stop_signal)
            self.stop_requested = True

    def wait_stopped(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """Wait for the exit after :meth:`request_stop`; SIGKILL after ``timeout_s``. Returns the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=timeout_s)
        return self.popen.returncode

    def record(self) -> dict[str, Any]:
        """What ``processes.json`` notes of it: PID, start time, program."""
        return {"pid": self.pid, "start_ticks": self.start_ticks, "argv0": self.argv[0]}

    def kill(self) -> None:
        """SIGKILL now and reap."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=STOP_TIMEOUT_S)
