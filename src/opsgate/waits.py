"""Bounded waiting: every wait has a deadline *and* an attempt cap, and explains itself on timeout."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
LOG_TAIL_LINES = 20


class WaitTimeout(Exception):
    """A wait ran out of time or attempts; the message says what, how long, where, the last value and a hint."""


def log_tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file, or '' when there is none."""
    if path is None or not path.exists():
        return ""
    with path.open("rb") as fh:
        fh.seek(0, 2)
        fh.seek(max(0, fh.tell() - 16_384))
        text = fh.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    check: Callable[[], T | None],
    *,
    what: str,
    timeout_s: float,
    interval_s: float = 0.05,
    max_attempts: int | None = None,
    address: str = "",
    hint: str = "",
    log: Path | None = None,
    give_up: Callable[[], str | None] | None = None,
) -> T:
    """Call ``check`` until it returns a value other than None (an exception counts as 'not yet').

    ``give_up`` may return a reason to stop early (e.g. the process exited). Raises
    :class:`WaitTimeout` after ``timeout_s`` seconds or ``max_attempts`` calls.
    """
    cap = max_attempts if max_attempts is not None else max(1, int(timeout_s / max(interval_s, 1e-3)) + 10)
    started = time.monotonic()
    last: object = "nothing yet"
    attempts = 0
    reason = ""
    while attempts < cap:
        attempts += 1
        try:
            value = check()
        except Exception as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if value is not None:
                return value
            last = "not ready"
        if give_up is not None:
            stop = give_up()
            if stop:
                reason = stop
                break
        if time.monotonic() - started >= timeout_s:
            break
        time.sleep(interval_s)
    elapsed = time.monotonic() - started
    where = f" at {address}" if address else ""
    head = reason or f"timed out after {elapsed:.1f}s ({attempts} attempts)"
    message = f"{head} waiting for {what}{where}; last seen: {last}"
    if hint:
        message += f"; hint: {hint}"
    tail = log_tail(log)
    if tail:
        message += f"\n--- last lines of {log} ---\n{tail}"
    raise WaitTimeout(message)
