"""Detection matrix: plant each defect of the catalogue, run the suite, and see which check catches it.

Each defect of ``opsgate.reference.defects.CATALOGUE`` pre-declares the one check (``Defect.check``, its id as in
summary.json) that must catch it. Per defect this runs the suite with the defect planted and classifies it:

- ``caught``          its pre-declared check failed (only these count towards D);
- ``caught-by-other`` that check passed (or did not run) but other checks failed (they are listed);
- ``missed``          every check passed.

Then it runs the suite K times on the healthy platform (``--healthy-runs``, default 5): every check that does not
pass there is a false alarm (F counts those checks, over all healthy runs). The last line reads exactly
``detected D/N, false alarms F over H healthy runs``.

What runs, to keep the full matrix near an hour on a 2-core machine:

- One PostgreSQL, Redis, Prometheus and Alertmanager for the whole matrix: one local environment is started here
  (as ``opsgate gate`` would start it) and only its api and worker are restarted when the defect set changes
  (``restart_platform``; an alert-rule defect also rewrites the deployed rules and reloads Prometheus). The gate
  runs as ``opsgate gate`` against it through an external target file (targets/local.yaml, nothing started).
- Per defect: the full gate (it includes the short SLO stage); and, when the pre-declared check is a drill
  (``drill[...]`` declared in the target file, or a Python drill of ``chaos/``), that one drill as well, through
  ``opsgate drill --match`` with the defect in ``OPSGATE_DEFECTS``. Drills stop and start the platform's own
  processes (the local environment's control), which an external target does not give them, so each drill run
  starts a reference platform of its own. Drills not pre-declared for a defect do not run on it: a defect they
  would catch shows as ``caught-by-other`` only through the gate.
- Healthy runs: the full gate against the shared platform, then every drill (``opsgate drill``, its own platform).
- ``--only-expected`` (for the quick test): per defect only its pre-declared check (``--match`` its id), and the
  healthy runs only the pre-declared checks of the selected defects.

Every change of the defect set restarts the platform on a new, empty database and Redis (migrated and seeded as
on a first start), so each defect row starts from the state the first healthy run started from: a defect that
acts only on a first start (the migration runner's) is planted, and one that damages data (a billing event applied
twice) leaves nothing for a later row's checks to report. The healthy runs go first and share one database, so
their false-alarm count also covers the state that runs of the suite leave behind.

Usage: ``python bench/detection_matrix.py [--defects a,b] [--healthy-runs K] [--only-expected] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from opsgate.config import LOCAL_TARGET
from opsgate.environments.launch import Launcher
from opsgate.environments.local import LocalEnvironment
from opsgate.reference.defects import CATALOGUE

ROOT = Path(__file__).resolve().parents[1]
CHAOS = ROOT / "chaos"
RUN_TIMEOUT_S = 1200.0
"""Deadline of one ``opsgate gate`` or ``opsgate drill`` run (all drills take ~4-6 min on a loaded machine)."""
STOP_GRACE_S = 30.0
"""After SIGTERM on a run past its deadline, how long it has to roll back and stop what it started."""


@dataclass
class Run:
    """One ``opsgate`` run: what ran, its exit code, wall time and the verdict of every check by id."""

    what: str
    code: int
    wall_s: float
    verdicts: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    error: str = ""


@dataclass
class Row:
    """One defect of the matrix: its pre-declared check, the outcome and the other checks that failed."""

    defect: str
    check: str
    result: str
    expected_verdict: str
    others: list[str]
    message: str
    wall_s: float


def drill_job_live_checks() -> set[str]:
    """The live alert checks ``opsgate drill`` runs (``job: drill`` in targets/local.yaml)."""
    rows = yaml.safe_load(LOCAL_TARGET.read_text())["alerts"]["live"]
    return {f"alert_live[{row.get('name') or row['alert']}]" for row in rows if row.get("job") == "drill"}


def is_drill(check_id: str) -> bool:
    """Run by ``opsgate drill``: ``drill[name]`` (declared in the target file), a Python drill's bare name
    (``backup_restore``), or a live alert check of ``job: drill``."""
    return check_id.startswith("drill[") or "[" not in check_id or check_id in drill_job_live_checks()


def external_target(path: Path) -> Path:
    """Write targets/local.yaml to ``path`` as an external target: the shared running platform, nothing started."""
    text = LOCAL_TARGET.read_text()
    edits = [
        ("provider: ${OPSGATE_PROVIDER:-local}\n", "provider: external\n"),
        ("platform:\n  workers: 1\n", ""),
        ("    control:\n      kind: process\n", ""),
    ]
    for old, new in edits:
        if old not in text:
            raise SystemExit(f"{LOCAL_TARGET}: expected to contain {old!r} (to point it at the shared platform)")
        text = text.replace(old, new)
    path.write_text(text)
    return path


def stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM ``proc`` (it rolls back and stops what it started); SIGKILL after ``STOP_GRACE_S``; its output."""
    proc.send_signal(signal.SIGTERM)
    try:
        output, _ = proc.communicate(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    return output


def run_opsgate(args: list[str], env: dict[str, str], work: Path, what: str) -> Run:
    """Run ``opsgate ARGS`` with its reports in ``work``; returns its checks' verdicts (SIGTERM at the deadline)."""
    reports = work / "reports"
    env = {**os.environ, **env, "OPSGATE_REPORTS_DIR": str(reports), "OPSGATE_STATE_DIR": str(work / "state")}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "opsgate.cli", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    error = ""
    try:
        output, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        output = stop(proc)
        error = f"did not finish within {RUN_TIMEOUT_S:.0f}s"
    except BaseException:
        stop(proc)  # interrupted: the run in flight rolls back and stops its own platform first
        raise
    (work / "output.txt").write_text(output)
    run = Run(what, proc.returncode, time.monotonic() - started, error=error)
    summary = (reports / "latest").resolve() / "summary.json"
    if not summary.is_file():
        run.error = run.error or f"no summary.json (exit {proc.returncode}); output in {work / 'output.txt'}"
        return run
    for check in json.loads(summary.read_text())["checks"]:
        run.verdicts[check["id"]] = check["verdict"]
        run.messages[check["id"]] = str(check.get("message") or "")
    return run


class Matrix:
    """The shared platform and the runs against it; every run's evidence under ``out``."""

    def __init__(self, out: Path, platform: LocalEnvironment, target: Path) -> None:
        self.out = out
        self.platform = platform
        self.target = target
        self.defects = ""
        self.count = 0
        self.healthy_done = 0

    def _work(self, label: str) -> Path:
        self.count += 1
        work = self.out / f"{self.count:03d}-{label}"
        work.mkdir(parents=True)
        return work

    def plant(self, defects: str) -> None:
        """Restart the shared platform's api and worker with ``defects`` on a new database and Redis (only when
        the set changes)."""
        if defects != self.defects:
            self.platform.restart_platform(defects=defects, new_database=True)
            self.defects = defects

    def gate(self, label: str, match: str | None) -> Run:
        """``opsgate gate`` against the shared platform (``--match``: only those checks)."""
        args = ["gate", "--target", str(self.target)] + (["--match", match] if match else [])
        return run_opsgate(args, self.platform.environ(), self._work(f"gate-{label}"), f"gate {match or ''}".strip())

    def drill(self, label: str, match: str | None, defects: str) -> Run:
        """``opsgate drill`` on a reference platform of its own with ``defects`` planted (``--match``: those drills)."""
        work = self._work(f"drill-{label}")
        args = ["drill", "--chaos", str(CHAOS), "--drill-logs", str(work / "drills")]
        args += ["--match", match] if match else []
        return run_opsgate(args, {"OPSGATE_DEFECTS": defects}, work, f"drill {match or ''}".strip())


def match_expression(check_ids: list[str]) -> str:
    """A pytest ``-k`` expression selecting these checks (each id is a substring of its test's name)."""
    return " or ".join(f"({c})" for c in dict.fromkeys(check_ids))


def classify(defect: str, runs: list[Run]) -> Row:
    """The matrix row of ``defect`` from the runs made with it planted."""
    check = CATALOGUE[defect].check
    verdicts: dict[str, str] = {}
    messages: dict[str, str] = {}
    for run in runs:
        verdicts |= run.verdicts
        messages |= run.messages
    expected = verdicts.get(check, "not run")
    others = sorted(c for c, v in verdicts.items() if c != check and v != "pass")
    errors = [f"{r.what}: {r.error}" for r in runs if r.error]
    if expected == "fail":
        result = "caught"
    elif others:
        result = "caught-by-other"
    else:
        result = "missed"
    message = messages.get(check, "") or "; ".join(errors)
    return Row(defect, check, result, expected, others, message, sum(r.wall_s for r in runs))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--defects", default="", help="comma-separated defects (default: the whole catalogue)")
    parser.add_argument("--healthy-runs", type=int, default=5, help="healthy runs of the suite (default 5)")
    parser.add_argument("--only-expected", action="store_true", help="run only each defect's pre-declared check")
    parser.add_argument("--out", type=Path, default=None, help="folder for every run's evidence and matrix.json")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.defects.split(",") if n.strip()] or list(CATALOGUE)
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        parser.error(f"--defects: unknown defect {unknown[0]!r}; known: {', '.join(sorted(CATALOGUE))}")
    undeclared = [n for n in names if not CATALOGUE[n].check]
    if undeclared:
        parser.error(f"--defects: defect {undeclared[0]!r} declares no check (Defect.check in defects.py)")
    if args.healthy_runs < 0:
        parser.error(f"--healthy-runs: expected a count >= 0, got {args.healthy_runs}")
    args.names = names
    return args


def say(text: str) -> None:
    print(text, flush=True)


def healthy_runs(matrix: Matrix, count: int, only_checks: list[str] | None, alarms: list[tuple[int, str, str]]) -> None:
    """Run the suite ``count`` times healthy; each (run, check, verdict) that did not pass goes to ``alarms``."""
    matrix.plant("")
    gate_checks = [c for c in only_checks or [] if not is_drill(c)]
    drill_checks = [c for c in only_checks or [] if is_drill(c)]
    for number in range(1, count + 1):
        runs = []
        if only_checks is None or gate_checks:
            runs.append(matrix.gate(f"healthy{number}", match_expression(gate_checks) if only_checks else None))
        if only_checks is None or drill_checks:
            runs.append(matrix.drill(f"healthy{number}", match_expression(drill_checks) if only_checks else None, ""))
        failed = [(number, c, v) for run in runs for c, v in run.verdicts.items() if v != "pass"]
        failed += [(number, run.what, f"error: {run.error}") for run in runs if run.error]
        alarms += failed
        checks = sum(len(run.verdicts) for run in runs)
        wall = sum(run.wall_s for run in runs)
        shown = ", ".join(f"{c} {v}" for _, c, v in failed) or "every check passed"
        say(f"healthy run {number}/{count}: {checks} checks in {wall:.0f}s: {shown}")
        matrix.healthy_done = number


def defect_run(matrix: Matrix, defect: str, only_expected: bool) -> Row:
    """Plant ``defect`` and run the gate (and its pre-declared drill); returns its row."""
    check = CATALOGUE[defect].check
    runs = []
    if not (only_expected and is_drill(check)):
        matrix.plant(defect)
        runs.append(matrix.gate(defect, check if only_expected else None))
    if is_drill(check):
        runs.append(matrix.drill(defect, check, defect))
    row = classify(defect, runs)
    also = f"; also failing: {', '.join(row.others)}" if row.others else ""
    say(f"{defect}: {row.result} ({row.check} {row.expected_verdict}) in {row.wall_s:.0f}s{also}")
    return row


def print_matrix(rows: list[Row], alarms: list[tuple[int, str, str]], healthy: int, wall_s: float, total: int) -> None:
    """The matrix, the detection rate (over all ``total`` selected defects), every miss and false alarm; last line."""
    width_d = max([len(r.defect) for r in rows] + [6])
    width_c = max([len(r.check) for r in rows] + [14])
    say("")
    say(f"{'defect':<{width_d}}  {'expected check':<{width_c}}  {'result':<15}  other checks failing")
    for r in rows:
        say(f"{r.defect:<{width_d}}  {r.check:<{width_c}}  {r.result:<15}  {', '.join(r.others) or '-'}")
    detected = sum(r.result == "caught" for r in rows)
    rate = 100.0 * detected / total if total else 0.0
    say("")
    say(f"detection rate {rate:.1f}% ({detected} of {total} by their pre-declared check)")
    for r in rows:
        if r.result != "caught":
            say(f"  {r.result}: {r.defect} (expected {r.check}, {r.expected_verdict}) {r.message[:200]}")
    for number, check, verdict in alarms:
        say(f"  false alarm: healthy run {number}: {check} {verdict}")
    say(f"wall time {wall_s:.0f}s")
    say(f"detected {detected}/{total}, false alarms {len(alarms)} over {healthy} healthy runs")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def write_record(out: Path, args: argparse.Namespace, rows: list[Row], alarms: list[tuple[int, str, str]],
                 wall_s: float, finished: bool) -> None:  # fmt: skip
    """matrix.json: the rows and false alarms so far (rewritten after every run: an interrupted matrix keeps them)."""
    record: dict[str, Any] = {
        "defects": args.names,
        "rows": [asdict(r) for r in rows],
        "false_alarms": [{"run": n, "check": c, "verdict": v} for n, c, v in alarms],
        "healthy_runs": args.healthy_runs,
        "only_expected": args.only_expected,
        "wall_s": wall_s,
        "finished": finished,
    }
    (out / "matrix.json").write_text(json.dumps(record, indent=2))


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    out: Path = args.out or Path(tempfile.mkdtemp(prefix="opsgate-matrix-"))
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _interrupt)  # so the shared platform is stopped on SIGTERM too
    launcher = Launcher(LOCAL_TARGET, out / "platform-logs", defects="")
    rows: list[Row] = []
    alarms: list[tuple[int, str, str]] = []
    finished = False
    matrix: Matrix | None = None
    try:
        environment = launcher.start().environment
        assert environment is not None, "targets/local.yaml starts a local environment"
        say(f"shared platform up in {environment.started_in_s:.1f}s; evidence in {out}")
        matrix = Matrix(out, environment, external_target(out / "shared-platform.yaml"))
        expected = [CATALOGUE[n].check for n in args.names]
        healthy_runs(matrix, args.healthy_runs, expected if args.only_expected else None, alarms)
        for name in args.names:
            rows.append(defect_run(matrix, name, args.only_expected))
            write_record(out, args, rows, alarms, time.monotonic() - started, False)
        finished = True
    except KeyboardInterrupt as exc:
        say(f"interrupted ({exc or 'Ctrl-C'}): {len(rows)} of {len(args.names)} defects run; the rest count as not"
            " detected")  # fmt: skip
    finally:
        launcher.stop()
    wall_s = time.monotonic() - started
    write_record(out, args, rows, alarms, wall_s, finished)
    print_matrix(rows, alarms, matrix.healthy_done if matrix else 0, wall_s, len(args.names))
    return 0 if finished and all(r.result == "caught" for r in rows) and not alarms else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
