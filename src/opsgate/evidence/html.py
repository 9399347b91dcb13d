"""``report.html``: the run's one self-contained page (no JavaScript, nothing fetched) a person can read.

Sections, each with a stable id: ``verdict`` (banner with counts), ``environment``, ``checks`` (failures
first, measured vs threshold, a sparkline of windowed samples), ``drills`` (timeline and chart per drill),
``slos`` (exact percentiles vs limits beside Locust's), ``screenshots`` (embedded thumbnails),
``coverage`` (when the run has a claims registry) and ``artifacts`` (links to the raw files). Charts are
inline SVG from :mod:`opsgate.evidence.charts`; every text is escaped.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

from opsgate.evidence import charts
from opsgate.evidence.coverage import CoverageReport
from opsgate.evidence.records import CheckRecord
from opsgate.evidence.summary import RunSummary, iso
from opsgate.evidence.versions import TOOLS

ORDER = {"fail": 0, "error": 1, "inconclusive": 2, "aborted": 3, "refused": 4, "pass": 5}
COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "error": "#bc4c00", "inconclusive": "#9a6700",
           "aborted": "#9a6700", "refused": "#6e7781"}  # fmt: skip
CLAIM_COLOURS = {"verified": "#1a7f37", "failing": "#cf222e", "untested": "#9a6700", "stale": "#bc4c00",
                 "out-of-scope": "#6e7781"}  # fmt: skip
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:"
EMBED_MAX_BYTES = 512 * 1024
"""Largest screenshot embedded as a thumbnail; larger ones are only linked."""
EMBED_TOTAL_BYTES = 4 * 1024 * 1024
"""Most screenshot bytes embedded in one page (keeps it quick to open); the rest are linked."""
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp"}  # fmt: skip
RUN_FILES = ("summary.json", "junit.xml", "logs/", "drills/", "screenshots/", "slo/")
"""The raw artifacts of a run directory, linked from the ``artifacts`` section."""
ENVIRONMENT_KEYS = ("provider", "run kind", "git sha", "opsgate version", "time scale", "target file")
PYTHON_TOOLS = ("python", "pytest")

STYLE = """
*{box-sizing:border-box}
body{font:14px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
main{max-width:1280px;margin:0 auto;padding:0 1.5rem 3rem}
.banner{padding:1.1rem 1.5rem;color:#fff}
.banner h1{margin:0;font-size:1.5rem;font-weight:650;letter-spacing:.01em}
.banner p{margin:.3rem 0 0;font-size:.95rem;opacity:.95}
.chip{display:inline-block;padding:.05rem .55rem;margin:.35rem .35rem 0 0;border-radius:1rem;
 background:rgba(255,255,255,.2);font-size:.85rem;font-weight:600}
nav{position:sticky;top:0;z-index:1;background:#fff;border-bottom:1px solid #d0d7de;padding:.45rem 1.5rem;
 font-size:.9rem}
nav a{margin-right:1.1rem;color:#0969da;text-decoration:none}nav a:hover{text-decoration:underline}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.5rem 1.25rem 1rem;margin:1.25rem 0}
h2{font-size:1.15rem;margin:.6rem 0 .4rem}h3{font-size:1rem;margin:1.1rem 0 .3rem}
.note{color:#57606a;margin:.2rem 0 .6rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0 .75rem}
th,td{border-bottom:1px solid #eaeef2;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600;font-size:.85rem;color:#57606a;white-space:nowrap}
tbody tr:hover{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.v{font-weight:700;text-transform:uppercase;font-size:.75rem;letter-spacing:.03em;white-space:nowrap}
tr[data-verdict=fail],tr[data-verdict=error]{background:#fff8f8}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,monospace;overflow-wrap:anywhere}
.scroll{overflow-x:auto}td.id{min-width:13rem}td.claim{min-width:9rem;overflow-wrap:anywhere}
.msg{min-width:16rem;max-width:34rem;overflow-wrap:anywhere}td.text{min-width:9rem;max-width:16rem;overflow-wrap:anywhere}.muted{color:#57606a}
.env{width:auto}.env td:first-child{width:11rem;color:#57606a}
.drill{border-top:1px solid #eaeef2;padding-top:.3rem}
.drill .chart{display:block;max-width:100%;height:auto;margin:.4rem 0}
.timeline td:first-child{width:2.5rem;color:#57606a}.timeline{font-size:.9rem}
.kind{font-size:.75rem;font-weight:600;white-space:nowrap}
.k-fault{color:#cf222e}.k-rollback{color:#1a7f37}.k-alert-pending{color:#9a6700}.k-alert-firing{color:#cf222e}
.k-alert-resolved{color:#1a7f37}.k-abort{color:#8250df}.k-verdict{color:#1f2328}span.k-step{color:#8c959f}
.shots{display:flex;flex-wrap:wrap;gap:1rem}
figure{margin:0;width:320px}figure img{width:320px;max-height:200px;object-fit:cover;object-position:top;
 border:1px solid #d0d7de;border-radius:4px;display:block}
figcaption{font-size:.85rem;margin-top:.25rem;word-break:break-all}
blockquote{margin:0;padding-left:.6rem;border-left:3px solid #d0d7de;color:#424a53}
ul.files{columns:2;margin:.3rem 0}
"""


def _num(value: float | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def _align(value: float | str | None) -> str:
    """Numbers align right on one line; texts (a browser check's selector, a drill's durations) wrap."""
    return "text" if isinstance(value, str) else "num"


def _verdict(verdict: str) -> str:
    return f"<span class='v' style='color:{COLOURS.get(verdict, '#000')}'>{escape(verdict)}</span>"


def _link(path: str, text: str | None = None) -> str:
    return f"<a href='{escape(path)}'>{escape(text if text is not None else path.rsplit('/', 1)[-1])}</a>"


def _sorted(checks: Iterable[CheckRecord]) -> list[CheckRecord]:
    """Failures first, then errors, inconclusive, aborted, refused, passes; by id within each."""
    return sorted(checks, key=lambda c: (ORDER.get(c.verdict, 9), c.id))


def _is_drill(check: CheckRecord) -> bool:
    return check.kind == "drill" or bool(check.timeline)


def _table(head: Sequence[str], rows: Iterable[str], css: str = "") -> str:
    cells = "".join(f"<th>{escape(h)}</th>" for h in head)
    return (
        f"<div class='scroll'><table class='{css}'><thead><tr>{cells}</tr></thead><tbody>{''.join(rows)}</tbody>"
        "</table></div>"
    )


def _section(ident: str, title: str, body: str) -> str:
    return f"<section id='{ident}'><h2>{escape(title)}</h2>{body}</section>"


# --- banner and environment ---------------------------------------------------------------------


def _counts(summary: RunSummary) -> list[tuple[str, int]]:
    return sorted(summary.counts().items(), key=lambda kv: ORDER.get(kv[0], 9))


def _banner(summary: RunSummary) -> str:
    verdict = summary.verdict
    chips = "".join(f"<span class='chip'>{n} {escape(v)}</span>" for v, n in _counts(summary))
    took = f" in {summary.finished_at - summary.started_at:.1f} s" if summary.finished_at else ""
    return (
        f"<header class='banner' id='verdict' data-verdict='{escape(verdict)}' "
        f"style='background:{COLOURS.get(verdict, '#000')}'>"
        f"<h1>{escape(verdict.upper())} — {escape(summary.target)} ({escape(summary.environment)})</h1>"
        f"<p>{len(summary.checks)} checks, started {escape(iso(summary.started_at) or '')}{took}</p>"
        f"<div>{chips}</div></header>"
    )


def _environment(summary: RunSummary) -> str:
    info = summary.info
    rows: list[tuple[str, str]] = [("target", summary.target), ("environment class", summary.environment)]
    rows += [(key, info[key]) for key in ENVIRONMENT_KEYS if key in info]
    rows += [("started", iso(summary.started_at) or ""), ("finished", iso(summary.finished_at) or "")]
    known = {*ENVIRONMENT_KEYS, *PYTHON_TOOLS, *TOOLS}
    rows += sorted((key, value) for key, value in info.items() if key not in known)
    body = "".join(f"<tr><td>{escape(key)}</td><td>{escape(value)}</td></tr>" for key, value in rows)
    tools = [(key, info[key]) for key in (*PYTHON_TOOLS, *TOOLS) if key in info]
    if tools:
        listed = " · ".join(f"{escape(name)} <b>{escape(version)}</b>" for name, version in tools)
        body += f"<tr id='tool-versions'><td>tool versions</td><td>{listed}</td></tr>"
    return _section("environment", "Environment", f"<table class='env'><tbody>{body}</tbody></table>")


# --- checks ---------------------------------------------------------------------------------------


def _check_row(check: CheckRecord, anchor: str | None) -> str:
    links = " ".join(_link(a) for a in check.attachments)
    name = f"<code>{escape(check.id)}</code>"
    if anchor is not None:
        name = f"<a href='#{anchor}'>{name}</a>"
    # One sample is the measured value itself; a line needs a window of them.
    spark = charts.sparkline(check.samples, check.threshold) if len(check.samples) > 1 else ""
    unit = f" <span class='muted'>{escape(check.unit)}</span>" if check.unit else ""
    measured = f"{_num(check.measured)}{unit}" if check.measured is not None else ""
    threshold = f"{escape(check.op)} {_num(check.threshold)}{unit}" if check.threshold is not None else ""
    return (
        f"<tr id='{escape(check.id)}' data-verdict='{escape(check.verdict)}'>"
        f"<td>{_verdict(check.verdict)}</td><td class='id'>{name}<br><span class='muted'>{escape(check.kind)}</span>"
        f"</td><td class='{_align(check.measured)}'>{measured}</td><td class='{_align(check.threshold)}'>{threshold}"
        f"</td><td>{spark}</td><td class='msg'>{escape(check.message)}</td>"
        f"<td class='claim'>{escape(check.claim or '')}</td><td>{links}</td></tr>"
    )


def _checks(checks: Sequence[CheckRecord], anchors: dict[str, str]) -> str:
    head = ("verdict", "check / kind", "measured", "threshold", "samples", "message", "claim", "evidence")
    note = (
        "<p class='note'>Failures first. Samples: one point per observation of a windowed check "
        "(red: failing, grey tick: no answer), the threshold dashed.</p>"
    )
    rows = (_check_row(c, anchors.get(c.id)) for c in checks)
    return _section("checks", "Checks and gates", note + _table(head, rows) if checks else "<p>No checks ran.</p>")


# --- drills ---------------------------------------------------------------------------------------


def _drill(check: CheckRecord, anchor: str) -> str:
    start = check.started_at if check.started_at is not None else (check.timeline[0].at if check.timeline else None)
    chart = charts.series_chart(check.series, check.timeline, start=start, end=check.finished_at)
    origin = start or 0.0
    rows = (
        f"<tr class='k-{kind}'><td class='num'>{number}</td><td class='num'>+{event.at - origin:.2f}s</td>"
        f"<td><span class='kind k-{kind}'>{escape(kind)}</span></td><td>{escape(event.what)}</td>"
        f"<td class='msg'>{escape(event.detail)}</td></tr>"
        for number, event in enumerate(check.timeline, start=1)
        for kind in [charts.event_kind(event.what)]
    )
    took = f"{check.finished_at - check.started_at:.1f} s" if check.started_at and check.finished_at else ""
    facts = " · ".join(
        part
        for part in (
            f"claim <code>{escape(check.claim)}</code>" if check.claim else "",
            escape(took),
            f"measured: {escape(str(check.measured))}" if check.measured is not None else "",
            " ".join(_link(a) for a in check.attachments),
        )
        if part
    )
    return (
        f"<article class='drill' id='{anchor}' data-verdict='{escape(check.verdict)}' data-drill='{escape(check.id)}'>"
        f"<h3>{_verdict(check.verdict)} <code>{escape(check.id)}</code></h3>"
        f"<p class='msg'>{escape(check.message)}</p><p class='note'>{facts}</p>{chart}"
        f"{_table(('#', 'at', 'kind', 'event', 'detail'), rows, 'timeline')}</article>"
    )


def _drills(drills: Sequence[tuple[CheckRecord, str]]) -> str:
    if not drills:
        return _section("drills", "Drills", "<p>No drills in this run.</p>")
    note = (
        "<p class='note'>Each drill's probe series over time (seconds from its start); the shaded band is the "
        "time the fault held; numbered markers are the timeline rows below.</p>"
    )
    return _section("drills", "Drills", note + "".join(_drill(check, anchor) for check, anchor in drills))


# --- SLOs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SloFigures:
    """An SLO row's figures as the report shows them (ms, ratios, requests per second)."""

    exact: dict[str, float | None]
    limits: dict[str, float | None]
    locust: dict[str, float | None]
    error_rate: float | None
    error_rate_limit: float | None
    planned_rate: float | None
    achieved_rate: float | None

    @classmethod
    def of(cls, check: CheckRecord) -> SloFigures:
        """Read from the record's ``figures`` (limits fall back to the headline threshold for older runs)."""
        f = check.figures
        exact = {q: _float(f.get(f"{q}_ms")) for q in ("p50", "p95", "p99")}
        limits = {q: _float(f.get(f"{q}_limit_ms")) for q in exact}
        if not any(limits.values()) and check.unit == "ms":
            headline = next((q for q, v in exact.items() if v is not None and v == _float(check.measured)), None)
            if headline is not None:
                limits[headline] = _float(check.threshold)
        return cls(
            exact=exact, limits=limits, locust={q: _float(f.get(f"locust_{q}_ms")) for q in exact},
            error_rate=_float(f.get("error_rate")), error_rate_limit=_float(f.get("error_rate_limit")),
            planned_rate=_float(f.get("planned_rate_per_s")), achieved_rate=_float(f.get("achieved_rate_per_s")),
        )  # fmt: skip

    def bars(self) -> list[charts.Percentile]:
        """One bar per percentile."""
        return [charts.Percentile(q, self.exact[q], self.limits[q], self.locust[q]) for q in self.exact]


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _ms(value: float | None, limit: float | None = None) -> str:
    if value is None:
        return "<span class='muted'>—</span>"
    over = limit is not None and value >= limit
    text = f"{value:.1f}"
    shown = f"<b style='color:{COLOURS['fail']}'>{text}</b>" if over else text
    return shown + (f" <span class='muted'>/ {limit:g}</span>" if limit is not None else "")


def _slo_row(check: CheckRecord, anchor: str) -> str:
    fig = SloFigures.of(check)
    exact = "".join(f"<td class='num'>{_ms(fig.exact[q], fig.limits[q])}</td>" for q in fig.exact)
    locust = " / ".join("—" if v is None else f"{v:g}" for v in fig.locust.values())
    error = "—" if fig.error_rate is None else f"{fig.error_rate:.2%}"
    if fig.error_rate_limit is not None:
        error += f" <span class='muted'>/ {fig.error_rate_limit:.2%}</span>"
    rate = " → ".join("—" if v is None else f"{v:.1f}/s" for v in (fig.planned_rate, fig.achieved_rate))
    counts = "{count} of {planned}, {skipped} skipped".format(**{k: check.figures.get(k, "?") for k in
                                                                ("count", "planned", "skipped")})  # fmt: skip
    stage = escape(str(check.figures.get("stage", "")))
    return (
        f"<tr id='{anchor}' class='slo' data-slo='{escape(check.id)}' data-verdict='{escape(check.verdict)}'>"
        f"<td>{_verdict(check.verdict)}</td><td><code>{escape(check.id)}</code><br>"
        f"<span class='muted'>{escape(str(check.figures.get('endpoint', '')))} · {stage} stage</span></td>{exact}"
        f"<td class='num'>{escape(locust)}</td><td class='num'>{error}</td><td class='num'>{escape(rate)}<br>"
        f"<span class='muted'>{escape(counts)}</span></td>"
        f"<td>{charts.percentile_chart(fig.bars())}</td></tr>"
    )


def _slos(slos: Sequence[tuple[CheckRecord, str]]) -> str:
    if not slos:
        return _section("slos", "SLOs under load", "<p>No SLO rows in this run.</p>")
    note = (
        "<p class='note'>Exact percentiles (ms, nearest rank over every request's raw time) against their limits; "
        "Locust's own rounded figures beside them (and as hollow diamonds in the chart). "
        "Each figure / its limit; Locust: its p50/p95/p99; rate: planned → achieved.</p>"
    )
    head = ("verdict", "row", "p50", "p95", "p99", "Locust", "errors", "rate", "percentiles")
    return _section("slos", "SLOs under load", note + _table(head, (_slo_row(c, a) for c, a in slos)))


# --- screenshots, coverage, artifacts -------------------------------------------------------------


def _screenshots(checks: Sequence[CheckRecord], run_dir: Path | None) -> str:
    shots = [(c, a) for c in checks for a in c.attachments if Path(a).suffix.lower() in IMAGE_TYPES]
    if not shots:
        return _section("screenshots", "Screenshots", "<p>No screenshots in this run.</p>")
    budget = EMBED_TOTAL_BYTES
    figures = []
    for check, attachment in shots:
        path = run_dir / attachment if run_dir is not None else None
        size = path.stat().st_size if path is not None and path.is_file() else None
        if size is not None and size <= min(EMBED_MAX_BYTES, budget):
            assert path is not None
            budget -= size
            data = base64.b64encode(path.read_bytes()).decode()
            mime = IMAGE_TYPES[path.suffix.lower()]
            image = (
                f"<a href='{escape(attachment)}'><img src='data:{mime};base64,{data}' alt='{escape(attachment)}'></a>"
            )
        elif size is None:
            image = "<p class='muted'>file not found</p>"
        else:
            image = f"<p class='muted'>{size // 1024} KiB: too large to embed, open the file</p>"
        figures.append(f"<figure>{image}<figcaption>{_verdict(check.verdict)} <code>{escape(check.id)}</code><br>"
                       f"{_link(attachment, attachment)}</figcaption></figure>")  # fmt: skip
    return _section("screenshots", "Screenshots", f"<div class='shots'>{''.join(figures)}</div>")


def _coverage(coverage: CoverageReport) -> str:
    rows = (
        f"<tr data-state='{escape(claim.state)}'><td class='v' style='color:{CLAIM_COLOURS.get(claim.state, '#000')}'>"
        f"{escape(claim.state)}</td><td class='id'><code>{escape(claim.id)}</code></td>"
        f"<td><blockquote>{escape(claim.quote)}</blockquote></td>"
        f"<td>{escape(claim.runbook)}<br><span class='muted'>{escape(claim.section)}</span></td>"
        f"<td>{'<br>'.join(f'<code>{escape(c)}</code>' for c in claim.checks)}</td>"
        f"<td class='num'>{escape(iso(claim.last_verified_at) or '')}</td>"
        f"<td class='msg'>{escape(claim.note)}</td></tr>"
        for claim in coverage.claims
    )
    head = ("state", "claim", "runbook says", "runbook / section", "cited by", "last verified", "note")
    body = (f"<p><b>{escape(coverage.line())}</b></p><p class='note'>Registry: <code>{escape(coverage.registry)}"
            f"</code></p>{_table(head, rows)}")  # fmt: skip
    return _section("coverage", "Runbook coverage", body)


def _artifacts(checks: Sequence[CheckRecord], run_dir: Path | None) -> str:
    files = [f for f in RUN_FILES if run_dir is None or f in ("summary.json", "junit.xml") or (run_dir / f).exists()]
    links = "".join(f"<li>{_link(f, f)}</li>" for f in files)
    attached = [(c, a) for c in checks for a in c.attachments]
    rows = (f"<tr><td><code>{escape(c.id)}</code></td><td>{_link(a, a)}</td></tr>" for c, a in attached)
    table = _table(("check", "attachment"), rows) if attached else "<p>No attachments.</p>"
    body = f"<p class='note'>Paths are relative to this file's folder.</p><ul class='files'>{links}</ul>{table}"
    return _section("artifacts", "Raw artifacts", body)


def _nav(summary: RunSummary) -> str:
    parts = [("verdict", "Verdict"), ("environment", "Environment"), ("checks", "Checks"), ("drills", "Drills"),
             ("slos", "SLOs"), ("screenshots", "Screenshots")]  # fmt: skip
    if summary.coverage is not None:
        parts.append(("coverage", "Coverage"))
    parts.append(("artifacts", "Artifacts"))
    return "<nav>" + "".join(f"<a href='#{ident}'>{title}</a>" for ident, title in parts) + "</nav>"


def render(summary: RunSummary, run_dir: Path | None = None) -> str:
    """The report page. ``run_dir``: the run's folder, to embed screenshot thumbnails (linked only without it)."""
    checks = _sorted(summary.checks)
    drills = [(c, f"drill-{i}") for i, c in enumerate((c for c in checks if _is_drill(c)), start=1)]
    slos = [(c, f"slo-{i}") for i, c in enumerate((c for c in checks if c.kind == "slo"), start=1)]
    anchors = {c.id: anchor for c, anchor in (*drills, *slos)}
    coverage = _coverage(summary.coverage) if summary.coverage is not None else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>opsgate {escape(summary.verdict)}: {escape(summary.target)}</title><style>{STYLE}</style></head>"
        f"<body>{_banner(summary)}{_nav(summary)}<main>{_environment(summary)}{_checks(checks, anchors)}"
        f"{_drills(drills)}{_slos(slos)}{_screenshots(checks, run_dir)}{coverage}{_artifacts(checks, run_dir)}"
        "</main></body></html>\n"
    )
