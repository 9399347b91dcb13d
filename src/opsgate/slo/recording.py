"""Raw per-request timings from any locustfile: ``from opsgate.slo import recording  # noqa: F401``.

Importing this module inside a Locust process hooks Locust's events (pytest never imports it):

* every request (Locust's ``request`` event) is kept as ``[at_s, latency_ms, ok, name]``: its start in seconds
  from the test start, Locust's response time in ms (timed from the *actual* send), no exception, its name;
* a single process writes ``$OPSGATE_SLO_OUT/timings-<pid>.json`` at test stop
  (``{"planned", "skipped", "elapsed_s", "timings"}``; ``elapsed_s`` is the sending window in seconds, from the
  test start to the stop, without the wait for requests still open);
* a worker ships its timings to the master as they come (a chunk a second) and, when it is done, a final chunk
  carrying its own count; the master waits (at most ``FINAL_WAIT_S``) for every worker's final chunk and writes the
  merged file with a ``workers`` list (each worker's own count and what was received), which the runner checks;
* a worker's watchdog exits the process (no orphan load) when the master's heartbeat stops for
  ``HEARTBEAT_TIMEOUT_S`` (works across machines), or when the local process that started it
  (``OPSGATE_SLO_PARENT_PID``) is gone.

opsgate's own open-model locustfile records from the *intended* send time instead: it switches the request event off
(``RECORDER.from_events = False``) and calls :meth:`Recorder.add` and :meth:`Recorder.finish` itself. With
``stop_after_s`` in ``OPSGATE_SLO_SPEC`` (set by the runner for closed-model and team runs) the single process or
master ends the run that long after its test start.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.rpc.protocol import Message
from locust.runners import MasterRunner, WorkerRunner

OUT = os.environ.get("OPSGATE_SLO_OUT", ".")
STOP_AFTER_S: float | None = json.loads(os.environ.get("OPSGATE_SLO_SPEC") or "{}").get("stop_after_s")
"""Set by the runner for closed-model and team runs: the single process or master ends the run this long after its
test start (Locust's ``--run-time`` fires early by its own start-up time)."""
TIMINGS_MESSAGE = "opsgate_timings"
FINISH_MESSAGE = "opsgate_finish"
SHIP_INTERVAL_S = 1.0
FINAL_WAIT_S = 15.0
"""How long the master waits at test stop for the workers' final chunks (Locust's own wait is 0.5 s)."""
HEARTBEAT_TIMEOUT_S = 3.0
"""A worker exits when the master has not answered a heartbeat for this long (Locust's own: 60 s)."""
CONNECT_TIMEOUT_S = 60.0
"""A worker exits when no master heartbeat came at all within this long of its start."""
WATCHDOG_INTERVAL_S = 0.2
LOAD_SAMPLE_S = 1.0
"""This process's CPU use and run-queue wait are sampled over each second of the run (its own start-up excluded)."""
WATCHDOG_EXIT_CODE = 75
"""A worker's exit code when its watchdog ended it before its final chunk was shipped (0 after it)."""


def cpu_and_wait_s() -> tuple[float, float]:
    """This process's CPU time and its time runnable but waiting for a core, so far (seconds)."""
    times = os.times()
    try:
        with open("/proc/self/schedstat") as fh:
            wait_s = int(fh.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        wait_s = 0.0
    return times.user + times.system, wait_s


def write_timings(summary: dict[str, Any]) -> None:
    """Write this process's timings file (``timings-<pid>.json``) into ``$OPSGATE_SLO_OUT``."""
    path = os.path.join(OUT, f"timings-{os.getpid()}.json")
    with open(path + ".tmp", "w") as fh:
        json.dump(summary, fh)
    os.replace(path + ".tmp", path)


class Recorder:
    """This process's raw timings and plan figures; written (single process) or shipped (worker) once, at finish."""

    def __init__(self) -> None:
        self.timings: list[list[Any]] = []
        self.planned = 0
        self.skipped = 0
        self.from_events = True
        self.environment: Environment | None = None
        self.started_wall: float | None = None
        self.started: float | None = None
        self.stopping: float | None = None
        self.elapsed_s: float | None = None
        self.cpu_ratio = 0.0
        """The busiest second's CPU demand: time running or runnable-but-waiting, as a share of one core."""
        self.wait_ratio = 0.0
        """The busiest second's wait for a core (runnable, not running), as a share of that second."""
        self._shipped = 0
        self._seq = 0
        self._sampling = False

    def start(self) -> None:
        """Mark the test start (the origin of ``at_s``); later calls keep the first."""
        if self.started is None:
            self.started_wall, self.started = time.time(), time.monotonic()

    def sample_load(self) -> None:
        """Sample this process's CPU use and run-queue wait every second until :meth:`finish` (a greenlet, once)."""
        if self._sampling:
            return
        self._sampling = True
        then, (cpu, wait) = time.monotonic(), cpu_and_wait_s()
        while self.elapsed_s is None:
            gevent.sleep(LOAD_SAMPLE_S)
            now, (cpu_now, wait_now) = time.monotonic(), cpu_and_wait_s()
            if now - then >= LOAD_SAMPLE_S / 2:
                busy = (cpu_now - cpu) + (wait_now - wait)  # running, or runnable and waiting for a core
                self.cpu_ratio = max(self.cpu_ratio, busy / (now - then))
                self.wait_ratio = max(self.wait_ratio, (wait_now - wait) / (now - then))
            then, cpu, wait = now, cpu_now, wait_now

    def add(self, at_s: float, latency_ms: float, ok: bool, name: str | None) -> None:
        """Keep one request; ignored after :meth:`finish` (what was counted is what was shipped)."""
        if self.elapsed_s is None:
            self.timings.append([at_s, latency_ms, ok, name])

    def on_request(self, name: str, response_time: float, ok: bool, start_time: float | None) -> None:
        """A Locust ``request`` event: its start relative to the test start, and Locust's response time (ms)."""
        self.start()
        assert self.started_wall is not None
        begun = start_time if start_time is not None else time.time() - response_time / 1000
        self.add(begun - self.started_wall, response_time, ok, name)

    def stop_sending(self) -> None:
        """The test is stopping: the sending window ends now (requests still open may yet be recorded)."""
        if self.stopping is None:
            self.stopping = time.monotonic()

    def finish(self, elapsed_s: float | None = None) -> None:
        """Stop recording; write the timings file (single process) or ship the final chunk (worker). Once.

        ``elapsed_s``: the sending window (s); by default from the test start to the stop (not the drain after it).
        """
        if self.elapsed_s is not None:
            return
        self.start()
        assert self.started is not None
        self.elapsed_s = elapsed_s if elapsed_s is not None else (self.stopping or time.monotonic()) - self.started
        runner = self.environment.runner if self.environment is not None else None
        if isinstance(runner, MasterRunner):
            return  # no requests of its own: the master writes the merged file (Merger)
        if isinstance(runner, WorkerRunner):
            try:
                runner._send_stats()  # Locust's own stats first, so the master's json is complete too
                self.ship(runner, final=True)
            except Exception as exc:  # the runner's count check reports the missing final chunk
                sys.stderr.write(f"opsgate recording: shipping the final timings failed: {exc!r}\n")
            return
        write_timings({**self.summary(), "timings": self.timings})

    def summary(self) -> dict[str, Any]:
        """The plan figures of this process."""
        return {"planned": self.planned, "skipped": self.skipped, "elapsed_s": self.elapsed_s or 0.0,
                "cpu_ratio": self.cpu_ratio, "wait_ratio": self.wait_ratio}  # fmt: skip

    def ship(self, runner: WorkerRunner, *, final: bool) -> None:
        """Send the timings not yet shipped to the master (with this worker's own count when ``final``)."""
        chunk = self.timings[self._shipped :]
        self._shipped += len(chunk)
        data: dict[str, Any] = {"seq": self._seq, "timings": chunk, "final": final}
        self._seq += 1
        if final:
            data |= {**self.summary(), "count": len(self.timings), "pid": os.getpid(), "host": socket.gethostname()}
        runner.send_message(TIMINGS_MESSAGE, data)


class Merger:
    """The master's side: every worker's chunks, merged into one timings file once each has sent its final chunk."""

    def __init__(self) -> None:
        self.workers: dict[str, dict[str, Any]] = {}
        self.stopping = False
        self.written = False

    def expected(self, environment: Environment) -> int:
        """How many workers the run waits for (``--expect-workers``)."""
        options = environment.parsed_options
        return int(options.expect_workers) if options is not None else 1

    def all_final(self, environment: Environment) -> bool:
        """True when the expected number of workers have each sent their final chunk."""
        finals = sum(1 for worker in self.workers.values() if worker["final"] is not None)
        return finals >= self.expected(environment)

    def on_chunk(self, environment: Environment, msg: Message) -> None:
        """One chunk from a worker; once every worker is done, end the run (opsgate's dispatchers end on their own)."""
        worker = self.workers.setdefault(msg.node_id, {"timings": [], "final": None})
        worker["timings"].extend(msg.data["timings"])
        if msg.data["final"]:
            worker["final"] = msg.data
            if not self.stopping and self.all_final(environment) and environment.runner is not None:
                self.stopping = True
                gevent.spawn(environment.runner.quit)  # not in the message loop: it must keep receiving

    def on_stopping(self, environment: Environment) -> None:
        """The run is stopping (run time, every worker done, a signal): ask every worker for its final chunk."""
        self.stopping = True
        if environment.runner is not None:
            environment.runner.send_message(FINISH_MESSAGE)

    def on_stop(self, environment: Environment) -> None:
        """Wait (bounded) for every worker's final chunk, then write the merged timings file."""
        deadline = time.monotonic() + FINAL_WAIT_S
        while not self.all_final(environment) and time.monotonic() < deadline:
            gevent.sleep(0.05)
        self.write()

    def write(self) -> None:
        """The merged timings file, with each worker's own count and what the master received from it."""
        if self.written:
            return
        self.written = True
        rows, timings = [], []
        finals = [w["final"] for w in self.workers.values() if w["final"] is not None]
        for node, worker in self.workers.items():
            final = worker["final"] or {}
            rows.append({"id": node, "host": final.get("host"), "pid": final.get("pid"), "count": final.get("count"),
                         "received": len(worker["timings"]), "final": bool(final)})  # fmt: skip
            timings.extend(worker["timings"])
        write_timings({
            "planned": sum(int(f["planned"]) for f in finals),
            "skipped": sum(int(f["skipped"]) for f in finals),
            "elapsed_s": max((float(f["elapsed_s"]) for f in finals), default=0.0),
            "cpu_ratio": max((float(f["cpu_ratio"]) for f in finals), default=0.0),
            "wait_ratio": max((float(f["wait_ratio"]) for f in finals), default=0.0),
            "timings": timings,
            "workers": rows,
        })  # fmt: skip


RECORDER = Recorder()
MERGER = Merger()


def _ship_periodically(runner: WorkerRunner) -> None:
    """Ship new timings every second until the final chunk is sent (a lost chunk shows as a count mismatch)."""
    while RECORDER.elapsed_s is None:
        gevent.sleep(SHIP_INTERVAL_S)
        if RECORDER.elapsed_s is None and len(RECORDER.timings) > RECORDER._shipped:
            try:
                RECORDER.ship(runner, final=False)
            except Exception as exc:  # the count check at the end will say what is missing
                sys.stderr.write(f"opsgate recording: shipping timings failed: {exc!r}\n")


def _watchdog(runner: WorkerRunner, parent_pid: int | None) -> None:
    """Exit this worker (and so its load) when the master's heartbeat stops, or the local parent is gone."""
    born = time.time()
    while True:
        gevent.sleep(WATCHDOG_INTERVAL_S)
        last = runner.last_heartbeat_timestamp
        silent = time.time() - (last if last is not None else born)
        reason = None
        if silent > (HEARTBEAT_TIMEOUT_S if last is not None else CONNECT_TIMEOUT_S):
            reason = f"no heartbeat from the master for {silent:.1f}s"
        elif parent_pid is not None and os.getppid() != parent_pid:
            reason = f"the process that started this worker (pid {parent_pid}) is gone"
        if reason:
            done = RECORDER.elapsed_s is not None  # the final chunk is out: nothing is lost by leaving
            sys.stderr.write(f"opsgate watchdog: {reason}; stopping the load and exiting\n")
            sys.stderr.flush()
            os._exit(0 if done else WATCHDOG_EXIT_CODE)


def _stop_after(environment: Environment, seconds: float) -> None:
    """End the run ``seconds`` from now (polled on the monotonic clock, not on gevent's cached loop time)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        gevent.sleep(min(0.05, deadline - time.monotonic()))
    if environment.runner is not None:
        environment.runner.quit()


def _listen(hook: Any, listener: Callable[..., None]) -> None:
    """Add ``listener`` to a Locust event hook (Locust's ``add_listener`` is untyped)."""
    hook.add_listener(listener)


def _finish_on_request(environment: Environment, msg: Message) -> None:
    """The master asks for the final chunk: stop the users (in-flight requests may finish), then ship it."""
    if environment.runner is not None:
        environment.runner.stop()
    RECORDER.finish()


def _on_init(environment: Environment, **_kwargs: Any) -> None:
    RECORDER.environment = environment
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        runner.register_message(TIMINGS_MESSAGE, MERGER.on_chunk)
        _listen(environment.events.test_stopping, MERGER.on_stopping)
        _listen(environment.events.test_stop, MERGER.on_stop)
    elif isinstance(runner, WorkerRunner):
        runner.register_message(FINISH_MESSAGE, _finish_on_request, concurrent=True)
        parent = os.environ.get("OPSGATE_SLO_PARENT_PID")
        gevent.spawn(_watchdog, runner, int(parent) if parent else None)
        gevent.spawn(_ship_periodically, runner)


def _on_test_start(environment: Environment, **_kwargs: Any) -> None:
    RECORDER.start()
    if not isinstance(environment.runner, MasterRunner):
        gevent.spawn(RECORDER.sample_load)
    if STOP_AFTER_S is not None and not isinstance(environment.runner, WorkerRunner):
        gevent.spawn(_stop_after, environment, float(STOP_AFTER_S))


def _on_test_stopping(**_kwargs: Any) -> None:
    RECORDER.stop_sending()


def _on_test_stop(environment: Environment, **_kwargs: Any) -> None:
    if not isinstance(environment.runner, MasterRunner):
        RECORDER.finish()


def _on_request(name: str, response_time: float, exception: BaseException | None = None,
                start_time: float | None = None, **_kwargs: Any) -> None:  # fmt: skip
    if RECORDER.from_events:
        RECORDER.on_request(name, response_time, exception is None, start_time)


_listen(events.init, _on_init)
_listen(events.test_start, _on_test_start)
_listen(events.test_stopping, _on_test_stopping)
_listen(events.test_stop, _on_test_stop)
_listen(events.request, _on_request)
