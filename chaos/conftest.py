"""Fixtures of the reference platform's Python drills: its API, the provider sandbox, the ground truth."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from opsgate.config import Target
from opsgate.reference.client import Reference


@pytest.fixture
async def reference(target: Target) -> AsyncIterator[Reference]:
    """Clients of the reference platform's api and provider sandbox."""
    async with (
        httpx.AsyncClient(base_url=target.services["api"].url, timeout=10) as api,
        httpx.AsyncClient(base_url=target.services["provider"].url, timeout=10) as provider,
    ):
        yield Reference(api, provider, target)
