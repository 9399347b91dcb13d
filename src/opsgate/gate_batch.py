"""The run's gates, judged together in the background so that their windows overlap instead of adding up.

A gate run of a target with a 30-minute watch and several 5-minute windows would otherwise take the sum of
them. The windowed gates start together when the run starts and are judged while the read-only checks run;
each gate's check then reports its own record. Checks that change the target's state (faults, writing flows,
load) wait until every window has closed, so no window observes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import httpx

from opsgate.config import GateSpec, Target
from opsgate.evidence.records import CheckRecord
from opsgate.gate_run import run_gate

SLACK_S = 120.0
"""How long past its window a gate may take to answer (probe timeouts, a slow scrape) before it is an error."""


class GateBatch:
    """Judges ``gates`` concurrently on a thread of its own; ``record(name)`` waits for one verdict."""

    def __init__(self, target: Target, gates: list[GateSpec]) -> None:
        self._target = target
        self._gates = gates
        self._results: dict[str, Future[CheckRecord]] = {gate.name: Future() for gate in gates}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="opsgate-gates", daemon=True)
        self._main: asyncio.Task[None] | None = None
        longest = max((target.scaled(g.window, floor_s=0.2) for g in gates if g.window is not None), default=0.0)
        self.deadline_s = longest + SLACK_S
        """Seconds from the start by which every gate has its verdict (else: an error naming the gate)."""
        self.started_at = 0.0

    def start(self) -> None:
        """Start every gate now."""
        self.started_at = time.monotonic()
        self._main = self._loop.create_task(self._judge_all())
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        assert self._main is not None
        try:
            self._loop.run_until_complete(self._main)
        except asyncio.CancelledError:
            pass
        finally:
            for result in self._results.values():
                if not result.done():
                    result.set_exception(RuntimeError("the run ended before the gate was judged"))
            self._loop.close()

    async def _judge_all(self) -> None:
        async with httpx.AsyncClient() as client:
            await asyncio.gather(*(self._judge(client, gate) for gate in self._gates))

    async def _judge(self, client: httpx.AsyncClient, gate: GateSpec) -> None:
        result = self._results[gate.name]
        try:
            result.set_result(await run_gate(client, self._target, gate))
        except Exception as exc:  # reported by the gate's own check
            result.set_exception(exc)

    def _left_s(self) -> float:
        return max(0.0, self.started_at + self.deadline_s - time.monotonic())

    def record(self, name: str) -> CheckRecord:
        """The verdict of gate ``name``, waiting for its window to close; raises what judging it raised."""
        try:
            return self._results[name].result(timeout=self._left_s())
        except FutureTimeout:
            late = f"gate {name!r} was not judged within {self.deadline_s:.0f}s of the run's start"
            raise TimeoutError(late) from None

    def wait(self) -> None:
        """Wait until every gate is judged (or the deadline passed): the target is no longer observed."""
        self._thread.join(timeout=self._left_s())

    def close(self) -> None:
        """Stop judging (a run that ends early) and wait for the thread, its traffic and its client to end."""
        if self._thread.is_alive() and self._main is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing left to stop
                self._loop.call_soon_threadsafe(self._main.cancel)
        if self._thread.ident is not None:
            self._thread.join(timeout=30.0)
