"""Plain Locust FastHttpUser for bench/load_throughput.py: closed model, wait 0, GET ``$BENCH_PATH``."""

from __future__ import annotations

import os

from locust import FastHttpUser, constant, task

PATH = os.environ.get("BENCH_PATH", "/")


class Fast(FastHttpUser):
    wait_time = constant(0)

    @task
    def get(self) -> None:
        self.client.get(PATH)
