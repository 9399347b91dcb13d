"""A client of the reference platform as drills use it: sends, webhooks, and the provider's delivery log."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from opsgate.config import Target


@dataclass
class Reference:
    """The reference platform as a drill talks to it: sends, webhooks, and the provider's delivery log."""

    api: httpx.AsyncClient
    provider: httpx.AsyncClient
    target: Target

    @property
    def tenant_id(self) -> str:
        assert self.target.auth is not None and self.target.auth.tenant_id
        return self.target.auth.tenant_id

    @property
    def tenant_headers(self) -> dict[str, str]:
        assert self.target.auth is not None
        return {"Authorization": f"Bearer {self.target.auth.api_token}"}

    async def send(self, channel: str = "sms", to: str = "+61412345678") -> httpx.Response:
        """One send of the demo tenant (``{uuid}`` in the body keeps each distinct)."""
        body = {"channel": channel, "to": to, "body": f"drill {uuid.uuid4().hex[:8]}"}
        return await self.api.post(f"/v1/tenants/{self.tenant_id}/messages", json=body, headers=self.tenant_headers)

    async def send_accepted(self, count: int, channel: str = "sms") -> list[str]:
        """Send ``count`` messages; every one must be accepted (202). Returns their ids."""
        ids = []
        for _ in range(count):
            response = await self.send(channel)
            assert response.status_code == 202, f"a send was not accepted: {response.status_code} {response.text}"
            ids.append(response.json()["id"])
        return ids

    async def message(self, message_id: str) -> dict[str, Any]:
        response = await self.api.get(f"/v1/messages/{message_id}", headers=self.tenant_headers)
        body: dict[str, Any] = response.json()
        return body

    async def deliveries(self, message_id: str) -> int:
        """How many times the provider recorded ``message_id`` (ground truth, not the platform's word)."""
        response = await self.provider.get("/deliveries", params={"message_id": message_id})
        count: int = response.json()["count"]
        return count

    async def admin_token(self) -> str:
        assert self.target.auth is not None
        body = {"username": self.target.auth.service_user, "password": self.target.auth.service_password}
        response = await self.api.post("/auth/login", json=body)
        token: str = response.json()["token"]
        return token
