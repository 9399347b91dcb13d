"""Load-generator throughput on one core: opsgate's open-model load path vs wrk vs plain Locust users.

Two targets on 127.0.0.1: a trivial constant-200 keep-alive server (bench/load_trivial_server.py, fast enough
that the generator is the bottleneck) and the reference api's GET /healthz (LocalEnvironment). Every generator
is a child process pinned with ``taskset`` to the generator core; the servers (the whole platform, and this
process) stay on the server core. Per generator and target: requests/s and p95 over ``--repeats`` runs of
``--seconds`` each (median [min-max]), requests per second of generator CPU (robust to other work on a shared
machine), the generator's and the server's CPU use and run-queue wait, then throughput ratios to plain
FastHttpUser paired within each repeat. Prints figures, never asserts. Every child has a hard time limit and is
killed by its own process group; the end of the output says whether anything was left running.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from opsgate.environments.local import LocalEnvironment
from opsgate.environments.ports import PortAllocator
from opsgate.environments.process import cpu_seconds

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
WRK_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("bench requests=%d duration_us=%d p95_us=%d errors=%d non2xx=%d\\n",
    summary.requests, summary.duration, latency:percentile(95),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""

GENERATORS = {
    "wrk": "wrk (Debian 4.1, -t1, closed)",
    "fast": "Locust FastHttpUser (closed)",
    "fast_recorded": "FastHttpUser + raw-time recording",
    "http": "Locust HttpUser (closed)",
    "open_max": "opsgate open model, rate above max",
    "open_half": "opsgate open model, 50% of Fast max",
}
LOCUSTFILES = {"fast": "locust_fast.py", "fast_recorded": "locust_fast_recorded.py", "http": "locust_http.py"}


@dataclass
class Measurement:
    """One run of one generator against one target."""

    rate: float | None = None
    """Responses per second over the generator's own active time."""
    p95_ms: float | None = None
    requests: int = 0
    errors: int = 0
    generator_cpu: float | None = None
    """Share of one core the generator process used while it sent load (start-up excluded)."""
    generator_wait: float | None = None
    """Share of the time the generator was runnable but waited for its core (taken by other work)."""
    server_cpu: float | None = None
    """Server CPU seconds during the run / the generator's active time (1.0 = its core saturated)."""
    server_wait: float | None = None
    """Seconds the server was runnable but waited for its core, per second of the generator's active time."""
    note: str = ""

    @property
    def per_cpu(self) -> float | None:
        """Responses per second of generator CPU: the rate one uncontended core would give, if the generator is
        the bottleneck (robust to other work taking the core; not meaningful when the server is saturated)."""
        return self.rate / self.generator_cpu if self.rate and self.generator_cpu else None


@dataclass
class Child:
    """A finished child: its exit code (-9 when killed at its limit), its stdout, CPU samples of its load process."""

    pid: int
    follow_locust: bool = False
    """Sample the Locust process the child started (run_load's own child) instead of the child itself."""
    code: int = 0
    out: str = ""
    load_pid: int | None = None
    samples: list[tuple[float, float, float]] = field(default_factory=list)
    """(wall-clock time, seconds on a CPU so far, seconds runnable but waiting for a CPU so far) of the load
    process, summed over its threads (/proc/PID/task/*/schedstat)."""

    def cpu(self, start: float, end: float) -> tuple[float | None, float | None]:
        """Shares of one core between two wall-clock times: running, and waiting in the run queue."""
        inside = [sample for sample in self.samples if start <= sample[0] <= end]
        if len(inside) < 2 or inside[-1][0] - inside[0][0] < 0.5:
            return None, None
        (t0, cpu0, wait0), (t1, cpu1, wait1) = inside[0], inside[-1]
        return (cpu1 - cpu0) / (t1 - t0), (wait1 - wait0) / (t1 - t0)


def schedstat(pid: int) -> tuple[float, float] | None:
    """(seconds on a CPU, seconds waiting for one) of all threads of ``pid``, or None when it is gone."""
    running = waiting = 0.0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in tasks:
        with contextlib.suppress(OSError, ValueError):
            on_cpu, run_delay, _ = (task / "schedstat").read_text().split()
            running += int(on_cpu) / 1e9
            waiting += int(run_delay) / 1e9
    return running, waiting


STARTED_GROUPS: list[int] = []


def run_child(
    argv: Sequence[str],
    limit_s: float,
    log: Path,
    env: dict[str, str] | None = None,
    follow_locust: bool = False,
) -> Child:
    """Run ``argv`` in a new session with a hard limit (then SIGKILL to its group and descendants).

    Samples the CPU of the process sending the load every 0.2 s while it runs.
    """
    with log.open("wb") as err:
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    STARTED_GROUPS.append(process.pid)
    child = Child(process.pid, follow_locust)
    started = time.monotonic()
    out_chunks: list[bytes] = []
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    killed = False
    while process.poll() is None:
        if time.monotonic() - started > limit_s:
            kill_tree(process.pid)
            process.wait(timeout=10)
            killed = True
            break
        chunk = process.stdout.read()
        if chunk:
            out_chunks.append(chunk)
        sample(child)
        time.sleep(0.2)
    rest = process.stdout.read()
    if rest:
        out_chunks.append(rest)
    process.stdout.close()
    child.code = -9 if killed else process.returncode
    child.out = b"".join(out_chunks).decode(errors="replace")
    return child


def sample(child: Child) -> None:
    """Add a CPU sample of the process sending the load (once it exists, while it lives)."""
    if child.load_pid is None:
        if not child.follow_locust:
            child.load_pid = child.pid
        else:
            for pid in descendants(child.pid):
                with contextlib.suppress(OSError):
                    if b"locust" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        child.load_pid = pid
                        break
    if child.load_pid is not None and (stat := schedstat(child.load_pid)) is not None:
        child.samples.append((time.time(), *stat))


def descendants(root: int) -> list[int]:
    """PIDs of every live descendant of ``root`` (by /proc parent links)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
            if state != "Z":  # a zombie is finished, only not yet reaped
                parents[int(entry.name)] = int(ppid)
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads, then any descendant that made its own group."""
    below = descendants(pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    for other in below:
        with contextlib.suppress(ProcessLookupError):
            os.kill(other, signal.SIGKILL)


def server_share(
    server_pid: int, before: tuple[float, float] | None, active_s: float
) -> tuple[float | None, float | None]:
    """(CPU, run-queue wait) of the server since ``before``, per second of the generator's active time."""
    after = schedstat(server_pid)
    if before is None or after is None or active_s <= 0:
        return None, None
    return (after[0] - before[0]) / active_s, (after[1] - before[1]) / active_s


def p95_from_buckets(buckets: dict[str, int]) -> float | None:
    """Locust's p95 from its rounded response-time histogram (nearest rank, like Locust's own)."""
    items = sorted((float(k), n) for k, n in buckets.items())
    total = sum(n for _, n in items)
    if not total:
        return None
    seen = 0
    for value, n in items:
        seen += n
        if seen >= 0.95 * total:
            return value
    return items[-1][0]


def exact_p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, -(-95 * len(ordered) // 100)) - 1]


@dataclass
class Bench:
    """Everything one measurement needs: cores, duration, the work directory."""

    generator_core: int
    seconds: int
    users: int
    work: Path
    counter: int = 0

    def next_dir(self, label: str) -> Path:
        self.counter += 1
        path = self.work / f"{self.counter:03d}-{label}"
        path.mkdir()
        return path

    def pinned(self, argv: Sequence[str]) -> list[str]:
        return ["taskset", "-c", str(self.generator_core), *argv]

    def wrk(self, url: str, server_pid: int) -> Measurement:
        folder = self.next_dir("wrk")
        lua = folder / "p95.lua"
        lua.write_text(WRK_LUA)
        argv = self.pinned(["wrk", "-t1", f"-c{self.users}", f"-d{self.seconds}s", "--latency", "-s", str(lua), url])
        before = schedstat(server_pid)
        child = run_child(argv, self.seconds + 15, folder / "wrk.log")
        (folder / "wrk.out").write_text(child.out)
        found = re.search(r"bench requests=(\d+) duration_us=(\d+) p95_us=(\d+) errors=(\d+) non2xx=(\d+)", child.out)
        if child.code != 0 or not found:
            return Measurement(note=f"wrk failed (exit {child.code}, see {folder})")
        requests, duration_us, p95_us, errors, non2xx = map(int, found.groups())
        active = duration_us / 1e6
        measurement = Measurement(
            rate=requests / active, p95_ms=p95_us / 1000, requests=requests, errors=errors + non2xx,
        )  # fmt: skip
        measurement.server_cpu, measurement.server_wait = server_share(server_pid, before, active)
        start = child.samples[0][0] + 0.5 if child.samples else 0.0
        measurement.generator_cpu, measurement.generator_wait = child.cpu(start, time.time())
        return measurement

    def warm_up(self, url: str) -> None:
        """2 s of unmeasured wrk load: the first seconds after a server starts are slower."""
        folder = self.next_dir("warm-up")
        run_child(self.pinned(["wrk", "-t1", f"-c{self.users}", "-d2s", url]), 15, folder / "wrk.log")

    def locust(self, kind: str, host: str, path: str, server_pid: int) -> Measurement:
        folder = self.next_dir(kind)
        timings = folder / "timings.json"
        argv = self.pinned([
            PYTHON, "-m", "locust", "-f", str(BENCH / LOCUSTFILES[kind]), "--headless",
            "-u", str(self.users), "-r", "1000", "--host", host, "--run-time", f"{self.seconds}s",
            "--stop-timeout", "2", "--json-file", str(folder / "locust"), "--only-summary", "--loglevel", "WARNING",
        ])  # fmt: skip
        env = {**os.environ, "BENCH_PATH": path, "BENCH_TIMINGS_OUT": str(timings)}
        before = schedstat(server_pid)
        child = run_child(argv, self.seconds + 40, folder / "locust.log", env)
        stats_file = folder / "locust.json"
        if child.code == -9 or not stats_file.exists():
            return Measurement(note=f"locust failed (exit {child.code}, see {folder})")
        entries = json.loads(stats_file.read_text())
        requests = sum(e["num_requests"] for e in entries)
        failures = sum(e["num_failures"] for e in entries)
        first = min(e["start_time"] for e in entries)
        last = max(e["last_request_timestamp"] or first for e in entries)
        buckets: dict[str, int] = {}
        for entry in entries:
            for key, n in entry["response_times"].items():
                buckets[key] = buckets.get(key, 0) + n
        active = last - first
        measurement = Measurement(
            rate=requests / active if active > 0 else None, p95_ms=p95_from_buckets(buckets), requests=requests,
            errors=failures,
        )  # fmt: skip
        measurement.server_cpu, measurement.server_wait = server_share(server_pid, before, active)
        measurement.generator_cpu, measurement.generator_wait = child.cpu(first + 0.5, last)
        if kind == "fast_recorded":
            raw = json.loads(timings.read_text()) if timings.exists() else []
            measurement.p95_ms = exact_p95(raw)
            if len(raw) != requests:
                measurement.note = f"recorded {len(raw)} of {requests} requests"
        return measurement

    def open_model(self, host: str, path: str, rate: float, server_pid: int) -> Measurement:
        folder = self.next_dir(f"open-{int(rate)}")
        argv = self.pinned([
            PYTHON, str(BENCH / "load_opsgate_run.py"), "--host", host, "--path", path, "--rate", f"{rate:.0f}",
            "--seconds", str(self.seconds), "--out", str(folder / "run"),
        ])  # fmt: skip
        before = schedstat(server_pid)
        limit = self.seconds + 2 * 30 + 20
        child = run_child(argv, limit, folder / "runner.log", follow_locust=True)
        lines = [line for line in child.out.splitlines() if line.startswith("{")]
        if child.code != 0 or not lines:
            return Measurement(note=f"run_load failed (exit {child.code}, see {folder})")
        result = json.loads(lines[-1])
        end = child.samples[-1][0] if child.samples else 0.0
        note = (
            f"planned {rate:.0f}/s, skipped {result['skipped']}/{result['planned']} slots,"
            f" run_load cpu_ratio {result['cpu_ratio']:.2f}"
        )
        if result["ended_early"]:
            note += f"; ended early: {result['ended_early']}"
        measurement = Measurement(
            rate=result["rate"], p95_ms=result["p95_ms"], requests=result["sent"], errors=result["sent"] - result["ok"],
            note=note,
        )  # fmt: skip
        measurement.server_cpu, measurement.server_wait = server_share(server_pid, before, result["elapsed_s"])
        measurement.generator_cpu, measurement.generator_wait = child.cpu(end - result["elapsed_s"] + 0.5, end)
        return measurement


def spread(values: Sequence[float | None], fmt: Callable[[float], str]) -> str:
    """``median [min-max]`` of the values present; ``-`` when none."""
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    if len(present) == 1:
        return fmt(present[0])
    return f"{fmt(statistics.median(present))} [{fmt(min(present))}-{fmt(max(present))}]"


def rate_fmt(value: float) -> str:
    return f"{value:,.0f}"


def ms_fmt(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def pct_fmt(value: float) -> str:
    return f"{100 * value:.0f}%"


def start_trivial_server(port: int, core: int, log: Path) -> subprocess.Popen[bytes]:
    argv = ["taskset", "-c", str(core), PYTHON, str(BENCH / "load_trivial_server.py"), "--port", str(port)]
    with log.open("wb") as err:
        server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                  start_new_session=True)  # fmt: skip
    STARTED_GROUPS.append(server.pid)
    assert server.stdout is not None
    os.set_blocking(server.stdout.fileno(), False)
    deadline = time.monotonic() + 15
    seen = b""
    while b"ready" not in seen:
        if time.monotonic() > deadline or server.poll() is not None:
            kill_tree(server.pid)
            raise RuntimeError(f"the trivial server did not start (see {log})")
        seen += server.stdout.read() or b""
        time.sleep(0.05)
    return server


def pin_all(pids: Sequence[int], core: int) -> None:
    """Pin every thread of each process to ``core`` (a service's later children inherit it)."""
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task.name), {core})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="duration of each measurement (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement (default 3)")
    parser.add_argument("--users", type=int, default=16, help="closed-model users / wrk connections (default 16)")
    parser.add_argument("--generator-core", type=int, default=0)
    parser.add_argument("--server-core", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, raw outputs)")
    args = parser.parse_args()
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        sys.exit("needs wrk and taskset: scripts/install-system-deps.sh installs wrk (Debian package)")
    began = time.monotonic()
    load_before = os.getloadavg()
    # This process, the trivial server and the whole platform stay on the server core; generators get theirs.
    os.sched_setaffinity(0, {args.server_core})
    work = Path(tempfile.mkdtemp(prefix="opsgate-bench-load-"))
    bench = Bench(args.generator_core, args.seconds, args.users, work)
    results: dict[str, dict[str, list[Measurement]]] = {}
    environment: LocalEnvironment | None = None
    server: subprocess.Popen[bytes] | None = None
    targets: list[tuple[str, str, str, int]] = []
    try:
        port = PortAllocator().pick()
        server = start_trivial_server(port, args.server_core, work / "trivial-server.log")
        targets.append(("trivial", f"http://127.0.0.1:{port}", "/", server.pid))
        environment = LocalEnvironment(work / "platform-logs")
        environment.start()
        pin_all(list(environment.running_pids().values()), args.server_core)
        targets.append(("api /healthz", environment.api_url, "/healthz", environment.running_pids()["api"]))
        for target, host, path, server_pid in targets:
            rows = results.setdefault(target, {key: [] for key in GENERATORS})
            bench.warm_up(host + path)
            for repeat in range(args.repeats):
                print(f"[{time.monotonic() - began:5.0f}s] {target}: repeat {repeat + 1}/{args.repeats}", flush=True)
                rows["wrk"].append(bench.wrk(host + path, server_pid))
                for kind in ("fast", "fast_recorded", "http"):
                    rows[kind].append(bench.locust(kind, host, path, server_pid))
                fast_rates = [m.rate for m in rows["fast"] if m.rate]
                fast_max = statistics.median(fast_rates) if fast_rates else 1000.0
                rows["open_max"].append(bench.open_model(host, path, max(4 * fast_max, 1000.0), server_pid))
                rows["open_half"].append(bench.open_model(host, path, 0.5 * fast_max, server_pid))
    finally:
        if environment is not None:
            environment.stop()
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill_tree(server.pid)
                server.wait(timeout=10)
        for pgid in STARTED_GROUPS:  # a child still running here was interrupted: end its whole group now
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, 0)
                kill_tree(pgid)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(args, results, targets, began, load_before, work)


def report(
    args: argparse.Namespace,
    results: dict[str, dict[str, list[Measurement]]],
    targets: list[tuple[str, str, str, int]],
    began: float,
    load_before: tuple[float, float, float],
    work: Path,
) -> None:
    names = list(results)
    print()
    print(
        f"Generators pinned to core {args.generator_core} (taskset); trivial server, reference platform and this"
        f" process on core {args.server_core}. {os.cpu_count()} cores, shared with other work; load average"
        f" before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}."
    )
    print(
        f"{args.repeats} runs x {args.seconds} s per cell (after a 2 s unmeasured wrk warm-up per target); closed"
        f" models use {args.users} users (wrk: connections); cells are median [min-max]."
    )
    print()
    header = " | ".join(f"{t} req/s | {t} req per gen CPU-s | {t} p95 ms" for t in names)
    print(f"| generator | {header} |")
    print("|" + "---|" * (1 + 3 * len(names)))
    for key, label in GENERATORS.items():
        cells = []
        for target in names:
            runs = results[target][key]
            cells.append(spread([m.rate for m in runs], rate_fmt))
            cells.append(spread([m.per_cpu for m in runs], rate_fmt))
            cells.append(spread([m.p95_ms for m in runs], ms_fmt))
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    print(
        "CPU per cell, median of runs, as a share of wall time while the generator sent load: generator on its"
        " core / generator runnable but waiting for its core (taken by other work) / the same two for the server"
    )
    print("| generator | " + " | ".join(f"{t} gen / waited, server / waited" for t in names) + " |")
    print("|" + "---|" * (1 + len(names)))
    for key, label in GENERATORS.items():
        cells = []
        for target in names:
            runs = results[target][key]
            gen = spread([m.generator_cpu for m in runs if m.rate], pct_fmt).split(" ")[0]
            waited = spread([m.generator_wait for m in runs if m.rate], pct_fmt).split(" ")[0]
            srv = spread([m.server_cpu for m in runs if m.rate], pct_fmt).split(" ")[0]
            srv_waited = spread([m.server_wait for m in runs if m.rate], pct_fmt).split(" ")[0]
            cells.append(f"{gen} / {waited}, {srv} / {srv_waited}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    print("Throughput ratios, paired within each repeat: median [min-max]; of req/s and of req per generator CPU-s")
    pairs = (
        ("fast_recorded", "fast", "FastHttpUser + recording / plain FastHttpUser"),
        ("open_max", "fast", "opsgate open-model max / plain FastHttpUser"),
        ("http", "fast", "HttpUser / FastHttpUser"),
        ("wrk", "fast", "wrk / FastHttpUser"),
    )
    print("| ratio | " + " | ".join(f"{t} req/s | {t} per CPU-s" for t in names) + " |")
    print("|" + "---|" * (1 + 2 * len(names)))
    for top, bottom, label in pairs:
        cells = []
        for target in names:
            paired = list(zip(results[target][top], results[target][bottom], strict=True))
            for field_name in ("rate", "per_cpu"):
                figures = [(getattr(x, field_name), getattr(y, field_name)) for x, y in paired]
                ratios = [a / b for a, b in figures if a and b]
                cells.append(spread(ratios, lambda v: f"{v:.2f}"))
        print(f"| {label} | " + " | ".join(cells) + " |")
    cells = []
    for target in names:
        runs = results[target]["open_half"]
        cells.append(spread([m.rate / planned for m in runs if m.rate and (planned := planned_rate(m))], pct_fmt))
        cells.append("-")
    print("| opsgate at 50% of Fast max: achieved / planned rate | " + " | ".join(cells) + " |")
    notes = [
        f"{target} / {GENERATORS[key]} run {i + 1}: {m.note}" + (f"; {m.errors} errors" if m.errors else "")
        for target in names
        for key in GENERATORS
        for i, m in enumerate(results[target][key])
        if (m.note and not m.note.startswith("planned")) or m.errors or m.rate is None
    ]
    skipped = [
        f"{target} / {GENERATORS[key]} run {i + 1}: {m.note}"
        for target in names
        for key in ("open_max", "open_half")
        for i, m in enumerate(results[target][key])
    ]
    print()
    print("opsgate runs:")
    for line in skipped:
        print(f"  {line}")
    if notes:
        print("Problems:")
        for line in notes:
            print(f"  {line}")
    print()
    print(
        "p95: wrk = its own latency histogram (µs, send to response on a busy connection, via a Lua done() hook);"
        " Locust FastHttpUser/HttpUser = Locust's --json-file histogram (rounded to whole ms below 100 ms);"
        " + recording = exact, from every recorded response_time; opsgate = exact, from the raw timings,"
        " measured from each request's intended send time."
    )
    left = left_running(targets)
    print(f"Left running after the bench: {left or 'nothing'}")
    if args.keep:
        print(f"Work directory kept: {work}")
    print(f"Total time: {time.monotonic() - began:.0f} s")


def planned_rate(measurement: Measurement) -> float | None:
    found = re.match(r"planned (\d+)/s", measurement.note)
    return float(found.group(1)) if found else None


def left_running(targets: list[tuple[str, str, str, int]]) -> str:
    """Any descendant of this process, any process group this bench created, or any target server still alive."""
    time.sleep(0.5)
    alive = set(descendants(os.getpid()))
    for pgid in STARTED_GROUPS:
        try:
            os.killpg(pgid, 0)
            alive.add(pgid)
        except ProcessLookupError:
            pass
    alive |= {pid for *_, pid in targets if cpu_seconds(pid) is not None}
    for pid in alive:
        kill_tree(pid)
    return ", ".join(f"pid {pid} (killed)" for pid in sorted(alive))


if __name__ == "__main__":
    main()
