"""Metric gates: a probe against a threshold, once or over a window ("p95 < 1.5s for 5 minutes")."""

from __future__ import annotations

import httpx
import pytest

from opsgate.config import Target
from opsgate.evidence.recorder import Recorder
from opsgate.gate_run import run_gate

pytestmark = pytest.mark.health


async def test_gate(gate_name: str, target: Target, evidence: Recorder) -> None:
    """The gate's measured value satisfies its threshold."""
    spec = next(g for g in target.gates if g.name == gate_name)
    async with httpx.AsyncClient() as client:
        record = await run_gate(client, target, spec)
    evidence.conclude(record)
