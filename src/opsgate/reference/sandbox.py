"""The provider sandbox: a stand-in for the SMS/email provider and the monitoring webhook sink.

It is the *ground truth* of a drill's reconciliation: every send the provider accepted is a
recorded delivery, whatever the platform's own status columns say. Faults (error rate, status,
Retry-After, latency, jitter, hang) are set over HTTP and drawn from a seeded RNG so a drill can
record its seed and replay the same sequence.

Run with ``python -m opsgate.reference.sandbox --host 127.0.0.1 --port N``; settings come from
the environment (see :func:`settings_from_environ`). All state lives in memory in one process.

Endpoints (JSON everywhere):

- ``GET /healthz``; ``GET /status`` (ok | degraded, quota usage)
- ``POST /v1/messages`` (Bearer ``PROVIDER_API_KEY``): the provider's send call
- ``GET /deliveries?message_id=&tenant_id=&to=&since=``; ``GET /requests`` (counters by outcome)
- ``GET|PUT|DELETE /control/faults``; ``PUT /control/quota``; ``POST /control/reset``
- ``POST /control/inbound``: relay a recipient's reply, signed, to ``INBOUND_WEBHOOK_URL``
- ``GET|PUT|DELETE /control/replies``: recipients reply STOP to a share of the delivered SMS (seeded), each
  reply relayed like ``/control/inbound``
- ``POST /monitoring/events``; ``GET /monitoring/events?type=``; ``GET /monitoring/requests``;
  ``GET|PUT|DELETE /control/monitoring``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hmac
import json
import logging
import os
import random
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opsgate.reference import signing
from opsgate.reference.errors import ApiError, error_response, handle_api_error
from opsgate.reference.settings import SettingsError

__all__ = ["Faults", "SandboxSettings", "SinkFault", "create_app", "main", "settings_from_environ"]

log = logging.getLogger("opsgate.reference.sandbox")

INBOUND_TIMEOUT_S = 10.0  # one relay of a recipient's reply to the platform
GRACEFUL_SHUTDOWN_S = 3  # uvicorn cancels requests still held by a hang after this on SIGTERM
MAX_DELAY_MS = 600_000  # latency and jitter ceilings: every injected wait stays bounded (10 min)

Outcome = Literal["delivered", "faulted", "unauthorized", "invalid", "hung", "abandoned"]
OUTCOMES: tuple[Outcome, ...] = ("delivered", "faulted", "unauthorized", "invalid", "hung", "abandoned")
WaitEnd = Literal["released", "elapsed", "gone"]


# --- settings -----------------------------------------------------------------------------------


class SandboxSettings(BaseModel):
    """What the sandbox needs; built from the environment by :func:`settings_from_environ`."""

    model_config = ConfigDict(frozen=True)

    provider_api_key: str = Field(min_length=1, repr=False)
    provider_webhook_secret: str = Field(min_length=1, repr=False)
    inbound_webhook_url: str | None = None
    quota_limit: int = Field(default=100_000, gt=0)
    hang_max_s: float = Field(default=30.0, gt=0)


_REQUIRED_ENV = {"PROVIDER_API_KEY": "provider_api_key", "PROVIDER_WEBHOOK_SECRET": "provider_webhook_secret"}
_OPTIONAL_ENV = {
    "INBOUND_WEBHOOK_URL": "inbound_webhook_url",
    "PROVIDER_QUOTA_LIMIT": "quota_limit",
    "SANDBOX_HANG_MAX_S": "hang_max_s",
}


def settings_from_environ(environ: Mapping[str, str] | None = None) -> SandboxSettings:
    """Build settings from environment variables; raises :class:`SettingsError` with a one-line message."""
    env = os.environ if environ is None else environ
    missing = [name for name in _REQUIRED_ENV if not env.get(name)]
    if missing:
        raise SettingsError(f"missing environment variable(s): {', '.join(missing)}")
    values: dict[str, str] = {key: env[name] for name, key in _REQUIRED_ENV.items()}
    values.update({key: env[name] for name, key in _OPTIONAL_ENV.items() if env.get(name)})
    try:
        return SandboxSettings.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0])
        name = next(n for n, k in {**_REQUIRED_ENV, **_OPTIONAL_ENV}.items() if k == key)
        # Only optional, non-secret variables can fail validation here, so echoing the value is safe.
        shown = f", got {err['input']!r}" if name in _OPTIONAL_ENV else ""
        raise SettingsError(f"{name}: {err['msg']}{shown}") from None


# --- request bodies -----------------------------------------------------------------------------


class _Control(BaseModel):
    """A control body: strict types and no unknown keys, so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Faults(_Control):
    """Faults applied to ``POST /v1/messages``: latency (+ jitter), then hang, then error injection."""

    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    status: int = Field(default=503, ge=400, le=599)
    retry_after_s: float | None = Field(default=None, ge=0.0)
    latency_ms: int = Field(default=0, ge=0, le=MAX_DELAY_MS)
    jitter_ms: int = Field(default=0, ge=0, le=MAX_DELAY_MS)
    hang: bool = False
    seed: int | None = None

    @property
    def active(self) -> list[str]:
        """Names of the faults that change a send's outcome or timing (empty: none)."""
        names = []
        if self.error_rate > 0:
            names.append("error_rate")
        if self.latency_ms > 0 or self.jitter_ms > 0:
            names.append("latency")
        if self.hang:
            names.append("hang")
        return names


class Replies(_Control):
    """How recipients answer: a share ``stop_rate`` of delivered SMS gets a STOP back, addressed ``to`` the tenant."""

    stop_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    to: str | None = None
    """The number the replies are sent to: the tenant's sending number (it maps the reply to the tenant)."""
    seed: int | None = None


class SinkFault(_Control):
    """How the monitoring sink answers: ``down`` → 503; a non-2xx ``status`` → that status, unrecorded."""

    status: int = Field(default=202, ge=200, le=599)
    down: bool = False

    @property
    def active(self) -> bool:
        """True when the sink does not behave like a healthy webhook (2xx, recorded)."""
        return self.down or not 200 <= self.status < 300


class QuotaUpdate(_Control):
    """Set the provider quota's limit and/or usage (count of accepted sends)."""

    limit: int | None = Field(default=None, gt=0)
    used: int | None = Field(default=None, ge=0)


class InboundReply(_Control):
    """A recipient's reply to relay to the platform (``from`` is the recipient's number)."""

    from_: str = Field(alias="from", min_length=1)
    to: str = Field(min_length=1)
    body: str


class SendRequest(BaseModel):
    """The provider's send call; unknown keys are ignored, as a real provider API does."""

    model_config = ConfigDict(extra="ignore", strict=True)

    message_id: str = Field(min_length=1, max_length=200)
    attempt: int = Field(ge=1)
    channel: Literal["sms", "email"]
    to: str = Field(min_length=1, max_length=320)
    body: str
    tenant_id: str = Field(min_length=1, max_length=200)


M = TypeVar("M", bound=BaseModel)


def _invalid_detail(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"


async def parse_body(request: Request, model: type[M]) -> M:
    """Validate the JSON body; a bad body is a 422 ``INVALID_REQUEST`` naming the field."""
    try:
        return model.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        raise ApiError(422, "INVALID_REQUEST", _invalid_detail(exc)) from None


# --- state --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One send the provider accepted; ``received_at`` in unix seconds."""

    message_id: str
    attempt: int
    channel: str
    to: str
    tenant_id: str
    provider_id: str
    received_at: float


def _resolve_seed(faults: Faults) -> Faults:
    """``faults`` with a concrete seed: a null seed becomes a random one, echoed for replay."""
    if faults.seed is not None:
        return faults
    return faults.model_copy(update={"seed": random.SystemRandom().randrange(2**31)})


@dataclass
class SandboxState:
    """Everything the sandbox remembers; one per app, reset by ``POST /control/reset``."""

    settings: SandboxSettings
    faults: Faults = field(default_factory=lambda: _resolve_seed(Faults()))
    rng: random.Random = field(init=False)
    quota_limit: int = field(init=False)
    # Hung sends wait on this event; it is set (and replaced on the next hang) when the hang ends.
    release: asyncio.Event = field(default_factory=asyncio.Event)
    deliveries: list[Delivery] = field(default_factory=list)
    counters: collections.Counter[str] = field(default_factory=collections.Counter)
    events: list[dict[str, Any]] = field(default_factory=list)
    sink: SinkFault = field(default_factory=SinkFault)
    sink_counters: collections.Counter[str] = field(default_factory=collections.Counter)
    replies: Replies = field(default_factory=Replies)
    reply_rng: random.Random = field(default_factory=random.Random)
    relaying: set[asyncio.Task[None]] = field(default_factory=set)
    """STOP replies being relayed in the background (kept so none is garbage-collected mid-flight)."""
    quota_used: int = 0
    in_flight: int = 0
    """Send calls being handled right now (held by injected latency or a hang): the client holds them in flight."""

    def __post_init__(self) -> None:
        self.rng = random.Random(self.faults.seed)
        self.quota_limit = self.settings.quota_limit

    def set_faults(self, faults: Faults) -> Faults:
        """Replace the faults and reseed the RNG; ending a hang releases every held send at once."""
        self.faults = _resolve_seed(faults)
        self.rng = random.Random(self.faults.seed)
        if self.faults.hang:
            if self.release.is_set():
                self.release = asyncio.Event()
        else:
            self.release.set()
        return self.faults

    def reset(self) -> None:
        """Forget deliveries, counters, monitoring events, faults and quota usage."""
        self.set_faults(Faults())
        self.deliveries.clear()
        self.counters.clear()
        self.events.clear()
        self.sink = SinkFault()
        self.sink_counters.clear()
        self.quota_limit = self.settings.quota_limit
        self.quota_used = 0
        self.replies = Replies()

    def quota_view(self) -> dict[str, Any]:
        """Quota limit, usage and their ratio (usage / limit)."""
        return {"limit": self.quota_limit, "used": self.quota_used, "usage_ratio": self.quota_used / self.quota_limit}


def sandbox_state(request: Request) -> SandboxState:
    """The app's :class:`SandboxState`."""
    state: SandboxState = request.app.state.sandbox
    return state


def _note(request: Request, text: str) -> None:
    """Attach the outcome text that the request log line carries."""
    request.state.log_note = text


def _faults_view(faults: Faults) -> dict[str, Any]:
    return {**faults.model_dump(), "active": faults.active}


def _seconds_header(value: float) -> str:
    """Seconds for a header: ``2`` or ``0.5`` (ms resolution; fractions serve compressed drills)."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


# --- provider -----------------------------------------------------------------------------------


def _authorized(request: Request, api_key: str) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


async def _client_gone(receive: Receive) -> None:
    """Return once the client has disconnected (the body is already read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _wait(request: Request, max_s: float, release: asyncio.Event | None = None) -> WaitEnd:
    """Wait ``max_s`` seconds, ending early when ``release`` is set or the client disconnects."""
    gone = asyncio.ensure_future(_client_gone(request.receive))
    released = asyncio.ensure_future(release.wait()) if release is not None else None
    tasks = {gone} if released is None else {gone, released}
    try:
        done, _ = await asyncio.wait(tasks, timeout=max_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if gone in done:
        return "gone"
    return "released" if released in done else "elapsed"


async def send_message(request: Request) -> Response:
    """The provider's send call: auth, validation, faults, then a recorded delivery; counted in flight meanwhile."""
    st = sandbox_state(request)
    st.in_flight += 1
    try:
        return await _handle_send(request, st)
    finally:
        st.in_flight -= 1


async def _handle_send(request: Request, st: SandboxState) -> Response:
    st.counters["total"] += 1
    if not _authorized(request, st.settings.provider_api_key):
        st.counters["unauthorized"] += 1
        _note(request, "unauthorized")
        return error_response(401, "UNAUTHORIZED", "expected 'Authorization: Bearer <PROVIDER_API_KEY>'")
    try:
        send = SendRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        st.counters["invalid"] += 1
        detail = _invalid_detail(exc)
        _note(request, f"invalid ({detail})")
        return error_response(422, "INVALID_REQUEST", detail)
    who = f"message_id={send.message_id} attempt={send.attempt} tenant_id={send.tenant_id}"

    # Both draws happen at arrival, in arrival order, so a seed replays the same sequence whatever
    # faults are active and however long each request is held.
    faults = st.faults
    jitter_draw, error_draw = st.rng.random(), st.rng.random()
    # A send whose client left before the answer is never delivered (counted "abandoned" or "hung"):
    # the ground truth then holds exactly the sends the client was told were accepted.
    delay_s = (faults.latency_ms + jitter_draw * faults.jitter_ms) / 1000
    if delay_s > 0 and await _wait(request, delay_s) == "gone":
        st.counters["abandoned"] += 1
        _note(request, f"abandoned during {delay_s * 1000:.0f}ms latency {who}")
        return JSONResponse({"error": "CLIENT_GONE", "injected": True}, status_code=499)

    if st.faults.hang:
        held_from = time.monotonic()
        ended = await _wait(request, st.settings.hang_max_s, st.release)
        held_s = time.monotonic() - held_from
        if ended != "released":
            st.counters["hung"] += 1
            why = "client disconnected" if ended == "gone" else "SANDBOX_HANG_MAX_S reached"
            _note(request, f"hung {held_s:.2f}s, {why} {who}")
            body = {"error": "PROVIDER_TIMEOUT", "injected": True, "detail": f"held {held_s:.2f}s: {why}"}
            return JSONResponse(body, status_code=504)

    faults = st.faults  # the hang may have ended with new or cleared faults
    if error_draw < faults.error_rate:
        st.counters["faulted"] += 1
        headers = {"Retry-After": _seconds_header(faults.retry_after_s)} if faults.retry_after_s is not None else None
        _note(request, f"faulted (injected {faults.status}) {who}")
        return JSONResponse({"error": "PROVIDER_ERROR", "injected": True}, status_code=faults.status, headers=headers)

    delivery = Delivery(
        message_id=send.message_id,
        attempt=send.attempt,
        channel=send.channel,
        to=send.to,
        tenant_id=send.tenant_id,
        provider_id=uuid.uuid4().hex,
        received_at=time.time(),
    )
    st.deliveries.append(delivery)
    st.quota_used += 1
    st.counters["delivered"] += 1
    _note(request, f"delivered provider_id={delivery.provider_id} {who}")
    replies = st.replies
    if send.channel == "sms" and replies.to and st.reply_rng.random() < replies.stop_rate:
        task = asyncio.create_task(_relay_stop(st, send.to, replies.to))
        st.relaying.add(task)
        task.add_done_callback(st.relaying.discard)
    return JSONResponse({"provider_id": delivery.provider_id, "status": "accepted"})


def _float_param(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise ApiError(422, "INVALID_REQUEST", f"{name}: expected unix seconds, got {raw!r}") from None


async def list_deliveries(request: Request) -> Response:
    """Recorded deliveries in arrival order, filtered by ``message_id``, ``tenant_id``, ``to``, ``since`` (unix s)."""
    st = sandbox_state(request)
    message_id = request.query_params.get("message_id")
    tenant_id = request.query_params.get("tenant_id")
    to = request.query_params.get("to")
    since = _float_param(request, "since")
    found = [
        asdict(d)
        for d in st.deliveries
        if (message_id is None or d.message_id == message_id)
        and (tenant_id is None or d.tenant_id == tenant_id)
        and (to is None or d.to == to)
        and (since is None or d.received_at >= since)
    ]
    return JSONResponse({"count": len(found), "deliveries": found})


async def request_counters(request: Request) -> Response:
    """Send calls by outcome, so a drill can prove an injected fault took effect.

    ``total`` is the sum of the outcomes: ``delivered``; ``faulted`` (error injection);
    ``unauthorized``; ``invalid``; ``hung`` (held by the hang fault until SANDBOX_HANG_MAX_S or the
    client gave up); ``abandoned`` (the client gave up during injected latency). Neither of the
    last two is ever delivered. ``in_flight``: send calls being handled right now.
    """
    st = sandbox_state(request)
    counters = st.counters
    return JSONResponse({"total": counters["total"], **{name: counters[name] for name in OUTCOMES},
                         "in_flight": st.in_flight})  # fmt: skip


# --- health and control -------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    """Liveness."""
    return JSONResponse({"status": "ok"})


async def status(request: Request) -> Response:
    """Integration status (seed 004: 2xx; quota usage < 80%): degraded while any fault is active."""
    st = sandbox_state(request)
    active = list(st.faults.active) + (["monitoring"] if st.sink.active else [])
    return JSONResponse({"status": "degraded" if active else "ok", "faults": active, "quota": st.quota_view()})


async def get_faults(request: Request) -> Response:
    """Current send faults, with the seed in use and the names of the active ones."""
    return JSONResponse(_faults_view(sandbox_state(request).faults))


async def put_faults(request: Request) -> Response:
    """Replace the send faults; a null seed picks one, echoed back for replay."""
    faults = await parse_body(request, Faults)
    applied = sandbox_state(request).set_faults(faults)
    _note(request, f"faults set {applied.model_dump_json()}")
    return JSONResponse(_faults_view(applied))


async def delete_faults(request: Request) -> Response:
    """Clear the send faults and release every held send at once."""
    cleared = sandbox_state(request).set_faults(Faults())
    return JSONResponse(_faults_view(cleared))


async def put_quota(request: Request) -> Response:
    """Set the quota's limit and/or usage, e.g. to push usage past a gate's threshold."""
    update = await parse_body(request, QuotaUpdate)
    st = sandbox_state(request)
    if update.limit is not None:
        st.quota_limit = update.limit
    if update.used is not None:
        st.quota_used = update.used
    return JSONResponse(st.quota_view())


async def reset(request: Request) -> Response:
    """Clear deliveries, counters, monitoring events, faults (releasing held sends) and quota usage."""
    sandbox_state(request).reset()
    return JSONResponse({"status": "reset"})


def _response_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:2000]


async def relay_inbound(request: Request) -> Response:
    """Post a recipient's reply to ``INBOUND_WEBHOOK_URL``, signed; answer the platform's status."""
    reply = await parse_body(request, InboundReply)
    st = sandbox_state(request)
    answer = await _relay(request, st, reply.from_, reply.to, reply.body)
    return JSONResponse({"delivered_status": answer.status_code, "response": _response_body(answer)})


async def _relay_stop(st: SandboxState, sender: str, to: str) -> None:
    """A recipient's STOP reply (``/control/replies``), relayed in the background; a failure is only logged."""
    with contextlib.suppress(ApiError):
        await _relay(None, st, sender, to, "STOP")


async def _relay(request: Request | None, st: SandboxState, sender: str, to: str, body: str) -> httpx.Response:
    """Post one reply to ``INBOUND_WEBHOOK_URL``, signed; the outcome is noted on ``request`` when one is given."""
    url = st.settings.inbound_webhook_url
    if not url:
        raise ApiError(409, "NO_INBOUND_URL", "INBOUND_WEBHOOK_URL is not set for this sandbox")
    payload = {"from": sender, "to": to, "body": body, "received_at": time.time()}
    raw = json.dumps(payload).encode()
    headers = {
        "content-type": "application/json",
        "x-provider-signature": signing.sign(st.settings.provider_webhook_secret, raw),
    }
    try:
        async with httpx.AsyncClient(timeout=INBOUND_TIMEOUT_S, trust_env=False) as client:
            answer = await client.post(url, content=raw, headers=headers)
    except httpx.HTTPError as exc:
        detail = f"{type(exc).__name__}: {exc or 'no detail'}"
        if request is not None:
            _note(request, f"inbound undelivered ({detail})")
        else:
            log.warning("STOP reply from %s undelivered: %s", sender, detail)
        raise ApiError(502, "INBOUND_UNDELIVERED", detail) from None
    if request is not None:
        _note(request, f"inbound relayed, platform answered {answer.status_code}")
    return answer


async def get_replies(request: Request) -> Response:
    """The recipients' reply behaviour now."""
    return JSONResponse(sandbox_state(request).replies.model_dump())


async def put_replies(request: Request) -> Response:
    """Make recipients reply STOP to a share of delivered SMS; a null seed picks one, echoed back for replay."""
    replies = await parse_body(request, Replies)
    if replies.stop_rate > 0 and not replies.to:
        raise ApiError(422, "INVALID_REQUEST", "to: the tenant's sending number, needed when stop_rate > 0")
    st = sandbox_state(request)
    st.replies = replies.model_copy(update={"seed": random.randrange(2**31) if replies.seed is None else replies.seed})
    st.reply_rng = random.Random(st.replies.seed)
    _note(request, f"replies set {st.replies.model_dump_json()}")
    return JSONResponse(st.replies.model_dump())


async def delete_replies(request: Request) -> Response:
    """Recipients reply no more."""
    st = sandbox_state(request)
    st.replies = Replies()
    return JSONResponse(st.replies.model_dump())


# --- monitoring sink ----------------------------------------------------------------------------


async def record_event(request: Request) -> Response:
    """Record a monitoring event (any JSON object) with ``received_at`` — unless a sink fault says otherwise."""
    st = sandbox_state(request)
    st.sink_counters["total"] += 1
    sink = st.sink
    if sink.down:
        st.sink_counters["rejected"] += 1
        _note(request, "monitoring sink down")
        return error_response(503, "SINK_DOWN", "the monitoring sink is down (PUT /control/monitoring)")
    if not 200 <= sink.status < 300:
        st.sink_counters["rejected"] += 1
        _note(request, f"monitoring sink rejected ({sink.status})")
        return error_response(sink.status, "SINK_REJECTED", f"injected status {sink.status}")
    try:
        event = json.loads(await request.body())
    except ValueError:
        event = None
    if not isinstance(event, dict):
        st.sink_counters["invalid"] += 1
        return error_response(422, "INVALID_REQUEST", "body: expected a JSON object")
    event["received_at"] = time.time()
    st.events.append(event)
    st.sink_counters["recorded"] += 1
    _note(request, f"monitoring event recorded type={event.get('type')!s:.80}")
    if sink.status == 204:
        return Response(status_code=204)
    return JSONResponse({"status": "recorded"}, status_code=sink.status)


async def list_events(request: Request) -> Response:
    """Recorded monitoring events in arrival order, filtered on their fields (``?type=tenant.suspended&tenant_id=``)."""
    wanted = dict(request.query_params)
    events = [e for e in sandbox_state(request).events if all(str(e.get(k)) == v for k, v in wanted.items())]
    return JSONResponse({"count": len(events), "events": events})


async def sink_counters(request: Request) -> Response:
    """Monitoring posts by outcome: recorded, rejected (by a sink fault), invalid."""
    counters = sandbox_state(request).sink_counters
    return JSONResponse({name: counters[name] for name in ("total", "recorded", "rejected", "invalid")})


async def get_monitoring(request: Request) -> Response:
    """The monitoring sink's current fault."""
    return JSONResponse(sandbox_state(request).sink.model_dump())


async def put_monitoring(request: Request) -> Response:
    """Replace the monitoring sink's fault (e.g. ``{"status": 410}`` or ``{"down": true}``)."""
    sink = await parse_body(request, SinkFault)
    sandbox_state(request).sink = sink
    return JSONResponse(sink.model_dump())


async def delete_monitoring(request: Request) -> Response:
    """Make the monitoring sink healthy again (202, recorded)."""
    st = sandbox_state(request)
    st.sink = SinkFault()
    return JSONResponse(st.sink.model_dump())


# --- app ----------------------------------------------------------------------------------------


class RequestLog:
    """ASGI middleware: one stdout line per request — method, path, status, outcome, duration (ms).

    Headers and bodies are never logged, so the API key, signatures and secrets stay out of it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        notes: dict[str, Any] = scope.setdefault("state", {})
        started = time.monotonic()
        status_code = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            note = notes.get("log_note", "")
            elapsed_ms = (time.monotonic() - started) * 1000
            line = f"{scope['method']} {scope['path']} {status_code} {elapsed_ms:.1f}ms"
            log.info("%s", f"{line} {note}" if note else line)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = "NOT_FOUND" if exc.status_code == 404 else "METHOD_NOT_ALLOWED" if exc.status_code == 405 else "HTTP_ERROR"
    return error_response(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}")


def create_app(settings: SandboxSettings) -> Starlette:
    """The sandbox as an ASGI app; its state is ``app.state.sandbox`` (a :class:`SandboxState`)."""
    routes = [
        Route("/healthz", healthz),
        Route("/status", status),
        Route("/v1/messages", send_message, methods=["POST"]),
        Route("/deliveries", list_deliveries),
        Route("/requests", request_counters),
        Route("/control/faults", get_faults, methods=["GET"]),
        Route("/control/faults", put_faults, methods=["PUT"]),
        Route("/control/faults", delete_faults, methods=["DELETE"]),
        Route("/control/quota", put_quota, methods=["PUT"]),
        Route("/control/reset", reset, methods=["POST"]),
        Route("/control/inbound", relay_inbound, methods=["POST"]),
        Route("/control/replies", get_replies, methods=["GET"]),
        Route("/control/replies", put_replies, methods=["PUT"]),
        Route("/control/replies", delete_replies, methods=["DELETE"]),
        Route("/control/monitoring", get_monitoring, methods=["GET"]),
        Route("/control/monitoring", put_monitoring, methods=["PUT"]),
        Route("/control/monitoring", delete_monitoring, methods=["DELETE"]),
        Route("/monitoring/events", record_event, methods=["POST"]),
        Route("/monitoring/events", list_events, methods=["GET"]),
        Route("/monitoring/requests", sink_counters),
    ]
    app = Starlette(routes=routes, exception_handlers={ApiError: handle_api_error, HTTPException: _http_error})
    app.state.sandbox = SandboxState(settings=settings)
    app.add_middleware(RequestLog)
    return app


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m opsgate.reference.sandbox --host 127.0.0.1 --port N``."""
    import uvicorn

    parser = argparse.ArgumentParser(
        prog="opsgate.reference.sandbox",
        description="The provider sandbox: SMS/email provider and monitoring sink stand-in.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        settings = settings_from_environ()
    except SettingsError as exc:
        print(f"opsgate.reference.sandbox: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # our own line per request is enough
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )


if __name__ == "__main__":
    main()
