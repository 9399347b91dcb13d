"""Bounded waits explain themselves."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from opsgate.waits import WaitTimeout, wait_until


def test_returns_the_first_value() -> None:
    calls = iter([None, None, 42])
    assert wait_until(lambda: next(calls), what="x", timeout_s=5, interval_s=0.001) == 42


def test_timeout_says_what_where_last_and_hint(tmp_path: Path) -> None:
    log = tmp_path / "svc.log"
    log.write_text("line one\nFATAL: boom\n")

    def check() -> None:
        raise ConnectionRefusedError("refused")

    started = time.monotonic()
    with pytest.raises(WaitTimeout) as caught:
        wait_until(
            check,
            what="svc to be ready",
            timeout_s=0.2,
            interval_s=0.05,
            address="127.0.0.1:1",
            hint="is it installed?",
            log=log,
        )
    assert time.monotonic() - started < 2
    text = str(caught.value)
    assert text.startswith("timed out after 0.")
    assert "waiting for svc to be ready at 127.0.0.1:1" in text
    assert "last seen: ConnectionRefusedError: refused" in text
    assert "hint: is it installed?" in text and "FATAL: boom" in text


def test_attempt_cap_and_give_up() -> None:
    with pytest.raises(WaitTimeout, match=r"\(3 attempts\)"):
        wait_until(lambda: None, what="x", timeout_s=60, interval_s=0.001, max_attempts=3)
    with pytest.raises(WaitTimeout, match=r"^svc exited with code 1 waiting for x"):
        wait_until(lambda: None, what="x", timeout_s=60, give_up=lambda: "svc exited with code 1")
