"""Faults with their undo and a proof that they took effect.

:func:`injected` is the one way to apply a fault: the undo goes to the journal first, then the
fault is applied, then checked (a fault that did not take effect raises :class:`FaultNotEffective`
— the drill is inconclusive, never passed), and the undo runs on every way out of the block.
"""

from __future__ import annotations

import asyncio
import random
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

import httpx
import psycopg

from opsgate.config import CommandControl, FlowStep, Target
from opsgate.environments.process import default_signal_mask
from opsgate.faults.journal import (
    CommandUndo,
    HttpUndo,
    Journal,
    LocalUndo,
    SqlUndo,
    Undo,
    run_sql,
    run_undo,
    signals_blocked,
)
from opsgate.flows import FlowFailed, FlowRun, run_steps
from opsgate.probes.base import ProbeError

if TYPE_CHECKING:
    from opsgate.environments.local import LocalEnvironment

T = TypeVar("T")


class FaultNotEffective(Exception):
    """The fault was applied but the target does not show it; what was expected and what was seen."""


class Fault(Protocol):
    """An action on the target with its undo."""

    def describe(self) -> str: ...
    def undo(self) -> Undo: ...
    def apply(self) -> None: ...
    def verify(self) -> None: ...
    def rollback(self) -> str: ...


@dataclass
class ControlFault:
    """A fault set through an HTTP control endpoint (PUT settings, GET to read back, DELETE to clear).

    Random faults take a seed, recorded in ``settings``, so the drill can be replayed.
    """

    control_url: str
    settings: dict[str, Any]
    timeout_s: float = 10.0
    what: ClassVar[str] = "fault"

    def __post_init__(self) -> None:
        if self.settings.get("seed") is None:
            self.settings = {**self.settings, "seed": random.SystemRandom().randrange(2**31)}

    def describe(self) -> str:
        return f"{self.what} {self.settings} at {self.control_url}"

    def undo(self) -> Undo:
        return HttpUndo(method="DELETE", url=self.control_url)

    def apply(self) -> None:
        httpx.put(self.control_url, json=self.settings, timeout=self.timeout_s).raise_for_status()

    def verify(self) -> None:
        seen = httpx.get(self.control_url, timeout=self.timeout_s).json()
        if not seen.get("active") or any(seen.get(k) != v for k, v in self.settings.items()):
            raise FaultNotEffective(f"the {self.what} control does not show the fault: asked {self.settings}, "
                                    f"it says {seen}")  # fmt: skip

    def rollback(self) -> str:
        return run_undo(self.undo())


class ProviderFault(ControlFault):
    """Make the provider fail through its control endpoint (the sandbox's ``/control/faults``)."""

    what = "provider faults"


class ProxyFault(ControlFault):
    """Degrade the network to a dependency through opsgate's fault proxy (latency + jitter, reset, blackhole)."""

    what = "network fault"


@dataclass
class MonitoringSinkFault:
    """Make the monitoring webhook fail through the sandbox's ``/control/monitoring`` (``{"status": 410}``,
    ``{"down": true}``); the undo puts back the state it had before (read first), so faults nest.

    Proof: the control reads back the settings asked for.
    """

    control_url: str
    settings: dict[str, Any]
    timeout_s: float = 10.0
    prior: dict[str, Any] | None = field(default=None, init=False)

    def describe(self) -> str:
        return f"monitoring sink {self.settings} at {self.control_url}"

    def undo(self) -> Undo:
        if self.prior is None:
            response = httpx.get(self.control_url, timeout=self.timeout_s)
            response.raise_for_status()
            self.prior = dict(response.json())
        return HttpUndo(method="PUT", url=self.control_url, json_body=self.prior)

    def apply(self) -> None:
        httpx.put(self.control_url, json=self.settings, timeout=self.timeout_s).raise_for_status()

    def verify(self) -> None:
        seen = httpx.get(self.control_url, timeout=self.timeout_s).json()
        if any(seen.get(k) != v for k, v in self.settings.items()):
            raise FaultNotEffective(f"the monitoring sink control does not show the fault: asked {self.settings}, "
                                    f"it says {seen}")  # fmt: skip

    def rollback(self) -> str:
        return run_undo(self.undo())


@dataclass
class LocalServiceFault:
    """Stop processes of opsgate's local environment (the workers, Redis, PostgreSQL...); rollback starts them.

    Proof: each process is gone and its port refuses connections.
    """

    environment: LocalEnvironment
    names: list[str]
    crash: bool = False
    """SIGKILL (no graceful shutdown, jobs in flight abandoned) instead of a graceful stop."""

    def describe(self) -> str:
        return f"{'kill -9' if self.crash else 'stop'} {', '.join(self.names)} (local processes)"

    def undo(self) -> Undo:
        return LocalUndo(what=f"start {', '.join(self.names)}")

    def apply(self) -> None:
        for name in self.names:
            if self.crash:
                self.environment.kill_service(name)
            else:
                self.environment.stop_service(name)

    def verify(self) -> None:
        running = self.environment.running_pids()
        for name in self.names:
            if name in running:
                raise FaultNotEffective(f"{name} still runs (pid {running[name]})")
            host, port = self.environment.host_port(name)
            try:
                with socket.create_connection((host, port), timeout=1.0):
                    pass
            except OSError:
                continue
            raise FaultNotEffective(f"{name} was stopped but {host}:{port} still accepts connections")

    def rollback(self) -> str:
        for name in self.names:
            if name not in self.environment.running_pids():
                self.environment.start_service(name)
        pids = self.environment.running_pids()
        return "started again: " + ", ".join(f"{name} (pid {pids.get(name)})" for name in self.names)


@dataclass
class ToggleFault:
    """Flip a switch of the target through its API (kill switch, maintenance mode): ``on`` steps, then ``off``.

    ``check`` (optional) is a step whose expectation proves the switch is on.
    """

    target: Target
    on: list[FlowStep]
    off: list[FlowStep]
    check: FlowStep | None = None
    name: str = "toggle"
    drill: str | None = None
    """The target file's drill declaring this toggle: an external target's undo replays its ``disable`` steps."""
    _run: FlowRun | None = field(default=None, init=False)

    def describe(self) -> str:
        return f"{self.name}: " + ", ".join(f"{s.method} {s.path}" for s in self.on)

    def undo(self) -> Undo:
        if self.target.provider != "external" or self.drill is None or self.target.source is None:
            return LocalUndo(what=f"{self.name} off")
        # An external target outlives this run: the journal keeps a command that reloads the target file
        # (secrets from the environment, never written to the journal) and runs the drill's disable steps.
        command = [sys.executable, "-m", "opsgate.faults.toggle_off", str(self.target.source), self.drill]
        return CommandUndo(command=" ".join(shlex.quote(part) for part in command), timeout_s=60.0)

    def apply(self) -> None:
        self._run = run_blocking(lambda: _steps(self.target, self.on, None))

    def verify(self) -> None:
        if self.check is None:
            return
        try:
            run_blocking(lambda: _steps(self.target, [self.check], self._run))  # type: ignore[list-item]
        except (FlowFailed, ProbeError) as exc:
            raise FaultNotEffective(f"{self.name} is not in effect: {exc}") from None

    def rollback(self) -> str:
        run = run_blocking(lambda: _steps(self.target, self.off, self._run))
        return "; ".join(run.steps[-len(self.off) :]) if self.off else "nothing to undo"


@dataclass
class Migration:
    """Apply a reversible schema migration: ``up`` in one transaction; the undo (journalled) is its ``down``.

    ``applied`` is a query whose first column is true while the migration is in place: the proof after ``up``,
    and after ``down`` the proof that the rollback took (a rollback that leaves it applied raises). ``down``
    must be idempotent (``DROP ... IF EXISTS``): ``opsgate recover`` may replay it. Every lock wait and
    statement is bounded by ``timeout_s``.
    """

    dsn: str
    name: str
    up: list[str]
    down: list[str]
    applied: str
    timeout_s: float = 10.0

    def describe(self) -> str:
        return f"migration {self.name}: " + "; ".join(self.up)

    def undo(self) -> Undo:
        return SqlUndo(dsn=self.dsn, statements=list(self.down), timeout_s=self.timeout_s)

    def apply(self) -> None:
        run_sql(self.dsn, self.up, timeout_s=self.timeout_s)

    def is_applied(self) -> bool:
        """Whether the ``applied`` query says the migration is in place now."""
        try:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=max(1, int(self.timeout_s))) as conn:
                conn.execute(f"SET statement_timeout = {int(self.timeout_s * 1000)}")
                row = conn.execute(self.applied).fetchone()
        except psycopg.Error as exc:
            raise ProbeError(f"migration {self.name}: the applied check failed: {str(exc).splitlines()[0]}") from None
        return bool(row and row[0])

    def verify(self) -> None:
        if not self.is_applied():
            raise FaultNotEffective(f"migration {self.name} committed but `{self.applied}` says it is not applied")

    def rollback(self) -> str:
        detail = run_undo(self.undo())
        if self.is_applied():
            raise RuntimeError(f"migration {self.name} is still applied after its down steps ({detail})")
        return f"migration {self.name} rolled back: {detail}; its applied check is false"


async def _steps(target: Target, steps: list[FlowStep], run: FlowRun | None) -> FlowRun:
    async with httpx.AsyncClient() as client:
        return await run_steps(client, target, steps, run)


def call_blocking(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a helper thread and wait for it, even through a Ctrl-C (then re-raised once it is done).

    A fault is never left half-applied: the rollback starts only after the apply has finished.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run, name="opsgate-fault", daemon=True)
    thread.start()
    interrupted: BaseException | None = None
    while thread.is_alive():
        try:
            thread.join()
        except BaseException as exc:  # Ctrl-C / SIGTERM: let the action finish first
            interrupted = interrupted or exc
    if interrupted is not None:
        raise interrupted
    if error:
        raise error[0]
    return result[0]


def run_blocking(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a fresh event loop in a helper thread (see :func:`call_blocking`).

    Usable from sync code and from inside a running loop alike (a rollback must not yield to other tasks).
    """
    return call_blocking(lambda: asyncio.run(factory()))


@dataclass
class CommandFault:
    """Stop a part through configured commands (kubectl, docker compose, systemctl, ssh...).

    ``read`` captures the prior state (e.g. the replica count); ``start`` may use ``{prior}``, so the
    rollback restores the recorded state, not a guessed default. With ``read``, the fault must show:
    a state equal to the prior one after ``stop`` means it did not take effect.
    """

    name: str
    control: CommandControl
    prior: str | None = field(default=None, init=False)

    def _run(self, command: str) -> str:
        result = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=self.control.timeout,
                                check=False, preexec_fn=default_signal_mask)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"{self.name}: `{command}` exited {result.returncode}: {result.stderr.strip()[:200]}")
        return result.stdout.strip()

    def describe(self) -> str:
        return f"stop {self.name} (its control's stop command)"

    def undo(self) -> Undo:
        if self.control.read is not None and self.prior is None:
            self.prior = self._run(self.control.read)
        start = self.control.start.replace("{prior}", self.prior or "")
        return CommandUndo(command=start, timeout_s=self.control.timeout)

    def apply(self) -> None:
        self._run(self.control.stop)

    def rollback(self) -> str:
        return run_undo(self.undo())

    def verify(self) -> None:
        if self.control.read is None:
            return
        now = self._run(self.control.read)
        if now == self.prior:
            raise FaultNotEffective(
                f"{self.name}: still {now!r} after `{self.control.stop}` (read: `{self.control.read}`)"
            )


@contextmanager
def injected(journal: Journal, fault: Fault) -> Iterator[Fault]:
    """Journal the undo, apply and verify the fault, and undo it on every exit path (journal marked done)."""
    undo = fault.undo()
    entry = journal.record_undo(fault.describe(), undo)
    try:
        fault.apply()
        fault.verify()
        yield fault
    finally:
        with signals_blocked():  # a Ctrl-C now must not leave the fault in place
            fault.rollback()
            journal.mark_done(entry)
