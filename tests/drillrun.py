"""Running ``opsgate`` as a user does, paused at a drill's barrier, for the interrupt tests of tests/drills/.

:func:`paused_run` starts ``python -m opsgate.cli ARGS`` in ``cwd`` with a fresh state (journal) directory,
``OPSGATE_BARRIER_DIR``/``OPSGATE_BARRIER_AT`` set, and a unique marker variable every process it starts
inherits (so the test can find any of them still alive, without touching anyone else's). On the way out
it never leaves the run behind: barriers released, SIGTERM (it rolls back and stops what it started), and
SIGKILL only if that did not end it within a minute.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import alive, run_opsgate

MARKER = "OPSGATE_DRILL_TEST_RUN"
POINTS = ("before-fault", "fault-applied", "in-rollback")
REACH_TIMEOUT_S = 120.0
EXIT_TIMEOUT_S = 60.0


@dataclass
class PausedRun:
    """One ``opsgate`` subprocess with its barrier folder, state folder and combined output file."""

    proc: subprocess.Popen[bytes]
    barriers: Path
    state: Path
    output: Path
    marker: str
    cwd: Path

    def text(self) -> str:
        """Everything the run printed so far (stdout and stderr)."""
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def wait_reached(self, point: str, timeout_s: float = REACH_TIMEOUT_S) -> float:
        """Wait until the drill pauses at ``point``; returns the seconds it took. Fails if the run ends first."""
        started = time.monotonic()
        reached = self.barriers / f"{point}.reached"
        for _ in range(int(timeout_s / 0.05) + 1):
            if reached.exists():
                return time.monotonic() - started
            if self.proc.poll() is not None:
                raise AssertionError(f"opsgate exited {self.proc.returncode} before {point}:\n{self.text()[-4000:]}")
            if time.monotonic() - started > timeout_s:
                break
            time.sleep(0.05)
        raise AssertionError(f"the drill did not reach {point} within {timeout_s:g}s:\n{self.text()[-4000:]}")

    def release(self, point: str) -> None:
        (self.barriers / f"{point}.release").touch()

    def send(self, signum: int) -> None:
        """Send ``signum`` to the opsgate process only (by PID), as a user's Ctrl-C or a CI runner's stop would."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def wait_exit(self, timeout_s: float = EXIT_TIMEOUT_S) -> int:
        """Exit code of the run; fails if it is still running after ``timeout_s``."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"opsgate still runs {timeout_s:g}s later:\n{self.text()[-4000:]}") from None

    def interrupt(self, point: str, signals: list[signal.Signals], held: Callable[[], None] | None = None) -> None:
        """Send ``signals`` while the drill is paused at ``point``, then let it go on.

        SIGTERM raises at once, even in the paused drill. SIGINT is turned by pytest-asyncio's runner into a
        cancellation of the drill's task, which takes effect when the drill's event loop runs again (after the
        pause, as after any blocking fault action). In-rollback, both are held until the undo has run: the run
        must still be alive a second later, and ``held`` checks that nothing was restored yet.
        """
        for signum in signals:
            self.send(signum)
            time.sleep(0.2)
        if point == "in-rollback":
            time.sleep(1.0)
            assert self.proc.poll() is None, "a signal cut the rollback short:\n" + self.text()[-4000:]
            if held is not None:
                held()
        self.release(point)

    def journals(self) -> list[Path]:
        """The rollback journals left in the run's state folder."""
        return sorted(self.state.glob("*.jsonl"))

    def journal_entries(self, kind: str) -> list[dict[str, Any]]:
        """The entries of type ``kind`` (``undo``, ``process``, ``scratch``...) of the pending journals."""
        entries = []
        for path in self.journals():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line being written right now
                if entry.get("type") == kind:
                    entries.append(entry)
        return entries

    def journal_pids(self) -> dict[int, str]:
        """PID → name of every process the pending journals say the run started."""
        return {int(entry["pid"]): entry["name"] for entry in self.journal_entries("process")}

    def listed_pids(self) -> dict[int, str]:
        """PID → name from the run's ``logs/processes.json`` (the processes running right now)."""
        listing = self.cwd / "reports" / "latest" / "logs" / "processes.json"
        rows = json.loads(listing.read_text() or "{}") if listing.exists() else {}
        return {int(row["pid"]): name for name, row in rows.items()}

    def marked_pids(self) -> list[int]:
        """Live processes carrying this run's marker in their environment (every process the run started)."""
        needle = f"{MARKER}={self.marker}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue  # gone meanwhile, or not ours to read
            if needle in environ.split(b"\0"):
                found.append(int(entry.name))
        return found

    def wait_all_gone(self, pids: dict[int, str], timeout_s: float = 20.0) -> list[str]:
        """Wait until none of ``pids`` nor any marked process is alive; returns what is still alive after that."""
        deadline = time.monotonic() + timeout_s
        left: list[str] = []
        for _ in range(int(timeout_s / 0.1) + 1):
            left = [f"{name} (pid {pid})" for pid, name in pids.items() if alive(pid)]
            left += [f"marked pid {pid}" for pid in self.marked_pids() if pid not in pids]
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.1)  # an orphan is reaped by init a moment after it exits
        return left


def opsgate_env(tmp_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Variables for an opsgate run whose reports and journal stay under ``tmp_path``."""
    return {
        "OPSGATE_REPORTS_DIR": str(tmp_path / "reports"),
        "OPSGATE_STATE_DIR": str(tmp_path / "state"),
        **(extra or {}),
    }


@contextmanager
def paused_run(args: list[str], cwd: Path, point: str, env: dict[str, str] | None = None) -> Iterator[PausedRun]:
    """Start ``opsgate ARGS`` in ``cwd`` pausing at ``point``; on exit make sure it has ended."""
    assert point in POINTS, point
    barriers = cwd / "barriers"
    barriers.mkdir(parents=True)
    marker = uuid.uuid4().hex
    output = cwd / "opsgate.out"
    variables = {
        **os.environ,
        **opsgate_env(cwd, env),
        "OPSGATE_BARRIER_DIR": str(barriers),
        "OPSGATE_BARRIER_AT": point,
        MARKER: marker,
        "PYTHONUNBUFFERED": "1",
    }
    with output.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "opsgate.cli", *args], cwd=cwd, env=variables, stdout=sink,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    run = PausedRun(proc, barriers, Path(variables["OPSGATE_STATE_DIR"]), output, marker, cwd)
    try:
        yield run
    finally:
        if proc.poll() is None:  # a failed assertion: let it go on and stop it like a user would
            for name in POINTS:
                run.release(name)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if run.journals():  # it died hard: undo what it left and stop what it started (by PID + start time)
            run_opsgate(["recover"], timeout_s=120, env=opsgate_env(cwd, env))
