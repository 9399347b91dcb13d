"""opsgate's open-model locustfile: one request sent on a fixed schedule, timed from its *intended* send time.

Run by :mod:`opsgate.slo.runner` as a child process (never imported by pytest: Locust gevent-patches its
importer). The plan comes in ``OPSGATE_SLO_SPEC`` (JSON: method, path, headers, body, status,
rate_per_s, duration_s, max_in_flight); each process writes its raw timings to
``$OPSGATE_SLO_OUT/timings-<pid>.json``. A stalled server shows up in the percentiles (no coordinated
omission): a request waits for its slot, never for the previous answer. A slot that finds
``max_in_flight`` requests still open is skipped and counted.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import gevent
from gevent.pool import Pool
from locust import FastHttpUser, constant, task

SPEC: dict[str, Any] = json.loads(os.environ.get("OPSGATE_SLO_SPEC") or "{}")
OUT = os.environ.get("OPSGATE_SLO_OUT", ".")
DRAIN_S = 30.0


class OpenModelUser(FastHttpUser):
    """A single dispatcher: requests are greenlets started at their planned times."""

    wait_time = constant(0)
    concurrency = int(SPEC.get("max_in_flight", 200))

    @task
    def dispatch(self) -> None:
        rate = float(SPEC["rate_per_s"])
        planned = int(rate * float(SPEC["duration_s"]))
        pool = Pool(self.concurrency)
        timings: list[tuple[float, float, bool]] = []
        skipped = 0
        start = time.monotonic()
        for index in range(planned):
            intended = start + index / rate
            delay = intended - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            if pool.full():
                skipped += 1
                continue
            pool.spawn(self._one, index / rate, intended, timings)
        pool.join(timeout=DRAIN_S)
        elapsed = time.monotonic() - start
        with open(os.path.join(OUT, f"timings-{os.getpid()}.json"), "w") as fh:
            json.dump({"planned": planned, "skipped": skipped, "elapsed_s": elapsed, "timings": timings}, fh)
        if self.environment.runner is not None:
            self.environment.runner.quit()

    def _one(self, offset_s: float, intended: float, timings: list[tuple[float, float, bool]]) -> None:
        body = SPEC.get("body")
        with self.client.request(
            SPEC.get("method", "GET"), SPEC["path"], headers=SPEC.get("headers") or {},
            data=json.dumps(body) if body is not None else None, catch_response=True, name=SPEC.get("name"),
        ) as response:  # fmt: skip
            ok = response.status_code == int(SPEC.get("status", 200))
            if not ok:
                response.failure(f"status {response.status_code}")
        timings.append((offset_s, (time.monotonic() - intended) * 1000, ok))
