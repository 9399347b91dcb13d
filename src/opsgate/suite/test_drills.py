"""Drills declared in the target file's ``drills:`` section: fault, expectations, rollback, reconciliation."""

from __future__ import annotations

import pytest

from opsgate.config import Target
from opsgate.drills.declared import run_declared
from opsgate.drills.drill import Drill
from opsgate.plugin import OpsgateSession

pytestmark = pytest.mark.drill


async def test_drill(drill_name: str, target: Target, drill: Drill, opsgate_session: OpsgateSession) -> None:
    """The declared drill holds: every expectation during and after the fault, nothing lost."""
    spec = next(d for d in target.drills if d.name == drill_name)
    drill.claim, drill.objective = spec.claim, spec.objective
    drill.timeout_s = target.scaled(spec.timeout, floor_s=60.0)
    async with drill.running():
        await run_declared(drill, spec, opsgate_session.provisioned().environment)
