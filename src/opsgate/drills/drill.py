"""One drill run: its faults (journalled, verified, always rolled back), expectations, timeline and verdict.

A drill is written as::

    async with drill.running():
        await drill.steady_state()
        async with drill.fault(LocalServiceFault(env, "worker-1")):
            await drill.expect("backlog grows", queue_at_least(...), within_s=30)
        await drill.expect("backlog drains", ..., within_s=60)

:meth:`Drill.running` turns how the block ended into the verdict — ``pass``; ``fail`` (an expectation
broke, named in the message); ``inconclusive`` (the fault did not take effect); ``aborted`` (an
abort condition failed: rolled back at once); ``error`` (timeout, opsgate could not run it) — and
records it with its timeline, samples and drill log. Ctrl-C and SIGTERM roll back too, then end the run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from opsgate.config import Target
from opsgate.drills.barrier import barrier
from opsgate.evidence.records import CheckRecord, Sample, TimelineEvent, Verdict
from opsgate.evidence.redact import Redactor
from opsgate.faults.actions import Fault, FaultNotEffective, call_blocking
from opsgate.faults.journal import Journal, signals_blocked
from opsgate.flows import FlowFailed
from opsgate.probes.base import ProbeError
from opsgate.probes.http import request, subset_mismatch
from opsgate.probes.sources import service_url

MAX_POLLS = 10_000


class DrillFailed(Exception):
    """An expectation of the drill did not hold; the message names it and what was last seen."""


class DrillInconclusive(Exception):
    """The drill could not produce evidence either way (e.g. the fault did not take effect)."""


class DrillNotPassed(AssertionError):
    """Raised after a drill that did not pass has been recorded: ``<verdict>: <message>``."""


@dataclass(frozen=True)
class Observation:
    """One look at the system: does the expectation hold, the value seen (for the timeline), a note."""

    ok: bool
    value: float | None = None
    note: str = ""


Check = Callable[[], Awaitable[Observation]]


@dataclass
class Drill:
    """State of one drill run. Create one per drill; use :meth:`running` around its body."""

    name: str
    target: Target
    journal: Journal
    claim: str | None = None
    objective: str = ""
    timeout_s: float = 1800.0
    kind: str = "drill"
    on_finish: Callable[[Drill], None] | None = None
    """Called once with the finished drill (records the evidence, writes the drill log)."""
    client: httpx.AsyncClient = field(default_factory=httpx.AsyncClient)
    timeline: list[TimelineEvent] = field(default_factory=list)
    series: dict[str, list[Sample]] = field(default_factory=dict)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: dict[str, int] = field(default_factory=dict)
    measured: dict[str, float] = field(default_factory=dict)
    """Durations the drill measured (drain, recovery...), seconds."""
    verdict: Verdict = "error"
    """``error`` until the drill concludes: an unfinished drill never records a pass."""
    message: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    _abort_reason: str | None = field(default=None, init=False)
    _background: list[asyncio.Task[None]] = field(default_factory=list, init=False)
    # Set when the drill ends: its background loops stop at their next step even where a cancellation was lost
    # (redis-py's asyncio client can swallow one mid-command, redis/redis-py#2028, #2551: seen here 63 times in 200
    # cancels of a queue probe, each leaving a watch sampling until the drill's timeout, 60 s after a failing drill).
    _stopping: bool = field(default=False, init=False)

    # --- the timeline ------------------------------------------------------------------------

    def event(self, what: str, detail: str = "") -> float:
        """Record a timestamped step; returns its time (unix s)."""
        at = time.time()
        self.timeline.append(TimelineEvent(at, what, detail))
        return at

    def sample(self, series: str, value: float | None, ok: bool = True, note: str = "") -> None:
        """Record one probe sample of ``series`` (queue depth, error ratio...)."""
        self.series.setdefault(series, []).append(Sample(time.time(), value, ok, note))

    def snapshot(self, when: str, values: dict[str, Any]) -> None:
        """Keep state seen ``before`` or ``after`` the fault (row counts, queue depths) for the drill log."""
        self.snapshots.setdefault(when, {}).update(values)

    # --- running -----------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Drill]:
        """Run the body under the drill's timeout; turn how it ended into the verdict, then record it."""
        self.started_at = self.event("drill started")
        interrupted: BaseException | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                yield self
        except DrillFailed as exc:
            self._conclude("fail", str(exc))
        except (DrillInconclusive, FaultNotEffective) as exc:
            self._conclude("inconclusive", str(exc))
        except TimeoutError:
            self._conclude("error", f"the drill did not finish within its timeout of {self.timeout_s:g}s; "
                                    f"last step: {self.timeline[-1].what}")  # fmt: skip
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._abort_reason is None or task is None:  # cancelled from outside (e.g. Ctrl-C under asyncio)
                self._conclude("error", "interrupted (cancelled); every applied fault was rolled back")
                raise
            task.uncancel()
            self._conclude("aborted", f"abort condition: {self._abort_reason}")
        except (ProbeError, FlowFailed) as exc:
            self._conclude("error", f"{type(exc).__name__}: {exc}")
        except (KeyboardInterrupt, SystemExit) as exc:
            interrupted = exc
            self._conclude("error", f"interrupted ({exc or type(exc).__name__}); every applied fault was rolled back")
        except Exception as exc:
            self._conclude("error", f"{type(exc).__name__}: {exc}")
        else:
            self._conclude("pass", self.message or "every expectation held")
        finally:
            await self._stop_background()
            await self.client.aclose()
            if self.on_finish is not None:
                callback, self.on_finish = self.on_finish, None
                callback(self)
        if interrupted is not None:
            raise interrupted
        if self.verdict != "pass":
            raise DrillNotPassed(f"{self.verdict}: {self.message}") from None

    def _conclude(self, verdict: Verdict, message: str) -> None:
        self.verdict, self.message = verdict, message
        self.finished_at = self.event(f"drill {verdict}", message)

    def record(self) -> CheckRecord:
        """The drill as a check record: verdict, message, timeline, samples."""
        measured = "; ".join(f"{k} {v:.2f}s" for k, v in self.measured.items()) or None
        return CheckRecord(
            id=self.name, kind=self.kind, verdict=self.verdict, message=self.message, claim=self.claim,
            measured=measured, started_at=self.started_at, finished_at=self.finished_at,
            timeline=list(self.timeline), series=dict(self.series),
        )  # fmt: skip

    async def _stop_background(self) -> None:
        self._stopping = True
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()

    # --- faults ------------------------------------------------------------------------------

    @asynccontextmanager
    async def fault(self, fault: Fault) -> AsyncIterator[Fault]:
        """Journal the undo, apply, prove the fault holds, yield; roll back on every way out (signals held)."""
        undo = call_blocking(fault.undo)  # a command control reads the prior state here
        entry = self.journal.record_undo(Redactor(self.target.secret_values).text(fault.describe()), undo)
        seed = getattr(fault, "settings", {}).get("seed")
        if isinstance(seed, int):
            self.seeds[fault.describe()] = seed
        try:
            barrier("before-fault")
            call_blocking(fault.apply)
            self.event("fault applied", fault.describe())
            call_blocking(fault.verify)
            self.event("fault verified", "the target shows the fault")
            barrier("fault-applied")
            yield fault
        finally:
            with signals_blocked():  # a second Ctrl-C or SIGTERM must not skip the undo
                barrier("in-rollback")
                try:
                    detail = call_blocking(fault.rollback)
                except Exception as exc:
                    self.event("rollback FAILED", f"{exc}; the undo stays in {self.journal.path}: run opsgate recover")
                    raise
                self.journal.mark_done(entry)
                self.event("rollback applied", detail)

    # --- expectations ------------------------------------------------------------------------

    async def expect(self, what: str, check: Check, *, within_s: float = 0.0, every_s: float = 0.5,
                     series: str | None = None) -> Observation:  # fmt: skip
        """Poll ``check`` until it holds (at most ``within_s``); a timeline event on success, DrillFailed otherwise."""
        started = time.monotonic()
        deadline = started + within_s
        seen = Observation(False, None, "not checked")
        polls = 0
        while polls < MAX_POLLS:
            polls += 1
            try:
                seen = await check()
            except (ProbeError, FlowFailed) as exc:
                seen = Observation(False, None, str(exc))
            if series is not None:
                self.sample(series, seen.value, seen.ok, seen.note)
            if seen.ok or time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(every_s, max(0.0, deadline - time.monotonic())))
        took = time.monotonic() - started
        if not seen.ok:
            limit = f" within {within_s:.1f}s ({polls} checks)" if within_s else ""
            raise DrillFailed(f"{what}: not met{limit}; last seen: {seen.note}")
        self.event(what, f"after {took:.2f}s: {seen.note}")
        if within_s:
            self.measured[what] = took  # a drain, a recovery, a propagation: how long it took
        return seen

    async def steady_state(self, *, after: bool = False, within_s: float = 0.0) -> None:
        """Every health check of every service passes: before the fault (once), or restored after it (polled)."""

        async def healthy() -> Observation:
            problems = []
            for name, service in self.target.services.items():
                for check in service.health:
                    url = service_url(self.target, name) + check.path
                    try:
                        seen = await request(self.client, check.method, url, timeout_s=check.timeout)
                    except ProbeError as exc:
                        problems.append(str(exc))
                        continue
                    mismatch = None
                    if seen.status != check.expect.status:
                        mismatch = f"answered {seen.status}, expected {check.expect.status}: {seen.text[:160]}"
                    elif check.expect.json is not None:
                        mismatch = subset_mismatch(check.expect.json, seen.json)
                    if mismatch:
                        problems.append(f"{name} {check.path} {mismatch}")
            count = sum(len(s.health) for s in self.target.services.values())
            return Observation(not problems, None, "; ".join(problems) or f"{count} health checks pass")

        what = "steady state restored" if after else "steady state verified"
        try:
            await self.expect(what, healthy, within_s=within_s, every_s=0.25)
        except DrillFailed as exc:
            when = "after the rollback" if after else "before the fault"
            raise DrillFailed(f"steady state {when}: {str(exc).split('last seen: ', 1)[-1]}") from None

    def watch(self, series: str, probe: Callable[[], Awaitable[float | None]], every_s: float) -> None:
        """Sample ``probe`` into ``series`` every ``every_s`` until the drill ends (bounded by its timeout)."""

        async def loop() -> None:
            for _ in range(int(self.timeout_s / every_s) + 1):
                try:
                    value, ok, note = await probe(), True, ""
                except (ProbeError, FlowFailed) as exc:
                    value, ok, note = None, False, str(exc)
                if self._stopping:
                    return
                self.sample(series, value, ok, note)
                await asyncio.sleep(every_s)

        self._background.append(asyncio.create_task(loop()))

    def abort_when(self, what: str, check: Check, every_s: float) -> asyncio.Task[None]:
        """While the drill runs, check ``check`` every ``every_s``; the first failure rolls back and aborts."""
        task = asyncio.current_task()
        assert task is not None, "abort_when needs a running task"

        async def loop() -> None:
            for _ in range(int(self.timeout_s / every_s) + 1):
                await asyncio.sleep(every_s)
                try:
                    seen = await check()
                except (ProbeError, FlowFailed) as exc:
                    seen = Observation(False, None, str(exc))
                if self._stopping:
                    return
                if not seen.ok:
                    self._abort_reason = f"{what}: {seen.note}"
                    self.event("abort condition failed", self._abort_reason)
                    task.cancel()
                    return

        watcher = asyncio.create_task(loop())
        self._background.append(watcher)
        return watcher

    async def sleep(self, seconds: float, why: str) -> None:
        """Wait on purpose (hold a fault, a gap between outages), noted on the timeline."""
        if seconds > 0:
            self.event(f"wait {seconds:.2f}s", why)
            await asyncio.sleep(seconds)
