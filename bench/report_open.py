"""report.html for a synthetic 500-check run: render time, file size, and how fast Chromium opens it.

Prints figures, asserts nothing. The run: 500 checks (350 windowed with 180 samples each, 1 in 9 failing),
10 drills (two probe series of 240 samples, 24 timeline events with fault, alert and rollback), 5 SLO rows,
3 browser checks with a real PNG screenshot, and a 60-claim coverage registry. Each of ``--runs`` rounds
renders the page once and opens it in a fresh Chromium context (Debian's, through Playwright's async API):
time to the ``load`` event (from navigation start, and wall clock around ``goto``), first paint and first
contentful paint. Figures are the median [min-max] over the rounds.

    python bench/report_open.py [--runs 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import struct
import tempfile
import time
import zlib
from pathlib import Path

from playwright.async_api import async_playwright

from opsgate.evidence import html
from opsgate.evidence.coverage import ClaimCoverage, CoverageReport
from opsgate.evidence.records import CheckRecord, Sample, TimelineEvent
from opsgate.evidence.summary import RunSummary

CHROMIUM = "/usr/bin/chromium"
T0 = 1_760_000_000.0
CHECKS, WINDOWED, SAMPLES, DRILLS, SLOS, SHOTS = 500, 350, 180, 10, 5, 3


def png(width: int, height: int) -> bytes:
    """A real PNG with horizontal stripes (so it compresses like a page screenshot, not to nothing)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes((y * 7 % 256, 120, 200)) * width for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def gate(i: int) -> CheckRecord:
    windowed = i < WINDOWED
    failing = i % 9 == 0
    samples = [
        Sample(T0 + s, 0.2 + 0.1 * math.sin(s / 9 + i) + (0.5 if failing and s % 40 == 0 else 0.0), True)
        for s in range(SAMPLES if windowed else 1)
    ]
    samples = [Sample(s.at, s.value, (s.value or 0) < 0.6) for s in samples]
    return CheckRecord(
        id=f"gate[synthetic-{i:03d}]", kind="metric", verdict="fail" if failing else "pass",
        measured=max(s.value or 0 for s in samples), threshold=0.6, op="<", unit="s",
        message=f"p95 over the window, {SAMPLES} samples", claim=f"seed-00{i % 5 + 1}.gates.g{i:03d}",
        samples=samples, started_at=T0, finished_at=T0 + SAMPLES,
    )  # fmt: skip


def drill(i: int) -> CheckRecord:
    alert = "alert BillingWebhookRetrying"
    steps = ["drill started", "steady state verified", "fault applied", "fault verified", "traffic sent",
             f"{alert} pending", f"{alert} firing", "rollback applied", "queue billing-webhooks == 0",
             f"{alert} inactive", "steady state restored"]  # fmt: skip
    steps += [f"wait 0.50s #{n}" for n in range(12)] + ["drill pass"]
    timeline = [TimelineEvent(T0 + n * 0.8, what, f"detail of step {n}") for n, what in enumerate(steps)]
    series = {
        name: [Sample(T0 + n * 0.08, float(max(0, 40 - abs(n - 120) // 3)) * scale, True) for n in range(240)]
        for name, scale in (("queue billing-webhooks waiting", 1.0), ("api error ratio", 0.01))
    }
    return CheckRecord(id=f"drill-{i:02d}", kind="drill", verdict="pass", message="every expectation held",
                       started_at=T0, finished_at=T0 + 19.2, timeline=timeline, series=series)  # fmt: skip


def slo(i: int) -> CheckRecord:
    figures: dict[str, float | int | str | None] = {"stage": "short", "endpoint": f"GET /slo/{i}", "count": 250,
        "planned": 250, "skipped": 0, "error_rate": 0.0, "error_rate_limit": 0.01, "planned_rate_per_s": 100.0,
        "achieved_rate_per_s": 99.8, "p95_limit_ms": 500.0}  # fmt: skip
    for q, v in (("p50", 12.0), ("p95", 40.0 + i), ("p99", 80.0)):
        figures[f"{q}_ms"], figures[f"locust_{q}_ms"] = v, round(v)
    return CheckRecord(id=f"slo[row-{i}]", kind="slo", verdict="pass", measured=40.0 + i, threshold=500.0, op="<",
                       unit="ms", figures=figures)  # fmt: skip


def synthetic_run(run_dir: Path) -> RunSummary:
    """The 500-check run, its screenshots written under ``run_dir``."""
    (run_dir / "screenshots").mkdir(parents=True, exist_ok=True)
    shot = png(1280, 1600)
    checks = [gate(i) for i in range(CHECKS - DRILLS - SLOS - SHOTS)]
    for i in range(SHOTS):
        (run_dir / "screenshots" / f"page-{i}.png").write_bytes(shot)
        checks.append(CheckRecord(id=f"browser[page-{i}]", kind="browser", verdict="pass",
                                  attachments=[f"screenshots/page-{i}.png"]))  # fmt: skip
    checks += [drill(i) for i in range(DRILLS)] + [slo(i) for i in range(SLOS)]
    claims = [
        ClaimCoverage(f"seed-00{i % 5 + 1}.claim-{i}", f"seed-00{i % 5 + 1}", "Section", f"claim sentence {i}",
                      "verified" if i % 4 else "untested", (f"gate[synthetic-{i:03d}]",))
        for i in range(60)
    ]  # fmt: skip
    info = {"run kind": "gate", "provider": "local", "git sha": "0" * 40, "opsgate version": "0.1.0"}
    return RunSummary("synthetic", "staging", T0, T0 + 600, checks, info, CoverageReport("claims.yaml", claims))


def spread(values: list[float], unit: str) -> str:
    """``median unit [min-max]``; negative values (a timing the browser did not record) are left out and counted."""
    seen = [v for v in values if v >= 0]
    missing = f" ({len(values) - len(seen)} of {len(values)} not recorded)" if len(seen) < len(values) else ""
    if not seen:
        return "not recorded"
    return f"{statistics.median(seen):.0f} {unit} [{min(seen):.0f}-{max(seen):.0f}]{missing}"


async def open_page(path: Path, runs: int) -> dict[str, list[float]]:
    """Open ``path`` ``runs`` times, each in a fresh context; navigation and paint timings (ms)."""
    figures: dict[str, list[float]] = {"load event": [], "goto wall": [], "first paint": [], "first contentful": [],
                                       "dom content loaded": []}  # fmt: skip
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, timeout=30_000)
        try:
            for _ in range(runs):
                context = await browser.new_context(viewport={"width": 1300, "height": 900})
                page = await context.new_page()
                began = time.perf_counter()
                await page.goto(path.resolve().as_uri(), wait_until="load", timeout=60_000)
                figures["goto wall"].append((time.perf_counter() - began) * 1000)
                # paint entries are recorded once a frame is produced: wait for one before reading them
                await page.evaluate("() => new Promise(done => requestAnimationFrame(() => setTimeout(done, 0)))")
                timing = await page.evaluate(
                    "() => { const n = performance.getEntriesByType('navigation')[0];"
                    " const p = Object.fromEntries(performance.getEntriesByType('paint')"
                    ".map(e => [e.name, e.startTime]));"
                    " return {load: n.loadEventEnd, dcl: n.domContentLoadedEventEnd,"
                    " fp: p['first-paint'] ?? -1, fcp: p['first-contentful-paint'] ?? -1}; }"
                )  # fmt: skip
                figures["load event"].append(timing["load"])
                figures["dom content loaded"].append(timing["dcl"])
                figures["first paint"].append(timing["fp"])
                figures["first contentful"].append(timing["fcp"])
                await context.close()
        finally:
            await browser.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, default=None, help="write the run here instead of a temp dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.keep or Path(tmp)
        summary = synthetic_run(run_dir)
        renders, page = [], ""
        for _ in range(args.runs):
            began = time.perf_counter()
            page = html.render(summary, run_dir)
            renders.append((time.perf_counter() - began) * 1000)
        report = run_dir / "report.html"
        report.write_text(page)
        opened = asyncio.run(open_page(report, args.runs))
        windowed = sum(1 for c in summary.checks if len(c.samples) > 1)
        print(f"run: {len(summary.checks)} checks ({windowed} windowed x {SAMPLES} samples), {DRILLS} drills, "
              f"{SLOS} SLO rows, {SHOTS} screenshots; {args.runs} rounds")  # fmt: skip
        print(f"render: {spread(renders, 'ms')}")
        print(f"file size: {len(page.encode()) / 1024:.0f} KiB ({report})" if args.keep else
              f"file size: {len(page.encode()) / 1024:.0f} KiB")  # fmt: skip
        for name, values in opened.items():
            print(f"{name}: {spread(values, 'ms')}")


if __name__ == "__main__":
    main()
