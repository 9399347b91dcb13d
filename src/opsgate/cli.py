"""The ``opsgate`` command: ``up``, ``gate``, ``drill``, ``load``, ``freshness``, ``signoff``, ``coverage``,
``recover`` and ``validate``.

Exit codes follow the run's verdict: 0 pass, 1 fail, 2 bad usage or target file, 3 error or
inconclusive (or aborted), 4 refused by a guard.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import click

from opsgate.config import LOCAL_TARGET, TargetError
from opsgate.environments.binaries import MissingBinary
from opsgate.environments.launch import Launcher
from opsgate.environments.local import LocalEnvironmentError
from opsgate.evidence.rundir import new_run_dir
from opsgate.faults import journal
from opsgate.waits import WaitTimeout

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_ERROR, EXIT_REFUSED = 0, 1, 2, 3, 4
VERDICT_TO_EXIT = {"pass": EXIT_PASS, "fail": EXIT_FAIL, "error": EXIT_ERROR, "inconclusive": EXIT_ERROR,
                   "aborted": EXIT_ERROR, "refused": EXIT_REFUSED}  # fmt: skip
# pytest's exit codes → opsgate's: failed tests fail the gate; an interrupted, broken or empty run
# proves nothing, so it is an error, never a pass.
PYTEST_TO_OPSGATE = {0: EXIT_PASS, 1: EXIT_FAIL, 2: EXIT_ERROR, 3: EXIT_ERROR, 4: EXIT_USAGE, 5: EXIT_ERROR}
PYTEST_SETTINGS = [
    "-p", "no:locust",
    "-p", "no:cacheprovider",
    "-W", "ignore::pytest.PytestAssertRewriteWarning",
    "-o", "asyncio_mode=auto",
    "-o", "asyncio_default_fixture_loop_scope=session",
    "-o", "asyncio_default_test_loop_scope=session",
]  # fmt: skip


def fail(message: str, code: int = EXIT_USAGE) -> None:
    """Print one line on stderr and exit."""
    click.echo(f"opsgate: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="opsgate")
def main() -> None:
    """opsgate: executable runbooks — gates, alert checks, failure drills and SLO load."""


@main.command()
@click.argument("target_file", type=click.Path(path_type=Path))
def validate(target_file: Path) -> None:
    """Validate TARGET_FILE (with the current environment's variables)."""
    try:
        with tempfile.TemporaryDirectory() as scratch:  # a local target's addresses are placeholders here
            target = Launcher(target_file, Path(scratch)).target
    except TargetError as exc:
        fail(exc.message)
    click.echo(f"{target_file}: ok ({target.name}, environment {target.environment}, provider {target.provider})")


@main.command()
def recover() -> None:
    """Roll back what a hard-killed run left in its journal, and stop the processes it started."""
    results = journal.recover()
    if not results:
        click.echo(f"opsgate: nothing to recover in {journal.state_dir()}")
        return
    failed = 0
    for name, steps in results.items():
        click.echo(f"opsgate: recovering {name}")
        for step in steps:
            failed += not step.ok
            click.echo(f"  {'ok  ' if step.ok else 'FAIL'} {step.what}: {step.detail}")
    if failed:
        fail(f"{failed} undo step(s) failed; the journal is kept: fix the cause and run `opsgate recover` again",
             EXIT_ERROR)  # fmt: skip


@main.command()
@click.option("--target", "target_file", type=click.Path(path_type=Path), help="target file (default: embedded)")
@click.option("--defects", default=None, help="defect switches for the reference platform, e.g. a,b")
def up(target_file: Path | None, defects: str | None) -> None:
    """Start the reference platform locally, print its addresses, and stop it on Ctrl-C."""
    run_dir = new_run_dir()
    try:
        launcher = Launcher(target_file or LOCAL_TARGET, run_dir / "logs", defects=defects)
    except TargetError as exc:
        fail(exc.message)
    if launcher.environment is None:
        fail(f"target {launcher.target.name!r} has provider {launcher.target.provider}: nothing to start")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            provisioned = launcher.start()
        except (MissingBinary, WaitTimeout, LocalEnvironmentError, OSError) as exc:
            fail(str(exc), EXIT_ERROR)
        environment = provisioned.environment
        assert environment is not None
        click.echo(f"opsgate: reference platform up in {environment.started_in_s:.1f}s; logs in {run_dir / 'logs'}")
        for name, address in environment.describe():
            click.echo(f"  {name:<17} {address}")
        click.echo(f"  {'tenant id':<17} {environment.tenant_id}")
        click.echo(f"  {'credentials':<17} source {environment.write_credentials_file()}  (tokens, passwords)")
        click.echo("Press Ctrl-C to stop.")
        while not stop.wait(0.5):
            pass
    finally:
        click.echo("opsgate: stopping the reference platform")
        launcher.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@main.command()
@click.option("--target", "target_file", type=click.Path(path_type=Path), help="target file (default: embedded)")
@click.option("--only", default=None, help="comma-separated markers to run, e.g. smoke,health")
@click.option("--match", "match", default=None, help="run only checks whose id matches (pytest -k expression)")
@click.option("--allow-destructive", is_flag=True, help="allow destructive checks on a staging target")
def gate(target_file: Path | None, only: str | None, match: str | None, allow_destructive: bool) -> None:
    """Run the pre-promotion gate and write evidence; exit 0 only if every gate passed."""
    args = ["--pyargs", "opsgate.suite", "--ignore-glob=*/test_drills.py"]
    if only:
        args += ["-m", " or ".join(part.strip() for part in only.split(",") if part.strip())]
    run_suite(target_file, args, match, allow_destructive, what="checks", kind="gate")


@main.command()
@click.option("--target", "target_file", type=click.Path(path_type=Path), help="target file (default: embedded)")
@click.option("--match", "match", default=None, help="run only drills whose id matches (pytest -k expression)")
@click.option("--allow-destructive", is_flag=True, help="allow destructive drills on a staging target")
@click.option("--chaos", "chaos_dir", type=click.Path(path_type=Path), default=Path("chaos"), show_default=True,
              help="folder of Python drills (the target file's own drills always run)")  # fmt: skip
@click.option("--drill-logs", type=click.Path(path_type=Path), default=Path("reports/drills"), show_default=True,
              help="drill logs go to DIR/<environment>/<YYYYMMDD-HHMMSS>-<drill>.md")  # fmt: skip
def drill(
    target_file: Path | None, match: str | None, allow_destructive: bool, chaos_dir: Path, drill_logs: Path
) -> None:
    """Run the failure drills (chaos/ and the target file's drills:), always rolling back; write drill logs."""
    args = ["--pyargs", "opsgate.suite.test_drills", "opsgate.suite.test_alerts_live"]  # the live checks of job: drill
    if chaos_dir.is_dir():
        args.append(str(chaos_dir))
    else:
        click.echo(f"opsgate: no {chaos_dir}/ here: running the target file's declared drills only")
    run_suite(target_file, [*args, "--opsgate-drill-logs", str(drill_logs)], match, allow_destructive,
              what="drills", kind="drill")  # fmt: skip


@main.command()
@click.option("--target", "target_file", type=click.Path(path_type=Path), help="target file (default: embedded)")
@click.option("--match", "match", default=None, help="run only SLO rows whose id matches (pytest -k expression)")
@click.option("--workers", type=click.IntRange(0, 64), default=None,
              help="a Locust master and N workers for every row (default: each row's load.workers)")  # fmt: skip
@click.option("--short", is_flag=True, help="the gate's short stage instead of the full load profile")
@click.option("--allow-destructive", is_flag=True, help="allow SLO rows that write (POST...) on a staging target")
def load(
    target_file: Path | None, match: str | None, workers: int | None, short: bool, allow_destructive: bool
) -> None:
    """Run the SLO rows (slos:) under their full load profile; exit 0 only if every row passed."""
    args = ["--pyargs", "opsgate.suite.test_slo", "--opsgate-load", "short" if short else "full"]
    if workers is not None:
        args += ["--opsgate-load-workers", str(workers)]
    run_suite(target_file, args, match, allow_destructive, what="SLO rows", kind="load")


def run_suite(target_file: Path | None, args: list[str], match: str | None, allow_destructive: bool,
              *, what: str, kind: str) -> None:  # fmt: skip
    """Run pytest on ``args`` against the target with evidence in a new run directory; exit with the verdict."""
    import pytest

    path = target_file or LOCAL_TARGET
    run_dir = new_run_dir()
    try:
        Launcher(path, run_dir / "logs")  # validates the target file before anything starts
    except TargetError as exc:
        fail(exc.message)
    args = [
        *args,
        "--target", str(path),
        "--opsgate-run-dir", str(run_dir),
        "--opsgate-run-kind", kind,
        f"--junitxml={run_dir / 'junit.xml'}",
        "-o", "junit_family=xunit1",
        "-v", "--no-header", "-rfE", "--tb=line",
        *PYTEST_SETTINGS,
    ]  # fmt: skip
    if allow_destructive:
        args.append("--allow-destructive")
    if match:
        args += ["-k", match]
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    code = int(pytest.main(args))
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        fail(
            f"no {what} were judged (pytest exit {code}); evidence in {run_dir}",
            PYTEST_TO_OPSGATE.get(code, EXIT_ERROR),
        )
    summary = json.loads(summary_path.read_text())
    print_table(summary)
    click.echo(f"opsgate: verdict {summary['verdict'].upper()}; report: {run_dir / 'report.html'}")
    sys.exit(VERDICT_TO_EXIT.get(summary["verdict"], EXIT_ERROR))


def _show(value: object) -> str:
    """A measured value or threshold for the terminal: 4 significant digits for numbers."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_table(summary: dict[str, Any]) -> None:
    """One line per check, failures first: verdict, id, measured vs threshold; the message of each non-pass."""
    order = {"fail": 0, "error": 1, "inconclusive": 2, "aborted": 3, "refused": 4, "pass": 5}
    click.echo("")
    for check in sorted(summary["checks"], key=lambda c: (order.get(c["verdict"], 9), c["id"])):
        measured, threshold = _show(check["measured"]), _show(check["threshold"])
        limit = f"  ({check['op']} {threshold} {check['unit']})".rstrip() if threshold else ""
        click.echo(f"  {check['verdict'].upper():<12} {check['id']:<40} {measured[:40]}{limit[:60]}")
        if check["verdict"] != "pass" and check["message"]:
            click.echo(f"               {check['message'][:300]}")


def _duration(option: str, value: str) -> float:
    """A ``--max-age``-style option as seconds, or a one-line usage error naming the option."""
    from opsgate.config import parse_duration

    try:
        return parse_duration(value)
    except ValueError:
        fail(f"{option}: expected a duration like '7d' or '30m', got {value!r}")
    raise AssertionError("unreachable")


@main.command()
@click.option("--env", "environment", required=True, help="environment whose drill logs are judged, e.g. staging")
@click.option("--max-age", default="7d", show_default=True,
              help="oldest acceptable age (wall clock) of the newest passing drill log")  # fmt: skip
@click.option("--drill-logs", type=click.Path(path_type=Path), default=Path("reports/drills"), show_default=True,
              help="the drill-log folder (DIR/<environment>/*.md)")  # fmt: skip
def freshness(environment: str, max_age: str, drill_logs: Path) -> None:
    """Exit 0 only if the newest passing drill log for --env is younger than --max-age."""
    from opsgate.evidence.freshness import freshness_command

    sys.exit(freshness_command(drill_logs, environment, _duration("--max-age", max_age)))


@main.command()
@click.option("--release", default=None, help="release name: collect the newest evidence into a sign-off bundle")
@click.option("--verify", "verify_dir", type=click.Path(path_type=Path), default=None,
              help="verify the bundle in DIR instead of writing one")  # fmt: skip
@click.option("--expect-digest", default=None, help="with --verify: the digest printed when the bundle was written")
@click.option("--target", "target_file", type=click.Path(path_type=Path), help="target file (default: embedded)")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="bundle folder (default: reports/signoff/NAME)")  # fmt: skip
@click.option("--max-age", default="7d", show_default=True, help="evidence older than this is stale (wall clock)")
@click.option("--margin", type=click.FloatRange(0, 10), default=0.10, show_default=True,
              help="flag a p95 or error-rate regression beyond this fraction of the previous sign-off")  # fmt: skip
def signoff(release: str | None, verify_dir: Path | None, expect_digest: str | None, target_file: Path | None,
            out: Path | None, max_age: str, margin: float) -> None:  # fmt: skip
    """Collect the newest gate, drill and SLO runs into a tamper-evident bundle, or --verify one."""
    from opsgate.evidence import signoff as bundle

    if (release is None) == (verify_dir is None):
        fail("signoff: give exactly one of --release NAME or --verify DIR")
    if verify_dir is not None:
        sys.exit(bundle.verify_command(verify_dir, expect_digest))
    assert release is not None
    sys.exit(bundle.signoff_command(release, target_file or LOCAL_TARGET, out, _duration("--max-age", max_age),
                                    margin))  # fmt: skip


@main.command()
@click.option("--target", "target_file", type=click.Path(path_type=Path), help="target file (default: embedded)")
@click.option("--max-age", default="7d", show_default=True,
              help="a claim last verified longer ago than this is stale (wall clock)")  # fmt: skip
def coverage(target_file: Path | None, max_age: str) -> None:
    """Print runbook coverage over the target's claims registry from the newest evidence."""
    from opsgate.evidence.claims import coverage_command

    sys.exit(coverage_command(target_file or LOCAL_TARGET, _duration("--max-age", max_age)))


if __name__ == "__main__":
    main()
