"""Synthetic user flows: send → poll until delivered → confirm against ground truth."""

from __future__ import annotations

import time

import httpx
import pytest

from opsgate.config import Target
from opsgate.diagnosis import explain
from opsgate.evidence.recorder import Recorder
from opsgate.evidence.records import CheckRecord
from opsgate.flows import FlowFailed, run_flow
from opsgate.probes.base import ProbeError

pytestmark = pytest.mark.smoke


async def test_flow(flow_name: str, target: Target, evidence: Recorder) -> None:
    """Every step of the flow meets its expectation in order."""
    flow = next(f for f in target.flows if f.name == flow_name)
    record = CheckRecord(id=flow_name, kind="flow", verdict="pass", claim=flow.claim, started_at=time.time(), unit="s")
    async with httpx.AsyncClient() as client:
        try:
            run = await run_flow(client, target, flow)
        except (FlowFailed, ProbeError) as exc:
            record.verdict = "fail"
            record.message = str(exc)
            if flow.diagnose is not None:  # the runbook's diagnosis steps, so the evidence already says why
                record.message += f"; {await explain(client, target, flow.diagnose)}"
        else:
            record.measured = round(run.duration_s, 3)
            record.message = "; ".join(run.steps)
    record.finished_at = time.time()
    evidence.conclude(record)
