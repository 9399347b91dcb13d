"""Queue depth read from the Redis keys of four job libraries: BullMQ, Bull, Celery (kombu) and RQ."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, get_args

import redis.asyncio
import redis.exceptions

from opsgate.probes.base import ProbeError

Layout = Literal["bullmq", "bull", "celery", "rq"]
LAYOUTS: tuple[str, ...] = get_args(Layout)
DEFAULT_PREFIXES: dict[str, str] = {"bullmq": "bull", "bull": "bull", "celery": "", "rq": "rq"}

# BullMQ before v5 left a marker entry ("0:<timestamp>") at the tail of the wait list; its getCounts skips it.
BULLMQ_MARKER = "0:"
# kombu's Redis transport (kombu/transport/redis.py, Channel): the separator of priority sub-queues and of
# binding members, the priority steps that get their own list (step 0 is the queue's own key), and its keys.
KOMBU_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (3, 6, 9)
KOMBU_UNACKED = "unacked"
KOMBU_BINDING = "_kombu.binding.{exchange}"


class Command(NamedTuple):
    """One single-key read command of a probe's pipeline."""

    name: str
    key: str
    args: tuple[int, ...] = ()


@dataclass(frozen=True)
class QueueDepth:
    """Jobs in each state of one queue at one instant (unix seconds); None where the layout has no such state."""

    layout: str
    queue: str
    waiting: int
    active: int | None
    delayed: int | None
    failed: int | None
    at: float
    keys: tuple[str, ...]  # the Redis keys read, for evidence ("bull:send-messages:wait", ...)


@dataclass(frozen=True)
class _Counts:
    waiting: int
    active: int | None
    delayed: int | None
    failed: int | None
    keys: tuple[str, ...]


async def queue_depth(
    client: redis.asyncio.Redis, layout: Layout, queue: str, *, prefix: str | None = None
) -> QueueDepth:
    """Count the jobs of ``queue`` per state, as the job library ``layout`` keeps them in Redis; read-only.

    ``prefix`` is the library's key prefix (BullMQ/Bull ``prefix``, kombu ``global_keyprefix``, rq
    ``RQ_KEY_PREFIX``); the default is the library's own. The keys are read in one pipeline (Celery needs a
    second one only when unacknowledged messages went through named exchanges, to read their bindings), so the
    counts are not a transaction but are taken within one round trip; ``at`` is the midpoint of the read.
    Works with clients made with ``decode_responses`` True or False. Raises :class:`ProbeError` when Redis
    cannot be read.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown queue layout {layout!r}; expected one of: {', '.join(LAYOUTS)}")
    key_prefix = DEFAULT_PREFIXES[layout] if prefix is None else prefix
    started = time.time()
    try:
        counts = await _READERS[layout](client, queue, key_prefix)
    except redis.exceptions.RedisError as exc:
        raise ProbeError(
            f"could not read the depth of {layout} queue {queue!r} from Redis at {_address(client)}: {exc}"
        ) from exc
    at = (started + time.time()) / 2
    return QueueDepth(layout, queue, counts.waiting, counts.active, counts.delayed, counts.failed, at, counts.keys)


async def _read(client: redis.asyncio.Redis, commands: Sequence[Command]) -> list[Any]:
    """Run single-key read commands in one non-transactional pipeline (one round trip)."""
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(command.name, command.key, *command.args)
    return list(await pipe.execute())


def _keys(commands: Iterable[Command]) -> tuple[str, ...]:
    """The distinct keys of ``commands`` in first-read order."""
    return tuple(dict.fromkeys(command.key for command in commands))


def _text(value: bytes | str) -> str:
    """A reply as text, whether the client decodes responses or not."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


async def _bullmq(client: redis.asyncio.Redis, queue: str, prefix: str) -> _Counts:
    """BullMQ (Node v4+, Python): wait/paused lists plus the prioritized zset are waiting.

    Since BullMQ v4 prioritized jobs live only in ``:prioritized`` (not in ``:wait``), so the two add up. A paused
    queue keeps its jobs in ``:wait`` (flag in ``:meta``); older versions renamed it to ``:paused``, still counted.
    ``waiting-children`` (parents in flows) is not counted.
    """
    base = f"{prefix}:{queue}:"
    commands: list[Command] = [
        Command("LLEN", base + "wait"),
        Command("LINDEX", base + "wait", (-1,)),
        Command("LLEN", base + "paused"),
        Command("LINDEX", base + "paused", (-1,)),
        Command("ZCARD", base + "prioritized"),
        Command("LLEN", base + "active"),
        Command("ZCARD", base + "delayed"),
        Command("ZCARD", base + "failed"),
    ]
    wait, wait_tail, paused, paused_tail, prioritized, active, delayed, failed = await _read(client, commands)
    waiting = _without_marker(wait, wait_tail) + _without_marker(paused, paused_tail) + prioritized
    return _Counts(waiting, active, delayed, failed, _keys(commands))


def _without_marker(length: int, tail: bytes | str | None) -> int:
    """A BullMQ list's length less a pre-v5 marker entry at its tail (what its getCounts script reports)."""
    if tail is not None and _text(tail).startswith(BULLMQ_MARKER):
        return max(0, length - 1)
    return length


async def _bull(client: redis.asyncio.Redis, queue: str, prefix: str) -> _Counts:
    """Bull v3/v4: wait/paused lists are waiting; ``:priority`` is only an index of jobs already in them."""
    base = f"{prefix}:{queue}:"
    commands: list[Command] = [
        Command("LLEN", base + "wait"),
        Command("LLEN", base + "paused"),
        Command("LLEN", base + "active"),
        Command("ZCARD", base + "delayed"),
        Command("ZCARD", base + "failed"),
    ]
    wait, paused, active, delayed, failed = await _read(client, commands)
    return _Counts(wait + paused, active, delayed, failed, _keys(commands))


async def _rq(client: redis.asyncio.Redis, queue: str, prefix: str) -> _Counts:
    """RQ: the queue list, and the StartedJobRegistry, ScheduledJobRegistry and FailedJobRegistry zsets.

    Key names as rq 3.0 writes them (``rq/queue.py``, ``rq/registry.py``), unchanged since rq 1.2 added the
    ScheduledJobRegistry (1.0 for ``failed``). Not counted: ``deferred`` (waiting on another job, not on time)
    and the transient ``{queue}:intermediate`` list (a job being handed to a worker, soon in ``wip``).
    Registries are counted as stored: rq's own ``.count`` first runs a cleanup, which this read-only probe does not.
    """
    commands: list[Command] = [
        Command("LLEN", f"{prefix}:queue:{queue}"),
        Command("ZCARD", f"{prefix}:wip:{queue}"),
        Command("ZCARD", f"{prefix}:scheduled:{queue}"),
        Command("ZCARD", f"{prefix}:failed:{queue}"),
    ]
    waiting, active, delayed, failed = await _read(client, commands)
    return _Counts(waiting, active, delayed, failed, _keys(commands))


async def _celery(client: redis.asyncio.Redis, queue: str, prefix: str) -> _Counts:
    """Celery on kombu's Redis transport.

    waiting: the queue's list plus its priority sub-queues ``{queue}\\x06\\x16{3,6,9}``.
    active: messages of this queue delivered to a consumer and not acknowledged (kombu's ``unacked`` hash,
    shared by all queues, attributed through each message's exchange and routing key). These are tasks a worker
    has reserved (prefetched) and, with ``acks_late``, running ones; with Celery's default early ack a running
    task is already acknowledged and not counted.
    delayed: those unacknowledged messages whose ``eta`` header (task protocol 2) is still in the future —
    ETA/countdown tasks a worker holds until due. ETA tasks no worker has fetched yet stay in the list and count
    as waiting (telling them apart would mean reading every message).
    failed: None — Celery records failures in the result backend, not in the broker.
    """
    queue_key = prefix + queue
    commands: list[Command] = [Command("LLEN", queue_key)]
    commands += [Command("LLEN", f"{queue_key}{KOMBU_SEP}{step}") for step in KOMBU_PRIORITY_STEPS]
    commands.append(Command("HVALS", prefix + KOMBU_UNACKED))
    *lengths, unacked = await _read(client, commands)

    messages = [m for m in (_kombu_unacked(value) for value in unacked) if m is not None]
    # Celery's automatic queues use the anonymous exchange (routing key == queue); named exchanges route
    # through their binding tables, read in a second round trip only when such messages are unacknowledged.
    exchanges = sorted({exchange for exchange, _, _ in messages if exchange})
    tables: dict[str, list[str]] = {}
    if exchanges:
        bindings = [Command("SMEMBERS", prefix + KOMBU_BINDING.format(exchange=name)) for name in exchanges]
        commands += bindings
        for name, members in zip(exchanges, await _read(client, bindings), strict=True):
            tables[name] = [_text(member) for member in members]

    now = datetime.now(UTC)
    active = delayed = 0
    for exchange, routing_key, eta in messages:
        if queue not in _kombu_route(tables.get(exchange, []), exchange, routing_key):
            continue
        if eta is not None and eta > now:
            delayed += 1
        else:
            active += 1
    return _Counts(sum(lengths), active, delayed, None, _keys(commands))


def _kombu_unacked(value: bytes | str) -> tuple[str, str, datetime | None] | None:
    """(exchange, routing key, eta) of one ``unacked`` entry — kombu stores ``[message, exchange, routing_key]``.

    None when the entry is not in that shape (it cannot be attributed to a queue).
    """
    try:
        message, exchange, routing_key = json.loads(_text(value))
    except (ValueError, TypeError):
        return None
    headers = message.get("headers") if isinstance(message, dict) else None
    eta = headers.get("eta") if isinstance(headers, dict) else None
    return str(exchange or ""), str(routing_key or ""), _parse_eta(eta)


def _parse_eta(value: object) -> datetime | None:
    """Celery's ISO 8601 ``eta`` header as an aware datetime (naive ones taken as UTC), else None."""
    if not isinstance(value, str):
        return None
    try:
        eta = datetime.fromisoformat(value)
    except ValueError:
        return None
    return eta if eta.tzinfo is not None else eta.replace(tzinfo=UTC)


def _kombu_route(table: Iterable[str], exchange: str, routing_key: str) -> set[str]:
    """The queues kombu delivers ``routing_key`` to through ``exchange``'s binding table.

    Members are ``routing_key SEP pattern SEP queue``: a topic binding carries a regex pattern, a direct one
    none (the routing key must then be equal). The anonymous exchange routes to the queue named by the key.
    """
    if not exchange:
        return {routing_key}
    queues: set[str] = set()
    for member in table:
        parts = member.split(KOMBU_SEP)
        if len(parts) != 3:
            continue
        binding_key, pattern, bound = parts
        try:
            matched = re.match(pattern, routing_key) is not None if pattern else binding_key == routing_key
        except re.error:
            matched = False
        if matched:
            queues.add(bound)
    return queues


def _address(client: redis.asyncio.Redis) -> str:
    """Where ``client`` connects (host:port/db or unix socket), for error messages."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


_READERS: dict[str, Callable[[redis.asyncio.Redis, str, str], Awaitable[_Counts]]] = {
    "bullmq": _bullmq,
    "bull": _bull,
    "celery": _celery,
    "rq": _rq,
}
