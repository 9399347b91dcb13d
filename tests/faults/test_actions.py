"""Faults are journalled first, proved to hold, and undone on every way out."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from opsgate.config import CommandControl
from opsgate.environments.local import LocalEnvironment
from opsgate.faults.actions import CommandFault, FaultNotEffective, Migration, ProviderFault, injected
from opsgate.faults.journal import Journal, replay


def test_provider_fault_holds_inside_and_is_undone_after(platform: LocalEnvironment, tmp_path: Path) -> None:
    control = f"{platform.provider_url}/control/faults"
    journal = Journal.create(tmp_path)
    fault = ProviderFault(control, {"error_rate": 0.5, "status": 503})
    assert isinstance(fault.settings["seed"], int)  # a random fault always has a seed to replay it
    with injected(journal, fault):
        seen = httpx.get(control).json()
        assert seen["active"] and seen["seed"] == fault.settings["seed"]
    assert not httpx.get(control).json()["active"]
    assert replay(journal.path, stop_processes=False) == []  # nothing pending: the undo was marked done


def test_undo_runs_when_the_drill_raises(platform: LocalEnvironment, tmp_path: Path) -> None:
    control = f"{platform.provider_url}/control/faults"
    with (
        pytest.raises(RuntimeError, match="drill broke"),
        injected(Journal.create(tmp_path), ProviderFault(control, {"error_rate": 1.0})),
    ):
        raise RuntimeError("drill broke")
    assert not httpx.get(control).json()["active"]


def replicas(tmp_path: Path, stop: str) -> tuple[Path, CommandControl]:
    state = tmp_path / "replicas"
    state.write_text("3\n")
    return state, CommandControl(kind="command", read=f"cat {state}", stop=stop.format(state=state),
                                 start=f"echo {{prior}} > {state}")  # fmt: skip


def test_command_fault_restores_the_recorded_state(tmp_path: Path) -> None:
    state, control = replicas(tmp_path, "echo 0 > {state}")
    with injected(Journal.create(tmp_path / "j"), CommandFault("worker", control)):
        assert state.read_text().strip() == "0"
    assert state.read_text().strip() == "3"  # the state `read` captured, not a guessed default


def test_a_fault_that_does_not_take_effect_is_not_effective(tmp_path: Path) -> None:
    state, control = replicas(tmp_path, "true")  # a stop command that does nothing
    journal = Journal.create(tmp_path / "j")
    with pytest.raises(FaultNotEffective, match="still '3'"), injected(journal, CommandFault("worker", control)):
        pytest.fail("the drill must not run on a fault that did not take effect")
    assert state.read_text().strip() == "3"
    assert replay(journal.path, stop_processes=False) == []


def scratch_migration(platform: LocalEnvironment, up: list[str] | None = None) -> Migration:
    """A reversible migration on a table of its own (a fresh name per test): up creates it, down drops it."""
    table = f"opsgate_migration_{uuid.uuid4().hex[:8]}"
    applied = f"SELECT to_regclass('{table}') IS NOT NULL"
    return Migration(platform.database_url, f"create {table}", up=up or [f"CREATE TABLE {table} (id int)"],
                     down=[f"DROP TABLE IF EXISTS {table}"], applied=applied)  # fmt: skip


def test_migration_is_applied_inside_and_rolled_back_after(platform: LocalEnvironment, tmp_path: Path) -> None:
    journal = Journal.create(tmp_path)
    migration = scratch_migration(platform)
    with injected(journal, migration):
        assert migration.is_applied()
        assert '"kind": "sql"' in journal.path.read_text()  # the down steps are on disk while it is applied
    assert not migration.is_applied()
    assert replay(journal.path, stop_processes=False) == []  # nothing pending: the undo was marked done


def test_migration_is_rolled_back_when_the_drill_raises(platform: LocalEnvironment, tmp_path: Path) -> None:
    migration = scratch_migration(platform)
    with pytest.raises(RuntimeError, match="drill broke"), injected(Journal.create(tmp_path), migration):
        raise RuntimeError("drill broke")
    assert not migration.is_applied()


def test_a_migration_that_changes_nothing_is_not_effective(platform: LocalEnvironment, tmp_path: Path) -> None:
    migration = scratch_migration(platform, up=["SELECT 1"])
    journal = Journal.create(tmp_path)
    with pytest.raises(FaultNotEffective, match="says it is not applied"), injected(journal, migration):
        pass


def test_a_failing_migration_names_the_reason_not_the_dsn(platform: LocalEnvironment, tmp_path: Path) -> None:
    migration = scratch_migration(platform, up=["ALTER TABLE no_such_table ADD COLUMN x int"])
    with pytest.raises(RuntimeError, match="no_such_table") as caught, injected(Journal.create(tmp_path), migration):
        pass
    assert platform.database_url not in str(caught.value)
