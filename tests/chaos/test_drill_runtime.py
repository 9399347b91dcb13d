"""How a drill's ending becomes its verdict, and that its faults are rolled back on every one of them.

The fault here is a command control on a state file (``replicas``: ``3`` healthy, ``0`` stopped),
like ``kubectl scale`` on staging: real shell commands, no platform needed.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from opsgate.config import CommandControl, Target, parse_target
from opsgate.drills.drill import Drill, DrillFailed, DrillNotPassed, Observation
from opsgate.faults.actions import CommandFault
from opsgate.faults.journal import Journal, replay

TARGET = parse_target("name: unit\nenvironment: staging\nprovider: external\n")


def replicas(tmp_path: Path, stop: str = "echo 0 > {state}") -> tuple[Path, CommandFault]:
    state = tmp_path / "replicas"
    state.write_text("3\n")
    control = CommandControl(kind="command", read=f"cat {state}", stop=stop.format(state=state),
                             start=f"echo {{prior}} > {state}")  # fmt: skip
    return state, CommandFault("worker", control)


def new_drill(tmp_path: Path, target: Target = TARGET, timeout_s: float = 30.0) -> tuple[Drill, list[Drill]]:
    finished: list[Drill] = []
    journal = Journal.create(tmp_path / "journal")
    return Drill("unit-drill", target, journal, timeout_s=timeout_s, on_finish=finished.append), finished


async def test_a_passing_drill_rolls_back_and_keeps_its_timeline(tmp_path: Path) -> None:
    state, fault = replicas(tmp_path)
    drill, finished = new_drill(tmp_path)
    async with drill.running(), drill.fault(fault):
        assert state.read_text().strip() == "0"
        await drill.expect("stopped", lambda: _is(state, "0"))
    assert state.read_text().strip() == "3"
    assert finished == [drill] and drill.verdict == "pass"
    steps = [event.what for event in drill.timeline]
    assert steps == ["drill started", "fault applied", "fault verified", "stopped", "rollback applied", "drill pass"]
    assert replay(drill.journal.path, stop_processes=False) == []  # nothing pending


async def test_a_fault_that_does_not_take_effect_is_inconclusive_never_passed(tmp_path: Path) -> None:
    state, fault = replicas(tmp_path, stop="true")  # a stop command that does nothing
    drill, _ = new_drill(tmp_path)
    with pytest.raises(DrillNotPassed, match="inconclusive: worker: still '3'"):
        async with drill.running(), drill.fault(fault):
            pytest.fail("the body must not run on a fault that did not take effect")
    assert drill.verdict == "inconclusive" and state.read_text().strip() == "3"


async def test_a_broken_expectation_fails_the_drill_naming_it_and_rolls_back(tmp_path: Path) -> None:
    state, fault = replicas(tmp_path)
    drill, _ = new_drill(tmp_path)
    with pytest.raises(DrillNotPassed, match=r"fail: backlog drains: not met within 0\.3s"):
        async with drill.running(), drill.fault(fault):
            await drill.expect("backlog drains", lambda: _is(state, "never"), within_s=0.3, every_s=0.1)
    assert drill.verdict == "fail" and state.read_text().strip() == "3"


async def test_an_abort_condition_rolls_back_at_once_and_marks_the_drill_aborted(tmp_path: Path) -> None:
    state, fault = replicas(tmp_path)
    drill, _ = new_drill(tmp_path)
    with pytest.raises(DrillNotPassed, match="aborted: abort condition: real tenants' error ratio: 12% > 5%"):
        async with drill.running(), drill.fault(fault):

            async def error_ratio() -> Observation:
                return Observation(False, 0.12, "12% > 5%")

            drill.abort_when("real tenants' error ratio", error_ratio, every_s=0.1)
            await asyncio.sleep(10)  # the abort cancels this long before
    assert drill.verdict == "aborted" and state.read_text().strip() == "3"
    assert drill.finished_at - drill.started_at < 5


async def test_the_drill_timeout_rolls_back_and_is_an_error(tmp_path: Path) -> None:
    state, fault = replicas(tmp_path)
    drill, _ = new_drill(tmp_path, timeout_s=0.5)
    with pytest.raises(DrillNotPassed, match=r"error: the drill did not finish within its timeout of 0\.5s"):
        async with drill.running(), drill.fault(fault):
            await asyncio.sleep(10)
    assert drill.verdict == "error" and state.read_text().strip() == "3"


async def test_an_exception_in_the_body_is_an_error_and_rolls_back(tmp_path: Path) -> None:
    state, fault = replicas(tmp_path)
    drill, _ = new_drill(tmp_path)
    with pytest.raises(DrillNotPassed, match="error: RuntimeError: probe crashed"):
        async with drill.running(), drill.fault(fault):
            raise RuntimeError("probe crashed")
    assert state.read_text().strip() == "3"


async def test_a_steady_state_that_does_not_hold_fails_before_any_fault(tmp_path: Path) -> None:
    api = "services:\n  api:\n    url: http://127.0.0.1:9\n    health: [{path: /readyz}]\n"
    target = parse_target("name: unit\nenvironment: staging\n" + api)
    state, fault = replicas(tmp_path)
    drill, _ = new_drill(tmp_path, target)
    with pytest.raises(DrillNotPassed, match="steady state before the fault: connection refused"):
        async with drill.running():
            await drill.steady_state()
            async with drill.fault(fault):
                pass
    assert state.read_text().strip() == "3" and "fault applied" not in [e.what for e in drill.timeline]


async def _is(state: Path, wanted: str) -> Observation:
    value = state.read_text().strip()
    if value == "never":
        raise DrillFailed("unreachable")
    return Observation(value == wanted, float(value) if value.isdigit() else None, f"replicas {value}")


async def test_a_watch_whose_probe_swallows_the_cancellation_stops_when_the_drill_ends(tmp_path: Path) -> None:
    """redis-py's asyncio client can swallow a cancellation mid-command (redis/redis-py#2028): the watch must still
    stop when the drill ends, not sample on until the drill's timeout."""
    probed = asyncio.Event()

    async def swallowing_probe() -> float:
        probed.set()
        with contextlib.suppress(asyncio.CancelledError):  # as the library does: the cancellation is lost
            await asyncio.sleep(0.05)
        return 1.0

    drill, finished = new_drill(tmp_path, timeout_s=2.0)  # an unstoppable watch: 200 samples in 10 s
    async with drill.running():
        drill.watch("swallowing", swallowing_probe, every_s=0.01)
        await probed.wait()  # the drill ends while the probe is in flight: the cancel lands inside it
    assert finished == [drill] and drill.verdict == "pass"
    assert len(drill.series.get("swallowing", [])) <= 1, drill.series
