"""A team's own journey through the reference platform, as an example of a locustfile opsgate can judge.

Each user logs in with the service account, then in a weighted mix: sends a message (email, unique recipient),
reads one of its messages back, reads the tenant (admin view, with the service-account session), checks /readyz.
Every request has a stable ``name=`` so an SLO row can judge one of them (``judge: send message``).
``opsgate.slo.recording`` keeps every request's raw time for the verdict.

Environment (the runner passes its own through to Locust):

* ``OPSGATE_TENANT_ID`` — the tenant to send as;
* ``OPSGATE_API_TOKEN`` — that tenant's API token (``Authorization: Bearer``);
* ``OPSGATE_SERVICE_USER``, ``OPSGATE_SERVICE_PASSWORD`` — the service account for ``POST /auth/login``.

Run by opsgate (``locustfile:`` in an SLO row) or by hand:
``OPSGATE_SLO_OUT=/tmp/out locust -f load/reference_journey.py --headless -u 4 -r 4 --run-time 30s --host URL``.
"""

from __future__ import annotations

import os
import uuid
from collections import deque

from locust import FastHttpUser, between, task

from opsgate.slo import recording  # noqa: F401  (raw timings for the verdict)

TENANT_ID = os.environ.get("OPSGATE_TENANT_ID", "")
API_TOKEN = os.environ.get("OPSGATE_API_TOKEN", "")
SERVICE_USER = os.environ.get("OPSGATE_SERVICE_USER", "")
SERVICE_PASSWORD = os.environ.get("OPSGATE_SERVICE_PASSWORD", "")
RECENT = 50
"""How many of its own message ids a user remembers to read back."""


class ReferenceJourney(FastHttpUser):
    """One API client of the platform: mostly sending, some reading, a readiness check now and then."""

    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.tenant = {"Authorization": f"Bearer {API_TOKEN}"}
        self.sent: deque[str] = deque(maxlen=RECENT)
        with self.client.post("/auth/login", json={"username": SERVICE_USER, "password": SERVICE_PASSWORD},
                              name="login", catch_response=True) as response:  # fmt: skip
            if response.status_code != 200:
                response.failure(f"login answered {response.status_code}")
                self.admin = {}
                return
            self.admin = {"Authorization": f"Bearer {response.json()['token']}"}

    @task(5)
    def send_message(self) -> None:
        body = {"channel": "email", "to": f"journey-{uuid.uuid4().hex}@example.test", "body": "opsgate journey"}
        with self.client.post(f"/v1/tenants/{TENANT_ID}/messages", json=body, headers=self.tenant,
                              name="send message", catch_response=True) as response:  # fmt: skip
            if response.status_code != 202:
                response.failure(f"send answered {response.status_code}")
                return
            self.sent.append(response.json()["id"])

    @task(3)
    def read_message(self) -> None:
        if not self.sent:
            return  # nothing sent yet: no request, so nothing recorded
        message_id = self.sent[-1]
        self.client.get(f"/v1/messages/{message_id}", headers=self.tenant, name="read message")

    @task(1)
    def read_tenant(self) -> None:
        self.client.get(f"/tenants/{TENANT_ID}", headers=self.admin, name="read tenant")

    @task(1)
    def readyz(self) -> None:
        self.client.get("/readyz", name="readyz")
