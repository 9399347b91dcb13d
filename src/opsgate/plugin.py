"""The opsgate pytest plugin: ``--target``, markers, and the session fixtures the suite runs on.

Loaded through the ``pytest11`` entry point. Nothing starts unless a test asks for the target:
the first such fixture starts the local environment (for ``provider: local``) once per session,
and the session's end stops it, also on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import platform
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Generator
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Literal

import httpx
import pytest

from opsgate.alerts.live import LiveAlerts
from opsgate.alerts.rulefiles import read_rules, rule_paths
from opsgate.config import LOCAL_TARGET, HealthCheck, Target, TargetError
from opsgate.drills.drill import Drill
from opsgate.environments.launch import Launcher, Provisioned
from opsgate.environments.local import LocalEnvironment
from opsgate.evidence import html
from opsgate.evidence.claims import DEFAULT_MAX_AGE_S, coverage_for_runs
from opsgate.evidence.drill_logs import drill_log_path, render_drill_log
from opsgate.evidence.recorder import Recorder, check_id, record_from_report
from opsgate.evidence.records import CheckRecord
from opsgate.evidence.redact import Redactor
from opsgate.evidence.rundir import Run, new_run_dir
from opsgate.evidence.summary import RunSummary
from opsgate.evidence.versions import tool_versions
from opsgate.gate_batch import GateBatch

MARKERS = {
    "smoke": "fast read-only checks that the target is up and answering",
    "health": "health gates from the target file's health, datastore, queue and metric sections",
    "destructive": "changes the target's state; refused on production, needs --allow-destructive on staging",
    "alerts": "alert rules against the runbooks' documented thresholds: promtool boundary tests and lint",
    "drill": "failure drills: a fault injected, judged and always rolled back (opsgate drill)",
    "slo": "SLO load gates: a request under load, judged on exact percentiles (short stage in the gate)",
}


class OpsgateSession:
    """Per-pytest-session state: the run directory, the launcher, the provisioned target."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._run_dir: Path | None = None
        self._launcher: Launcher | None = None
        self._provisioned: Provisioned | None = None
        self._provision_error: Exception | None = None
        self._redactor: Redactor | None = None
        self._previous_sigterm: object = None
        self._previous_sigint: object = None
        self.drill_records: dict[str, CheckRecord] = {}
        """Every finished drill's record, also those of a test interrupted before pytest reported it."""
        self.records: list[CheckRecord] = []
        self.started_at = time.time()
        self.gate_names: list[str] = []
        """The windowed gates this run judges (of its selected ``test_gate`` checks), judged together by
        ``gate_batch``; an instant gate is judged in its own turn, after the read-only checks."""
        self.gate_batch: GateBatch | None = None
        self.alerting = True
        """Whether a local environment starts its alerting stack: not when no selected check reads it."""

    @property
    def target_path(self) -> Path:
        """``--target``, else the ``opsgate_target`` ini key, else the embedded reference platform."""
        option = self.config.getoption("opsgate_target") or self.config.getini("opsgate_target")
        return Path(option) if option else LOCAL_TARGET

    @property
    def run_dir(self) -> Path:
        """The run's evidence directory (``--opsgate-run-dir`` or a new ``reports/<run-id>``)."""
        if self._run_dir is None:
            given = self.config.getoption("opsgate_run_dir")
            self._run_dir = Path(given) if given else new_run_dir()
            self._run_dir.mkdir(parents=True, exist_ok=True)
        return self._run_dir

    @property
    def launcher(self) -> Launcher:
        """The launcher, loading (and validating) the target file on first use."""
        if self._launcher is None:
            try:
                self._launcher = Launcher(self.target_path, self.run_dir / "logs")
            except TargetError as exc:
                raise pytest.UsageError(exc.message) from None
        return self._launcher

    def provisioned(self) -> Provisioned:
        """The target, started once per session when opsgate starts it; a failed start is not retried per check."""
        if self._provision_error is not None:
            raise self._provision_error
        if self._provisioned is None:
            # SIGTERM ends the run like Ctrl-C: faults are rolled back and started processes stopped. SIGINT
            # raises at once too (asyncio's own handler would wait for the event loop, which a fault action,
            # holding the loop until it is complete, may not give back for a while).
            self._previous_sigterm = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
            self._previous_sigint = signal.signal(signal.SIGINT, _sigterm_as_interrupt)
            try:
                self._provisioned = self.launcher.start(alerting=self.alerting)
            except Exception as exc:  # every check errors with this reason (a start can take a minute to fail)
                self._provision_error = exc
                raise
        return self._provisioned

    @property
    def redactor(self) -> Redactor | None:
        """Masks the target's secrets once its file is loaded (None before: nothing of it can be shown yet)."""
        if self._redactor is None and self._launcher is not None:
            self._redactor = Redactor(self._launcher.target.secret_values)
        return self._redactor

    @property
    def load_stage(self) -> Literal["short", "full"]:
        """Which SLO stage runs: the gate's short stage or the full profile (``--opsgate-load``)."""
        return "full" if self.config.getoption("opsgate_load") == "full" else "short"

    @property
    def load_workers(self) -> int | None:
        """``--opsgate-load-workers``: Locust workers for every SLO row (None: each row's own setting)."""
        value = self.config.getoption("opsgate_load_workers")
        return None if value is None else int(value)

    def run_info(self) -> dict[str, str]:
        """Environment facts for the evidence: git sha, target file, time scale, versions of opsgate and its tools."""
        target = self.launcher.target
        info = {
            "target file": str(self.target_path),
            "run kind": str(self.config.getoption("opsgate_run_kind")),
            "provider": target.provider,
            "time scale": f"{target.time_scale:g}",
            "opsgate version": metadata.version("opsgate"),
            "git sha": git_sha(),
            "python": platform.python_version(),
            "pytest": pytest.__version__,
            **tool_versions(),
        }
        if target.provider == "containers":
            images = target.containers
            info["container images"] = f"postgres {images.postgres_image}, redis {images.redis_image}"
        return info

    def write_evidence(self) -> None:
        """summary.json and report.html for the checks recorded in this session (if any)."""
        reported = {record.id for record in self.records}
        self.records += [r for r in self.drill_records.values() if r.id not in reported]  # interrupted drills
        if not self.records or self._launcher is None:
            return
        target = self._launcher.target
        # Masked before rendering: a renderer that shortens a message would cut a secret where no mask finds it.
        records = self.redactor.deep(self.records) if self.redactor is not None else self.records
        summary = RunSummary(target.name, target.environment, self.started_at, time.time(), records)
        summary.info = self.run_info()
        try:  # this run's own coverage of the target's claims registry (validated when the target loaded)
            summary.coverage = coverage_for_runs(target, [Run(self.run_dir, summary)], now=time.time(),
                                                 max_age_s=DEFAULT_MAX_AGE_S)  # fmt: skip
        except TargetError as exc:  # the registry changed on disk during the run: say so, keep the evidence
            summary.info["claims registry"] = exc.message
        summary.write(self.run_dir / "summary.json")
        (self.run_dir / "report.html").write_text(html.render(summary, self.run_dir))

    def write_drill_log(self, drill: Drill, record: CheckRecord) -> Path:
        """Write the drill log (redacted) to the drill-log folder and the run directory; returns the latter."""
        target = self.launcher.target
        redactor = Redactor(target.secret_values)  # masked before rendering too: the steps table shortens details
        text = render_drill_log(redactor.deep(record), target=target.name, environment=target.environment,
                                objective=redactor.text(drill.objective), snapshots=redactor.deep(drill.snapshots),
                                seeds=drill.seeds)  # fmt: skip
        text = redactor.text(text)
        folder = Path(self.config.getoption("opsgate_drill_logs"))
        shared = drill_log_path(folder, target.environment, record.id, record.started_at or time.time())
        shared.parent.mkdir(parents=True, exist_ok=True)
        shared.write_text(text)
        local = self.run_dir / "drills" / shared.name
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(text)
        return local

    def close(self) -> None:
        """Stop what this session started, then redact the run's artifacts."""
        if self.gate_batch is not None:
            self.gate_batch.close()
        if self._launcher is not None:
            self._launcher.stop()
            if self._provisioned is not None or self.records:
                Redactor(self._launcher.target.secret_values).tree(self.run_dir)
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)  # type: ignore[arg-type]
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)  # type: ignore[arg-type]


def git_sha() -> str:
    """The git commit of the working directory, or 'unknown'."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (and SIGINT) end the run with KeyboardInterrupt at once, so pytest's teardown stops every
    started process and a drill rolls its faults back."""
    raise KeyboardInterrupt(f"signal {signum}")


SESSION_KEY = pytest.StashKey[OpsgateSession]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("opsgate", "opsgate: executable runbooks")
    group.addoption(
        "--target",
        dest="opsgate_target",
        default=None,
        metavar="FILE",
        help="target file to verify (default: start and verify the embedded reference platform)",
    )
    group.addoption(
        "--opsgate-run-dir",
        dest="opsgate_run_dir",
        default=None,
        metavar="DIR",
        help="evidence directory of this run (default: a new reports/<run-id>/)",
    )
    group.addoption(
        "--allow-destructive",
        dest="opsgate_allow_destructive",
        action="store_true",
        default=False,
        help="allow checks and drills marked destructive on a staging target (never on production)",
    )
    group.addoption(
        "--opsgate-drill-logs",
        dest="opsgate_drill_logs",
        default="reports/drills",
        metavar="DIR",
        help="where drill logs are written, as DIR/<environment>/<YYYYMMDD-HHMMSS>-<drill>.md",
    )
    group.addoption(
        "--opsgate-load",
        dest="opsgate_load",
        choices=["short", "full"],
        default="short",
        help="SLO stage: the gate's short stage (default) or each row's full load profile",
    )
    group.addoption(
        "--opsgate-load-workers",
        dest="opsgate_load_workers",
        type=int,
        default=None,
        metavar="N",
        help="run every SLO row with a Locust master and N workers (default: each row's load.workers)",
    )
    group.addoption(
        "--opsgate-run-kind",
        dest="opsgate_run_kind",
        choices=["gate", "drill", "load", "pytest"],
        default="pytest",
        help="what kind of run this is, recorded in the evidence (sign-off picks the newest of each kind)",
    )
    parser.addini("opsgate_target", "target file used when --target is not given", default="")


def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    config.stash[SESSION_KEY] = OpsgateSession(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None:
        session.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Turn each finished test that uses ``evidence`` into a check record of the run; mask secrets in the report."""
    report = yield
    session = item.config.stash.get(SESSION_KEY, None)
    if session is not None and session.redactor is not None:
        redact_report(report, session.redactor)
    if session is not None and "evidence" in getattr(item, "fixturenames", ()):
        record = record_from_report(item, report)
        if record is not None:
            session.records.append(record)
    return report


def redact_report(report: pytest.TestReport, redactor: Redactor) -> None:
    """Mask secrets in what pytest prints and writes of a test (terminal, ``junit.xml``): failure text, sections."""
    if isinstance(report.longrepr, tuple):  # a skip: (file, line, reason)
        path, line, reason = report.longrepr
        report.longrepr = (path, line, redactor.text(reason))
    elif report.longrepr is not None:
        text = str(report.longrepr)
        cleaned = redactor.text(text)
        if cleaned != text:
            report.longrepr = cleaned
    report.sections = [(title, redactor.text(content)) for title, content in report.sections]


def refusal(environment: str, allowed: bool) -> str | None:
    """Why a destructive check may not run on a target of ``environment`` (None: it may)."""
    if environment == "production":
        return "destructive: refused on a production target"
    if environment == "staging" and not allowed:
        return "destructive: refused on a staging target without --allow-destructive"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    """The guard: a destructive check on production (always) or staging (unless allowed) is refused, not run."""
    if item.get_closest_marker("destructive") is None:
        return
    session = item.config.stash.get(SESSION_KEY, None)
    if session is None:
        return
    reason = refusal(session.launcher.target.environment, item.config.getoption("opsgate_allow_destructive"))
    if reason is not None:
        kind = "drill" if item.get_closest_marker("drill") else "check"
        session.records.append(CheckRecord(id=check_id(item), kind=kind, verdict="refused", message=reason,
                                           started_at=time.time(), finished_at=time.time()))  # fmt: skip
        pytest.skip(reason)


GATES_MODULE = "opsgate.suite.test_gates"
SUITE_PACKAGE = "opsgate.suite."
STATE_CHANGING = ("destructive", "drill", "slo")
"""Markers of checks that change the target's state or load it: they run after every gate's window closed."""


def _module_of(item: pytest.Item) -> str:
    return getattr(getattr(item, "function", None), "__module__", "")


def changes_state(item: pytest.Item) -> bool:
    """Whether ``item`` changes or loads the target (a fault, a writing flow, a drill, load)."""
    return any(item.get_closest_marker(name) is not None for name in STATE_CHANGING)


def reads_alerting(item: pytest.Item, promql_gates: set[str]) -> bool:
    """Whether a check of opsgate's suite reads the alerting stack (Prometheus, Alertmanager, the receiver): an
    alert check, a drill (drills watch alerts) or a gate of ``promql_gates``."""
    if any(item.get_closest_marker(name) is not None for name in ("alerts", "drill")):
        return True
    if _module_of(item) == GATES_MODULE and hasattr(item, "callspec"):
        return item.callspec.params["gate_name"] in promql_gates
    return "live_alerts" in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: only the checks that run
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """A run of only suite checks that do not read the alerting stack starts none. With gates to judge: the
    read-only checks first (while the gates' windows run), then the gates, then what changes the target's state."""
    opsgate_session = config.stash[SESSION_KEY]
    if items and all(_module_of(item).startswith(SUITE_PACKAGE) for item in items):  # (a team's test may read it)
        promql_gates = {gate.name for gate in opsgate_session.launcher.target.gates if gate.promql is not None}
        opsgate_session.alerting = any(reads_alerting(item, promql_gates) for item in items)
    gates = [item for item in items if _module_of(item) == GATES_MODULE and hasattr(item, "callspec")]
    if not gates:
        return
    target = opsgate_session.launcher.target
    windowed = {gate.name for gate in target.gates if gate.window is not None}
    names = [str(item.callspec.params["gate_name"]) for item in gates]
    opsgate_session.gate_names = [name for name in names if name in windowed]
    gate_ids = {id(item) for item in gates}
    read_only = [item for item in items if id(item) not in gate_ids and not changes_state(item)]
    writing = [item for item in items if id(item) not in gate_ids and changes_state(item)]
    items[:] = read_only + gates + writing


def pytest_sessionfinish(session: pytest.Session) -> None:
    opsgate_session = session.config.stash.get(SESSION_KEY, None)
    if opsgate_session is not None:
        opsgate_session.write_evidence()


def health_checks(target: Target) -> list[tuple[str, str, HealthCheck]]:
    """(id, service url, check) for every health check of every service, in file order."""
    return [
        (f"{name}:{check.path}", service.url, check)
        for name, service in target.services.items()
        for check in service.health
    ]


def alert_rule_names(target: Target) -> list[str]:
    """Every alerting rule in the target's rule files (none when a file is missing: the lint reports it)."""
    try:
        return [rule.alert for rule in read_rules(rule_paths(target))]
    except (FileNotFoundError, OSError):
        return []


def writing_flows(target: Target) -> list[str]:
    """Flows that change state (any step other than GET): marked ``destructive``."""
    return [f.name for f in target.flows if any(step.method != "GET" for step in f.steps)]


def writing_slos(target: Target) -> set[str]:
    """SLO rows whose load may change state (a non-GET request, or a team's locustfile): ``destructive``."""
    return {s.name for s in target.slos if s.request is None or s.request.method != "GET"}


def live_alerts_of(target: Target, run_kind: str) -> list[str]:
    """The live alert checks a run of ``run_kind`` runs: its job's (a gate or drill run), or all (plain pytest)."""
    return [live.id for live in target.alerts.live if run_kind not in ("gate", "drill") or live.job == run_kind]


def datastore_names(target: Target) -> list[str]:
    """The datastores the target declares."""
    return [name for name in ("postgres", "redis") if getattr(target.datastores, name) is not None]


PARAMETRISED: dict[str, Callable[[Target], list[str]]] = {
    "queue_name": lambda t: [q.name for q in t.queues],
    "gate_name": lambda t: [g.name for g in t.gates],
    "flow_name": lambda t: [f.name for f in t.flows],
    "freshness_name": lambda t: [f.name for f in t.freshness],
    "browser_check_name": lambda t: [b.name for b in t.browser],
    "datastore_name": datastore_names,
    "alert_name": lambda t: [row.alert for row in t.alerts.thresholds],
    "rule_name": alert_rule_names,
    "live_alert_name": lambda t: [live.id for live in t.alerts.live],  # of this run's job: see live_alerts_of
    "alert_route_name": lambda t: [r.name for r in t.alerts.routes],
    "severity_levels": lambda t: ["levels"] if t.alerts.severities is not None else [],
    "applied_group": lambda t: [a.group for a in t.alerts.applied],
    "required_metric": lambda t: [m.name for m in t.metrics.required],
    "drill_name": lambda t: [d.name for d in t.drills],
    "slo_name": lambda t: [s.name for s in t.slos],
    "severity": lambda t: list(t.alerts.routing),
    "diagnosis_step": lambda t: [f"{name}/{step.id}" for name, steps in t.diagnoses.items() for step in steps],
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise target-driven tests from the target file, with readable ids."""
    if "health_check" in metafunc.fixturenames:
        session = metafunc.config.stash[SESSION_KEY]
        rows = health_checks(session.launcher.target)
        metafunc.parametrize("health_check", [row[0] for row in rows], ids=[row[0] for row in rows])
    target = None
    for fixture, section in PARAMETRISED.items():
        if fixture in metafunc.fixturenames:
            target = target or metafunc.config.stash[SESSION_KEY].launcher.target
            names = section(target)
            if fixture == "live_alert_name":
                names = live_alerts_of(target, metafunc.config.getoption("opsgate_run_kind"))
            writing = set(writing_flows(target)) if fixture == "flow_name" else set()
            if fixture == "drill_name":
                writing = {d.name for d in target.drills if d.destructive}
            if fixture == "slo_name":
                writing = writing_slos(target)
            params = [
                pytest.param(name, id=name, marks=[pytest.mark.destructive] * (name in writing)) for name in names
            ]
            metafunc.parametrize(fixture, params)


@pytest.fixture(scope="session")
def opsgate_session(pytestconfig: pytest.Config) -> OpsgateSession:
    """The plugin's session state."""
    return pytestconfig.stash[SESSION_KEY]


@pytest.fixture(scope="session")
def opsgate_run_dir(opsgate_session: OpsgateSession) -> Path:
    """This run's evidence directory."""
    return opsgate_session.run_dir


@pytest.fixture(scope="session")
def target(opsgate_session: OpsgateSession, record_testsuite_property: Callable[[str, object], None]) -> Target:
    """The target under test, started first when it is the local reference platform."""
    provisioned = opsgate_session.provisioned().target
    record_testsuite_property("target", provisioned.name)
    record_testsuite_property("environment", provisioned.environment)
    for key in ("git sha", "opsgate version", "time scale"):
        record_testsuite_property(key.replace(" ", "_"), opsgate_session.run_info()[key])
    return provisioned


@pytest.fixture(scope="session", autouse=True)
def _opsgate_gates(request: pytest.FixtureRequest, opsgate_session: OpsgateSession) -> Generator[None, None, None]:
    """Start the run's gates together at the run's start (nothing when the run judges no gate)."""
    if opsgate_session.gate_names:
        target = request.getfixturevalue("target")
        specs = [next(g for g in target.gates if g.name == name) for name in opsgate_session.gate_names]
        opsgate_session.gate_batch = GateBatch(target, specs)
        opsgate_session.gate_batch.start()
    yield
    if opsgate_session.gate_batch is not None:
        opsgate_session.gate_batch.close()


@pytest.fixture(autouse=True)
def _opsgate_quiet_windows(
    request: pytest.FixtureRequest, opsgate_session: OpsgateSession, _opsgate_gates: None
) -> None:
    """A check that changes or loads the target waits until no gate's window observes it."""
    if opsgate_session.gate_batch is not None and changes_state(request.node):
        opsgate_session.gate_batch.wait()


@pytest.fixture
def evidence(request: pytest.FixtureRequest, opsgate_session: OpsgateSession) -> Recorder:
    """This check's evidence recorder: ``evidence.conclude(record)`` records and fails unless it passed."""
    return Recorder(request.node, opsgate_session.run_dir)


@pytest.fixture(scope="session")
def local_environment(opsgate_session: OpsgateSession, target: Target) -> LocalEnvironment:
    """The environment opsgate started for this target (``provider: local`` or ``containers``)."""
    environment = opsgate_session.provisioned().environment
    if environment is None:
        pytest.skip(f"target {target.name!r} is not started by opsgate (provider {target.provider})")
    return environment


@pytest.fixture
async def live_alerts(target: Target) -> AsyncIterator[LiveAlerts]:
    """The live alert harness of the target: wait for pending/firing/resolved, read the receiver's notifications."""
    if target.metrics.prometheus is None:
        pytest.skip(f"target {target.name!r} has no metrics.prometheus: no live alerts")
    async with httpx.AsyncClient() as client:
        yield LiveAlerts(client, target.metrics.prometheus, target.alerts.receiver)


@pytest.fixture
def drill(request: pytest.FixtureRequest, opsgate_session: OpsgateSession, target: Target, evidence: Recorder) -> Drill:
    """A drill named after the test: ``async with drill.running(): ...``; its verdict, timeline and log are evidence.

    Set ``drill.claim``, ``drill.objective`` and ``drill.timeout_s`` before running it.
    """
    journal = opsgate_session.launcher.journal
    assert journal is not None, "the target is provisioned before a drill runs"

    def finish(finished: Drill) -> None:
        record = evidence.record(finished.record())
        opsgate_session.drill_records[record.id] = record
        log = opsgate_session.write_drill_log(finished, record)
        evidence.attach(log)

    return Drill(evidence.id, target, journal, on_finish=finish, timeout_s=target.scaled(1800.0, floor_s=60.0))
