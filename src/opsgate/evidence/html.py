"""``report.html``: one self-contained static page (no JavaScript, no network) a person can read."""

from __future__ import annotations

from html import escape

from opsgate.evidence.records import CheckRecord
from opsgate.evidence.summary import RunSummary, iso

ORDER = {"fail": 0, "error": 1, "inconclusive": 2, "aborted": 3, "refused": 4, "pass": 5}
COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "error": "#bc4c00", "inconclusive": "#9a6700",
           "aborted": "#9a6700", "refused": "#6e7781"}  # fmt: skip
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#1f2328;background:#fff}
main{max-width:1200px;margin:0 auto;padding:1.5rem}
.banner{padding:1rem 1.5rem;color:#fff;font-size:1.4rem;font-weight:600}
table{border-collapse:collapse;width:100%;margin:.75rem 0 1.5rem}
th,td{border-bottom:1px solid #d0d7de;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.v{font-weight:600;text-transform:uppercase;font-size:.8rem}code{font-size:.85rem}
.msg{max-width:38rem;word-break:break-word}.env td:first-child{width:12rem;color:#57606a}
"""


def _num(value: float | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def _row(check: CheckRecord) -> str:
    colour = COLOURS.get(check.verdict, "#000")
    links = " ".join(f"<a href='{escape(a)}'>{escape(a.rsplit('/', 1)[-1])}</a>" for a in check.attachments)
    return (
        f"<tr id='{escape(check.id)}' data-verdict='{check.verdict}'>"
        f"<td class='v' style='color:{colour}'>{check.verdict}</td><td><code>{escape(check.id)}</code></td>"
        f"<td>{escape(check.kind)}</td><td class='num'>{_num(check.measured)}</td>"
        f"<td class='num'>{escape(check.op)} {_num(check.threshold)}</td><td>{escape(check.unit)}</td>"
        f"<td class='msg'>{escape(check.message)}</td><td>{escape(check.claim or '')}</td><td>{links}</td></tr>"
    )


def _timeline(check: CheckRecord) -> str:
    """A drill's steps as a table under its own heading (charts come with the evidence issue)."""
    start = check.timeline[0].at
    rows = "".join(
        f"<tr><td class='num'>+{event.at - start:.2f}s</td><td>{escape(event.what)}</td>"
        f"<td class='msg'>{escape(event.detail)}</td></tr>"
        for event in check.timeline
    )
    colour = COLOURS.get(check.verdict, "#000")
    return (
        f"<h3 id='timeline-{escape(check.id)}'><span class='v' style='color:{colour}'>{check.verdict}</span> "
        f"<code>{escape(check.id)}</code></h3><table class='timeline'><tbody>{rows}</tbody></table>"
    )


def render(summary: RunSummary) -> str:
    """The report page: verdict banner, environment, one row per check with failures first."""
    verdict = summary.verdict
    counts = ", ".join(f"{n} {v}" for v, n in sorted(summary.counts().items(), key=lambda kv: ORDER.get(kv[0], 9)))
    env_rows = [
        ("target", summary.target),
        ("environment", summary.environment),
        ("started", iso(summary.started_at) or ""),
        ("finished", iso(summary.finished_at) or ""),
        *sorted(summary.info.items()),
    ]
    env = "".join(f"<tr><td>{escape(k)}</td><td>{escape(str(v))}</td></tr>" for k, v in env_rows)
    checks = sorted(summary.checks, key=lambda c: (ORDER.get(c.verdict, 9), c.id))
    rows = "".join(_row(c) for c in checks)
    drills = [c for c in checks if c.timeline]
    timelines = ("<h2>Drill timelines</h2>" + "".join(_timeline(c) for c in drills)) if drills else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "img-src 'self' data:\">"
        f"<title>opsgate {escape(verdict)}: {escape(summary.target)}</title><style>{STYLE}</style></head><body>"
        f"<div class='banner' id='verdict' data-verdict='{verdict}' style='background:{COLOURS.get(verdict, '#000')}'>"
        f"{escape(verdict.upper())} — {escape(summary.target)} ({escape(summary.environment)})"
        f"<div style='font-size:.9rem;font-weight:400'>{len(summary.checks)} checks: {escape(counts)}</div></div>"
        f"<main><h2>Environment</h2><table class='env'>{env}</table>"
        "<h2>Checks</h2><table id='checks'><thead><tr><th>verdict</th><th>check</th><th>kind</th>"
        "<th>measured</th><th>threshold</th><th>unit</th><th>message</th><th>claim</th><th>evidence</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>{timelines}</main></body></html>\n"
    )
