"""Diagnosis steps as checks: each step of a runbook's diagnosis ("Check Redis connection") holds on its own."""

from __future__ import annotations

import time

import httpx
import pytest

from opsgate.config import Target
from opsgate.diagnosis import run_step
from opsgate.evidence.recorder import Recorder
from opsgate.evidence.records import CheckRecord

pytestmark = pytest.mark.health


async def test_diagnosis(diagnosis_step: str, target: Target, evidence: Recorder) -> None:
    """The step's service answers, datastore pings, or queue is no deeper than its limit."""
    name, step_id = diagnosis_step.split("/", 1)
    step = next(s for s in target.diagnoses[name] if s.id == step_id)
    started = time.time()
    async with httpx.AsyncClient() as client:
        finding = await run_step(client, target, step)
    record = CheckRecord(
        id=diagnosis_step, kind="diagnosis", verdict="pass" if finding.ok else "fail", message=finding.line(),
        measured=finding.measured, threshold=finding.threshold, op=finding.op, unit=finding.unit, claim=step.claim,
        started_at=started, finished_at=time.time(),
    )  # fmt: skip
    evidence.conclude(record)
