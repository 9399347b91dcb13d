"""Metric gates: a probe against a threshold, once or over a window ("p95 < 1.5s for 5 minutes")."""

from __future__ import annotations

import httpx
import pytest

from opsgate.config import Target
from opsgate.evidence.recorder import Recorder
from opsgate.gate_run import run_gate
from opsgate.plugin import OpsgateSession

pytestmark = pytest.mark.health


async def test_gate(gate_name: str, target: Target, evidence: Recorder, opsgate_session: OpsgateSession) -> None:
    """The gate's measured value satisfies its threshold (judged with the run's other gates, in the background)."""
    batch = opsgate_session.gate_batch
    if batch is not None and gate_name in opsgate_session.gate_names:
        record = batch.record(gate_name)  # blocks this loop: nothing else runs on it meanwhile
    else:
        spec = next(g for g in target.gates if g.name == gate_name)
        async with httpx.AsyncClient() as client:
            record = await run_gate(client, target, spec)
    evidence.conclude(record)
