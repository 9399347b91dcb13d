"""Serve an ASGI app with uvicorn inside a process that owns its own signal handling."""

from __future__ import annotations

import contextlib
from collections.abc import Generator

import uvicorn
from starlette.applications import Starlette


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves SIGTERM/SIGINT to the hosting process (e.g. a graceful worker)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def embedded_server(app: Starlette, host: str, port: int) -> EmbeddedServer:
    """A server for ``app`` on ``host:port``; run it with ``await server.serve()``."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    return EmbeddedServer(config)
