"""The backup and migration gates and flow of targets/local.yaml: pass on the healthy platform, fail on their defect.

The healthy case reads the session's healthy gate; each defect case runs ``opsgate gate --match`` end to end on a
reference platform of its own (migrations are applied at its first start, so a migration defect needs a fresh
database), with the defect planted via OPSGATE_DEFECTS.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import HealthyRun, run_opsgate
from opsgate.config import LOCAL_TARGET

MATCH = "migrations-applied or migrations-backed-up-first or force-backup-newer"
IDS = {"gate[migrations-applied]", "gate[migrations-backed-up-first]", "flow[force-backup-newer]"}
ALERTING_STACK = {"prometheus", "alertmanager", "receiver"}


def gate(tmp_path: Path, defects: str) -> tuple[int, str, dict[str, dict[str, Any]]]:
    """``opsgate gate --match MATCH`` on a fresh reference platform with ``defects``; exit code, output, checks."""
    env = {"OPSGATE_DEFECTS": defects, "OPSGATE_REPORTS_DIR": str(tmp_path / "reports"),
           "OPSGATE_STATE_DIR": str(tmp_path / "state")}  # fmt: skip
    result = run_opsgate(["gate", "--match", MATCH], timeout_s=240, env=env)
    run_dir = (tmp_path / "reports" / "latest").resolve()
    # None of these checks reads Prometheus, Alertmanager or the receiver: the platform starts without them (the
    # full gate's do: test_cli).
    assert not [log.name for log in (run_dir / "logs").iterdir() if log.stem in ALERTING_STACK]
    summary = json.loads((run_dir / "summary.json").read_text())
    return result.returncode, result.stdout + result.stderr, {c["id"]: c for c in summary["checks"]}


def shipped_migrations() -> list[str]:
    folder = resources.files("opsgate.reference") / "migrations"
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))


def test_the_gate_lists_every_shipped_migration() -> None:
    """gate[migrations-applied] names exactly the migration files the platform ships (it cannot drift)."""
    shipped = shipped_migrations()
    gates = {g["name"]: g for g in yaml.safe_load(LOCAL_TARGET.read_text())["gates"]}
    listed = re.findall(r"'([^']+\.sql)'", gates["migrations-applied"]["sql"])
    assert listed == shipped


def test_backup_and_migration_checks_pass_on_the_healthy_platform(healthy_gate: HealthyRun) -> None:
    """The session's healthy gate (the embedded default, a fresh platform) ran them: each passed."""
    checks = {k: c for k, c in healthy_gate.checks.items() if k in IDS}
    assert set(checks) == IDS, sorted(healthy_gate.checks)
    assert {c["verdict"] for c in checks.values()} == {"pass"}, checks


# A fresh stack per defect (15 s each): make test keeps one; all three are rows of make matrix too.
@pytest.mark.parametrize(
    ("defect", "check", "broken"),
    [
        pytest.param("migration-skipped", "gate[migrations-applied]", "1", marks=pytest.mark.matrix),
        # every shipped migration applied with no backup before it
        ("migration-without-backup", "gate[migrations-backed-up-first]", str(len(shipped_migrations()))),
        pytest.param("force-backup-noop", "flow[force-backup-newer]", "newest", marks=pytest.mark.matrix),
    ],
)
def test_each_fails_on_its_defect(tmp_path: Path, defect: str, check: str, broken: str) -> None:
    code, output, checks = gate(tmp_path, defect)
    assert code == 1, output[-3000:]
    failed = {k for k, c in checks.items() if c["verdict"] == "fail"}
    assert failed == {check}, checks
    record = checks[check]
    assert broken in f"{record['measured']} {record['message']}", record
