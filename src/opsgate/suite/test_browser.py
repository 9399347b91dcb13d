"""Browser smoke in headless Chromium: log in, the page shows what the API says, no console errors."""

from __future__ import annotations

import time

import httpx
import pytest

from opsgate.config import HttpSource, Target
from opsgate.evidence.recorder import Recorder
from opsgate.evidence.records import CheckRecord
from opsgate.probes.browser import run_browser_check
from opsgate.probes.http import json_field, request
from opsgate.probes.sources import service_url

pytestmark = pytest.mark.smoke


async def test_browser(browser_check_name: str, target: Target, evidence: Recorder) -> None:
    """The check's steps succeed and every expected text matches, with a screenshot attached."""
    check = next(b for b in target.browser if b.name == browser_check_name)
    record = CheckRecord(
        id=browser_check_name, kind="browser", verdict="pass", claim=check.claim, started_at=time.time()
    )

    async with httpx.AsyncClient() as client:

        async def resolve(source: HttpSource) -> str:
            url = service_url(target, source.service) + source.path
            observed = await request(client, "GET", url, timeout_s=10.0, headers=source.headers)
            return str(json_field(observed.json, source.field))

        shot = evidence.run_dir / "screenshots" / f"{browser_check_name}.png"
        result = await run_browser_check(
            check, service_url(target, check.service), screenshot=shot, resolve=resolve, timeout_s=30.0
        )
    if result.screenshot is not None:
        evidence.attach(result.screenshot)
    record.finished_at = time.time()
    record.measured = "; ".join(f"{sel}: {text!r}" for sel, text in result.observed.items()) or None
    record.threshold = "; ".join(f"{sel}: {text!r}" for sel, text in result.expected.items()) or None
    if result.passed:
        record.message = f"{len(result.observed)} expectation(s) met in {result.duration_s:.1f}s, no console errors"
    else:
        record.verdict = "fail"
        record.message = "; ".join(result.problems)
    evidence.conclude(record)
