"""Run Locust as child processes, each in its own session, with a hard time limit, and read the raw timings.

The pytest process never imports locust (it gevent-patches its importer). Locust's exit code only
detects a crash; the verdict is computed from the raw timings (:mod:`opsgate.slo.verdict`). A plan
runs in one Locust process, or (``workers=N``) as a Locust master plus N workers that ship their
timings to the master (:mod:`opsgate.slo.recording`); the master's merged count must equal the sum of
the workers' own counts, else the run ended early (inconclusive). On the time limit everything
started is killed, and the run checks that nothing of any session it started is left.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from opsgate.environments.process import default_signal_mask, process_start_time
from opsgate.slo.verdict import Run, Timing

if TYPE_CHECKING:
    from opsgate.faults.journal import Journal

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
GRACE_S = 30.0
"""Beyond the planned duration: start-up and the drain of requests still open."""
EXIT_WAIT_S = 10.0
"""How long the workers (and anything else started) may take to exit once the master or single process has."""
STOP_TIMEOUT_S = 5
"""Locust's ``--stop-timeout``: a user in the middle of a task may finish it for this long (s)."""
UUID_MARK = "{uuid}"


class LoadRunError(Exception):
    """Locust could not be run (or left something behind); the message says what and where its log is."""


@dataclass(frozen=True)
class Plan:
    """One load run against ``host``.

    Open model (default): ``path`` is sent on a fixed schedule, ``rate_per_s`` a second for ``duration_s`` seconds
    (after a linear ramp from 0 over ``ramp_s``), each latency timed from the *intended* send time. Closed model:
    ``users`` Locust users send back to back, each paced to ``rate_per_s / users`` (unpaced when ``rate_per_s`` is 0),
    each latency timed from the *actual* send (the closed model's blind spot, kept visible). ``workers`` > 0 runs a
    Locust master and that many workers. ``{uuid}`` in the path, header values and strings of ``body`` becomes a fresh
    uuid4 hex per request. ``locustfile`` runs a team's own locustfile instead (it imports
    :mod:`opsgate.slo.recording`); ``judge_name`` keeps only the timings of that request name.
    """

    host: str
    path: str
    rate_per_s: float
    duration_s: float
    method: str = "GET"
    headers: dict[str, str] | None = None
    body: Any = None
    status: int = 200
    max_in_flight: int = 200
    name: str | None = None
    model: Literal["open", "closed"] = "open"
    users: int = 1
    ramp_s: float = 0.0
    workers: int = 0
    sign_header: str | None = None
    sign_secret: str | None = field(default=None, repr=False)
    """Signs each request body into ``sign_header``; reaches the child only through its environment."""
    locustfile: Path | None = None
    judge_name: str | None = None

    def __post_init__(self) -> None:
        if self.model not in ("open", "closed"):
            raise ValueError(f"model must be 'open' or 'closed', not {self.model!r}")
        if self.users < 1 or self.workers < 0 or self.ramp_s < 0 or self.rate_per_s < 0 or self.duration_s <= 0:
            raise ValueError("users must be >= 1, workers, ramp_s and rate_per_s >= 0, duration_s > 0")
        if self.model == "open" and self.locustfile is None and self.rate_per_s <= 0:
            raise ValueError("the open model needs rate_per_s > 0")

    def planned_requests(self) -> int:
        """Requests the plan asks for (0 = no plan: a closed model or team locustfile without a rate)."""
        return planned_count(self.rate_per_s, self.duration_s, self.ramp_s)


@dataclass(frozen=True)
class LoadResult:
    """The run for the verdict, plus Locust's own (rounded) figures, the files it wrote and each worker's count."""

    run: Run
    locust: dict[str, Any]
    """Locust's first stats entry (its ``--json-file``), rounded figures."""
    files: list[Path]
    worker_counts: list[int] = field(default_factory=list)
    """Timings each worker reported it recorded (distributed runs only; in the order the master heard from them)."""
    locust_entries: list[dict[str, Any]] = field(default_factory=list)
    """Every stats entry of Locust's ``--json-file`` (one per request name and method)."""


@dataclass
class _Started:
    """One Locust process this run started: its own session (group id = its PID) and its log."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path


# --- the schedule (shared with the locustfile) -------------------------------------------------------------------


def planned_count(rate_per_s: float, duration_s: float, ramp_s: float = 0.0) -> int:
    """Requests sent in ``duration_s`` when the rate rises linearly from 0 to ``rate_per_s`` over ``ramp_s``."""
    if rate_per_s <= 0 or duration_s <= 0:
        return 0
    ramp = min(ramp_s, duration_s)
    total = rate_per_s * ramp * ramp / (2 * ramp_s) if ramp_s > 0 else 0.0
    total += rate_per_s * (duration_s - ramp)
    return int(total + 1e-9)


def send_offsets(rate_per_s: float, duration_s: float, ramp_s: float = 0.0) -> list[float]:
    """The intended send times (s from the start) of the plan: request k is sent when the curve's integral reaches k."""
    offsets = []
    ramp_requests = rate_per_s * ramp_s / 2
    for index in range(planned_count(rate_per_s, duration_s, ramp_s)):
        if index < ramp_requests:
            offsets.append(math.sqrt(2 * ramp_s * index / rate_per_s))
        else:
            offsets.append(ramp_s + (index - ramp_requests) / rate_per_s)
    return offsets


def fill_uuids(value: Any, new: Callable[[], str] = lambda: uuid.uuid4().hex) -> Any:
    """``value`` with every ``{uuid}`` in its strings (dict values and list items, recursively) replaced by ``new()``.

    Each occurrence gets its own value; other ``{...}`` are left as they are.
    """
    if isinstance(value, str):
        parts = value.split(UUID_MARK)
        return parts[0] + "".join(new() + part for part in parts[1:])
    if isinstance(value, dict):
        return {key: fill_uuids(item, new) for key, item in value.items()}
    if isinstance(value, list):
        return [fill_uuids(item, new) for item in value]
    return value


def child_spec(plan: Plan) -> dict[str, Any]:
    """What the locustfile reads from ``OPSGATE_SLO_SPEC`` (the signing secret included: env only, never argv).

    ``stop_after_s``: the single process or master ends the run that long after its test start (the closed model and
    team locustfiles; opsgate's open-model dispatchers end the run themselves). Locust's ``--run-time`` is only a
    backstop: its timer starts before Locust's own start-up is over (``--run-time 4s`` stopped a run 2.7 s after
    its start, measured).
    """
    keys = ("path", "rate_per_s", "duration_s", "method", "headers", "body", "status", "max_in_flight", "name",
            "model", "users", "ramp_s", "sign_header", "sign_secret")  # fmt: skip
    spec = {key: getattr(plan, key) for key in keys}
    spec["stop_after_s"] = None if plan.locustfile is None and plan.model == "open" else plan.duration_s
    return spec


# --- running -------------------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for the Locust master)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run_load(plan: Plan, out_dir: Path, *, journal: Journal | None = None) -> LoadResult:
    """Run ``plan`` with Locust (one process, or a master and ``plan.workers`` workers); bounded by duration + grace.

    Every process started is noted in ``journal`` (PID and start time) right after its start, so ``opsgate recover``
    can stop it after a hard kill of this process.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("timings-*.json"):  # an earlier run's timings must not be judged with this one's
        stale.unlink()
    env = {**os.environ, "OPSGATE_SLO_SPEC": json.dumps(child_spec(plan)), "OPSGATE_SLO_OUT": str(out_dir)}
    limit_s = plan.duration_s + 2 * GRACE_S
    started_at = time.monotonic()
    group: list[_Started] = []
    finished = False
    try:
        for name, argv, log, extra in _commands(plan, out_dir):
            group.append(_start(name, argv, {**env, **extra}, log, journal))
        leader = group[0]  # the single process, or the master
        ended_early = None
        while leader.popen.poll() is None:
            if time.monotonic() - started_at > limit_s:
                _kill(group)
                ended_early = f"killed at the hard limit of {limit_s:g}s"
                break
            time.sleep(0.2)
        _check_gone(group)
        finished = True
    finally:
        if not finished:
            _kill(group)  # an error or an interrupt: nothing started may keep sending
    codes = {p.name: p.popen.returncode for p in group}
    return _collect(plan, out_dir, codes, ended_early, [p.log for p in group])


def _commands(plan: Plan, out_dir: Path) -> Iterator[tuple[str, list[str], Path, dict[str, str]]]:
    """(name, argv, log, extra env) of each process to start: the single process or master first."""
    own = plan.locustfile is None
    classes = [] if not own else ["OpenModelUser" if plan.model == "open" else "ClosedModelUser"]
    base = [sys.executable, "-m", "locust", "-f", str(plan.locustfile or LOCUSTFILE), *classes,
            "--loglevel", "WARNING", "--exit-code-on-error", "0"]  # fmt: skip
    if own and plan.model == "open":
        users = max(plan.workers, 1)  # one dispatcher per process, each at its share of the rate
        spawn_rate = float(users)
    else:
        users = plan.users
        spawn_rate = plan.users / plan.ramp_s if plan.ramp_s > 0 else float(plan.users)
    run_time = math.ceil(plan.duration_s + GRACE_S)  # a backstop: the run ends itself (see child_spec)
    leader = [
        *base, "--headless", "-u", str(users), "-r", f"{spawn_rate:g}", "--host", plan.host,
        "--run-time", f"{run_time}s", "--stop-timeout", str(STOP_TIMEOUT_S),
        "--json-file", str(out_dir / "locust"), "--html", str(out_dir / "locust.html"), "--only-summary",
    ]  # fmt: skip
    if plan.workers == 0:
        yield "locust", leader, out_dir / "locust.log", {}
        return
    port = free_port()
    master = [*leader, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
              "--expect-workers", str(plan.workers), "--expect-workers-max-wait", str(int(GRACE_S))]  # fmt: skip
    yield "locust-master", master, out_dir / "locust.log", {}
    worker = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
    parent = {"OPSGATE_SLO_PARENT_PID": str(os.getpid())}  # a second watchdog signal, for local workers only
    for index in range(1, plan.workers + 1):
        yield f"locust-worker-{index}", worker, out_dir / f"locust-worker-{index}.log", parent


def _start(name: str, argv: list[str], env: dict[str, str], log: Path, journal: Journal | None) -> _Started:
    """Start one Locust process in its own session (its own process group) and note it in the journal."""
    with log.open("wb") as fh:
        popen = subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, preexec_fn=default_signal_mask)  # fmt: skip
    if journal is not None:
        journal.record_process(name, popen.pid, process_start_time(popen.pid))
    return _Started(name, popen, log)


def _kill(group: list[_Started]) -> None:
    """SIGKILL the session (process group) of every process started, and reap them."""
    for process in group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.popen.pid, signal.SIGKILL)
    for process in group:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(timeout=10)


def _group_alive(process: _Started) -> bool:
    process.popen.poll()  # reap: a zombie leader would still count as a member of its group
    try:
        os.killpg(process.popen.pid, 0)
    except ProcessLookupError:
        return False
    return True


def _check_gone(group: list[_Started]) -> None:
    """Nothing of any session started may outlive the run (no orphan load): wait, then kill and name the rest."""
    deadline = time.monotonic() + EXIT_WAIT_S
    while any(_group_alive(p) for p in group) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in group if _group_alive(p)]
    if left:
        _kill(left)
        named = ", ".join(f"{p.name} (pid {p.popen.pid}, log: {p.log})" for p in left)
        raise LoadRunError(f"still running {EXIT_WAIT_S:g}s after the run, killed: {named}")


def merge_problem(workers: int, rows: list[dict[str, Any]], merged: int) -> str | None:
    """Why the master's merged timings cannot be trusted, or None when every worker's count is in them."""
    if len(rows) < workers:
        return f"only {len(rows)} of {workers} workers shipped timings to the master"
    missing = [row for row in rows if not row["final"]]
    if missing:
        named = ", ".join(f"{row['id']} ({row['received']} received)" for row in missing)
        return f"no final report from worker(s) {named}"
    recorded = sum(int(row["count"]) for row in rows)
    if recorded != merged:
        counts = ", ".join(f"{row['count']} recorded/{row['received']} received" for row in rows)
        return f"the master merged {merged} timings but the workers recorded {recorded} ({counts})"
    return None


def _collect(plan: Plan, out_dir: Path, codes: dict[str, int | None], ended_early: str | None,
             logs: list[Path]) -> LoadResult:  # fmt: skip
    parts = [json.loads(p.read_text()) for p in sorted(out_dir.glob("timings-*.json"))]
    log = logs[0]
    crashed = [f"{name} exited with code {code}" for name, code in codes.items() if code not in (0, None)]
    if crashed and ended_early is None:
        ended_early = f"{'; '.join(crashed)} (log: {log})"
    if not parts and ended_early is None:
        ended_early = f"no timings were written (log: {log})"
    entries = [entry for part in parts for entry in part["timings"]]
    worker_counts: list[int] = []
    if plan.workers:
        rows = [row for part in parts for row in part.get("workers", [])]
        worker_counts = [int(row["count"]) if row["final"] else int(row["received"]) for row in rows]
        problem = merge_problem(plan.workers, rows, len(entries))
        if problem and ended_early is None:
            ended_early = f"{problem} (log: {log})"
    judged = [e for e in entries if plan.judge_name is None or (len(e) > 3 and e[3] == plan.judge_name)]
    timings = [Timing(float(e[0]), float(e[1]), bool(e[2])) for e in judged]
    planned = sum(int(part["planned"]) for part in parts) or plan.planned_requests()
    elapsed = max((float(part["elapsed_s"]) for part in parts), default=0.0)
    skipped = sum(int(part["skipped"]) for part in parts)
    cpu_ratio = max((float(part.get("cpu_ratio", 0.0)) for part in parts), default=0.0)
    wait_ratio = max((float(part.get("wait_ratio", 0.0)) for part in parts), default=0.0)
    duration = elapsed or plan.duration_s
    run = Run(timings, planned=planned, planned_duration_s=plan.duration_s, actual_duration_s=duration,
              skipped=skipped, ended_early=ended_early, cpu_ratio=cpu_ratio, wait_ratio=wait_ratio)  # fmt: skip
    locust_json = out_dir / "locust.json"
    entries_json: list[dict[str, Any]] = []
    if locust_json.exists():
        stats = json.loads(locust_json.read_text())
        entries_json = [e for e in stats if isinstance(e, dict)] if isinstance(stats, list) else []
    files = [p for p in (locust_json, out_dir / "locust.html", *logs) if p.exists()]
    return LoadResult(run, entries_json[0] if entries_json else {}, files, worker_counts, entries_json)
