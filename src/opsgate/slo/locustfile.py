"""opsgate's locustfile: one request, open model (fixed schedule) or closed model (users back to back).

Run by :mod:`opsgate.slo.runner` as a child process (never imported by pytest: Locust gevent-patches its
importer). The plan comes in ``OPSGATE_SLO_SPEC`` (JSON: method, path, headers, body, status, rate_per_s,
duration_s, ramp_s, model, users, max_in_flight, name, sign_header, sign_secret); raw timings go through
:mod:`opsgate.slo.recording` (``$OPSGATE_SLO_OUT/timings-<pid>.json``, or shipped to the master).

* ``OpenModelUser``: a dispatcher sends at the planned times (a linear ramp over ``ramp_s``, then ``rate_per_s``)
  and times each request from its *intended* send time, so a stalled server shows in the percentiles (no
  coordinated omission). A slot that finds ``max_in_flight`` requests still open is skipped and counted. On a
  worker it sends its share: ``rate_per_s`` / the master's ``--expect-workers`` (run with ``-u`` = workers).
* ``ClosedModelUser``: each user sends, waits for the answer, and is paced by ``constant_throughput(rate_per_s /
  users)`` (unpaced when the rate is 0); latency from the *actual* send, as Locust measures it.

``{uuid}`` in the path, header values and strings of the body becomes a fresh uuid4 hex per request; with
``sign_header`` and ``sign_secret`` the JSON body is signed (HMAC-SHA256) into that header.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import gevent
from gevent.pool import Pool
from locust import FastHttpUser, constant, constant_throughput, task
from locust.exception import StopUser
from locust.runners import WorkerRunner

from opsgate.reference.signing import sign
from opsgate.slo import recording
from opsgate.slo.runner import fill_uuids, send_offsets

SPEC: dict[str, Any] = json.loads(os.environ.get("OPSGATE_SLO_SPEC") or "{}")
MODEL = SPEC.get("model", "open")
NAME = SPEC.get("name") or SPEC.get("path")
RATE = float(SPEC.get("rate_per_s") or 0.0)
DRAIN_S = 30.0
recording.RECORDER.from_events = MODEL != "open"  # the open model times from the intended send, itself


def prepared_request() -> tuple[str, dict[str, str], str | None]:
    """Path, headers and body of one request: ``{uuid}`` filled, the body JSON-encoded and signed if asked."""
    path: str = fill_uuids(SPEC["path"])
    headers: dict[str, str] = fill_uuids(dict(SPEC.get("headers") or {}))
    body = SPEC.get("body")
    data = json.dumps(fill_uuids(body)) if body is not None else None  # ASCII: its bytes are what is signed
    if data is not None and not any(key.lower() == "content-type" for key in headers):
        headers["Content-Type"] = "application/json"
    if SPEC.get("sign_header") and SPEC.get("sign_secret"):
        headers[SPEC["sign_header"]] = sign(SPEC["sign_secret"], (data or "").encode())
    return path, headers, data


def send_one(user: FastHttpUser) -> bool:
    """Send the plan's request once; True when it answered the expected status."""
    path, headers, data = prepared_request()
    with user.client.request(SPEC.get("method", "GET"), path, headers=headers, data=data, catch_response=True,
                             name=NAME) as response:  # fmt: skip
        ok = bool(response.status_code == int(SPEC.get("status", 200)))
        if not ok:
            response.failure(f"status {response.status_code}")
    return ok


class OpenModelUser(FastHttpUser):
    """A single dispatcher: requests are greenlets started at their planned times."""

    wait_time = constant(0)
    concurrency = int(SPEC.get("max_in_flight", 200))

    @task
    def dispatch(self) -> None:
        runner = self.environment.runner
        share = 1
        if isinstance(runner, WorkerRunner) and self.environment.parsed_options is not None:
            share = max(1, int(self.environment.parsed_options.expect_workers))
        rate = RATE / share
        duration = float(SPEC["duration_s"])
        offsets = send_offsets(rate, duration, float(SPEC.get("ramp_s") or 0.0))
        recorder = recording.RECORDER
        recorder.planned = len(offsets)
        pool = Pool(self.concurrency)
        start = time.monotonic()
        for offset in offsets:
            delay = start + offset - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            if pool.full():
                recorder.skipped += 1
                continue
            pool.spawn(self._one, offset, start + offset)
        sending_s = max(duration, time.monotonic() - start)  # longer only when the dispatcher fell behind
        pool.join(timeout=DRAIN_S)  # the drain is not part of the sending window (the rate is judged on that)
        recorder.finish(elapsed_s=sending_s)
        if isinstance(runner, WorkerRunner):
            raise StopUser()  # the master ends the run once every worker has sent its final chunk
        if runner is not None:
            runner.quit()

    def _one(self, offset_s: float, intended: float) -> None:
        ok = send_one(self)
        recording.RECORDER.add(offset_s, (time.monotonic() - intended) * 1000, ok, NAME)


class ClosedModelUser(FastHttpUser):
    """One of ``users`` users sending back to back; recorded from Locust's request event (actual send)."""

    wait_time = constant_throughput(RATE / int(SPEC.get("users") or 1)) if RATE > 0 else constant(0)

    @task
    def send(self) -> None:
        send_one(self)
