"""A staging stand-in: the reference platform in its own process, its worker and Redis scaled like ``kubectl``.

``python standin.py serve --state DIR`` starts a LocalEnvironment (time scale 0.02, one worker), writes
``DIR/env.json`` (0600: its addresses, the control API's URL and the variables of ``environ()``) and serves
on 127.0.0.1: ``POST /workers/stop``, ``POST /workers/start``, ``GET /workers`` (replica count, ``0`` or ``1``);
``POST /redis/stop``, ``POST /redis/start``, ``GET /redis`` (``running`` or ``stopped``); and ``GET /history``
(one ``stop <pid>`` / ``start <pid>`` line per worker action that changed something, ``redis-stop <pid>`` /
``redis-start <pid>`` for Redis). SIGTERM (or Ctrl-C) stops everything it started.

``python standin.py ctl DIR stop|start|read|redis-stop|redis-start|redis-read`` is the command-line client an
external target's ``control: {kind: command}`` calls: prints the state; on failure one line on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

WORKER = "worker-1"
CTL_TIMEOUT_S = 90.0
ROUTES = {
    "stop": ("POST", "/workers/stop"),
    "start": ("POST", "/workers/start"),
    "read": ("GET", "/workers"),
    "redis-stop": ("POST", "/redis/stop"),
    "redis-start": ("POST", "/redis/start"),
    "redis-read": ("GET", "/redis"),
}
# Each controlled part: URL prefix → (its process in the environment, prefix of its history lines).
PARTS = {"/workers": (WORKER, ""), "/redis": ("redis", "redis-")}


def serve(state: Path) -> int:
    """Run the stand-in until SIGTERM/SIGINT; returns the exit code."""
    from opsgate.environments.local import LocalEnvironment, LocalEnvironmentError
    from opsgate.waits import WaitTimeout

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    state.mkdir(parents=True, exist_ok=True)
    environment = LocalEnvironment(state / "logs", workers=1, time_scale=0.02, defects="")
    lock = threading.Lock()
    history: list[str] = []

    def state_of(part: str) -> str:
        running = PARTS[part][0] in environment.running_pids()
        if part == "/workers":
            return "1" if running else "0"
        return "running" if running else "stopped"

    class Control(BaseHTTPRequestHandler):
        def _reply(self, status: int, text: str) -> None:
            body = (text + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path in PARTS:
                self._reply(200, state_of(self.path))
            elif self.path == "/history":
                with lock:
                    self._reply(200, "\n".join(history))
            else:
                self._reply(404, f"no route {self.path}")

        def do_POST(self) -> None:
            part, _, action = self.path.rpartition("/")
            if part not in PARTS or action not in ("stop", "start"):
                self._reply(404, f"no route {self.path}")
                return
            name, prefix = PARTS[part]
            with lock:  # the environment is not thread-safe: one control action at a time
                try:
                    running = environment.running_pids()
                    if action == "stop" and name in running:
                        environment.stop_service(name)
                        history.append(f"{prefix}stop {running[name]}")
                    elif action == "start" and name not in running:
                        environment.start_service(name)
                        history.append(f"{prefix}start {environment.running_pids().get(name)}")
                except (LocalEnvironmentError, WaitTimeout, OSError) as exc:  # a start that never got ready too
                    self._reply(500, f"{self.path}: {exc}".splitlines()[0])
                    return
                self._reply(200, state_of(part))

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with environment:
        server = ThreadingHTTPServer(("127.0.0.1", 0), Control)
        threading.Thread(target=server.serve_forever, name="standin-control", daemon=True).start()
        try:
            info = {
                "pid": os.getpid(),
                "control_url": f"http://127.0.0.1:{server.server_address[1]}",
                "api_url": environment.api_url,
                "worker_url": environment.worker_urls[0],
                "provider_url": environment.provider_url,
                "log_dir": str(state / "logs"),
                "environ": environment.environ(),
            }
            scratch = state / "env.json.tmp"
            fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(info, fh, indent=2)
            os.replace(scratch, state / "env.json")  # appears complete or not at all
            while not stop.wait(0.2):
                pass
        finally:
            server.shutdown()
            server.server_close()
    return 0


def ctl(state: Path, action: str) -> int:
    """One control request; prints the state (replicas; Redis running/stopped), or one line on stderr and exit 1."""
    method, path = ROUTES[action]
    try:
        control_url = json.loads((state / "env.json").read_text())["control_url"]
    except (OSError, ValueError, KeyError) as exc:
        print(f"standin ctl: no stand-in in {state}: {exc}", file=sys.stderr)
        return 1
    request = urllib.request.Request(control_url + path, data=b"" if method == "POST" else None, method=method)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=CTL_TIMEOUT_S) as response:
            print(response.read().decode().strip())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace").strip().splitlines()
        print(f"standin ctl: {method} {path} answered {exc.code}: {detail[0] if detail else ''}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"standin ctl: {method} {control_url}{path}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="standin.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="start the stand-in and serve its control API")
    serve_parser.add_argument("--state", type=Path, required=True)
    ctl_parser = commands.add_parser("ctl", help="stop, start or read the worker replicas or Redis")
    ctl_parser.add_argument("state", type=Path)
    ctl_parser.add_argument("action", choices=sorted(ROUTES))
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.state)
    return ctl(args.state, args.action)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
