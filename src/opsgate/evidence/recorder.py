"""Per-test evidence: a recorder fixture and the hooks turning test outcomes into check records."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from opsgate.evidence.records import CheckRecord

RECORD_KEY = pytest.StashKey[CheckRecord]()
ATTACH_KEY = pytest.StashKey[list[str]]()


def check_id(item: pytest.Item) -> str:
    """``health[api:/readyz]``: the test's name without ``test_`` plus its parameter id."""
    name = getattr(item, "originalname", item.name).removeprefix("test_")
    callspec = getattr(item, "callspec", None)
    return f"{name}[{callspec.id}]" if callspec is not None else name


class Recorder:
    """What a test hands over as evidence: its :class:`CheckRecord` and attached files."""

    def __init__(self, item: pytest.Item, run_dir: Path) -> None:
        self.item = item
        self.run_dir = run_dir
        self.id = check_id(item)

    def record(self, record: CheckRecord) -> CheckRecord:
        """Keep ``record`` as this test's evidence (JUnit properties included)."""
        record.id = self.id
        self.item.stash[RECORD_KEY] = record
        for key in ("measured", "threshold", "op", "unit", "claim", "kind", "verdict"):
            value = getattr(record, key)
            if value not in (None, ""):
                self.item.user_properties.append((key, value))
        return record

    def attach(self, path: Path) -> str:
        """Attach a file under the run directory; returns its path relative to the run directory."""
        relative = str(path.resolve().relative_to(self.run_dir.resolve()))
        self.item.stash.setdefault(ATTACH_KEY, []).append(relative)
        self.item.user_properties.append(("attachment", relative))
        return relative

    def conclude(self, record: CheckRecord) -> None:
        """Record, then fail the test unless the verdict is pass (inconclusive is never a pass)."""
        __tracebackhide__ = True
        self.record(record)
        if record.verdict != "pass":
            pytest.fail(f"{record.verdict}: {record.message}", pytrace=False)


def record_from_report(item: pytest.Item, report: pytest.TestReport) -> CheckRecord | None:
    """The check record of a finished test phase, or None when the phase says nothing (a passing setup)."""
    if report.skipped:
        return None
    recorded = item.stash.get(RECORD_KEY, None)
    if report.when == "call":
        if recorded is None:
            kind = "check"
            verdict = "pass" if report.passed else ("fail" if _assertion(report) else "error")
            recorded = CheckRecord(id=check_id(item), kind=kind, verdict=verdict)  # type: ignore[arg-type]
            if report.failed:
                recorded.message = _short(report)
        elif report.failed and recorded.verdict == "pass":
            # The test recorded a pass but then failed on its own assertion: trust the failure.
            recorded.verdict = "fail" if _assertion(report) else "error"
            recorded.message = _short(report)
    elif report.failed:
        recorded = CheckRecord(
            id=check_id(item), kind="check", verdict="error", message=f"{report.when}: {_short(report)}"
        )
    else:
        return None
    recorded.attachments = item.stash.get(ATTACH_KEY, [])
    recorded.finished_at = recorded.finished_at or time.time()
    return recorded


def _assertion(report: pytest.TestReport) -> bool:
    crash = getattr(report.longrepr, "reprcrash", None)
    message = getattr(crash, "message", "") or str(report.longrepr)
    return message.startswith(("AssertionError", "assert ", "Failed:"))


def _short(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    message = getattr(crash, "message", None) or str(report.longrepr)
    return " ".join(message.split())[:500]
