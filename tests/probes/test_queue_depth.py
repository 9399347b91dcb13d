"""Queue depth against the real libraries: BullMQ, Bull (Node), Celery and RQ write the jobs, the probe counts them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import kombu
import pytest
import redis
import redis.asyncio
import rq
from bullmq import Job, Queue, Worker
from celery import Celery
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from helpers import poll
from opsgate.environments.ports import PortAllocator
from opsgate.environments.process import ManagedProcess
from opsgate.probes.base import ProbeError
from opsgate.probes.queues import LAYOUTS, QueueDepth, queue_depth
from opsgate.waits import wait_until

Clients = tuple[redis.asyncio.Redis, redis.asyncio.Redis]
WAITING = 4
DELAY = timedelta(minutes=10)  # far beyond the test: delayed jobs stay delayed
HELPER_TIMEOUT_S = 20.0


async def depth(clients: Clients, layout: Any, queue: str, **kwargs: Any) -> QueueDepth:
    """The probe's answer, read through both a bytes and a str client, which must agree."""
    raw, text = clients
    from_bytes = await queue_depth(raw, layout, queue, **kwargs)
    from_text = await queue_depth(text, layout, queue, **kwargs)
    assert dataclasses.replace(from_bytes, at=0.0) == dataclasses.replace(from_text, at=0.0)
    assert abs(from_bytes.at - time.time()) < 5.0
    return from_bytes


def states(d: QueueDepth) -> tuple[int | None, ...]:
    return d.waiting, d.active, d.delayed, d.failed


async def test_bullmq_agrees_with_get_job_counts(redis_url: str, clients: Clients) -> None:
    name = "billing-webhooks"
    queue = Queue(name, {"connection": redis_url})
    release = asyncio.Event()
    holding = asyncio.Event()

    async def process(job: Job, token: str) -> None:
        if job.data["kind"] == "fail":
            raise RuntimeError("planned failure")
        holding.set()
        await release.wait()

    worker = Worker(name, process, {"connection": redis_url, "concurrency": 1})
    try:
        await queue.add("fail", {"kind": "fail"})
        await queue.add("hold", {"kind": "hold"})
        await asyncio.wait_for(holding.wait(), timeout=10.0)
        await poll(queue.getJobCounts, lambda c: c["failed"] == 1, what="the failing BullMQ job to fail", timeout_s=10)
        for i in range(WAITING):
            await queue.add("wait", {"kind": "wait", "i": i})
        await queue.add("prioritized", {"kind": "wait"}, {"priority": 3})
        await queue.add("delayed", {"kind": "wait"}, {"delay": int(DELAY.total_seconds() * 1000)})

        counts = await queue.getJobCounts()
        measured = await depth(clients, "bullmq", name)
        assert counts == {
            "waiting": WAITING,
            "prioritized": 1,
            "active": 1,
            "delayed": 1,
            "failed": 1,
            "completed": 0,
            "waiting-children": 0,
        }
        assert states(measured) == (
            counts["waiting"] + counts["prioritized"],
            counts["active"],
            counts["delayed"],
            counts["failed"],
        )
        assert measured.keys[0] == f"bull:{name}:wait"
        assert f"bull:{name}:prioritized" in measured.keys

        await queue.pause()  # jobs of a paused queue are still waiting (in :wait now, in :paused before)
        assert await queue.isPaused()
        assert states(await depth(clients, "bullmq", name)) == states(measured)
    finally:
        await worker.close(force=True)
        release.set()
        await queue.close()


async def test_bull_agrees_with_get_job_counts(bull_helper: Path, redis_url: str, clients: Clients) -> None:
    name = "send-messages"
    helper = await asyncio.create_subprocess_exec(
        "node",
        str(bull_helper),
        redis_url,
        name,
        str(WAITING),
        cwd=bull_helper.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert helper.stdin is not None and helper.stdout is not None and helper.stderr is not None
    try:
        line = await asyncio.wait_for(helper.stdout.readline(), timeout=HELPER_TIMEOUT_S)
        if not line:
            error = await asyncio.wait_for(helper.stderr.read(), timeout=5.0)
            pytest.fail(f"{bull_helper.name} exited ({await helper.wait()}) without counts:\n{error.decode()}")
        counts = json.loads(line)["counts"]
        measured = await depth(clients, "bull", name)
    finally:
        helper.stdin.close()
        try:
            await asyncio.wait_for(helper.wait(), timeout=10.0)
        except TimeoutError:
            helper.kill()
            await helper.wait()
    assert helper.returncode == 0, (await helper.stderr.read()).decode()

    # Bull keeps a prioritized job in :wait too (:priority is only its index): WAITING + 1, counted once.
    assert counts == {"waiting": WAITING + 1, "active": 1, "completed": 0, "failed": 1, "delayed": 1, "paused": 0}
    assert states(measured) == (
        counts["waiting"] + counts["paused"],
        counts["active"],
        counts["delayed"],
        counts["failed"],
    )
    assert measured.keys == tuple(f"bull:{name}:{s}" for s in ("wait", "paused", "active", "delayed", "failed"))


async def test_celery_counts_waiting_reserved_and_eta_tasks_per_queue(redis_url: str, clients: Clients) -> None:
    app = Celery("opsgate-probe-test", broker=redis_url)
    # "sms" is created on the fly (anonymous exchange); "billing" is routed through a topic exchange.
    billing = kombu.Queue("billing", kombu.Exchange("jobs", type="topic"), routing_key="billing.#")
    app.conf.task_queues = [billing]
    try:
        app.send_task("notify.sms", queue="sms", countdown=DELAY.total_seconds())
        app.send_task("notify.sms", queue="sms")
        app.send_task("billing.charge", queue="billing", routing_key="billing.invoice")
        with app.connection_for_read() as conn:
            reserved: list[kombu.Message] = []
            queues = [kombu.Queue("sms"), billing]
            # Like a worker that has fetched three tasks and not acknowledged them yet.
            consumer = kombu.Consumer(
                conn.default_channel,
                queues=queues,
                callbacks=[lambda body, message: reserved.append(message)],
                no_ack=False,
                prefetch_count=3,
                accept=["json"],
            )
            with consumer:
                for _ in range(20):
                    if len(reserved) == 3:
                        break
                    with contextlib.suppress(TimeoutError):
                        conn.drain_events(timeout=0.5)
                assert len(reserved) == 3, f"consumed {len(reserved)} of 3 messages"

                for i in range(WAITING):
                    app.send_task("notify.sms", args=[i], queue="sms")
                app.send_task("notify.sms", queue="sms", priority=5)  # kombu's priority sub-queue sms\x06\x163
                app.send_task("billing.charge", queue="billing", routing_key="billing.refund")

                sms = await depth(clients, "celery", "sms")
                bill = await depth(clients, "celery", "billing")
                other = await depth(clients, "celery", "other")
                kombu_sizes = {
                    q: conn.default_channel.queue_declare(q, passive=True).message_count for q in ("sms", "billing")
                }
                # Leaving the block closes the channel, and kombu puts unacknowledged messages back.
    finally:
        app.close()

    assert kombu_sizes == {"sms": WAITING + 1, "billing": 1}
    assert states(sms) == (WAITING + 1, 1, 1, None)
    assert states(bill) == (1, 1, 0, None)
    assert states(other) == (0, 0, 0, None)
    assert "sms\x06\x163" in sms.keys and "unacked" in sms.keys
    assert "_kombu.binding.jobs" in bill.keys  # the topic exchange's table, read to attribute its message


async def test_celery_global_keyprefix(redis_url: str, clients: Clients) -> None:
    app = Celery("opsgate-probe-test", broker=redis_url)
    app.conf.broker_transport_options = {"global_keyprefix": "tenant-a:"}
    try:
        for i in range(3):
            app.send_task("notify.sms", args=[i], queue="sms")
    finally:
        app.close()
    assert states(await depth(clients, "celery", "sms", prefix="tenant-a:")) == (3, 0, 0, None)
    assert states(await depth(clients, "celery", "sms")) == (0, 0, 0, None)


async def test_rq_agrees_with_its_registries(redis_url: str, clients: Clients, tmp_path: Path) -> None:
    connection = redis.Redis.from_url(redis_url)
    queue = rq.Queue("reports", connection=connection)
    queue.enqueue("operator.truediv", 1, 0)  # raises ZeroDivisionError
    hold = queue.enqueue("time.sleep", 60)  # stays active until the worker is killed
    argv = [sys.executable, "-m", "rq.cli", "worker", "--worker-class", "rq.worker.SimpleWorker"]
    argv += ["--url", redis_url, "reports"]
    worker = ManagedProcess("rq-worker", argv, dict(os.environ), tmp_path / "rq-worker.log", stop_signal=signal.SIGKILL)
    worker.start()
    try:
        wait_until(
            lambda: True if queue.failed_job_registry.count == 1 and queue.started_job_registry.count == 1 else None,
            what="rq's SimpleWorker to fail one job and start the next",
            timeout_s=15.0,
            interval_s=0.1,
            log=worker.log_path,
            give_up=lambda: None if worker.is_running() else f"rq worker exited ({worker.exit_code()})",
        )
        for i in range(WAITING):
            queue.enqueue("time.sleep", i)
        queue.enqueue_in(DELAY, "time.sleep", 0)
        queue.enqueue("time.sleep", 0, depends_on=hold)  # deferred: waits on a job, not on time; not counted

        measured = await depth(clients, "rq", "reports")
        expected = (
            queue.count,
            queue.started_job_registry.count,
            queue.scheduled_job_registry.count,
            queue.failed_job_registry.count,
        )
        assert queue.deferred_job_registry.count == 1
    finally:
        worker.stop()
        connection.close()
    assert not worker.is_running()
    assert expected == (WAITING, 1, 1, 1)
    assert states(measured) == expected
    assert measured.keys == ("rq:queue:reports", "rq:wip:reports", "rq:scheduled:reports", "rq:failed:reports")


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_empty_queue_is_all_zeros(layout: str, clients: Clients) -> None:
    measured = await depth(clients, layout, "nothing-here")
    failed = None if layout == "celery" else 0
    assert (measured.layout, measured.queue) == (layout, "nothing-here")
    assert states(measured) == (0, 0, 0, failed)
    assert measured.keys


async def test_unknown_layout_names_the_known_ones(clients: Clients) -> None:
    with pytest.raises(ValueError, match=r"'sidekiq'.*bullmq, bull, celery, rq"):
        await queue_depth(clients[0], "sidekiq", "default")  # type: ignore[arg-type]


async def test_unreachable_redis_is_a_probe_error() -> None:
    port = PortAllocator().pick()  # free: nothing listens there
    client = redis.asyncio.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(ProbeError, match=f"rq queue 'default' from Redis at 127.0.0.1:{port}/0"):
            await queue_depth(client, "rq", "default")
    finally:
        await client.aclose()
