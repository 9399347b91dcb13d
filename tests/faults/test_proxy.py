"""The TCP fault proxy, run as a real process in front of an echo server on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.timeout(60)

STARTUP_TIMEOUT_S = 15.0  # interpreter start and imports, on a loaded machine
IO_TIMEOUT_S = 3.0  # any socket operation that is expected to succeed
BLACKHOLE_TIMEOUT_S = 0.5  # a round trip that a blackhole must swallow
TOLERANCE_S = 0.005  # timer resolution: an injected delay is never observed shorter than this less


# --- echo server (the "dependency") -------------------------------------------------------------


@dataclass
class EchoStats:
    """What the echo server saw: connections accepted, bytes received, how each connection ended."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    accepted: int = 0
    received: int = 0
    ended: list[str] = field(default_factory=list)  # "eof" | "reset"


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.stats = EchoStats()

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port


class EchoHandler(socketserver.BaseRequestHandler):
    server: EchoServer

    def handle(self) -> None:
        stats = self.server.stats
        with stats.lock:
            stats.accepted += 1
        sock: socket.socket = self.request
        sock.settimeout(30)  # a held connection is closed by the test or the proxy well before this
        how = "eof"
        try:
            while data := sock.recv(65536):
                with stats.lock:
                    stats.received += len(data)
                sock.sendall(data)
        except ConnectionResetError:
            how = "reset"
        except OSError:
            how = "error"
        with stats.lock:
            stats.ended.append(how)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- the proxy process --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Proxy:
    proc: subprocess.Popen[bytes]
    port: int
    control: httpx.Client
    log: Path

    def connect(self, timeout: float = IO_TIMEOUT_S) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def put(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.control.put("/faults", json=body)
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view

    def faults(self) -> dict[str, Any]:
        response = self.control.get("/faults")
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 5.0, interval_s: float = 0.05) -> None:
    """Poll ``check`` until true; bounded in time and attempts."""
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / interval_s) + 10):
        if check():
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate ``proc`` by its PID; kill it if it does not exit in time."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def start_proxy(upstream_port: int, log: Path) -> Proxy | None:
    """Start the proxy on free ports; None if another process took a port before the proxy bound it."""
    listen_port, control_port = free_port(), free_port()
    args = [
        *(sys.executable, "-m", "opsgate.faults.proxy", "--listen-port", str(listen_port)),
        *("--upstream", f"127.0.0.1:{upstream_port}", "--control-port", str(control_port)),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    control = httpx.Client(base_url=f"http://127.0.0.1:{control_port}", timeout=IO_TIMEOUT_S, trust_env=False)
    started = Proxy(proc=proc, port=listen_port, control=control, log=log)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        for _ in range(int(STARTUP_TIMEOUT_S / 0.05) + 10):
            if proc.poll() is not None:
                if "address already in use" in log.read_text():
                    break
                raise AssertionError(f"proxy exited {proc.returncode}:\n{log.read_text()}")
            try:
                if control.get("/healthz").json() == {"status": "ok"}:
                    # Make sure it is this proxy answering, not a process that took the control port.
                    answer = control.get("/faults")
                    if answer.status_code == 200 and answer.json().get("upstream") == f"127.0.0.1:{upstream_port}":
                        return started
                    break
            except (httpx.TransportError, ValueError):
                pass
            assert time.monotonic() < deadline, f"proxy not healthy after {STARTUP_TIMEOUT_S}s:\n{log.read_text()}"
            time.sleep(0.05)
    except BaseException:
        control.close()
        stop(proc)
        raise
    control.close()
    stop(proc)
    return None


@pytest.fixture
def proxy(echo: EchoServer, tmp_path: Path) -> Iterator[Proxy]:
    started = None
    for _ in range(3):  # free ports can be taken by another process before the proxy binds them
        started = start_proxy(echo.port, tmp_path / "proxy.log")
        if started is not None:
            break
    assert started is not None, "three tries to start the proxy on free ports all found a port taken"
    try:
        yield started
    finally:
        started.control.close()
        stop(started.proc)


# --- helpers ------------------------------------------------------------------------------------


def round_trip(sock: socket.socket, payload: bytes) -> bytes:
    """Send ``payload`` and read until as many bytes came back (or the peer closed)."""
    sock.sendall(payload)
    got = bytearray()
    for _ in range(len(payload) + 1):  # at least one byte per recv
        if len(got) >= len(payload):
            break
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return bytes(got)


def timed_round_trip(sock: socket.socket, payload: bytes) -> float:
    started = time.monotonic()
    assert round_trip(sock, payload) == payload
    return time.monotonic() - started


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the peer closed ``sock`` (EOF or RST) within IO_TIMEOUT_S."""
    sock.settimeout(IO_TIMEOUT_S)
    try:
        sock.sendall(b"ping")
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def echo_ended(echo: EchoServer, count: int) -> Callable[[], bool]:
    def check() -> bool:
        with echo.stats.lock:
            return len(echo.stats.ended) >= count

    return check


# --- tests --------------------------------------------------------------------------------------


def test_pass_through_echoes_bytes(proxy: Proxy, echo: EchoServer) -> None:
    payload = random.Random(1).randbytes(1_000_000)  # many 64 KiB chunks, with backpressure
    with proxy.connect() as sock:
        assert round_trip(sock, b"hello") == b"hello"
        assert round_trip(sock, payload) == payload
        view = proxy.faults()
        assert view == {
            "active": False,
            "mode": "pass",
            "latency_ms": 0.0,
            "jitter_ms": 0.0,
            "seed": None,
            "connections": 1,
            "accepted": 1,
            "upstream": f"127.0.0.1:{echo.port}",
        }
    wait_for(lambda: proxy.faults()["connections"] == 0, "the closed connection to leave the count")
    wait_for(echo_ended(echo, 1), "the upstream side to see the client's EOF")
    assert echo.stats.ended == ["eof"]


def test_latency_adds_seeded_delay_to_each_chunk(proxy: Proxy) -> None:
    latency_ms, jitter_ms, seed, rounds = 200.0, 150.0, 7, 5
    # The documented draw: latency + uniform(-jitter, +jitter) per client → upstream chunk, in order.
    rng = random.Random(seed)
    expected = [(latency_ms + rng.uniform(-jitter_ms, jitter_ms)) / 1000 for _ in range(rounds)]
    assert max(expected) - min(expected) > 0.1  # the seed gives draws far enough apart to tell them apart

    with proxy.connect() as sock:
        assert round_trip(sock, b"warm-up") == b"warm-up"
        runs = []
        for _ in range(2):  # each PUT reseeds: the same seed must give the same delays again
            view = proxy.put({"mode": "latency", "latency_ms": latency_ms, "jitter_ms": jitter_ms, "seed": seed})
            assert view["active"] is True
            assert (view["mode"], view["latency_ms"], view["jitter_ms"], view["seed"]) == ("latency", 200, 150, seed)
            runs.append([timed_round_trip(sock, f"chunk-{i:02d}".encode()) for i in range(rounds)])
        proxy.control.delete("/faults").raise_for_status()
        passed = timed_round_trip(sock, b"no-delay")

    for run in runs:
        for measured, wanted in zip(run, expected, strict=True):
            assert measured >= (latency_ms - jitter_ms) / 1000 - TOLERANCE_S, runs
            assert measured >= wanted - TOLERANCE_S, (runs, expected)
            assert measured < wanted + 2.0, (runs, expected)  # generous: only catches a runaway delay
    assert passed < min(expected), (passed, expected)  # DELETE stops delaying at once
    assert "faults mode=latency latency_ms=200 jitter_ms=150 seed=7 (was pass)" in proxy.log.read_text()


def test_latency_without_seed_echoes_the_one_it_picked(proxy: Proxy) -> None:
    view = proxy.put({"mode": "latency", "latency_ms": 10})
    assert isinstance(view["seed"], int)
    assert proxy.faults()["seed"] == view["seed"]


def test_reset_closes_open_connections_and_resets_new_ones(proxy: Proxy, echo: EchoServer) -> None:
    existing = proxy.connect()
    with existing:
        assert round_trip(existing, b"before") == b"before"
        view = proxy.put({"mode": "reset", "seed": 5})  # opsgate's ControlFault sends a seed with every fault
        assert (view["mode"], view["active"], view["seed"]) == ("reset", True, 5)
        assert (view["connections"], view["accepted"]) == (0, 1)

        existing.settimeout(IO_TIMEOUT_S)
        with contextlib.suppress(ConnectionResetError):  # the proxy reset it: ECONNRESET or an empty read
            assert existing.recv(1) == b""
        wait_for(echo_ended(echo, 1), "the upstream side of the reset connection to end")
        assert echo.stats.ended == ["reset"]

    accepted_upstream = echo.stats.accepted
    # The RST follows the accept at once: connect() itself may see it, when the client runs late.
    with pytest.raises((ConnectionResetError, BrokenPipeError, EOFError)), proxy.connect() as fresh:
        if round_trip(fresh, b"after") == b"":
            raise EOFError("empty read")
    assert echo.stats.accepted == accepted_upstream  # the new connection never reached the upstream
    assert proxy.faults()["accepted"] == 2

    proxy.control.delete("/faults").raise_for_status()
    with proxy.connect() as healed:
        assert round_trip(healed, b"healed") == b"healed"


def test_blackhole_holds_traffic_and_delete_restores_pass_through(proxy: Proxy, echo: EchoServer) -> None:
    existing = proxy.connect()
    with existing:
        assert round_trip(existing, b"before") == b"before"
        view = proxy.put({"mode": "blackhole"})
        assert (view["mode"], view["active"], view["connections"]) == ("blackhole", True, 1)
        received_upstream, accepted_upstream = echo.stats.received, echo.stats.accepted

        existing.settimeout(BLACKHOLE_TIMEOUT_S)
        with pytest.raises(TimeoutError):
            round_trip(existing, b"held")
        with proxy.connect() as fresh:  # accepted, then nothing goes through
            fresh.settimeout(BLACKHOLE_TIMEOUT_S)
            with pytest.raises(TimeoutError):
                round_trip(fresh, b"swallowed")
            wait_for(lambda: proxy.faults()["connections"] == 2, "the proxy to hold both connections")
            assert (echo.stats.received, echo.stats.accepted) == (received_upstream, accepted_upstream)

            view = proxy.control.delete("/faults").json()
            assert (view["mode"], view["active"], view["connections"]) == ("pass", False, 0)
            assert closed_by_peer(existing)  # held connections are broken, so they are closed
            assert closed_by_peer(fresh)
    assert echo.stats.received == received_upstream  # held data was never delivered

    with proxy.connect() as healed:
        assert round_trip(healed, b"healed") == b"healed"
    log = proxy.log.read_text()
    assert "faults mode=blackhole (was pass)" in log
    assert "faults mode=pass (was blackhole); reset 2 connection(s)" in log


@pytest.mark.parametrize(
    ("body", "field_name"),
    [
        ({"mode": "latency", "latency_ms": -1}, "latency_ms"),
        ({"mode": "latency", "latency_ms": 100, "jitter_ms": 200}, "jitter_ms"),
        ({"mode": "latency", "latency_ms": "300"}, "latency_ms"),
        ({"mode": "warp"}, "mode"),
        ({"latency_ms": 100}, "mode"),
        ({"mode": "reset", "colour": "red"}, "colour"),
        ({"mode": "blackhole", "latency_ms": 100}, "latency_ms"),
        ({"mode": "latency", "latency_ms": 100, "seed": 1.5}, "seed"),
        ({"mode": "reset", "jitter_ms": 5}, "jitter_ms"),
        ("not json", "body"),
    ],
)
def test_bad_put_body_is_422_naming_the_field(proxy: Proxy, body: Any, field_name: str) -> None:
    if isinstance(body, str):
        response = proxy.control.put("/faults", content=body, headers={"content-type": "application/json"})
    else:
        response = proxy.control.put("/faults", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error.startswith(f"{field_name}: "), error
    assert "\n" not in error
    assert proxy.faults()["mode"] == "pass"  # a bad body changes nothing


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_proxy_with_exit_code_0(proxy: Proxy, sig: signal.Signals) -> None:
    with proxy.connect() as open_conn, proxy.connect() as held:
        assert round_trip(open_conn, b"open") == b"open"
        proxy.put({"mode": "blackhole"})
        held.settimeout(BLACKHOLE_TIMEOUT_S)
        with pytest.raises(TimeoutError):
            round_trip(held, b"held")
        wait_for(lambda: proxy.faults()["connections"] == 2, "the proxy to hold both connections")

        started = time.monotonic()
        proxy.proc.send_signal(sig)
        assert proxy.proc.wait(timeout=5) == 0, proxy.log.read_text()
        elapsed = time.monotonic() - started
        assert closed_by_peer(open_conn)
        assert closed_by_peer(held)
    assert elapsed < 5
    assert "stopped; closed 2 connection(s)" in proxy.log.read_text()
