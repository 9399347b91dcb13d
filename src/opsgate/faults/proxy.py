"""A TCP fault proxy that opsgate puts between the platform and a dependency (PostgreSQL, Redis).

Bytes pass through unchanged until a drill sets a fault over the control API: ``latency`` delays
each chunk (at most 64 KiB) forwarded client → upstream by ``latency_ms ± jitter_ms`` (milliseconds,
uniform, drawn in arrival order from ``random.Random(seed)``, reseeded by every PUT so a recorded
seed replays the same delays; a connection's chunks go one after another, so byte order holds);
``reset`` resets every connection with a TCP RST; ``blackhole`` holds all traffic undelivered.

Run with ``python -m opsgate.faults.proxy --listen-port P --upstream HOST:Q --control-port C``;
both listeners bind 127.0.0.1 only. Control API (JSON): ``GET /healthz``; ``GET|PUT|DELETE /faults``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import random
import signal
import socket
import struct
import sys
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["FaultProxy", "ProxyFaults", "create_app", "main"]

log = logging.getLogger("opsgate.faults.proxy")

HOST = "127.0.0.1"  # both listeners: the proxy is a test fixture, never exposed
CHUNK_BYTES = 65_536  # one read; with drain() it bounds what a connection holds in memory per direction
CONNECT_TIMEOUT_S = 10.0  # one connection attempt to the upstream
SHUTDOWN_TIMEOUT_S = 1.5  # stopping the listeners and the control server on SIGTERM/SIGINT
MAX_DELAY_MS = 600_000  # latency and jitter ceilings: every injected wait stays bounded (10 min)

Mode = Literal["pass", "latency", "reset", "blackhole"]


# --- faults -------------------------------------------------------------------------------------


class ProxyFaults(BaseModel):
    """The ``PUT /faults`` body: strict types and no unknown keys, so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    mode: Mode
    latency_ms: float = Field(default=0.0, ge=0, le=MAX_DELAY_MS, allow_inf_nan=False)
    jitter_ms: float = Field(default=0.0, ge=0, le=MAX_DELAY_MS, allow_inf_nan=False)
    seed: int | None = None

    @field_validator("latency_ms", "jitter_ms")
    @classmethod
    def _only_for_latency(cls, value: float, info: ValidationInfo) -> float:
        # A seed is accepted (and echoed) in every mode: drills record one with each fault they set.
        mode = info.data.get("mode")
        if mode is not None and mode != "latency" and value != 0:
            raise PydanticCustomError("latency_only", "applies only to mode 'latency', not '{mode}'", {"mode": mode})
        return value

    @field_validator("jitter_ms")
    @classmethod
    def _jitter_within_latency(cls, value: float, info: ValidationInfo) -> float:
        latency = info.data.get("latency_ms")
        if latency is not None and value > latency:
            raise PydanticCustomError(
                "jitter_exceeds_latency", "must not exceed latency_ms ({latency})", {"latency": f"{latency:g}"}
            )
        return value

    def describe(self) -> str:
        """One line for the log, e.g. ``mode=latency latency_ms=300 jitter_ms=50 seed=7``."""
        if self.mode != "latency":
            return f"mode={self.mode}"
        return f"mode=latency latency_ms={self.latency_ms:g} jitter_ms={self.jitter_ms:g} seed={self.seed}"


PASS = ProxyFaults(mode="pass")


def _resolve_seed(faults: ProxyFaults) -> ProxyFaults:
    """``faults`` with a concrete seed in latency mode: a null seed becomes a random one, echoed for replay."""
    if faults.mode != "latency" or faults.seed is not None:
        return faults
    return faults.model_copy(update={"seed": random.SystemRandom().randrange(2**31)})


# --- proxy --------------------------------------------------------------------------------------


def _reset(writer: asyncio.StreamWriter | None) -> None:
    """Close ``writer``'s connection at once with a TCP RST (SO_LINGER 0), dropping unsent bytes."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class _Connection:
    """One proxied connection: the client's side, the upstream's side once connected, its handler task."""

    client: asyncio.StreamWriter
    task: asyncio.Task[Any] | None
    upstream: asyncio.StreamWriter | None = None

    def close(self, *, rst: bool) -> None:
        """Close both sides now (with RST if ``rst``) and stop forwarding."""
        for writer in (self.client, self.upstream):
            if rst:
                _reset(writer)
            elif writer is not None:
                writer.transport.abort()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()


class FaultProxy:
    """Forwards TCP connections to ``upstream_host:upstream_port`` under the current :class:`ProxyFaults`."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.faults = PASS
        self.accepted = 0
        self._rng = random.Random()
        self._ids = itertools.count(1)
        self._open: dict[int, _Connection] = {}
        # Set unless the mode is blackhole: every forward (and every new upstream connect) waits on it.
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def upstream(self) -> str:
        """``host:port`` of the dependency."""
        host = f"[{self.upstream_host}]" if ":" in self.upstream_host else self.upstream_host
        return f"{host}:{self.upstream_port}"

    @property
    def connections(self) -> int:
        """Proxied connections open now (including those held by a blackhole)."""
        return len(self._open)

    def view(self) -> dict[str, Any]:
        """The ``GET /faults`` body."""
        f = self.faults
        return {
            "active": f.mode != "pass",
            "mode": f.mode,
            "latency_ms": f.latency_ms,
            "jitter_ms": f.jitter_ms,
            "seed": f.seed,
            "connections": self.connections,
            "accepted": self.accepted,
            "upstream": self.upstream,
        }

    def set_faults(self, faults: ProxyFaults) -> ProxyFaults:
        """Apply ``faults`` now; logs one line.

        ``reset`` resets every open connection; leaving ``blackhole`` closes (with RST) every
        connection it held, since their peers have lost track of what was sent.
        """
        previous = self.faults
        self.faults = _resolve_seed(faults)
        self._rng = random.Random(self.faults.seed)
        closed = 0
        if self.faults.mode == "reset" or (previous.mode == "blackhole" and self.faults.mode != "blackhole"):
            closed = self.close_all(rst=True)
        if self.faults.mode == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()
        note = f"; reset {closed} connection(s)" if closed else ""
        log.info("faults %s (was %s)%s", self.faults.describe(), previous.mode, note)
        return self.faults

    def close_all(self, *, rst: bool) -> int:
        """Close every open connection (with RST if ``rst``); returns how many."""
        closing = list(self._open.values())
        self._open.clear()
        for conn in closing:
            conn.close(rst=rst)
        return len(closing)

    def _delay_s(self) -> float:
        """The wait before forwarding one client → upstream chunk, in seconds (0 unless latency)."""
        f = self.faults
        if f.mode != "latency":
            return 0.0
        return max(0.0, f.latency_ms + self._rng.uniform(-f.jitter_ms, f.jitter_ms)) / 1000

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        """``asyncio.start_server`` callback: one client connection, from accept to close."""
        conn_id = next(self._ids)
        conn = _Connection(client=client_writer, task=asyncio.current_task())
        self.accepted += 1
        self._open[conn_id] = conn
        try:
            if self.faults.mode == "reset":
                _reset(client_writer)
                return
            await self._flowing.wait()  # a blackhole holds new connections before they reach the upstream
            try:
                upstream_reader, upstream_writer = await asyncio.wait_for(
                    asyncio.open_connection(self.upstream_host, self.upstream_port), CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError) as exc:
                log.warning("upstream %s unreachable (%s); resetting the client", self.upstream, exc or type(exc))
                _reset(client_writer)
                return
            conn.upstream = upstream_writer
            if conn_id not in self._open:  # closed by a fault while connecting
                _reset(upstream_writer)
                return
            await self._relay(client_reader, client_writer, upstream_reader, upstream_writer)
        except asyncio.CancelledError:
            # Only close() and shutdown cancel this task, once the sockets are closed. Ending normally
            # keeps Python 3.11's start_server callback from logging the cancellation as an error.
            pass
        finally:
            self._open.pop(conn_id, None)
            for writer in (client_writer, conn.upstream):
                if writer is not None and not writer.is_closing():
                    writer.close()

    async def _relay(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> None:
        """Forward both ways until both sides have sent EOF; a reset on one side resets the other."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pump(client_reader, upstream_writer, delayed=True))
                tg.create_task(self._pump(upstream_reader, client_writer, delayed=False))
        except* OSError:  # ConnectionResetError, BrokenPipeError: the connection is broken end to end
            _reset(client_writer)
            _reset(upstream_writer)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, delayed: bool) -> None:
        """Copy ``reader`` to ``writer`` chunk by chunk, then pass on the EOF; holds while blackholed."""
        while True:
            await self._flowing.wait()
            data = await reader.read(CHUNK_BYTES)
            if not data:
                break
            if delayed and (delay_s := self._delay_s()) > 0:
                await asyncio.sleep(delay_s)
            await self._flowing.wait()  # a blackhole that began mid-chunk holds the chunk too
            writer.write(data)
            await writer.drain()
        await self._flowing.wait()
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()


# --- control API --------------------------------------------------------------------------------


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


def _invalid_detail(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"


def _proxy(request: Request) -> FaultProxy:
    proxy: FaultProxy = request.app.state.proxy
    return proxy


async def healthz(request: Request) -> Response:
    """Liveness."""
    return JSONResponse({"status": "ok"})


async def get_faults(request: Request) -> Response:
    """Current faults and connection counts."""
    return JSONResponse(_proxy(request).view())


async def put_faults(request: Request) -> Response:
    """Replace the faults; a bad body is a 422 naming the field, and changes nothing."""
    try:
        faults = ProxyFaults.model_validate_json(await request.body())
    except ValidationError as exc:
        return _error(422, _invalid_detail(exc))
    proxy = _proxy(request)
    proxy.set_faults(faults)
    return JSONResponse(proxy.view())


async def delete_faults(request: Request) -> Response:
    """Back to ``pass``; connections a blackhole held are closed."""
    proxy = _proxy(request)
    proxy.set_faults(PASS)
    return JSONResponse(proxy.view())


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")


def create_app(proxy: FaultProxy) -> Starlette:
    """The control API as an ASGI app; ``app.state.proxy`` is ``proxy``."""
    routes = [
        Route("/healthz", healthz),
        Route("/faults", get_faults, methods=["GET"]),
        Route("/faults", put_faults, methods=["PUT"]),
        Route("/faults", delete_faults, methods=["DELETE"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.proxy = proxy
    return app


# --- process ------------------------------------------------------------------------------------


def _port(value: str) -> int:
    """A TCP port from the command line; argparse reports the error as a usage error."""
    port = int(value) if value.isdigit() else 0
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"expected a port (1-65535), got {value!r}")
    return port


def _upstream(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) → ``(host, port)``."""
    host, _, port_text = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, _port(port_text)


async def serve(listen_port: int, upstream: tuple[str, int], control_port: int) -> None:
    """Run the proxy and its control API until SIGTERM or SIGINT, then close every connection."""
    import uvicorn

    class ControlServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield  # serve() owns SIGTERM/SIGINT, so the process exits 0 instead of re-raising them

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    proxy = FaultProxy(*upstream)
    listener = await asyncio.start_server(proxy.handle, HOST, listen_port)
    control_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    control_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        control_sock.bind((HOST, control_port))
    except OSError:
        control_sock.close()
        listener.close()
        raise
    config = uvicorn.Config(
        create_app(proxy),
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    control = ControlServer(config)
    control_task = asyncio.create_task(control.serve(sockets=[control_sock]))
    log.info("proxying %s:%d -> %s; control API on %s:%d", HOST, listen_port, proxy.upstream, HOST, control_port)

    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({control_task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    listener.close()
    closed = proxy.close_all(rst=False)
    control.should_exit = True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(control_task, listener.wait_closed()), SHUTDOWN_TIMEOUT_S)
    stopped.cancel()
    control_sock.close()
    if not stop.is_set():
        log.error("the control server stopped on its own; closed %d connection(s)", closed)
        raise SystemExit(1)
    log.info("stopped; closed %d connection(s)", closed)


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m opsgate.faults.proxy --listen-port P --upstream HOST:Q --control-port C``."""
    parser = argparse.ArgumentParser(
        prog="opsgate.faults.proxy",
        description="A TCP fault proxy (latency, reset, blackhole) in front of a dependency; binds 127.0.0.1.",
    )
    parser.add_argument("--listen-port", type=_port, required=True, help="port the platform connects to")
    parser.add_argument("--upstream", type=_upstream, required=True, metavar="HOST:PORT", help="the dependency")
    parser.add_argument("--control-port", type=_port, required=True, help="port of the control API")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(args.listen_port, args.upstream, args.control_port))
    except OSError as exc:
        print(f"opsgate.faults.proxy: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
