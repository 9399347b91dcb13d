"""FastHttpUser plus raw-time recording, for bench/load_throughput.py: the cost of keeping every response time.

Same user as bench/locust_fast.py; a request-event listener appends every response_time (ms, float) to a list,
written as JSON to ``$BENCH_TIMINGS_OUT`` when the test stops.
"""

from __future__ import annotations

import json
import os
from typing import Any

from locust import FastHttpUser, constant, events, task

PATH = os.environ.get("BENCH_PATH", "/")
OUT = os.environ.get("BENCH_TIMINGS_OUT", "timings.json")
TIMES: list[float] = []


@events.request.add_listener
def record(response_time: float, exception: BaseException | None, **_: Any) -> None:
    TIMES.append(response_time)


@events.test_stop.add_listener
def write(**_: Any) -> None:
    with open(OUT, "w") as fh:
        json.dump(TIMES, fh)


class FastRecorded(FastHttpUser):
    wait_time = constant(0)

    @task
    def get(self) -> None:
        self.client.get(PATH)
