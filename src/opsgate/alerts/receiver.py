"""The webhook receiver Alertmanager notifies: records every notification, per receiver path, for drills.

Run with ``python -m opsgate.alerts.receiver --port N``. ``POST /<receiver>`` records an
Alertmanager webhook (payload version 4); ``GET /notifications`` lists them with the receipt time.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def create_app() -> Starlette:
    """The receiver app; notifications are kept in memory (one process)."""
    received: list[dict[str, Any]] = []

    async def record(request: Request) -> Response:
        try:
            payload = await request.json()
        except ValueError:
            return JSONResponse({"error": "not JSON"}, status_code=400)
        received.append({"receiver": request.path_params["receiver"], "received_at": time.time(), "payload": payload})
        return JSONResponse({"recorded": len(received)})

    async def notifications(request: Request) -> Response:
        alert = request.query_params.get("alert")
        rows = [
            row
            for row in received
            if alert is None or any(a.get("labels", {}).get("alertname") == alert for a in row["payload"]["alerts"])
        ]
        return JSONResponse({"count": len(rows), "notifications": rows})

    async def reset(request: Request) -> Response:
        received.clear()
        return JSONResponse({"cleared": True})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/notifications", notifications),
            Route("/reset", reset, methods=["POST"]),
            Route("/{receiver}", record, methods=["POST"]),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m opsgate.alerts.receiver --host 127.0.0.1 --port N``."""
    parser = argparse.ArgumentParser(prog="opsgate.alerts.receiver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
