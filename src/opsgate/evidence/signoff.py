"""``opsgate signoff``: the newest gate, drill and SLO runs of a target, collected into a tamper-evident bundle.

``opsgate signoff --release NAME`` writes ``reports/signoff/NAME/`` (or ``--out``)::

    manifest.json     release, target, versions, each run's verdict/counts/age, figures, regressions,
                      and the sha256 + size of every other file (see :mod:`opsgate.evidence.manifest`)
    SUMMARY.md        one page: verdict per run kind, what is missing or stale, failing checks, SLO
                      figures, the comparison with the previous sign-off, runbook coverage
    runs/<kind>/      the whole run directory of the newest ``gate``, ``drill`` and ``load`` run

and the bundle digest beside it (``reports/signoff/NAME.digest``). The bundle is always written; the
command exits 0 only when all three runs are present, none older than ``--max-age``, each passed, and
nothing regressed; else 1 with the reason. ``opsgate signoff --verify DIR`` re-checks a bundle.

**Regressions** (seed 004: "Check Grafana deployment dashboard for error/latency regressions"). The
previous sign-off is the newest other bundle of the same target in the same parent folder; it must
itself verify against its digest file, or nothing is compared (and that is a problem). Figures are
compared only for the same run kind, check and SLO stage (a short stage is never held against a full
profile):

- SLO rows (kind ``slo``): the exact p95 and the error rate from their ``figures``;
- gates on a histogram's 0.95 quantile (unit ``s`` or ``ms``): their measured value, as ms.

A p95 regressed when new > old x (1 + margin) and new - old ≥ :data:`P95_FLOOR_MS` (a rise smaller
than that is loopback timer noise, not a release's doing). An error rate regressed when new > old x
(1 + margin) and new - old ≥ :data:`ERROR_RATE_FLOOR`: with old = 0 every rise is infinitely many
times the old rate, so the absolute floor decides (one error in 250 requests, 0.4%, is flagged; one
in 5,000 is not).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import click

from opsgate.config import Target, TargetError
from opsgate.evidence.claims import coverage_for_runs
from opsgate.evidence.coverage import CoverageReport
from opsgate.evidence.freshness import age_text
from opsgate.evidence.manifest import (
    KEY_ENV,
    MANIFEST,
    SUMMARY,
    DigestRecord,
    Figure,
    FileEntry,
    Manifest,
    Measure,
    PreviousSignoff,
    Regression,
    RunEntry,
    bundle_digest,
    bundle_hmac,
    digest_path,
    file_sha256,
    read_manifest,
    scan,
    signing_key,
    verify_bundle,
)
from opsgate.evidence.redact import Redactor
from opsgate.evidence.rundir import RUN_KINDS, Run, newest_runs, reports_dir
from opsgate.evidence.summary import iso

EXIT_OK, EXIT_NOT_SIGNED, EXIT_USAGE = 0, 1, 2
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
P95_FLOOR_MS = 1.0
"""A p95 rise below this many milliseconds is never a regression."""
ERROR_RATE_FLOOR = 0.001
"""An error-rate rise below this (0.1 percentage point) is never a regression."""
MAX_LISTED = 20
"""Failing checks and coverage rows listed in SUMMARY.md before "… and N more" (it stays one page)."""


@dataclass(frozen=True)
class Previous:
    """The previous sign-off of the same target: its manifest and folder, and whether it verified."""

    manifest: Manifest
    path: Path
    problems: list[str]


def load_signoff_target(path: Path) -> Target:
    """The target file loaded as ``opsgate validate`` does (a local target's addresses are placeholders)."""
    from opsgate.environments.launch import Launcher

    with tempfile.TemporaryDirectory() as scratch:
        return Launcher(path, Path(scratch)).target


def run_entry(kind: str, run: Run, *, now: float, max_age_s: float) -> RunEntry:
    """The manifest's record of one collected run; its age is wall-clock seconds since it finished."""
    summary = run.summary
    age_s = now - (summary.finished_at or summary.started_at)
    return RunEntry(kind=kind, run_id=run.path.name, path=f"runs/{kind}", verdict=summary.verdict,
                    counts=summary.counts(), started_at=iso(summary.started_at), finished_at=iso(summary.finished_at),
                    age_s=round(age_s, 3), stale=age_s > max_age_s, info=dict(summary.info))  # fmt: skip


def copy_run(run: Run, destination: Path) -> list[str]:
    """Copy the run directory to ``destination``; returns the symlinks left out (a bundle holds regular files)."""
    skipped: list[str] = []

    def ignore(folder: str, names: list[str]) -> list[str]:
        links = [name for name in names if (Path(folder) / name).is_symlink()]
        skipped.extend(str(Path(folder, name).relative_to(run.path)) for name in links)
        return links

    shutil.copytree(run.path, destination, ignore=ignore)
    return skipped


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def figures_of(runs: Mapping[str, Run], target: Target) -> list[Figure]:
    """The comparable figures of the collected runs: SLO rows' p95 and error rate, p95 gates' measured value."""
    p95_gates = {
        f"gate[{gate.name}]": gate.unit
        for gate in target.gates
        if gate.metric is not None and gate.metric.histogram and gate.metric.quantile == 0.95
        and gate.unit in ("s", "ms")
    }  # fmt: skip
    found = []
    for kind, run in runs.items():
        for check in run.summary.checks:
            if check.kind == "slo":
                p95 = _number(check.figures.get("p95_ms"))
                if p95 is None and check.unit == "ms":
                    p95 = _number(check.measured)
                count = _number(check.figures.get("count"))
                stage = check.figures.get("stage")
                found.append(Figure(run=kind, check=check.id, stage=None if stage is None else str(stage),
                                    verdict=check.verdict, p95_ms=p95,
                                    error_rate=_number(check.figures.get("error_rate")),
                                    count=None if count is None else int(count)))  # fmt: skip
            elif check.id in p95_gates and (measured := _number(check.measured)) is not None:
                p95_ms = measured * 1000 if p95_gates[check.id] == "s" else measured
                found.append(Figure(run=kind, check=check.id, stage=None, verdict=check.verdict,
                                    p95_ms=round(p95_ms, 3), error_rate=None, count=None))  # fmt: skip
    return found


def find_regressions(previous: Sequence[Figure], current: Sequence[Figure], margin: float) -> list[Regression]:
    """Figures worse than the previous sign-off's same figure beyond ``margin`` (see the module docstring)."""
    before = {(f.run, f.check, f.stage): f for f in previous}
    flagged = []
    for figure in current:
        old = before.get((figure.run, figure.check, figure.stage))
        if old is None:
            continue
        pairs: tuple[tuple[Measure, float | None, float | None, float], ...] = (
            ("p95_ms", old.p95_ms, figure.p95_ms, P95_FLOOR_MS),
            ("error_rate", old.error_rate, figure.error_rate, ERROR_RATE_FLOOR),
        )
        for measure, was, now, floor in pairs:
            if was is not None and now is not None and now > was * (1 + margin) and now - was >= floor:
                flagged.append(Regression(run=figure.run, check=figure.check, measure=measure, previous=was,
                                          current=now, margin=margin))  # fmt: skip
    return flagged


def find_previous(bundle: Path, target: str) -> Previous | None:
    """The newest other sign-off of ``target`` beside ``bundle`` (by creation time), checked against its digest."""
    candidates = []
    for path in sorted(bundle.parent.glob(f"*/{MANIFEST}")):
        folder = path.parent
        if folder.resolve() == bundle.resolve() or folder.is_symlink():
            continue
        try:
            manifest = read_manifest(folder)
        except ValueError as exc:
            click.echo(f"opsgate: warning: {exc}; not a sign-off to compare with", err=True)
            continue
        if manifest.target == target:
            candidates.append((manifest.created_at_unix, folder, manifest))
    if not candidates:
        return None
    _, folder, manifest = max(candidates, key=lambda candidate: candidate[0])
    return Previous(manifest, folder, verify_bundle(folder, expect_digest=None, key=None).problems)


def _cell(text: object, limit: int = 300) -> str:
    shown = str(text).replace("\n", " ").replace("|", "\\|")
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items())) or "no checks"


def _figure(value: float | None, *, ratio: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:.3%}" if ratio else f"{value:.1f}"


@dataclass(frozen=True)
class SummaryInput:
    """Everything SUMMARY.md shows, gathered by :func:`signoff_command`."""

    manifest: Manifest
    runs: Mapping[str, Run]
    previous: Previous | None
    coverage: CoverageReport | None
    masked: int
    skipped_links: list[str]
    digest_file: str
    """The name of the digest file beside the bundle."""


def render_summary(data: SummaryInput) -> str:
    """SUMMARY.md: the one-page account of the sign-off."""
    m = data.manifest
    verdict = "SIGNED OFF" if m.signed_off else "NOT SIGNED OFF"
    lines = [f"# Sign-off `{m.release}` — {verdict}", ""]
    lines.append(f"Target `{m.target}` (environment `{m.environment}`), {m.created_at}, opsgate "
                 f"{m.opsgate_version}. Evidence older than {age_text(m.max_age_s)} is stale; regression margin "
                 f"{m.margin:.0%}.")  # fmt: skip
    lines += ["", "## Problems", ""]
    lines += [f"- {_cell(problem, 400)}" for problem in m.problems] or ["None."]
    lines += ["", "## Runs", "", "| kind | run | verdict | checks | finished | age |", "|---|---|---|---|---|---|"]
    entries = {entry.kind: entry for entry in m.runs}
    for kind in RUN_KINDS:
        entry = entries.get(kind)
        if entry is None:
            lines.append(f"| {kind} | — | **MISSING** | | | |")
        else:
            age = age_text(entry.age_s) + (" **STALE**" if entry.stale else "")
            lines.append(f"| {kind} | `{entry.path}` ({entry.run_id}) | {entry.verdict.upper()} | "
                         f"{_counts(entry.counts)} | {entry.finished_at or '—'} | {age} |")  # fmt: skip
    failing = [(kind, check) for kind, run in data.runs.items() for check in run.summary.checks
               if check.verdict != "pass"]  # fmt: skip
    lines += ["", "## Failing checks", ""]
    lines += [f"- {kind} `{check.id}` {check.verdict.upper()}: {_cell(check.message)}"
              for kind, check in failing[:MAX_LISTED]] or ["None."]  # fmt: skip
    if len(failing) > MAX_LISTED:
        lines.append(f"- … and {len(failing) - MAX_LISTED} more (see each run's report.html)")
    lines += ["", "## SLO and latency figures", ""]
    before = {(f.run, f.check, f.stage): f for f in (data.previous.manifest.figures if data.previous else [])}
    if m.figures:
        lines += ["| run | check | stage | verdict | p95 ms | error rate | requests | previous p95 ms "
                  "| previous error rate |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for f in m.figures:
            old = before.get((f.run, f.check, f.stage))
            lines.append(
                f"| {f.run} | `{f.check}` | {f.stage or '—'} | {f.verdict.upper()} | {_figure(f.p95_ms)} | "
                f"{_figure(f.error_rate, ratio=True)} | {f.count if f.count is not None else '—'} | "
                f"{_figure(old.p95_ms) if old else '—'} | {_figure(old.error_rate, ratio=True) if old else '—'} |"
            )
    else:
        lines.append("No SLO rows or p95 gates in the collected runs.")
    lines += ["", "## Compared with the previous sign-off", ""]
    if data.previous is None:
        lines.append(f"No previous sign-off of `{m.target}` beside this one: nothing compared.")
    else:
        prev = data.previous.manifest
        lines.append(f"Previous: `{prev.release}` ({data.previous.path.name}, {prev.created_at}).")
        if data.previous.problems:
            lines.append(f"It does not verify against its digest ({_cell(data.previous.problems[0])}): "
                         "nothing compared.")  # fmt: skip
        elif m.regressions:
            lines += ["", f"Regressions beyond {m.margin:.0%}:", ""]
            lines += [f"- **{_cell(regression.line())}**" for regression in m.regressions]
        else:
            compared = sum((f.run, f.check, f.stage) in before for f in m.figures)
            lines.append(f"No p95 or error-rate regression beyond {m.margin:.0%} ({compared} figure(s) compared).")
    if data.coverage is not None:
        lines += ["", "## Runbook coverage", "", data.coverage.line()]
        order = {"failing": 0, "stale": 1, "untested": 2}
        open_claims = sorted((c for c in data.coverage.claims if c.state in order), key=lambda c: order[c.state])
        if open_claims:
            lines += ["", "Failing, stale and untested claims (out-of-scope ones are only counted):", "",
                      "| claim | state | note |", "|---|---|---|"]  # fmt: skip
            lines += [f"| `{c.id}` | {c.state} | {_cell(c.note, 160)} |" for c in open_claims[:MAX_LISTED]]
            if len(open_claims) > MAX_LISTED:
                lines.append(f"| … | {len(open_claims) - MAX_LISTED} more | |")
    lines += ["", "## Integrity", ""]
    lines.append(f"`{MANIFEST}` lists the sha256 of every other file; the bundle digest (over every file, the "
                 f"manifest included) is kept outside the bundle in `{data.digest_file}` beside it. Check with "
                 "`opsgate signoff --verify <this folder> --expect-digest <digest>`.")  # fmt: skip
    if data.masked:
        lines.append(f"Secrets of the target were masked in {data.masked} copied file(s).")
    if data.skipped_links:
        lines.append(f"Symlinks left out of the copy: {', '.join(data.skipped_links)}.")
    return "\n".join(lines) + "\n"


def _refuse(message: str) -> int:
    click.echo(f"opsgate: signoff: {message}", err=True)
    return EXIT_USAGE


def signoff_command(release: str, target_file: Path, out: Path | None, max_age_s: float, margin: float) -> int:
    """Write the sign-off bundle of ``release`` for the target in ``target_file``; the exit code.

    0: gate, drill and load runs all present, fresh (≤ ``max_age_s`` s old) and passing, and no figure
    regressed beyond ``margin`` (a fraction) since the previous sign-off. 1: otherwise — the bundle is
    written all the same, listing why. 2: bad release name, target file or output folder.
    """
    if not SAFE_NAME.fullmatch(release) or ".." in release:
        return _refuse(f"--release: expected a name of letters, digits, '.', '_' and '-' (starting with a letter "
                       f"or digit, at most 128), got {release!r}")  # fmt: skip
    try:
        target = load_signoff_target(target_file)
    except TargetError as exc:
        click.echo(f"opsgate: {exc.message}", err=True)
        return EXIT_USAGE
    reports = reports_dir()
    bundle = out if out is not None else reports / "signoff" / release
    if bundle.exists() and (not bundle.is_dir() or any(bundle.iterdir())):
        return _refuse(f"{bundle} already exists and is not empty: a bundle is never overwritten "
                       "(choose another --release or --out)")  # fmt: skip
    now = time.time()
    runs = newest_runs(reports, target=target.name)
    bundle.mkdir(parents=True, exist_ok=True)
    skipped: list[str] = []
    for kind, run in runs.items():
        skipped += [f"runs/{kind}/{link}" for link in copy_run(run, bundle / "runs" / kind)]
    redactor = Redactor(target.secret_values)
    masked = len(redactor.tree(bundle)) if runs else 0
    entries = [run_entry(kind, runs[kind], now=now, max_age_s=max_age_s) for kind in RUN_KINDS if kind in runs]
    missing = [kind for kind in RUN_KINDS if kind not in runs]
    figures = figures_of(runs, target)
    previous = find_previous(bundle, target.name)
    regressions: list[Regression] = []
    problems = [f"missing: no {kind} run of target {target.name!r} in {reports}" for kind in missing]
    problems += [f"stale: {e.kind} run {e.run_id} is {age_text(e.age_s)} old (max {age_text(max_age_s)})"
                 for e in entries if e.stale]  # fmt: skip
    problems += [f"not passing: {e.kind} run {e.run_id} verdict {e.verdict} ({_counts(e.counts)})"
                 for e in entries if e.verdict != "pass"]  # fmt: skip
    if previous is not None and previous.problems:
        problems.append(f"previous sign-off {previous.path} does not verify ({previous.problems[0]}): "
                        "no regression comparison")  # fmt: skip
    elif previous is not None:
        regressions = find_regressions(previous.manifest.figures, figures, margin)
        problems += [f"regression: {regression.line()}" for regression in regressions]
    coverage = coverage_for_runs(target, list(runs.values()), now=now, max_age_s=max_age_s)
    gate_info = runs["gate"].summary.info if "gate" in runs else next((r.summary.info for r in runs.values()), {})
    previous_record = None
    if previous is not None:
        beside = digest_path(previous.path)
        try:
            recorded: str | None = DigestRecord.read(beside).digest if beside.exists() else None
        except ValueError:
            recorded = None
        previous_record = PreviousSignoff(release=previous.manifest.release, path=str(previous.path),
                                          created_at=previous.manifest.created_at, digest=recorded)  # fmt: skip
    draft = Manifest(
        release=release, target=target.name, environment=target.environment, created_at=iso(now) or "",
        opsgate_version=metadata.version("opsgate"), tool_versions=dict(gate_info), max_age_s=max_age_s,
        margin=margin, signed_off=not problems, problems=problems, runs=entries, missing=missing, figures=figures,
        regressions=regressions, previous=previous_record, coverage=coverage.line() if coverage else None, files=[],
    )  # fmt: skip
    summary = render_summary(SummaryInput(draft, runs, previous, coverage, masked, skipped, digest_path(bundle).name))
    (bundle / SUMMARY).write_text(redactor.text(summary))
    files, _ = scan(bundle, exclude_manifest=True)
    manifest = draft.model_copy(update={"files": files})
    manifest.write(bundle)
    everything = [*files, FileEntry(path=MANIFEST, sha256=file_sha256(bundle / MANIFEST),
                                    size=(bundle / MANIFEST).stat().st_size)]  # fmt: skip
    key = signing_key()
    record = DigestRecord(digest=bundle_digest(everything), hmac=bundle_hmac(everything, key) if key else None)
    record.write(digest_path(bundle))
    _report(bundle, release, manifest, record)
    if problems:
        click.echo(f"opsgate: sign-off {release}: NOT signed off — {'; '.join(_short(manifest))}", err=True)
        return EXIT_NOT_SIGNED
    click.echo(f"opsgate: sign-off {release}: signed off (gate, drill and load passed, fresh, no regression)")
    return EXIT_OK


def _report(bundle: Path, release: str, manifest: Manifest, record: DigestRecord) -> None:
    click.echo(f"opsgate: sign-off bundle {bundle} ({len(manifest.files) + 1} files)")
    for entry in manifest.runs:
        stale = "  STALE" if entry.stale else ""
        age = age_text(entry.age_s)
        click.echo(f"  {entry.kind:<6} {entry.run_id:<26} {entry.verdict.upper():<13} {age} old{stale}")
    for kind in manifest.missing:
        click.echo(f"  {kind:<6} {'—':<26} MISSING")
    for regression in manifest.regressions:
        click.echo(f"  regression: {regression.line()}")
    if manifest.coverage:
        click.echo(f"  {manifest.coverage}")
    click.echo(f"opsgate: bundle digest {record.digest}")
    signed = f", with an HMAC-SHA256 keyed by ${KEY_ENV}" if record.hmac else ""
    click.echo(f"opsgate: digest kept outside the bundle in {digest_path(bundle)}{signed}")


def _short(manifest: Manifest) -> list[str]:
    """The reasons for a refused sign-off, short enough for one line."""
    reasons = [f"missing {', '.join(manifest.missing)}"] if manifest.missing else []
    reasons += [f"stale {e.kind} ({age_text(e.age_s)} old)" for e in manifest.runs if e.stale]
    reasons += [f"{e.kind} {e.verdict}" for e in manifest.runs if e.verdict != "pass"]
    if manifest.regressions:
        reasons.append(f"{len(manifest.regressions)} regression(s) beyond {manifest.margin:.0%}")
    if any(problem.startswith("previous sign-off") for problem in manifest.problems):
        reasons.append("the previous sign-off does not verify")
    return reasons


def verify_command(bundle: Path, expect_digest: str | None) -> int:
    """Check a bundle against its manifest, its digest (``expect_digest`` or the digest file) and, with
    ``$OPSGATE_SIGNOFF_KEY``, its HMAC; print every problem, one line each. The exit code: 0 intact, 1 not."""
    if not bundle.is_dir():
        return _refuse(f"--verify: expected a sign-off bundle folder, got {str(bundle)!r} (no such folder)")
    result = verify_bundle(bundle, expect_digest=expect_digest, key=signing_key())
    for problem in result.problems:
        click.echo(f"opsgate: verify: {problem}")
    if result.problems:
        click.echo(f"opsgate: verify: {bundle}: NOT intact — {len(result.problems)} problem(s)", err=True)
        return EXIT_NOT_SIGNED
    if result.hmac_checked:
        mac = "; HMAC matches"
    elif result.hmac_recorded:
        mac = f"; an HMAC is recorded but ${KEY_ENV} is not set: not checked"
    else:
        mac = ""
    click.echo(f"opsgate: verify: {bundle}: intact — {result.files} files match {MANIFEST}; digest "
               f"{result.digest} matches {result.compared_with}{mac}")  # fmt: skip
    return EXIT_OK
