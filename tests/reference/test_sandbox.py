"""The provider sandbox, served by a real uvicorn process on 127.0.0.1 and driven over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from opsgate.environments.ports import PortAllocator
from opsgate.reference.sandbox import SandboxSettings, create_app
from opsgate.reference.signing import verify
from opsgate.waits import wait_until

API_KEY = "sandbox-test-key-5c1e"
WEBHOOK_SECRET = "sandbox-test-secret-9b2a"
STARTUP_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
CLIENT_TIMEOUT_S = 10.0
SANDBOX_ENV = ("PROVIDER_API_KEY", "PROVIDER_WEBHOOK_SECRET", "INBOUND_WEBHOOK_URL", "PROVIDER_QUOTA_LIMIT")


# --- a sandbox process and a receiving server --------------------------------------------------


@dataclass
class Sandbox:
    """A started sandbox process: its URL, its process handle and its combined stdout/stderr log."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    """The test's environment without any sandbox settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in SANDBOX_ENV and k != "SANDBOX_HANG_MAX_S"}
    return {**env, **extra}


def _start_sandbox(port: int, log_path: Path, extra_env: dict[str, str]) -> Sandbox:
    """Start ``python -m opsgate.reference.sandbox`` in its own session and wait for ``/healthz``."""
    env = _child_env({"PROVIDER_API_KEY": API_KEY, "PROVIDER_WEBHOOK_SECRET": WEBHOOK_SECRET, **extra_env})
    argv = [sys.executable, "-m", "opsgate.reference.sandbox", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: True if httpx.get(f"{url}/healthz", timeout=1.0, trust_env=False).status_code == 200 else None,
            what="the provider sandbox's /healthz to answer 200",
            timeout_s=STARTUP_TIMEOUT_S,
            interval_s=0.05,
            max_attempts=300,
            address=url,
            hint="see the sandbox's log below",
            log=log_path,
            give_up=lambda: f"sandbox exited with {proc.returncode}" if proc.poll() is not None else None,
        )
    except BaseException:
        _stop(proc)
        raise
    return Sandbox(url=url, proc=proc, log_path=log_path)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM this PID, SIGKILL it after ``STOP_TIMEOUT_S``, reap it, and check it is gone."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT_S)
    assert proc.returncode is not None, f"sandbox pid {proc.pid} still running after SIGKILL"


class Receiver(ThreadingHTTPServer):
    """A tiny platform stand-in: records each POST's headers and raw body, answers 200 JSON."""

    received: list[tuple[dict[str, str], bytes]]


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.server.received.append(({k.lower(): v for k, v in self.headers.items()}, raw))
        answer = json.dumps({"action": "opted_out"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture(scope="module")
def ports() -> PortAllocator:
    """Free ports below the ephemeral range for this module's processes."""
    return PortAllocator()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """The receiving end of ``/control/inbound``, on a free loopback port, in a thread."""
    server = Receiver(("127.0.0.1", 0), _ReceiverHandler)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=STOP_TIMEOUT_S)
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def sandbox(ports: PortAllocator, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One sandbox process for the module, relaying inbound replies to ``receiver``."""
    inbound_url = f"http://127.0.0.1:{receiver.server_address[1]}/webhooks/provider/inbound"
    started = _start_sandbox(
        ports.pick(), tmp_path_factory.mktemp("sandbox") / "sandbox.log", {"INBOUND_WEBHOOK_URL": inbound_url}
    )
    yield started
    _stop(started.proc)


@pytest.fixture(scope="module")
def short_hang_sandbox(ports: PortAllocator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A second sandbox that holds hung sends at most 0.5 s and has no ``INBOUND_WEBHOOK_URL``."""
    started = _start_sandbox(
        ports.pick(), tmp_path_factory.mktemp("sandbox-short") / "sandbox.log", {"SANDBOX_HANG_MAX_S": "0.5"}
    )
    yield started
    _stop(started.proc)


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[httpx.Client]:
    """An HTTP client on the module's sandbox, reset to a clean state first."""
    with httpx.Client(base_url=sandbox.url, timeout=CLIENT_TIMEOUT_S, trust_env=False) as http:
        assert http.post("/control/reset").status_code == 200
        yield http


def _message(message_id: str = "msg-1", tenant_id: str = "tenant-a", attempt: int = 1) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "attempt": attempt,
        "channel": "sms",
        "to": "+61400000001",
        "body": "hello",
        "tenant_id": tenant_id,
    }


def _send(http: httpx.Client, payload: dict[str, Any], key: str | None = API_KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return http.post("/v1/messages", json=payload, headers=headers)


# --- sends and ground truth ---------------------------------------------------------------------


def test_delivery_is_recorded_and_filterable(client: httpx.Client) -> None:
    """An accepted send is a delivery, filterable by message id, tenant and arrival time."""
    first = _send(client, _message("m-1", "tenant-a"))
    assert first.status_code == 200
    assert first.json()["status"] == "accepted"
    time.sleep(0.01)
    assert _send(client, _message("m-2", "tenant-b", attempt=2)).status_code == 200

    everything = client.get("/deliveries").json()
    assert everything["count"] == 2
    assert [d["message_id"] for d in everything["deliveries"]] == ["m-1", "m-2"]
    one = client.get("/deliveries", params={"message_id": "m-1"}).json()
    assert one["count"] == 1
    record = one["deliveries"][0]
    assert record["provider_id"] == first.json()["provider_id"]
    assert {k: record[k] for k in ("attempt", "channel", "to", "tenant_id")} == {
        "attempt": 1,
        "channel": "sms",
        "to": "+61400000001",
        "tenant_id": "tenant-a",
    }
    assert abs(record["received_at"] - time.time()) < 5
    by_tenant = client.get("/deliveries", params={"tenant_id": "tenant-b"}).json()
    assert [d["message_id"] for d in by_tenant["deliveries"]] == ["m-2"]
    later = client.get("/deliveries", params={"since": record["received_at"] + 0.001}).json()
    assert [d["message_id"] for d in later["deliveries"]] == ["m-2"]
    assert client.get("/requests").json() == {
        "total": 2,
        "delivered": 2,
        "faulted": 0,
        "unauthorized": 0,
        "invalid": 0,
        "hung": 0,
        "abandoned": 0,
        "in_flight": 0,
    }
    assert client.get("/status").json()["quota"]["used"] == 2


def test_bad_key_and_bad_body_are_rejected_and_not_recorded(client: httpx.Client) -> None:
    """No key or a wrong key is a 401, a malformed body a 422 naming the field; neither is a delivery."""
    missing = _send(client, _message(), key=None)
    wrong = _send(client, _message(), key="not-the-key")
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert wrong.json()["error"] == "UNAUTHORIZED"
    invalid = _send(client, {**_message(), "channel": "fax"})
    assert invalid.status_code == 422
    assert invalid.json()["error"] == "INVALID_REQUEST"
    assert invalid.json()["detail"].startswith("channel")
    assert client.get("/deliveries").json()["count"] == 0
    counters = client.get("/requests").json()
    assert (counters["unauthorized"], counters["invalid"], counters["total"]) == (2, 1, 3)


# --- faults -------------------------------------------------------------------------------------


def test_error_rate_one_fails_every_send_with_retry_after(client: httpx.Client) -> None:
    """error_rate=1.0 answers every send with the configured status and Retry-After, recording none."""
    put = client.put("/control/faults", json={"error_rate": 1.0, "status": 429, "retry_after_s": 2})
    assert put.status_code == 200
    assert put.json()["active"] == ["error_rate"]
    answers = [_send(client, _message(f"m-{i}")) for i in range(5)]
    assert {r.status_code for r in answers} == {429}
    assert {r.headers.get("retry-after") for r in answers} == {"2"}
    assert answers[0].json() == {"error": "PROVIDER_ERROR", "injected": True}
    assert client.get("/deliveries").json()["count"] == 0
    assert client.get("/requests").json()["faulted"] == 5


def test_seeded_error_rate_replays_the_same_sequence(client: httpx.Client) -> None:
    """error_rate=0.5 with a fixed seed gives the same outcomes twice; a null seed is echoed back."""

    def run() -> list[int]:
        client.post("/control/reset")
        assert client.put("/control/faults", json={"error_rate": 0.5, "seed": 1234}).json()["seed"] == 1234
        return [_send(client, _message(f"m-{i}")).status_code for i in range(20)]

    first, second = run(), run()
    assert first == second
    assert set(first) == {200, 503}
    echoed = client.put("/control/faults", json={"error_rate": 0.5}).json()["seed"]
    assert isinstance(echoed, int)


def test_fault_settings_are_validated(client: httpx.Client) -> None:
    """Out-of-range or unknown fault settings are a 422 naming the field; the faults stay as they were."""
    for body, field in [
        ({"error_rate": 1.5}, "error_rate"),
        ({"status": 600}, "status"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"error_rat": 0.5}, "error_rat"),
    ]:
        answer = client.put("/control/faults", json=body)
        assert answer.status_code == 422, body
        assert answer.json()["detail"].startswith(field), answer.json()
    assert client.get("/control/faults").json()["active"] == []


def test_latency_delays_each_send(client: httpx.Client) -> None:
    """latency_ms=300 delays a send by at least 0.3 s, during which the sandbox counts it in flight."""
    client.put("/control/faults", json={"latency_ms": 300, "seed": 1})
    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        sending = pool.submit(_send, client, _message())
        seen = []
        for _ in range(25):  # bounded: ~0.25 s of polling while the send is held
            if sending.done():
                break
            seen.append(client.get("/requests").json()["in_flight"])
            time.sleep(0.01)
        assert sending.result().status_code == 200
    assert time.monotonic() - started >= 0.3
    assert 1 in seen, seen
    assert client.get("/requests").json()["in_flight"] == 0


def test_send_abandoned_during_latency_is_not_delivered(client: httpx.Client, sandbox: Sandbox) -> None:
    """A client that times out during injected latency sees no delivery: ground truth matches the client."""
    client.put("/control/faults", json={"latency_ms": 1000})
    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/messages", json=_message("slow"), headers={"Authorization": f"Bearer {API_KEY}"}, timeout=0.2)
    wait_until(
        lambda: True if client.get("/requests").json()["abandoned"] == 1 else None,
        what="the abandoned send to be counted",
        timeout_s=5.0,
        max_attempts=100,
        address=sandbox.url,
    )
    assert client.get("/deliveries").json()["count"] == 0


def test_hang_holds_until_the_fault_is_cleared(client: httpx.Client, sandbox: Sandbox) -> None:
    """A hung send is held until DELETE /control/faults, then answered (and delivered) at once."""
    client.put("/control/faults", json={"hang": True})
    with (
        httpx.Client(base_url=sandbox.url, timeout=CLIENT_TIMEOUT_S, trust_env=False) as other,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        pending = pool.submit(_send, other, _message("held"))
        wait_until(
            lambda: True if client.get("/requests").json()["total"] == 1 else None,
            what="the hung send to arrive",
            timeout_s=5.0,
            max_attempts=100,
            address=sandbox.url,
        )
        time.sleep(0.3)
        assert not pending.done(), "the send was answered while the hang was set"
        released_at = time.monotonic()
        assert client.delete("/control/faults").status_code == 200
        answer = pending.result(timeout=5.0)
    assert answer.status_code == 200
    assert time.monotonic() - released_at < 1.0
    assert client.get("/deliveries", params={"message_id": "held"}).json()["count"] == 1


def test_hang_abandoned_by_the_client_is_never_delivered(client: httpx.Client, sandbox: Sandbox) -> None:
    """A client that times out on a hung send sees no delivery later: ground truth matches the client."""
    client.put("/control/faults", json={"hang": True})
    with pytest.raises(httpx.ReadTimeout):
        client.post("/v1/messages", json=_message("gone"), headers={"Authorization": f"Bearer {API_KEY}"}, timeout=0.3)
    wait_until(
        lambda: True if client.get("/requests").json()["hung"] == 1 else None,
        what="the abandoned send to be counted as hung",
        timeout_s=5.0,
        max_attempts=100,
        address=sandbox.url,
    )
    client.delete("/control/faults")
    assert client.get("/deliveries").json()["count"] == 0


def test_hang_is_bounded_by_sandbox_hang_max_s(short_hang_sandbox: Sandbox) -> None:
    """With SANDBOX_HANG_MAX_S=0.5 a hung send is answered 504 in bounded time and not delivered."""
    with httpx.Client(base_url=short_hang_sandbox.url, timeout=CLIENT_TIMEOUT_S, trust_env=False) as http:
        http.post("/control/reset")
        http.put("/control/faults", json={"hang": True})
        started = time.monotonic()
        answer = _send(http, _message())
        elapsed = time.monotonic() - started
        assert answer.status_code == 504
        assert answer.json()["error"] == "PROVIDER_TIMEOUT"
        assert 0.5 <= elapsed < 3.0
        assert http.get("/requests").json()["hung"] == 1
        assert http.get("/deliveries").json()["count"] == 0


# --- status and quota ---------------------------------------------------------------------------


def test_status_degrades_under_faults_and_reports_quota(client: httpx.Client) -> None:
    """/status is ok without faults, degraded with one, and reports quota usage as a ratio."""
    healthy = client.get("/status")
    assert healthy.status_code == 200
    assert healthy.json()["status"] == "ok"
    client.put("/control/faults", json={"error_rate": 0.1})
    assert client.get("/status").json()["status"] == "degraded"
    client.delete("/control/faults")
    client.put("/control/monitoring", json={"status": 410})
    assert client.get("/status").json() == {
        "status": "degraded",
        "faults": ["monitoring"],
        "quota": {"limit": 100_000, "used": 0, "usage_ratio": 0.0},
    }
    client.delete("/control/monitoring")
    quota = client.put("/control/quota", json={"limit": 100, "used": 85}).json()
    assert quota == {"limit": 100, "used": 85, "usage_ratio": 0.85}
    assert client.get("/status").json()["quota"]["usage_ratio"] == 0.85
    assert client.put("/control/quota", json={"limit": 0}).status_code == 422


# --- monitoring sink ----------------------------------------------------------------------------


def test_monitoring_sink_records_and_its_faults_do_not(client: httpx.Client) -> None:
    """Events are recorded with received_at and filterable by type; a 410 or a down sink records nothing."""
    accepted = client.post("/monitoring/events", json={"type": "notification.failure", "channel": "email"})
    assert accepted.status_code == 202
    client.post("/monitoring/events", json={"type": "notification.delivery"})
    failures = client.get("/monitoring/events", params={"type": "notification.failure"}).json()
    assert failures["count"] == 1
    assert failures["events"][0]["channel"] == "email"
    assert isinstance(failures["events"][0]["received_at"], float)

    client.put("/control/monitoring", json={"status": 410})
    assert client.post("/monitoring/events", json={"type": "notification.failure"}).status_code == 410
    client.put("/control/monitoring", json={"down": True})
    assert client.post("/monitoring/events", json={"type": "notification.failure"}).status_code == 503
    assert client.get("/monitoring/events").json()["count"] == 2
    assert client.get("/monitoring/requests").json() == {"total": 4, "recorded": 2, "rejected": 2, "invalid": 0}


# --- inbound replies ----------------------------------------------------------------------------


def test_inbound_reply_reaches_the_platform_signed(client: httpx.Client, receiver: Receiver) -> None:
    """/control/inbound posts the reply to INBOUND_WEBHOOK_URL with a valid x-provider-signature."""
    receiver.received.clear()
    answer = client.post("/control/inbound", json={"from": "+61400000001", "to": "+61400000999", "body": "STOP"})
    assert answer.status_code == 200
    assert answer.json() == {"delivered_status": 200, "response": {"action": "opted_out"}}
    assert len(receiver.received) == 1
    headers, raw = receiver.received[0]
    assert verify(WEBHOOK_SECRET, raw, headers.get("x-provider-signature"))
    assert not verify("another-secret", raw, headers.get("x-provider-signature"))
    payload = json.loads(raw)
    assert {k: payload[k] for k in ("from", "to", "body")} == {
        "from": "+61400000001",
        "to": "+61400000999",
        "body": "STOP",
    }
    assert isinstance(payload["received_at"], float)


def test_recipients_reply_stop_to_the_configured_share_of_sms(client: httpx.Client, receiver: Receiver) -> None:
    """/control/replies: a seeded share of delivered SMS gets a STOP back, relayed signed to the tenant's number."""
    receiver.received.clear()
    assert client.put("/control/replies", json={"stop_rate": 0.5}).status_code == 422  # no `to`: no tenant
    put = client.put("/control/replies", json={"stop_rate": 0.5, "to": "+61400000999", "seed": 11})
    assert put.status_code == 200 and put.json()["seed"] == 11
    for n in range(40):
        assert _send(client, {**_message(f"m{n}"), "to": f"+614123450{n:02d}"}).status_code == 200
    email = {**_message("e1"), "channel": "email", "to": "a@example.test"}
    assert _send(client, email).status_code == 200
    wait_until(lambda: True if len(receiver.received) >= 12 else None, timeout_s=10, what="STOP replies relayed")
    time.sleep(0.3)  # any late relay
    replies = [json.loads(raw) for _, raw in receiver.received]
    assert 12 <= len(replies) <= 28  # about half of 40, never the email
    assert {(r["body"], r["to"]) for r in replies} == {("STOP", "+61400000999")}
    assert all(r["from"].startswith("+614123450") for r in replies)
    assert all(verify(WEBHOOK_SECRET, raw, headers.get("x-provider-signature")) for headers, raw in receiver.received)
    assert client.delete("/control/replies").json()["stop_rate"] == 0.0
    receiver.received.clear()
    assert _send(client, _message("after")).status_code == 200
    time.sleep(0.3)
    assert receiver.received == []


def test_inbound_without_a_url_is_a_conflict(short_hang_sandbox: Sandbox) -> None:
    """With no INBOUND_WEBHOOK_URL configured, /control/inbound answers 409."""
    answer = httpx.post(
        f"{short_hang_sandbox.url}/control/inbound",
        json={"from": "+61400000001", "to": "+61400000999", "body": "STOP"},
        timeout=CLIENT_TIMEOUT_S,
        trust_env=False,
    )
    assert answer.status_code == 409
    assert answer.json()["error"] == "NO_INBOUND_URL"


async def test_inbound_to_an_unreachable_platform_is_a_502(ports: PortAllocator) -> None:
    """An inbound relay that cannot connect answers 502 with the connection error (app served in-process)."""
    settings = SandboxSettings(
        provider_api_key=API_KEY,
        provider_webhook_secret=WEBHOOK_SECRET,
        inbound_webhook_url=f"http://127.0.0.1:{ports.pick()}/inbound",
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox", timeout=CLIENT_TIMEOUT_S) as http:
        answer = await http.post(
            "/control/inbound", json={"from": "+61400000001", "to": "+61400000999", "body": "STOP"}
        )
    assert answer.status_code == 502
    assert answer.json()["error"] == "INBOUND_UNDELIVERED"
    assert "ConnectError" in answer.json()["detail"]


# --- process ------------------------------------------------------------------------------------


def test_missing_api_key_exits_2_with_one_line(tmp_path: Path) -> None:
    """Without PROVIDER_API_KEY the sandbox exits 2 and names the variable on one stderr line."""
    done = subprocess.run(
        [sys.executable, "-m", "opsgate.reference.sandbox", "--port", "1"],
        env=_child_env({"PROVIDER_WEBHOOK_SECRET": WEBHOOK_SECRET}),
        capture_output=True,
        timeout=STARTUP_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "PROVIDER_API_KEY" in lines[0]


def test_log_has_a_line_per_request_and_no_secrets(client: httpx.Client, sandbox: Sandbox) -> None:
    """Each request outcome is one log line; the API key and webhook secret never appear."""
    _send(client, _message("logged-1"))
    _send(client, _message("logged-2"), key="wrong-key")
    wait_until(
        lambda: True if "logged-1" in sandbox.log_path.read_text() else None,
        what="the delivery's log line",
        timeout_s=5.0,
        max_attempts=100,
        log=sandbox.log_path,
    )
    text = sandbox.log_path.read_text()
    assert any("POST /v1/messages 200" in line and "delivered" in line for line in text.splitlines())
    assert any("POST /v1/messages 401" in line and "unauthorized" in line for line in text.splitlines())
    for secret in (API_KEY, WEBHOOK_SECRET, "wrong-key"):
        assert secret not in text
