"""report.html in real headless Chromium: every section, charts drawn, no console error, nothing fetched.

Two pages: a realistic summary built here (failing and passing gates with windowed samples, a drill with its
series and fault/rollback/alert events, SLO rows, a browser check's real PNG, runbook coverage), and the
report ``opsgate gate --only smoke`` writes for the session's running platform.
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from playwright.async_api import Browser, Request, Route, async_playwright

from helpers import local_target_as_external, run_opsgate
from opsgate.environments.local import LocalEnvironment
from opsgate.evidence import charts, html
from opsgate.evidence.coverage import ClaimCoverage, CoverageReport
from opsgate.evidence.records import CheckRecord, Sample, TimelineEvent, Verdict
from opsgate.evidence.summary import RunSummary, read_summary

CHROMIUM = "/usr/bin/chromium"
SECTIONS = ("verdict", "environment", "checks", "drills", "slos", "screenshots", "coverage", "artifacts")
MARKED = {"fault", "rollback", "alert-pending", "alert-firing", "alert-resolved"}
T0 = 1_760_000_000.0
INJECTED = "<script>alert('x')</script>"


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real PNG of one colour (zlib + CRCs), so the embedded thumbnail decodes in Chromium."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def windowed(values: list[float | None], limit: float, step_s: float = 1.0) -> list[Sample]:
    """Samples one ``step_s`` apart; ok while under ``limit``, a None is a probe that got no answer."""
    return [
        Sample(T0 + i * step_s, v, v is not None and v < limit, reached=v is not None) for i, v in enumerate(values)
    ]


def worker_to_zero() -> CheckRecord:
    """A drill as :class:`opsgate.drills.drill.Drill` records it: steady state, fault, alert, rollback, drain."""
    steps = [
        (0.0, "drill started", ""),
        (0.4, "steady state verified", "after 0.05s: 9 health checks pass"),
        (1.0, "fault applied", "stop worker"),
        (1.2, "fault verified", "the target shows the fault"),
        (1.5, "traffic sent", f"20 requests, 20 accepted {INJECTED}"),
        (3.1, "alert BillingWebhookRetrying pending", "after 1.60s: pending"),
        (6.4, "alert BillingWebhookRetrying firing", "after 4.90s: firing"),
        (7.0, "rollback applied", "started worker"),
        (9.5, "queue billing-webhooks == 0", "after 2.50s: 0 waiting"),
        (10.5, "alert BillingWebhookRetrying inactive", "after 3.50s: inactive"),
        (11.0, "steady state restored", "after 0.30s: 9 health checks pass"),
        (11.1, "drill pass", "every expectation held"),
    ]
    depth = [0, 0, 0, 4, 12, 20, 20, 20, 20, 20, 20, 20, 20, 20, 16, 9, 3, 0, 0, 0, 0, 0]
    return CheckRecord(
        id="worker-to-zero", kind="drill", verdict="pass", message="every expectation held",
        claim="seed-002.drills.worker-to-zero", measured="queue billing-webhooks == 0 2.50s",
        started_at=T0, finished_at=T0 + 11.1,
        timeline=[TimelineEvent(T0 + at, what, detail) for at, what, detail in steps],
        series={"queue billing-webhooks waiting": [Sample(T0 + i * 0.5, float(v), True) for i, v in enumerate(depth)]},
    )  # fmt: skip


def slo(name: str, verdict: Verdict, p: tuple[float, float, float], locust: tuple[float, float, float]) -> CheckRecord:
    figures: dict[str, float | int | str | None] = {
        "stage": "short", "model": "open", "endpoint": f"POST /v1/{name}", "planned_rate_per_s": 100.0,
        "achieved_rate_per_s": 99.6, "planned": 250, "count": 250, "skipped": 0, "error_rate": 0.004,
        "error_rate_limit": 0.01, "p95_limit_ms": 500.0,
    }  # fmt: skip
    for q, exact, rounded in zip(("p50", "p95", "p99"), p, locust, strict=True):
        figures[f"{q}_ms"], figures[f"locust_{q}_ms"] = exact, rounded
    return CheckRecord(
        id=f"slo[{name}]", kind="slo", verdict=verdict, measured=p[1], threshold=500.0, op="<", unit="ms",
        message=f"p95 {p[1]} ms", figures=figures, started_at=T0, finished_at=T0 + 3,
    )  # fmt: skip


def realistic_summary(run_dir: Path) -> RunSummary:
    """A run with every kind of evidence the report shows; the browser check's screenshot is a real file."""
    (run_dir / "screenshots").mkdir(parents=True, exist_ok=True)
    (run_dir / "screenshots" / "admin.png").write_bytes(png(64, 40, (9, 105, 218)))
    (run_dir / "logs").mkdir(exist_ok=True)
    (run_dir / "logs" / "api.log").write_text("started\n")
    p95 = [0.4, 0.6, 0.9, 1.2, 1.6, 1.9, 1.7, 1.4, None, 1.1]
    checks = [
        CheckRecord(id="health[api:/readyz]", kind="health", verdict="pass", measured=0, threshold=1, op="<=",
                    unit="failures", message="0 of 30 probes failed in 3m",
                    samples=windowed([0.01 + (i % 5) / 1000 for i in range(30)], 1.0)),
        CheckRecord(id="gate[api-p95]", kind="metric", verdict="fail", measured=1.9, threshold=1.5, op="<", unit="s",
                    message=f"p95 1.9 s over 5m {INJECTED}", claim="seed-003.gates.api-p95",
                    samples=windowed(p95, 1.5)),
        CheckRecord(id="gate[worker-heartbeat]", kind="metric", verdict="pass", measured=2.0, threshold=30, op="<",
                    unit="s", samples=windowed([2.0] * 12, 30)),  # all equal
        CheckRecord(id="gate[provider-quota]", kind="metric", verdict="inconclusive", message="no data in the window",
                    samples=windowed([None, None], 0.8)),  # no data at all
        CheckRecord(id="gate[backup-age]", kind="metric", verdict="pass", measured=3.0, threshold=86400, op="<",
                    unit="s", samples=windowed([3.0], 86400)),  # a single sample
        CheckRecord(id="queue[billing-webhooks]", kind="queue", verdict="pass", measured=0, threshold=50, op="<"),
        CheckRecord(id="browser[admin-kill-switch-state]", kind="browser", verdict="pass", measured="active",
                    threshold="active", op="==", claim="seed-001.kill-switch.admin-ui",
                    attachments=["screenshots/admin.png"]),
        worker_to_zero(),
        slo("send-message", "pass", (12.4, 31.2, 48.9), (12.0, 31.0, 49.0)),
        slo("core-api-tenant", "fail", (210.0, 1545.2, 1880.0), (210.0, 1500.0, 1900.0)),
    ]  # fmt: skip
    coverage = CoverageReport("claims/reference.yaml", [
        ClaimCoverage("seed-003.gates.api-p95", "seed-003", "SLOs", "p95 < 1.5s for 5 minutes", "failing",
                      ("gate[api-p95]",), None, "p95 1.9 s over 5m"),
        ClaimCoverage("seed-002.drills.worker-to-zero", "seed-002", "Drills", "scale the worker to 0", "verified",
                      ("worker-to-zero",), T0 + 11.1),
        ClaimCoverage("seed-001.health.db", "seed-001", "Health", f"/readyz checks the db {INJECTED}", "untested"),
        ClaimCoverage("seed-004.backups.age", "seed-004", "Backups", "a backup every 24h", "stale",
                      ("gate[backup-age]",), T0 - 30 * 86400),
        ClaimCoverage("seed-005.ui.lighthouse", "seed-005", "Frontend", "Lighthouse score > 90", "out-of-scope",
                      note="needs a Lighthouse run, not an ops check"),
    ])  # fmt: skip
    info = {"target file": "targets/local.yaml", "run kind": "gate", "provider": "local", "time scale": "0.02",
            "opsgate version": "0.1.0", "git sha": "0123abcd", "python": "3.11.2", "pytest": "9.2.0",
            "postgres": "15.18", "chromium": "156.0", "locust": "2.47.0"}  # fmt: skip
    return RunSummary("reference", "local", T0, T0 + 42.0, checks, info, coverage)


@dataclass
class Opened:
    """What Chromium saw opening a report: errors, every request, sections, charts and images drawn."""

    url: str
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    sections: dict[str, bool] = field(default_factory=dict)
    """Section id → present and visible."""
    charts: list[dict[str, Any]] = field(default_factory=list)
    """Each ``svg.chart``: its class, width and height as laid out (px)."""
    images: list[int] = field(default_factory=list)
    """naturalWidth of each embedded screenshot (0: did not decode)."""
    marker_kinds: set[str] = field(default_factory=set)
    text: str = ""


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium through Playwright's async API, one per module."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, timeout=30_000)
        try:
            yield launched
        finally:
            await asyncio.wait_for(launched.close(), 10)


async def open_report(browser: Browser, path: Path, screenshot: Path) -> Opened:
    """Open ``path`` as a person would (file://), record everything, take a full-page screenshot."""
    seen = Opened(path.resolve().as_uri())
    context = await browser.new_context(viewport={"width": 1300, "height": 900})
    try:

        async def only_the_file(route: Route) -> None:  # nothing may leave the file: record it, then refuse it
            await (route.continue_() if route.request.url == seen.url else route.abort())

        await context.route("**/*", only_the_file)
        page = await context.new_page()
        page.on("request", lambda request: seen.requests.append(request.url))
        page.on("requestfailed", lambda request: _failed(seen, request))
        page.on("console", lambda m: seen.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: seen.console_errors.append(str(exc)))
        await page.goto(seen.url, wait_until="load", timeout=20_000)
        for ident in SECTIONS:
            locator = page.locator(f"#{ident}")
            seen.sections[ident] = await locator.count() == 1 and await locator.is_visible()
        seen.charts = await page.eval_on_selector_all(
            "svg.chart", "els => els.map(e => ({cls: e.getAttribute('class'), w: e.getBoundingClientRect().width,"
            " h: e.getBoundingClientRect().height, visible: e.checkVisibility()}))",
        )  # fmt: skip
        seen.images = await page.eval_on_selector_all("#screenshots img", "els => els.map(e => e.naturalWidth)")
        kinds = await page.eval_on_selector_all("svg.series .event", "els => els.map(e => e.dataset.kind)")
        seen.marker_kinds = set(kinds)
        seen.text = await page.inner_text("body")
        await page.screenshot(path=str(screenshot), full_page=True, timeout=20_000)
    finally:
        await context.close()
    return seen


def _failed(seen: Opened, request: Request) -> None:
    if not request.url.startswith("data:"):
        seen.console_errors.append(f"request failed: {request.url}")


def attach(record_property: Any, path: Path) -> None:
    """Attach the screenshot to this test's own evidence (JUnit property) and say where it is."""
    assert path.stat().st_size > 5000, f"{path} looks empty"
    record_property("attachment", str(path))
    print(f"report screenshot: {path}")


def assert_opened_cleanly(seen: Opened) -> None:
    __tracebackhide__ = True
    assert seen.console_errors == []
    assert {url for url in seen.requests if not url.startswith("data:")} == {seen.url}, seen.requests
    for chart in seen.charts:
        assert chart["visible"] and chart["w"] > 0 and chart["h"] > 0, chart


async def test_realistic_report_in_chromium(browser: Browser, tmp_path: Path, record_property: Any) -> None:
    run_dir = tmp_path / "run"
    summary = realistic_summary(run_dir)
    report = run_dir / "report.html"
    report.write_text(html.render(summary, run_dir))
    seen = await open_report(browser, report, tmp_path / "report.png")
    attach(record_property, tmp_path / "report.png")
    assert seen.sections == dict.fromkeys(SECTIONS, True)
    assert_opened_cleanly(seen)
    kinds = [c["cls"] for c in seen.charts]
    assert kinds.count("chart spark") == 4  # one per windowed check (a single sample is just the measured value)
    assert kinds.count("chart series") == 1 and kinds.count("chart percentiles") == 2
    assert seen.marker_kinds >= MARKED  # fault, rollback and each alert state drawn as their own markers
    assert seen.images == [64]  # the real PNG, embedded and decoded
    assert "FAIL — reference (local)" in seen.text
    assert seen.text.count(INJECTED) == 3  # a message, a drill step's detail, a runbook quote: shown, never run
    assert "claims: 1 verified, 1 failing, 1 untested, 1 stale, 1 out of scope" in seen.text
    assert "postgres 15.18" in seen.text and "environment class\tlocal" in seen.text


def test_checks_fail_first_and_charts_carry_the_evidence(tmp_path: Path) -> None:
    summary = realistic_summary(tmp_path)
    page = html.render(summary, tmp_path)
    rows = re.findall(r"<tr id='([^']+)' data-verdict='(\w+)'>", page)
    assert rows[:3] == [
        ("gate[api-p95]", "fail"),
        ("slo[core-api-tenant]", "fail"),
        ("gate[provider-quota]", "inconclusive"),
    ]
    assert {v for _, v in rows[3:]} == {"pass"} and {r for r, _ in rows} == {c.id for c in summary.checks}
    failing_row = page[page.index("<tr id='gate[api-p95]'") : page.index("</tr>", page.index("<tr id='gate[api-p95]'"))]
    assert failing_row.count("class='failing'") == 3 and "class='threshold'" in failing_row
    assert failing_row.count("class='gap'") == 1  # the probe that got no answer
    drill = page[page.index("<article class='drill'") : page.index("</article>")]
    for kind in MARKED:
        assert f"data-kind='{kind}'" in drill
    assert "class='fault-span'" in drill and "class='alert-firing'" in drill and "class='alert-pending'" in drill
    assert "class='bar over'" in page  # core-api-tenant's p95 1545 ms over its 500 ms limit
    assert "data:image/png;base64," in page


def test_the_page_has_no_script_and_keeps_its_csp(tmp_path: Path) -> None:
    page = html.render(realistic_summary(tmp_path), tmp_path)
    assert re.search(r"<script|javascript:|\son\w+=", page, re.IGNORECASE) is None
    assert "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:\"" in page
    assert re.search(r"(src|href)=['\"]?(https?:|//)", page) is None  # nothing to fetch


def test_coverage_section_only_with_a_registry(tmp_path: Path) -> None:
    summary = realistic_summary(tmp_path)
    summary.coverage = None
    assert "id='coverage'" not in html.render(summary, tmp_path)


@pytest.mark.parametrize(
    "samples",
    [
        [],
        [Sample(T0, None, False, reached=False)],
        [Sample(T0, 5.0, True)],
        [Sample(T0, 5.0, True), Sample(T0, 5.0, True)],  # same time, same value
        [Sample(T0 + i, float("nan") if i == 2 else 1.0, True) for i in range(4)],
    ],
    ids=["empty", "no-data", "single", "all-equal-same-time", "nan"],
)
def test_charts_draw_degenerate_input_as_valid_svg(samples: list[Sample]) -> None:
    events = [TimelineEvent(T0, "fault applied")] if samples else []
    for svg in (
        charts.sparkline(samples, 5.0),
        charts.series_chart({"depth": samples} if samples else {}, events),
        charts.percentile_chart([charts.Percentile("p95", samples[0].value if samples else None, 5.0)]),
    ):
        ElementTree.fromstring(svg)  # well-formed
        assert not re.search(r"nan|inf", svg.replace("no data", "").lower()), svg


def test_long_windows_are_down_sampled_keeping_failures() -> None:
    samples = [Sample(T0 + i, float(i % 7), i != 1234) for i in range(5000)]
    svg = charts.sparkline(samples, 3)
    assert f"data-points='{charts.SPARK_POINTS}'" in svg and svg.count("class='failing'") >= 1
    assert len(svg) < 4000


@pytest.fixture(scope="module")
def smoke_run(platform: LocalEnvironment, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``opsgate gate --only smoke`` on targets/local.yaml pointed at the session's platform; its run folder."""
    folder = tmp_path_factory.mktemp("smoke")
    target = local_target_as_external(folder / "standin.yaml")
    env = {**platform.environ(), "OPSGATE_REPORTS_DIR": str(folder / "reports"), "OPSGATE_STATE_DIR": str(folder)}
    started = time.monotonic()
    result = run_opsgate(["gate", "--target", str(target), "--only", "smoke"], timeout_s=240, env=env)
    run_dir = (folder / "reports" / "latest").resolve()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert result.returncode == (0 if summary["verdict"] == "pass" else 1), result.stdout[-3000:] + result.stderr
    print(f"opsgate gate --only smoke: {time.monotonic() - started:.1f} s")
    return run_dir


async def test_report_of_a_real_gate_run(
    smoke_run: Path, browser: Browser, tmp_path: Path, record_property: Any
) -> None:
    summary = read_summary(smoke_run / "summary.json")
    seen = await open_report(browser, smoke_run / "report.html", tmp_path / "report.png")
    attach(record_property, tmp_path / "report.png")
    assert seen.sections == {**dict.fromkeys(SECTIONS, True), "coverage": seen.sections["coverage"]}
    assert_opened_cleanly(seen)
    for check in summary.checks:
        assert check.id in seen.text
    shots = [a for c in summary.checks for a in c.attachments if a.endswith(".png")]
    assert shots and len(seen.images) == len(shots) and all(w > 0 for w in seen.images)  # the browser check's
    windowed = [c for c in summary.checks if len(c.samples) > 1]
    assert len([c for c in seen.charts if c["cls"].startswith("chart spark")]) == len(windowed)
    for tool in ("postgres", "redis-server", "chromium", "locust", "playwright"):
        assert re.search(rf"{tool} \d+\.\d+", seen.text), f"no {tool} version in the environment section"
