"""Faults with their undo and a proof that they took effect.

:func:`injected` is the one way to apply a fault: the undo goes to the journal first, then the
fault is applied, then checked (a fault that did not take effect raises :class:`FaultNotEffective`
— the drill is inconclusive, never passed), and the undo runs on every way out of the block.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from opsgate.config import CommandControl
from opsgate.faults.journal import CommandUndo, HttpUndo, Journal, Undo, run_undo, signals_blocked


class FaultNotEffective(Exception):
    """The fault was applied but the target does not show it; what was expected and what was seen."""


class Fault(Protocol):
    """An action on the target with its undo."""

    def describe(self) -> str: ...
    def undo(self) -> Undo: ...
    def apply(self) -> None: ...
    def verify(self) -> None: ...


@dataclass
class ProviderFault:
    """Make the provider fail through its control endpoint (the sandbox's ``/control/faults``).

    Random faults take a seed, recorded in ``settings``, so the drill can be replayed.
    """

    control_url: str
    settings: dict[str, Any]
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.settings.get("seed") is None:
            self.settings = {**self.settings, "seed": random.SystemRandom().randrange(2**31)}

    def describe(self) -> str:
        return f"provider faults {self.settings} at {self.control_url}"

    def undo(self) -> Undo:
        return HttpUndo(method="DELETE", url=self.control_url)

    def apply(self) -> None:
        httpx.put(self.control_url, json=self.settings, timeout=self.timeout_s).raise_for_status()

    def verify(self) -> None:
        seen = httpx.get(self.control_url, timeout=self.timeout_s).json()
        if not seen.get("active") or any(seen.get(k) != v for k, v in self.settings.items()):
            raise FaultNotEffective(f"the provider does not show the fault: asked {self.settings}, control says {seen}")


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
                                check=False)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"{self.name}: `{command}` exited {result.returncode}: {result.stderr.strip()[:200]}")
        return result.stdout.strip()

    def describe(self) -> str:
        return f"stop {self.name} with `{self.control.stop}`"

    def undo(self) -> Undo:
        if self.control.read is not None and self.prior is None:
            self.prior = self._run(self.control.read)
        start = self.control.start.replace("{prior}", self.prior or "")
        return CommandUndo(command=start, timeout_s=self.control.timeout)

    def apply(self) -> None:
        self._run(self.control.stop)

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
            run_undo(undo)
            journal.mark_done(entry)
